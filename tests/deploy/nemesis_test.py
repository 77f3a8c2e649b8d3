#!/usr/bin/env python3
"""The nemesis: 3 nodes in network namespaces, 0.2 % of frames dropped, and a
schedule of partitions, kill -9s (the owner and metadata node included),
moves and full disks while two workers on every node
  - increment one counter under an fcntl lock (F_SETLKW; pread; pwrite(+1);
    fsync; F_UNLCK: acknowledged when fsync and unlock returned 0),
  - write checksummed 64-byte records with pwrite+fsync into a file whose
    pages every worker shares (acknowledged when fsync returned 0), and
  - store checksummed records through a MAP_SHARED mapping of a second such
    file and msync them (acknowledged when msync returned 0): the twin and
    diff path, every page falsely shared by the three nodes.
Afterwards, on every node: no acknowledged increment lost and no value
acknowledged twice; every acknowledged record intact.

Usage: nemesis_test.py BUILD_BIN_DIR [SECONDS] [SEED] [KINDS]
   SEED 0 or none: a random one; SECONDS of nemesis, default 36 (the suite's run; a soak passes more);
   KINDS, default "kill9,partition,loss,migrate,enospc": the faults to inject;
   "migrate" moves the counter or a records file to a random node now and
   then (user.cshm.owner, from a random node); "enospc" fills a node's state
   dir (each is a tmpfs of its own) to the last byte for 0.3-4 s, while
   other faults go on.
"""
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 36.0
SEED = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "0" else random.randrange(1 << 30)  # 0: random
KINDS = (sys.argv[4] if len(sys.argv) > 4 else "kill9,partition,loss,migrate,enospc").split(",")
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(HERE, "deploy", "local-cluster.sh")
NODES = 3
SLOTS = 4096  # record slots per worker; index i goes to slot i % SLOTS
REC = 64
STATE_MB = 64  # each node's state dir: a tmpfs, so that "enospc" can fill it

# What the workers and the final check share. A worker writes record i of
# its node to slot i % SLOTS. A slot may hold its last acknowledged record or
# one tried after it (a failed write may still land); anything else is a lost
# acknowledged write. Each worker checks a slot before it writes it again
# (through its own node, which must see its own acknowledged write); the
# nemesis checks every slot through every node at the end.
SLOTS_PY = r'''
import hashlib, struct
NODES, SLOTS, REC = %d, %d, %d
def record(node, i, fill):
    body = struct.pack("<III", 0xC5A11D, node, i).ljust(REC - 8, fill)
    return body + hashlib.blake2b(body, digest_size=8).digest()
def at(node, i):
    off = (i %% SLOTS * NODES + node) * REC
    return off, off + REC
class Slots:
    def __init__(self, node, fill):
        self.node, self.fill, self.slots = node, fill, {}  # slot -> [last acked, tried after it]
    def tried(self, i):
        self.slots.setdefault(i %% SLOTS, [None, set()])[1].add(i)
    def acked(self, i):
        e = self.slots.setdefault(i %% SLOTS, [None, set()])
        e[0], e[1] = i, {j for j in e[1] if j > i}
    def replay(self, path, ack):  # the worker's acks file; returns the next index to try
        nxt = 0
        try:
            for line in open(path):
                kind, val = line.split()
                if kind == "try":
                    self.tried(int(val))
                    nxt = max(nxt, int(val) + 1)
                elif kind == ack:
                    self.acked(int(val))
        except FileNotFoundError:
            pass
        return nxt
    def intact(self, slot, held):  # None when it is, else the acknowledged index it lost
        e = self.slots.get(slot)
        if e is None or e[0] is None or held in {record(self.node, j, self.fill) for j in e[1] | {e[0]}}:
            return None
        return e[0]
''' % (NODES, SLOTS, REC)
exec(SLOTS_PY)

