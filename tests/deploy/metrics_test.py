#!/usr/bin/python3
"""Metrics and cluster health on a 3-node cluster (loopback ports): every
node serves Prometheus metrics (CSHM_METRICS_PORT), read with
python3-prometheus-client's own parser.

- the_counters_move_the_way_a_workload_moves_them: node 1 faults in pages of
  a file node 0 owns, writes through a mapping and msyncs, node 2 takes and
  drops an fcntl lock on it, then it is moved to node 2; each counter on the
  node that did the work grows by at least what was done;
- the_endpoint_survives_garbage: bytes that are not HTTP, a header larger
  than the limit, a POST, an unknown path, 40 connections at once, and one
  that never sends anything; the endpoint answers a scrape after each;
- cshmctl_status_says_when_a_node_is_down: exit 0 and "healthy" with every
  node up; after kill -9 of node 2, exit 2, its row DOWN and a line naming
  it; --json says the same to machines.

Usage: metrics_test.py BUILD_BIN_DIR   (Debian's python3: the parser is its python3-prometheus-client)
"""
import fcntl
import json
import mmap
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from deploy_util import fail, wait_for  # noqa: E402  (beside this script)

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(HERE, "deploy", "local-cluster.sh")
PAGE = 4096


def free_port_base(n):
    """A base port P such that P..P+n-1 are free on 127.0.0.1 now."""
    for _ in range(50):
        base = random.randrange(30000, 60000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    fail("no free ports for the metrics endpoints")


def scrape(port):
    """{(name, frozenset(labels)): value} of every sample, via the real parser."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
            fail("metrics content type %r" % ctype)
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before, after, name, at_least, node):
    b, a = value(before, name), value(after, name)
    if a - b < at_least:
        fail("node %d: %s went from %s to %s, expected at least +%s" % (node, name, b, a, at_least))
    print("   node %d %s: %g -> %g" % (node, name, b, a))


def main():
    d = tempfile.mkdtemp(prefix="cshm-metrics.")
    base = free_port_base(3)
    env = dict(os.environ, CSHMFS=os.path.join(BIN, "cshmfs"), CSHM_METRICS_PORT=str(base),
               CSHM_EXTRA_CONFIG="[migrate]\nenabled = false")
    m = lambda i, name="": os.path.join(d, "m%d" % i, name)
    ctl = os.path.join(BIN, "cshmctl")
    try:
        subprocess.run([LAUNCHER, "up", d, "3", "--loopback"], env=env, check=True, stdout=subprocess.DEVNULL)
        for i in range(3):
            wait_for(lambda: value(scrape(base + i), "cshm_peer_up", node=str((i + 1) % 3)) == 1, 10,
                     "node %d to hold its lease with node %d" % (i, (i + 1) % 3))

        print("== the_counters_move_the_way_a_workload_moves_them")
        pages = 16
        with open(m(0, "seg"), "wb") as f:  # owned by node 0
            f.write(b"o" * pages * PAGE)
        keep2 = os.open(m(2, "seg"), os.O_RDONLY)  # node 2 caches page 0: node 1's release must wait for its drop
        os.pread(keep2, PAGE, 0)
        before = [scrape(base + i) for i in range(3)]
        fd = os.open(m(1, "seg"), os.O_RDWR)
        mm = mmap.mmap(fd, pages * PAGE)
        if mm[0:pages * PAGE:PAGE] != b"o" * pages:  # one byte of every page: each faulted in from node 0
            fail("node 1 read wrong bytes")
        mm[10:15] = b"HELLO"  # 5 bytes that differ from what node 1 fetched
        mm.flush()
        mm.close()
        os.close(fd)
        os.close(keep2)
        lock_holder = subprocess.run([sys.executable, "-c", """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
fcntl.lockf(fd, fcntl.LOCK_UN)
""", m(2, "seg")], timeout=30)
        if lock_holder.returncode != 0:
            fail("the lock on node 2 failed")
        os.setxattr(m(0, "seg"), "user.cshm.owner", b"2")
        after = [scrape(base + i) for i in range(3)]
        grew(before[0], after[0], "cshm_fetches_served_total", 1, 0)
        grew(before[1], after[1], "cshm_remote_fetch_seconds_count", 1, 1)
        grew(before[1], after[1], "cshm_writebacks_sent_total", 1, 1)
        grew(before[1], after[1], "cshm_writeback_bytes_sent_total", 5, 1)
        grew(before[0], after[0], "cshm_writebacks_applied_total", 1, 0)
        grew(before[0], after[0], "cshm_writeback_bytes_applied_total", 5, 0)
        grew(before[0], after[0], "cshm_invalidation_rounds_total", 1, 0)
        grew(before[1], after[1], "cshm_release_seconds_count", 1, 1)
        grew(before[0], after[0], "cshm_lock_grants_total", 1, 0)
        grew(before[0], after[0], "cshm_migrations_total", 1, 0)
        grew(before[0], after[0], "cshm_migration_bytes_total", pages * PAGE, 0)
        grew(before[0], after[0], "cshm_migration_seconds_count", 1, 0)
        if value(after[0], "cshm_page_store_bytes") >= value(before[0], "cshm_page_store_bytes") + pages * PAGE:
            fail("node 0's page store did not shrink when its segment moved away")
        if value(after[2], "cshm_page_store_bytes") < pages * PAGE:
            fail("node 2's page store does not hold the moved segment: %s" % value(after[2], "cshm_page_store_bytes"))
        if value(after[0], "cshm_rocksdb", property="estimate-num-keys") <= 0:
            fail("the metadata node shows no RocksDB figures")
        if value(after[1], "cshm_twin_bytes") < PAGE:
            fail("node 1 shows no twins although it holds pages of node 0's segment")

        print("== the_endpoint_survives_garbage")
        def raw(data, read=True):
            s = socket.create_connection(("127.0.0.1", base + 1), timeout=10)
            try:
                if data:
                    s.sendall(data)
                return s.recv(4096) if read else b""
            finally:
                s.close()
        for what, data, want in (("not HTTP", b"\x00\xffgarbage\r\n\r\n", b" 400 "),
                                 ("a huge header", b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b" 400 "),
                                 ("a POST", b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b" 405 "),
                                 ("an unknown path", b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n", b" 404 ")):
            got = raw(data)
            if want not in got.split(b"\r\n")[0]:
                fail("%s: answered %r, expected %r" % (what, got[:60], want))
            scrape(base + 1)
        silent = [socket.create_connection(("127.0.0.1", base + 1), timeout=10) for _ in range(40)]
        for s in silent:
            s.close()
        wait_for(lambda: bool(scrape(base + 1)), 10, "a scrape after 40 idle connections")
        idle = socket.create_connection(("127.0.0.1", base + 1), timeout=10)  # says nothing: closed by the server
        idle.settimeout(15)
        if idle.recv(1) != b"":
            fail("an idle connection got bytes")
        idle.close()
        scrape(base + 1)

        print("== cshmctl_status_says_when_a_node_is_down")
        st = subprocess.run([ctl, "status", m(1)], capture_output=True, text=True, timeout=30)
        print(st.stdout, end="")
        if st.returncode != 0 or "healthy" not in st.stdout:
            fail("cshmctl status with every node up: exit %d\n%s%s" % (st.returncode, st.stdout, st.stderr))
        pid2 = int(open(os.path.join(d, "s2", "cshmfs.pid")).read())
        os.kill(pid2, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d/stat" % pid2) or
                 open("/proc/%d/stat" % pid2).read().split()[2] == "Z", 10, "node 2 to die")
        st = subprocess.run([ctl, "status", m(1)], capture_output=True, text=True, timeout=30)
        print(st.stdout, end="")
        rows = {line.split()[0]: line.split() for line in st.stdout.splitlines() if line[:1].isdigit()}
        if st.returncode != 2 or rows.get("2", [None, None, None])[2] != "DOWN" or "PROBLEM: node 2" not in st.stdout:
            fail("cshmctl status with node 2 killed: exit %d\n%s%s" % (st.returncode, st.stdout, st.stderr))
        if rows["0"][2] != "up" or rows["1"][2] != "up":
            fail("cshmctl status shows a live node down")
        js = subprocess.run([ctl, "status", "--json", m(0)], capture_output=True, text=True, timeout=30)
        doc = json.loads(js.stdout)
        nodes = {n["id"]: n for n in doc["nodes"]}
        if js.returncode != 2 or nodes[2]["reachable"] or not nodes[0]["reachable"] or not doc["problems"]:
            fail("cshmctl status --json with node 2 killed: exit %d\n%s" % (js.returncode, js.stdout))
        print("PASS")
    finally:
        subprocess.run([LAUNCHER, "down", d], stdout=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
