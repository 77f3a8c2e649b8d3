#!/usr/bin/env python3
"""Leases under a real partition: 3 nodes in network namespaces, node 1's link
taken down for longer than a lease and brought back (DESIGN.md "Faults").

- a_release_with_a_cut_off_sharer_returns_once_its_lease_ran_out: node 2's
  fsync of a page node 1 caches returns 0 (not EIO) while node 1 is cut off;
- no_stale_read_after_a_partition_heals: every read on node 1 that succeeds
  after the heal returns the bytes released during the partition (node 1
  gave up its cached pages when its lease ran out);
- a_lost_lock_refuses_the_writes_made_under_it: node 1 held an fcntl lock
  when it was cut off; node 2 took it after the lease and wrote; after the
  heal node 1's write under its lost lock and its unlock fail with EIO, and
  every node reads node 2's bytes.
- failing_operations_return_within_the_request_timeout: node 0 (owner and
  metadata node) cut off: on node 1 a read of an uncached page (EIO), a
  mapping's fault (SIGBUS), a write (EIO) and a stat (EIO) each return
  within request_timeout_ms plus a margin of 1 s, however many requests
  each would make.

Usage: lease_test.py BUILD_BIN_DIR
"""
import errno
import fcntl
import hashlib
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(HERE, "deploy", "local-cluster.sh")
LEASE_S = 1.5
TIMEOUT_S = 1.5


from deploy_util import fail, wait_for  # noqa: E402  (beside this script)


