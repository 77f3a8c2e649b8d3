#!/usr/bin/env python3
"""The nemesis: 3 nodes in network namespaces, 0.2 % of frames dropped, and a
schedule of partitions and kill -9s (the owner and metadata node included)
while a worker on every node
  - increments one counter under an fcntl lock (F_SETLKW; pread; pwrite(+1);
    fsync; F_UNLCK: acknowledged when fsync and unlock returned 0), and
  - writes checksummed 64-byte records with pwrite+fsync into a file whose
    pages every worker shares (acknowledged when fsync returned 0).
Afterwards, on every node: no acknowledged increment lost and no value
acknowledged twice; every acknowledged record intact.

Usage: nemesis_test.py BUILD_BIN_DIR [SECONDS] [SEED] [KINDS]
   SECONDS of nemesis, default 36 (the suite's run; a soak passes more);
   KINDS, default "kill9,partition,loss,migrate": the faults to inject; "migrate"
   also moves the counter or the records file to a random node now and then
   (user.cshm.owner, from a random node), under the same schedule.
"""
import errno
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 36.0
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else random.randrange(1 << 30)
KINDS = (sys.argv[4] if len(sys.argv) > 4 else "kill9,partition,loss,migrate").split(",")
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(HERE, "deploy", "local-cluster.sh")
NODES = 3
SLOTS = 4096  # records per worker at most
REC = 64

WORKER = r'''
import errno, fcntl, hashlib, os, struct, sys, time
node, mount, acks_path, stop_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
NODES, SLOTS, REC = %d, %d, %d
acks = open(acks_path, "a", buffering=1)
counter = records = None
i = 0
worst = 0.0
def record(node, i):
    body = struct.pack("<III", 0xC5A11D, node, i).ljust(REC - 8, b"r")
    return body + hashlib.blake2b(body, digest_size=8).digest()
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
        os.pwrite(counter, b"%%015d\0" %% (v + 1), 0)
        os.fsync(counter)
        fcntl.lockf(counter, fcntl.LOCK_UN)
        acks.write("inc %%d\n" %% (v + 1))
        if i < SLOTS:
            os.pwrite(records, record(node, i), (i * NODES + node) * REC)
            os.fsync(records)
            acks.write("rec %%d\n" %% i)
            i += 1
    except OSError as e:
        acks.write("err %%s\n" %% errno.errorcode.get(e.errno, e.errno))
        closeall()
        time.sleep(0.05)
    worst = max(worst, time.monotonic() - t0)
acks.write("worst %%.3f\n" %% worst)
closeall()
''' % (NODES, SLOTS, REC)


import deploy_util  # noqa: E402  (beside this script)


def fail(msg):
    deploy_util.fail(msg, "FAIL (seed %d)" % SEED)


def wait_for(cond, timeout, what):
    deploy_util.wait_for(cond, timeout, what, "FAIL (seed %d)" % SEED, poll=0.1)


def record(node, i):
    body = struct.pack("<III", 0xC5A11D, node, i).ljust(REC - 8, b"r")
    return body + hashlib.blake2b(body, digest_size=8).digest()


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
    faults = {k: 0 for k in ("partition", "kill9", "migrate") if k in KINDS}
    refused_moves = 0
    stop = os.path.join(d, "stop")

    def start_worker(n):
        workers[n] = subprocess.Popen([sys.executable, "-c", WORKER, str(n), m(n), os.path.join(d, "acks%d" % n), stop],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

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
        subprocess.run(["nsenter", "--net=/run/netns/cshm-%s-n%d" % (tag, n), "--", os.path.join(BIN, "cshmfs"), m(n),
                        "--config", os.path.join(d, "cluster.toml"), "--node", str(n), "--state-dir",
                        os.path.join(d, "s%d" % n)], env=env, check=True)

    try:
        subprocess.run([LAUNCHER, "up", d, str(NODES)], env=env, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(m(0), "counter"), "wb") as f:  # owned by node 0, the metadata node
            f.write(b"%015d\0" % 0)
        with open(os.path.join(m(0), "records"), "wb") as f:
            f.truncate(SLOTS * NODES * REC)
        for n in range(NODES):
            start_worker(n)
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 2.0))  # quiet between faults
            victim = rng.randrange(NODES)
            kind = rng.choice(sorted(faults)) if faults else None
            if kind is None:
                continue
            if kind == "migrate":
                faults["migrate"] += 1
                name = rng.choice(["counter", "records"])
                try:  # a move may be refused (a peer down, a move under way): the schedule goes on
                    os.setxattr(os.path.join(m(rng.randrange(NODES)), name), "user.cshm.owner", b"%d" % victim)
                except OSError:
                    refused_moves += 1
                continue
            if kind == "partition":
                faults["partition"] += 1
                subprocess.run(["ip", "link", "set", link(victim), "down"], check=True)
                time.sleep(rng.uniform(0.3, 4.0))  # shorter and longer than the lease
                subprocess.run(["ip", "link", "set", link(victim), "up"], check=True)
            else:
                faults["kill9"] += 1
                restart(victim)
        open(stop, "w").close()
        for n, p in workers.items():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                fail("the worker on node %d hung for 60 s after it was told to stop" % n)
        # Every kept write-back delivered (or refused), then check every node.
        wait_for(lambda: all(not os.listdir(os.path.join(d, "s%d" % n, "pending")) for n in range(NODES)), 60,
                 "the kept write-backs to be delivered")
        incs, recs, errs, worst = [], [], {}, 0.0
        for n in range(NODES):
            for line in open(os.path.join(d, "acks%d" % n)):
                kind, val = line.split()
                if kind == "inc":
                    incs.append(int(val))
                elif kind == "rec":
                    recs.append((n, int(val)))
                elif kind == "err":
                    errs[val] = errs.get(val, 0) + 1
                elif kind == "worst":
                    worst = max(worst, float(val))
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
        print("faults: %s (moves refused: %d); frames dropped: %s; increments acknowledged %d, final %s, "
              "duplicates %d; records acknowledged %d; errors seen by workers %s; slowest operation %.2f s"
              % (faults, refused_moves, "0.2 %" if "loss" in KINDS else "none", len(incs), finals, dup, len(recs),
                 errs, worst))
        if len(set(finals)) != 1:
            fail("nodes disagree on the counter: %s" % finals)
        if dup:
            fail("%d increments were acknowledged with a value another had: lock exclusion broke" % dup)
        if incs and max(incs) > finals[0]:
            fail("acknowledged increments lost: the counter is %d, an acknowledged increment wrote %d"
                 % (finals[0], max(incs)))
        if len(incs) < 20:
            fail("only %d increments acknowledged: the workload hardly ran" % len(incs))
        for n in range(NODES):
            data = read_all(n, "records")
            bad = [(w, i) for (w, i) in recs if data[(i * NODES + w) * REC:(i * NODES + w + 1) * REC] != record(w, i)]
            if bad:
                fail("%d acknowledged records lost or damaged, seen through node %d (first: %s)" % (len(bad), n, bad[:3]))
        print("PASS")
    finally:
        open(stop, "w").close()
        for p in workers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in range(NODES):
            subprocess.run(["ip", "link", "set", link(n), "up"], stderr=subprocess.DEVNULL)
        subprocess.run([LAUNCHER, "down", d], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.environ.get("CSHM_TEST_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