WORKER = SLOTS_PY + r'''
import errno, fcntl, os, sys, time
node, mount, acks_path, stop_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
acks = open(acks_path, "a", buffering=1)
slots = Slots(node, b"r")
counter = records = None
i = 0
worst = 0.0
def closeall():
    global counter, records
    for fd in (counter, records):
        if fd is not None:
            try: os.close(fd)
            except OSError: pass
    counter = records = None
while not os.path.exists(stop_path):
    t0 = time.monotonic()
    try:
        if counter is None:
            counter = os.open(mount + "/counter", os.O_RDWR)
            records = os.open(mount + "/records", os.O_RDWR)
        fcntl.lockf(counter, fcntl.LOCK_EX)
        v = int(os.pread(counter, 16, 0).split(b"\0")[0] or b"0")
        os.pwrite(counter, b"%015d\0" % (v + 1), 0)
        os.fsync(counter)
        fcntl.lockf(counter, fcntl.LOCK_UN)
        acks.write("inc %d\n" % (v + 1))
        lo, hi = at(node, i)
        lost = slots.intact(i % SLOTS, os.pread(records, REC, lo))
        if lost is not None:
            acks.write("lost %d\n" % lost)
        acks.write("try %d\n" % i)
        slots.tried(i)
        os.pwrite(records, record(node, i, b"r"), lo)
        os.fsync(records)
        acks.write("rec %d\n" % i)
        slots.acked(i)
        i += 1
    except OSError as e:
        acks.write("err %s\n" % errno.errorcode.get(e.errno, e.errno))
        closeall()
        time.sleep(0.05)
    worst = max(worst, time.monotonic() - t0)
acks.write("worst %.3f\n" % worst)
closeall()
'''

# Stores through a mapping, msync'ed page by page. A fault that cannot be
# served (a daemon killed, an owner cut off) is SIGBUS, which kills the
# process: the nemesis starts it again, and it goes on from its acks file.
MAPPER = SLOTS_PY + r'''
import errno, mmap, os, sys, time
node, mount, acks_path, stop_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
slots = Slots(node, b"m")
i = slots.replay(acks_path, "map")
acks = open(acks_path, "a", buffering=1)
fd = mm = None
while not os.path.exists(stop_path):
    try:
        if mm is None:
            fd = os.open(mount + "/mapped", os.O_RDWR)
            mm = mmap.mmap(fd, SLOTS * NODES * REC)
        lo, hi = at(node, i)
        lost = slots.intact(i % SLOTS, mm[lo:hi])
        if lost is not None:
            acks.write("lost %d\n" % lost)
        acks.write("try %d\n" % i)
        slots.tried(i)
        i += 1
        mm[lo:hi] = record(node, i - 1, b"m")
        mm.flush(lo & ~4095, 4096)
        acks.write("map %d\n" % (i - 1))
        slots.acked(i - 1)
        time.sleep(0.002)  # leaves the locked counter its share of two cores
    except (OSError, ValueError) as e:
        acks.write("err %s\n" % errno.errorcode.get(getattr(e, "errno", None), "EINVAL"))
        for close in (lambda: mm.close(), lambda: os.close(fd)):
            try: close()
            except Exception: pass
        fd = mm = None
        time.sleep(0.05)
'''


import deploy_util  # noqa: E402  (beside this script)


def fail(msg):
    deploy_util.fail(msg, "FAIL (seed %d)" % SEED)


def wait_for(cond, timeout, what):
    deploy_util.wait_for(cond, timeout, what, "FAIL (seed %d)" % SEED, poll=0.1)


def fill_up(path):
    """Fills the file system of `path` to its last byte; returns the bytes taken."""
    taken = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096):
            block = b"\0" * chunk
            try:
                while True:
                    taken += f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    return taken