def read_fresh(path, n, off=0):
    """pread through a new descriptor; None if it fails."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.pread(fd, n, off)
    except OSError:
        return None
    finally:
        os.close(fd)


def on_node(code, timeout=30):
    """Runs Python `code` in another process (another lock owner); its exit status."""
    return subprocess.run([sys.executable, "-c", code], timeout=timeout).returncode


def main():
    if subprocess.run(["ip", "netns", "add", "cshm-probe-%d" % os.getpid()], stderr=subprocess.DEVNULL).returncode:
        print("no network namespaces here: skipped")
        return
    subprocess.run(["ip", "netns", "del", "cshm-probe-%d" % os.getpid()])
    d = tempfile.mkdtemp(prefix="cshm-lease.")
    tag = hashlib.md5(d.encode()).hexdigest()[:4]
    link = lambda i: "cshm%sv%d" % (tag, i)
    env = dict(os.environ, CSHMFS=os.path.join(BIN, "cshmfs"),
               CSHM_CLUSTER_SETTINGS="request_timeout_ms = %d\nheartbeat_ms = 250\nlease_ms = %d"
               % (TIMEOUT_S * 1000, LEASE_S * 1000),
               CSHM_EXTRA_CONFIG="[migrate]\nenabled = false")
    m = lambda i, name: os.path.join(d, "m%d" % i, name)
    held = []
    try:
        subprocess.run([LAUNCHER, "up", d, "3"], env=env, check=True, stdout=subprocess.DEVNULL)

        print("== a_release_with_a_cut_off_sharer_returns_once_its_lease_ran_out")
        with open(m(2, "p"), "wb") as f:  # owned by node 2
            f.write(b"o" * 3 * 4096)
        if read_fresh(m(1, "p"), 3) != b"ooo":
            fail("node 1 does not see the data")
        kept = os.open(m(1, "p"), os.O_RDONLY)  # node 1 caches page 0
        held.append(kept)
        subprocess.run(["ip", "link", "set", link(1), "down"], check=True)
        cut_at = time.monotonic()
        fd = os.open(m(2, "p"), os.O_RDWR)
        os.pwrite(fd, b"NEW", 0)
        try:
            os.fsync(fd)
        except OSError as e:
            fail("node 2's release failed with %s while node 1 was cut off" % errno.errorcode.get(e.errno))
        os.close(fd)
        took = time.monotonic() - cut_at
        print("   released in %.2f s (lease %.1f s)" % (took, LEASE_S))

        print("== no_stale_read_after_a_partition_heals")
        time.sleep(max(0.0, 2 * LEASE_S - took))  # a time, not a condition: the partition's length
        subprocess.run(["ip", "link", "set", link(1), "up"], check=True)
        reads = []

        def node1_reads_something():
            got = read_fresh(m(1, "p"), 3)
            if got is not None:
                reads.append(got)
            try:
                reads.append(os.pread(kept, 3, 0))
            except OSError:
                pass
            return len(reads) >= 2

        wait_for(node1_reads_something, 30, "node 1 to read again after the heal")
        if any(r != b"NEW" for r in reads):
            fail("after the heal node 1 read %r; the release during the partition wrote b'NEW'" % reads)

        print("== a_lost_lock_refuses_the_writes_made_under_it")
        with open(m(0, "counter"), "wb") as f:  # owned by node 0
            f.write(b"0" * 4096)
        with open(m(0, "probe"), "wb") as f:
            f.write(b"p" * 4096)
        fd1 = os.open(m(1, "counter"), os.O_RDWR)
        held.append(fd1)
        fcntl.lockf(fd1, fcntl.LOCK_EX)
        if os.pread(fd1, 1, 0) != b"0":
            fail("node 1 does not read the counter")
        subprocess.run(["ip", "link", "set", link(1), "down"], check=True)
        code = ("import fcntl, os\n"
                "fd = os.open(%r, os.O_RDWR)\n"
                "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
                "os.pwrite(fd, b'FRESH', 0)\n"
                "os.fsync(fd)\n"
                "fcntl.lockf(fd, fcntl.LOCK_UN)\n"
                "os.close(fd)\n") % m(2, "counter")
        if on_node(code) != 0:
            fail("node 2 could not take the cut-off node's lock and write under it")
        subprocess.run(["ip", "link", "set", link(1), "up"], check=True)
        wait_for(lambda: read_fresh(m(1, "probe"), 1) == b"p", 30, "node 1 to reach node 0 again")
        try:
            os.pwrite(fd1, b"STALE", 0)
            fail("node 1 wrote under a lock it had lost")
        except OSError as e:
            if e.errno != errno.EIO:
                fail("node 1's write under its lost lock failed with %s, not EIO" % errno.errorcode.get(e.errno))
        try:
            fcntl.lockf(fd1, fcntl.LOCK_UN)
            fail("the unlock of a lost lock returned success")
        except OSError as e:
            if e.errno != errno.EIO:
                fail("the unlock of a lost lock failed with %s, not EIO" % errno.errorcode.get(e.errno))
        for n in range(3):
            got = read_fresh(m(n, "counter"), 5)
            if got != b"FRESH":
                fail("node %d reads %r, not node 2's acknowledged b'FRESH'" % (n, got))
        # Once unlocked, the lock can be taken again, and writes work.
        fcntl.lockf(fd1, fcntl.LOCK_EX)
        os.pwrite(fd1, b"AGAIN", 0)
        os.fsync(fd1)
        fcntl.lockf(fd1, fcntl.LOCK_UN)
        if read_fresh(m(2, "counter"), 5) != b"AGAIN":
            fail("node 1's write under its new lock is not seen on node 2")

        print("== failing_operations_return_within_the_request_timeout")
        with open(m(0, "far"), "wb") as f:  # owned by node 0
            f.write(b"f" * 64 * 4096)
        fd = os.open(m(1, "far"), os.O_RDWR)
        held.append(fd)
        os.pread(fd, 1, 0)
        subprocess.run(["ip", "link", "set", link(0), "down"], check=True)
        bound = TIMEOUT_S + 1.0

        def within(what, op, expect):
            t0 = time.monotonic()
            got = op()
            took = time.monotonic() - t0
            print("   %s: %s after %.2f s" % (what, got, took))
            if got != expect:
                fail("%s on node 1 gave %s, not %s" % (what, got, expect))
            if took > bound:
                fail("%s on node 1 took %.2f s to fail; the bound is %.1f s" % (what, took, bound))

        def errno_of(f):
            try:
                f()
                return "success"
            except OSError as e:
                return errno.errorcode.get(e.errno)

        def fault():
            pid = os.fork()
            if pid == 0:
                mm = mmap.mmap(fd, 64 * 4096)
                mm[30 * 4096]
                os._exit(0)
            _, st = os.waitpid(pid, 0)
            return "SIGBUS" if os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGBUS else "status %d" % st

        within("a read of an uncached page", lambda: errno_of(lambda: os.pread(fd, 1, 40 * 4096)), "EIO")
        within("a mapping's fault", fault, "SIGBUS")
        within("a write", lambda: errno_of(lambda: os.pwrite(fd, b"w", 50 * 4096)), "EIO")
        within("a stat", lambda: errno_of(lambda: os.stat(m(1, "far"))), "EIO")
        subprocess.run(["ip", "link", "set", link(0), "up"], check=True)
        print("PASS")
    finally:
        for fd in held:
            try:
                os.close(fd)
            except OSError:
                pass
        for n in range(3):
            subprocess.run(["ip", "link", "set", link(n), "up"], stderr=subprocess.DEVNULL)
        subprocess.run([LAUNCHER, "down", d], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.environ.get("CSHM_TEST_KEEP"): shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