def main():
    if subprocess.run(["ip", "netns", "add", "cshm-probe-%d" % os.getpid()], stderr=subprocess.DEVNULL).returncode:
        print("no network namespaces here: skipped")
        return
    subprocess.run(["ip", "netns", "del", "cshm-probe-%d" % os.getpid()])
    rng = random.Random(SEED)
    print("nemesis: %.0f s, seed %d, %s (replay: %s %s %.0f %d %s)"
          % (SECONDS, SEED, ",".join(KINDS), sys.argv[0], BIN, SECONDS, SEED, ",".join(KINDS)))
    d = tempfile.mkdtemp(prefix="cshm-nemesis.")
    tag = hashlib.md5(d.encode()).hexdigest()[:4]
    link = lambda i: "cshm%sv%d" % (tag, i)
    m = lambda i: os.path.join(d, "m%d" % i)
    env = dict(os.environ, CSHMFS=os.path.join(BIN, "cshmfs"), CSHM_NET_LOSS_PPM="2000" if "loss" in KINDS else "0",
               CSHM_CLUSTER_SETTINGS="request_timeout_ms = 1500\nheartbeat_ms = 250\nlease_ms = 1500",
               CSHM_EXTRA_CONFIG="[migrate]\nenabled = false")
    workers = {}
    mappers = {}
    faults = {k: 0 for k in ("partition", "kill9", "migrate", "enospc") if k in KINDS}
    refused_moves = sigbus = refused_starts = 0
    stop = os.path.join(d, "stop")
    s = lambda i: os.path.join(d, "s%d" % i)

    def start_worker(n):
        workers[n] = subprocess.Popen([sys.executable, "-c", WORKER, str(n), m(n), os.path.join(d, "acks%d" % n), stop],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_mapper(n):
        mappers[n] = subprocess.Popen([sys.executable, "-c", MAPPER, str(n), m(n), os.path.join(d, "macks%d" % n), stop],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    full = {}  # node -> when its state dir's filler goes

    def free_disks(now):
        for n, when in list(full.items()):
            if when <= now:
                os.unlink(os.path.join(s(n), "filler"))
                del full[n]

    def tend_mappers():  # one killed by SIGBUS goes on where it was
        nonlocal sigbus
        for n, p in mappers.items():
            if p.poll() is not None:
                if p.returncode != -signal.SIGBUS:
                    fail("the mapping worker on node %d exited with %d" % (n, p.returncode))
                sigbus += 1
                start_mapper(n)

    def dead(pid):  # every thread gone or a zombie: a zombie leader may still have live threads
        try:
            return all(open("/proc/%d/task/%s/stat" % (pid, t)).read().rsplit(")", 1)[1].split()[0] == "Z"
                       for t in os.listdir("/proc/%d/task" % pid))
        except OSError:
            return True

    def abort_connection(mountpoint):
        # A thread killed inside a notify that waits for a folio a read holds
        # (the read waits for this daemon's answer) keeps /dev/fuse open, so
        # the kernel never aborts the connection by itself: abort it.
        for line in open("/proc/self/mountinfo"):
            f = line.split()
            if f[4] == mountpoint:
                subprocess.run(["mount", "-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"],
                               stderr=subprocess.DEVNULL)
                try:
                    with open("/sys/fs/fuse/connections/%s/abort" % f[2].split(":")[1], "w") as a:
                        a.write("1")
                except OSError:
                    pass

    def restart(n):
        nonlocal refused_starts
        with open(os.path.join(d, "s%d" % n, "cshmfs.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 3
        while not dead(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not dead(pid):
            abort_connection(m(n))
        wait_for(lambda: dead(pid), 10, "node %d's daemon to die" % n)
        subprocess.run(["fusermount3", "-u", "-z", m(n)], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.5))  # how long it stays down: part of the schedule
        start = ["nsenter", "--net=/run/netns/cshm-%s-n%d" % (tag, n), "--", os.path.join(BIN, "cshmfs"), m(n),
                 "--config", os.path.join(d, "cluster.toml"), "--node", str(n), "--state-dir", s(n)]
        got = subprocess.run(start, env=env, stderr=subprocess.PIPE, text=True, timeout=60)
        if got.returncode and n in full:  # a full state dir: it must say so; the operator frees space
            if "No space left" not in got.stderr or "free space" not in got.stderr:
                fail("node %d did not start on a full disk and did not say why: %s" % (n, got.stderr.strip()))
            refused_starts += 1
            full[n] = 0
            free_disks(time.monotonic())
            got = subprocess.run(start, env=env, stderr=subprocess.PIPE, text=True, timeout=60)
        if got.returncode:
            fail("node %d did not start again: %s" % (n, got.stderr.strip()))

    try:
        for n in range(NODES):
            os.mkdir(s(n))
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % STATE_MB, "cshm-nemesis", s(n)], check=True)
        subprocess.run([LAUNCHER, "up", d, str(NODES)], env=env, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(m(0), "counter"), "wb") as f:  # owned by node 0, the metadata node
            f.write(b"%015d\0" % 0)
        for name in ("records", "mapped"):
            with open(os.path.join(m(0), name), "wb") as f:
                f.truncate(SLOTS * NODES * REC)
        for n in range(NODES):
            start_worker(n)
            start_mapper(n)
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 2.0))  # quiet between faults
            tend_mappers()
            free_disks(time.monotonic())
            victim = rng.randrange(NODES)
            kind = rng.choice(sorted(faults)) if faults else None
            if kind is None:
                continue
            if kind == "migrate":
                faults["migrate"] += 1
                name = rng.choice(["counter", "records", "mapped"])
                try:  # a move may be refused (a peer down, a move under way): the schedule goes on
                    os.setxattr(os.path.join(m(rng.randrange(NODES)), name), "user.cshm.owner", b"%d" % victim)
                except OSError:
                    refused_moves += 1
                continue
            if kind == "enospc":  # the disk stays full while the schedule goes on (restarts included)
                if victim not in full:
                    faults["enospc"] += 1
                    fill_up(os.path.join(s(victim), "filler"))
                    full[victim] = time.monotonic() + rng.uniform(0.3, 4.0)
                continue
            if kind == "partition":
                faults["partition"] += 1
                subprocess.run(["ip", "link", "set", link(victim), "down"], check=True)
                time.sleep(rng.uniform(0.3, 4.0))  # shorter and longer than the lease
                subprocess.run(["ip", "link", "set", link(victim), "up"], check=True)
            else:
                faults["kill9"] += 1
                restart(victim)
        free_disks(float("inf"))
        tend_mappers()
        open(stop, "w").close()
        for n, p in list(workers.items()) + list(mappers.items()):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                try:
                    stack = open("/proc/%d/stack" % p.pid).read()
                except OSError:
                    stack = "(no stack)"
                fail("a worker on node %d (%s) hung for 60 s after it was told to stop; in the kernel:\n%s"
                     % (n, "mapping" if p in mappers.values() else "locked counter and records", stack))
            if p.returncode == -signal.SIGBUS:
                sigbus += 1
        # Every kept write-back delivered (or refused), then check every node.
        wait_for(lambda: all(not os.listdir(os.path.join(d, "s%d" % n, "pending")) for n in range(NODES)), 60,
                 "the kept write-backs to be delivered")
        incs, recs, maps, lost, errs, worst = [], [], [], [], {}, 0.0
        slots = {}  # (file, node) -> Slots
        for n in range(NODES):
            for acks, name, fill, ack in (("acks%d", "records", b"r", "rec"), ("macks%d", "mapped", b"m", "map")):
                slots[name, n] = Slots(n, fill)
                slots[name, n].replay(os.path.join(d, acks % n), ack)
                for line in open(os.path.join(d, acks % n)):
                    kind, val = line.split()
                    if kind == "inc":
                        incs.append(int(val))
                    elif kind == ack:
                        (recs if name == "records" else maps).append((n, int(val)))
                    elif kind == "lost":
                        lost.append((name, n, int(val)))
                    elif kind == "err":
                        errs[val] = errs.get(val, 0) + 1
                    elif kind == "worst":
                        worst = max(worst, float(val))
        if sigbus:
            errs["SIGBUS"] = sigbus
        def read_all(n, name):  # just after the last fault a read may still fail (EIO): retried
            got = []

            def attempt():
                try:
                    with open(os.path.join(m(n), name), "rb") as f:
                        got.append(f.read())
                    return True
                except OSError:
                    return False

            wait_for(attempt, 30, "node %d to read %s" % (n, name))
            return got[0]

        finals = [int(read_all(n, "counter")[:16].split(b"\0")[0]) for n in range(NODES)]
        dup = len(incs) - len(set(incs))
        print("faults: %s (moves refused: %d, starts on a full disk refused: %d); frames dropped: %s; increments acknowledged %d, final %s, "
              "duplicates %d; records acknowledged %d written, %d mapped; errors seen by workers %s; "
              "slowest locked increment and record %.2f s"
              % (faults, refused_moves, refused_starts, "0.2 %" if "loss" in KINDS else "none", len(incs), finals, dup, len(recs),
                 len(maps), errs, worst))
        if len(set(finals)) != 1:
            fail("nodes disagree on the counter: %s" % finals)
        if dup:
            fail("%d increments were acknowledged with a value another had: lock exclusion broke" % dup)
        if incs and max(incs) > finals[0]:
            fail("acknowledged increments lost: the counter is %d, an acknowledged increment wrote %d"
                 % (finals[0], max(incs)))
        if len(incs) < 20:
            fail("only %d increments acknowledged: the workload hardly ran" % len(incs))
        if lost:
            fail("%d acknowledged records were gone when their writer came back to their slot (first: %s)"
                 % (len(lost), lost[:3]))
        if len(maps) < 20:
            fail("only %d mapped records acknowledged: the mapping workload hardly ran" % len(maps))
        for n in range(NODES):
            for name in ("records", "mapped"):
                data = read_all(n, name)
                bad = [(w, lost) for w in range(NODES) for slot in range(SLOTS)
                       for lost in [slots[name, w].intact(slot, data[slot * NODES * REC + w * REC:][:REC])]
                       if lost is not None]
                if bad:
                    fail("%d acknowledged records of %s lost or damaged, seen through node %d (first: %s)"
                         % (len(bad), name, n, bad[:3]))
        print("PASS")
    finally:
        open(stop, "w").close()
        for p in list(workers.values()) + list(mappers.values()):
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in range(NODES):
            subprocess.run(["ip", "link", "set", link(n), "up"], stderr=subprocess.DEVNULL)
        subprocess.run([LAUNCHER, "down", d], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.environ.get("CSHM_TEST_KEEP"):  # kept: the state dirs too, logs included (umount them after)
            for n in range(NODES):
                subprocess.run(["umount", s(n)], stderr=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
