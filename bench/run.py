#!/usr/bin/env python3
"""The cshm benchmark: every case of issue #7 in one run, each against its
baseline measured in the same run, ROUNDS times; prints medians and ratios,
checks them against the targets, writes OUT/latest.json and OUT/latest.png.

It starts everything it measures and stops it again (also on failure or
Ctrl-C): the FUSE floor (bench/fuse_floor.cc, one in-memory file) and a cshm
cluster of 8 nodes on loopback (4 with --short), automatic migration off.
Node 0 owns the files; "remote" means node 1 reading them. The measurements
themselves are bench/cshm_bench.cc cases, run as separate processes.

  bench/run.py [--short] [--rounds N] [--build-dir DIR] [--out DIR]

--short is the suite's mode: small sizes, one round, a few seconds; it proves
the harness works (and that the contended counter lost nothing) and asserts
no timing. Exit status: 0 when every case ran (targets missed are reported,
not failed), 1 when a case failed, 2 on bad arguments.
"""
import argparse
import base64
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KIB4 = 4096


class BenchError(Exception):
    pass


def free_ports(n):
    """n TCP ports free on 127.0.0.1 right now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def is_mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def wait_for(cond, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise BenchError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class Setup:
    """The floor mount and the cshm cluster; stop() undoes whatever started."""

    def __init__(self, build, work, nodes, floor_mib):
        self.bin = os.path.join(build, "bin")
        self.work = work
        self.nodes = nodes
        self.floor_mib = floor_mib
        self.floor = os.path.join(work, "floor")
        self.floor_proc = None
        self.mounts = [os.path.join(work, "m%d" % i) for i in range(nodes)]
        self.daemon_pids = []
        self.shm = "/dev/shm/cshm-bench.%d" % os.getpid()

    def start(self):
        os.makedirs(self.shm)
        os.makedirs(self.floor)
        self.floor_proc = subprocess.Popen(
            [os.path.join(self.bin, "fuse_floor"), self.floor, str(self.floor_mib)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for(lambda: is_mounted(self.floor) or self.floor_proc.poll() is not None, "the FUSE floor to mount")
        if self.floor_proc.poll() is not None:
            raise BenchError("fuse_floor exited with %d" % self.floor_proc.returncode)
        with open(os.path.join(self.work, "secret"), "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        config = os.path.join(self.work, "cluster.toml")
        with open(config, "w") as f:
            f.write('[cluster]\nsecret_file = "secret"\nrequest_timeout_ms = 20000\n')
            f.write("[migrate]\nenabled = false\n")
            for i, port in enumerate(free_ports(self.nodes)):
                f.write('[[node]]\nid = %d\nhost = "127.0.0.1"\nport = %d\n' % (i, port))
        for i, m in enumerate(self.mounts):
            os.makedirs(m)
            state = os.path.join(self.work, "s%d" % i)
            # cshmfs returns once mounted (or with the reason it could not).
            subprocess.run([os.path.join(self.bin, "cshmfs"), m, "--config", config, "--node", str(i),
                            "--state-dir", state], check=True, timeout=60, stdin=subprocess.DEVNULL)
            with open(os.path.join(state, "cshmfs.pid")) as f:
                self.daemon_pids.append(int(f.read().split()[0]))

    def stop(self):
        for m in self.mounts + [self.floor]:
            if is_mounted(m):
                if subprocess.run(["fusermount3", "-u", m], stderr=subprocess.DEVNULL).returncode != 0:
                    subprocess.run(["fusermount3", "-u", "-z", m])
        for pid in self.daemon_pids:
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, 9)
        if self.floor_proc is not None:
            try:
                self.floor_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.floor_proc.kill()
                self.floor_proc.wait()
        subprocess.run(["rm", "-rf", self.shm])


class Runner:
    def __init__(self, build):
        self.exe = os.path.join(build, "bin", "cshm_bench")

    def argv(self, *args):
        return [self.exe] + [str(a) for a in args]

    def run(self, *args, timeout=300, env=None):
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                           env=None if env is None else dict(os.environ, **env))
        if p.returncode != 0:
            raise BenchError("cshm_bench %s failed: %s" % (" ".join(map(str, args)), p.stderr.strip()))
        return json.loads(p.stdout.strip().splitlines()[-1])

    def together(self, cases, timeout=300):
        """Runs the cases at once, all starting at one CLOCK_MONOTONIC instant
        (each case takes it as its last argument); returns their results."""
        start_ns = time.monotonic_ns() + 300_000_000
        procs = [subprocess.Popen(self.argv(*c, start_ns), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in cases]
        out = []
        try:
            for c, p in zip(cases, procs):
                so, se = p.communicate(timeout=timeout)
                if p.returncode != 0:
                    raise BenchError("cshm_bench %s failed: %s" % (" ".join(map(str, c)), se.strip()))
                out.append(json.loads(so.strip().splitlines()[-1]))
        finally:
            for p in procs:  # on a failure or timeout, the others stop too
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return out


def fio_mibs(target, sizes, filename=None):
    """fio's mmap random read/write of 4 KiB blocks, as a user would run it
    (fio's default preallocation): read + write MiB/s. `target` is the
    directory fio makes its file in, or with `filename` the file itself."""
    where = ["--filename=" + filename] if filename else ["--directory=" + target]
    cmd = ["fio", "--name=bench", "--ioengine=mmap", "--rw=randrw", "--bs=4k", "--size=%dm" % sizes["fio_mib"],
           "--runtime=%d" % sizes["client_s"], "--time_based", "--unlink=%d" % (0 if filename else 1),
           "--output-format=json"] + where
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=sizes["client_s"] * 10 + 120)
    if p.returncode != 0:
        raise BenchError("%s failed: %s" % (" ".join(cmd), (p.stderr or p.stdout).strip()[-400:]))
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    if job["error"] != 0:
        raise BenchError("fio on %s: error %d" % (target, job["error"]))
    return (job["read"]["bw"] + job["write"]["bw"]) / 1024


def stress_ng_ops(target, sizes):
    """stress-ng's file-backed mmap stressor in directory `target`: bogo ops/s
    (real time), from its --metrics-brief table."""
    cmd = ["stress-ng", "--mmap", "2", "--mmap-file", "--mmap-bytes", "%dM" % sizes["stress_mib"],
           "-t", str(sizes["client_s"]), "--temp-path", target, "--metrics-brief"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=sizes["client_s"] * 10 + 120)
    if p.returncode != 0:
        raise BenchError("%s failed: %s" % (" ".join(cmd), (p.stderr or p.stdout).strip()[-400:]))
    for line in (p.stdout + p.stderr).splitlines():
        f = line.split()
        if len(f) >= 9 and f[3] == "mmap" and f[4].isdigit():
            return float(f[8])
    raise BenchError("stress-ng printed no mmap metrics: %s" % (p.stdout + p.stderr).strip()[-400:])


def dd_s(path, mib):
    """dd bs=4k of `mib` MiB into a new file, fsynced (conv=fsync): seconds."""
    t0 = time.monotonic()
    p = subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=4k", "count=%d" % (mib * 256), "conv=fsync",
                        "status=none"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise BenchError("dd to %s failed: %s" % (path, p.stderr.strip()))
    t = time.monotonic() - t0
    os.unlink(path)
    return t


def aggregate(results, amount):
    """Sum of `amount` over the interval from the first start to the last end."""
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return sum(r[amount] for r in results) / span


def one_round(r, s, sizes, samples):
    def add(name, value):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BenchError("case %s gave %r" % (name, value))
        samples.setdefault(name, []).append(value)

    m = s.mounts
    data_mib = s.floor_mib
    shm_data = os.path.join(s.shm, "data")
    r.run("make", shm_data, data_mib)
    r.run("make", m[0] + "/bench-data", data_mib)
    floor_data = s.floor + "/data"

    # 1. Cached access, the whole mapping dirty.
    for name, d in (("shm", s.shm), ("cshm", m[0])):
        c = r.run("cached", d, sizes["cached_mib"])
        add("cached_memset_gbs." + name, c["memset_gbs"])
        add("cached_rand_mops." + name, c["rand_mops"])

    # 2 and 3. First touch on the owner and from a remote node; the floors.
    for name, f in (("shm", shm_data), ("floor", floor_data), ("owner", m[0] + "/bench-data"),
                    ("remote", m[1] + "/bench-data")):
        add("fault_us." + name, r.run("fault", f, sizes["fault_pages"])["us"])
        add("seq_gbs." + name, r.run("seq", f)["gbs"])
    add("read_gbs.remote", r.run("read", m[1] + "/bench-data")["gbs"])
    rtt = r.run("tcp-rtt")
    add("tcp_rtt_us", rtt["us"])
    add("tcp_rtt_same_cpu_us", rtt["us_same_cpu"])
    add("tcp_stream_gbs", r.run("tcp-stream", sizes["stream_mib"])["gbs"])

    # 4. Releases to a remote owner (node 0), written on node 1.
    r.run("make", m[0] + "/bench-msync", 1)
    sharers = [m[2] + "/bench-msync", m[0] + "/bench-msync"]
    for k in (0, 1, 2):
        add("msync_us.sharers_%d" % k, r.run("msync", m[1] + "/bench-msync", *sharers[:k])["us"])
    r.run("make", m[0] + "/bench-range", sizes["range_mib"])
    add("msync_range_ms", r.run("msync-range", m[1] + "/bench-range", sizes["range_mib"])["ms"])

    # 5. Locks at node 0: a round trip from node 1; a counter from 3 nodes.
    counter = m[0] + "/bench-counter"
    with open(counter, "wb") as f:
        f.write(bytes(KIB4))
    add("lock_rtt_us", r.run("lock-rtt", m[1] + "/bench-counter")["us"])
    n = sizes["counter_ops"]
    res = r.together([("lock-counter", m[i] + "/bench-counter", n) for i in (0, 1, 2)])
    add("lock_counter_ops", aggregate(res, "ops"))
    with open(m[2] + "/bench-counter", "rb") as f:
        got = int.from_bytes(f.read(8), "little")
    if got != 3 * n:
        raise BenchError("the lock-protected counter is %d after 3 x %d increments: updates were lost" % (got, n))

    # 6. Migration to a node holding none of the segment; a remote-heavy
    #    workload before and after its segment moves to the reader.
    for mib in sizes["migrate_mib"]:
        f = "/bench-mig-%d" % mib
        r.run("make", m[0] + f, mib)
        add("migrate_ms.%d" % mib, r.run("migrate", m[2] + f, 2)["ms"])
        os.unlink(m[0] + f)
    r.run("make", m[0] + "/bench-work", sizes["work_mib"])
    add("reread_gbs.before", r.run("reread", m[1] + "/bench-work", sizes["reread_rounds"])["gbs"])
    r.run("migrate", m[1] + "/bench-work", 1)
    add("reread_gbs.after", r.run("reread", m[1] + "/bench-work", sizes["reread_rounds"])["gbs"])

    # 7. Scaling: nodes 1..k read one segment of node 0 at once.
    for nodes in sizes["scaling_nodes"]:
        res = r.together([("read", m[i] + "/bench-data") for i in range(1, nodes)])
        add("scaling_gbs.%d" % nodes, aggregate(res, "bytes") / 1e9)

    # 8. Real clients nobody here wrote, and write(2), as a user runs them:
    #    /dev/shm, the FUSE floor, cshm on one node (node 0's own files), and
    #    a remote node (fio on node 1 of a file node 0 serves; stress-ng and
    #    the writes make their files on node 1, which then serves them, with
    #    the namespace on node 0).
    r.run("make", m[0] + "/bench-fio", sizes["fio_mib"])
    for name, d in (("shm", s.shm), ("floor", s.floor), ("owner", m[0])):
        add("fio_mibs." + name, fio_mibs(d, sizes))
    add("fio_mibs.remote", fio_mibs(m[1], sizes, filename=m[1] + "/bench-fio"))
    os.unlink(m[0] + "/bench-fio")
    for name, d in (("shm", s.shm), ("floor", s.floor), ("owner", m[0]), ("node1", m[1])):
        add("stress_mmap_ops." + name, stress_ng_ops(d, sizes))
        add("dd_s." + name, dd_s(d + "/bench-dd", sizes["dd_mib"]))
        small = r.run("pwrite", d + "/bench-pwrite", KIB4, sizes["pwrite_small"])
        add("pwrite_4k_us." + name, small["us"])
        big = r.run("pwrite", d + "/bench-pwrite", 1 << 20, sizes["pwrite_big"])
        add("pwrite_1m_gbs." + name, big["gbs"])
        os.unlink(d + "/bench-pwrite")
    # shmget + shmat + shmdt of an existing key: native, the shim on the
    # creating node, the shim on another node.
    key = 0x5eed0000 + os.getpid() % 0xffff
    shim = os.path.join(os.path.dirname(r.exe), "..", "lib", "libcshm_ipc.so")
    add("shm_attach_us.native", r.run("shm", key, sizes["shm_ops"])["us"])
    r.run("shm-rm", key)
    add("shm_attach_us.shim", r.run("shm", key, sizes["shm_ops"], env={"LD_PRELOAD": shim, "CSHM_MOUNT": m[0]})["us"])
    add("shm_attach_us.shim_remote",
        r.run("shm", key, sizes["shm_ops"], env={"LD_PRELOAD": shim, "CSHM_MOUNT": m[1]})["us"])
    r.run("shm-rm", key, env={"LD_PRELOAD": shim, "CSHM_MOUNT": m[0]})

    for f in ("/bench-data", "/bench-msync", "/bench-range", "/bench-counter", "/bench-work"):
        os.unlink(m[0] + f)


# (name, description, value from medians, op, target)
TARGETS = [
    ("cached_memset", "cached memset, 256 MiB dirty / /dev/shm",
     lambda v: v["cached_memset_gbs.cshm"] / v["cached_memset_gbs.shm"], ">=", 0.9),
    ("cached_random", "cached random load+store / /dev/shm",
     lambda v: v["cached_rand_mops.cshm"] / v["cached_rand_mops.shm"], ">=", 0.9),
    ("owner_seq", "owner first-touch sequential / FUSE floor",
     lambda v: v["seq_gbs.owner"] / v["seq_gbs.floor"], ">=", 0.8),
    ("owner_fault", "owner random 4 KiB fault / FUSE floor",
     lambda v: v["fault_us.owner"] / v["fault_us.floor"], "<=", 1.3),
    ("remote_fault", "remote random 4 KiB fault / (FUSE floor + TCP round trip)",
     lambda v: v["fault_us.remote"] / (v["fault_us.floor"] + v["tcp_rtt_us"]), "<=", 1.5),
    ("remote_seq", "remote first-touch sequential / loopback TCP stream",
     lambda v: v["seq_gbs.remote"] / v["tcp_stream_gbs"], ">=", 0.5),
    ("msync_2_sharers", "msync 1 page, 2 sharers / TCP round trip",
     lambda v: v["msync_us.sharers_2"] / v["tcp_rtt_us"], "<=", 3.0),
    ("fio_shm", "fio mmap randrw 4k, one node / /dev/shm",
     lambda v: v["fio_mibs.owner"] / v["fio_mibs.shm"], ">=", 0.5),
    ("fio_floor", "fio mmap randrw 4k, one node / FUSE floor",
     lambda v: v["fio_mibs.owner"] / v["fio_mibs.floor"], ">=", 0.9),
    ("fio_remote", "fio mmap randrw 4k, remote node / /dev/shm",
     lambda v: v["fio_mibs.remote"] / v["fio_mibs.shm"], ">=", 0.25),
    ("stress_mmap", "stress-ng --mmap bogo ops, one node / FUSE floor",
     lambda v: v["stress_mmap_ops.owner"] / v["stress_mmap_ops.floor"], ">=", 0.8),
    ("pwrite_4k", "4 KiB pwrite latency, one node / FUSE floor",
     lambda v: v["pwrite_4k_us.owner"] / v["pwrite_4k_us.floor"], "<=", 1.5),
    ("pwrite_1m", "1 MiB pwrite throughput, one node / FUSE floor",
     lambda v: v["pwrite_1m_gbs.owner"] / v["pwrite_1m_gbs.floor"], ">=", 0.8),
    ("shm_attach", "shmget+shmat+shmdt under the shim / native",
     lambda v: v["shm_attach_us.shim"] / v["shm_attach_us.native"], "<=", 20.0),
    ("shm_attach_remote", "the same on another node, in ms (at most 1 ms)",
     lambda v: v["shm_attach_us.shim_remote"] / 1000, "<=", 1.0),
]

UNITS = {"gbs": "GB/s", "us": "us", "ms": "ms", "mops": "M/s", "ops": "ops/s", "mibs": "MiB/s", "_s": "s"}


def unit_of(name):
    for suffix, unit in UNITS.items():
        if name.split(".")[0].endswith(suffix):
            return unit
    return ""


def machine():
    def cmd(*a):
        try:
            return subprocess.run(a, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "libfuse": cmd("pkg-config", "--modversion", "fuse3"),
            "debian": open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else ""}


def plot(result, png, work):
    """Two panels: each target's measured ratio beside its bound; the
    aggregate read throughput against the number of nodes."""
    tdat = os.path.join(work, "targets.dat")
    with open(tdat, "w") as f:
        for i, t in enumerate(result["targets"]):
            f.write('%d "%s" %.4f %.4f\n' % (i, t["name"], t["measured"], t["target"]))
    sdat = os.path.join(work, "scaling.dat")
    with open(sdat, "w") as f:
        for k, v in sorted(result["cases"].items()):
            if k.startswith("scaling_gbs."):
                f.write("%s %.4f\n" % (k.split(".")[1], v["median"]))
    script = f"""
set terminal pngcairo size 1400,520 noenhanced
set output '{png}'
set multiplot layout 1,2 title 'cshm bench ({result["mode"]}, {result["date"]}, medians of {result["rounds"]})'
set style fill solid 0.6
set boxwidth 0.4
set logscale y
set ylabel 'ratio (log scale)'
set xtics rotate by 30 right
set key top left
plot '{tdat}' using ($1-0.2):3:xtic(2) with boxes title 'measured', \\
     '' using ($1+0.2):4 with points pt 7 ps 1.5 title 'target bound'
unset logscale y
set xtics norotate
set xlabel 'nodes (1 owner, the rest reading)'
set ylabel 'aggregate GB/s'
set yrange [0:*]
plot '{sdat}' using 1:2:xtic(1) with linespoints pt 7 title 'one segment, all readers at once'
unset multiplot
"""
    p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError("gnuplot failed: " + p.stderr.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--short", action="store_true", help="seconds, small sizes, one round (the suite's mode)")
    ap.add_argument("--rounds", type=int, default=None, help="repetitions of every case (default 5, short 1)")
    ap.add_argument("--build-dir", default=os.path.join(here, "..", "build"))
    ap.add_argument("--out", default=os.path.join(here, "results"))
    a = ap.parse_args()
    rounds = a.rounds if a.rounds is not None else (1 if a.short else 5)
    if rounds < 1:
        ap.error("--rounds must be at least 1")
    build = os.path.abspath(a.build_dir)
    for exe in ("cshmfs", "cshm_bench", "fuse_floor"):
        if not os.access(os.path.join(build, "bin", exe), os.X_OK):
            print("bench: %s/bin/%s is missing; build first (./scripts/build.sh)" % (build, exe), file=sys.stderr)
            return 2
    if a.short:
        sizes = dict(data_mib=8, cached_mib=16, fault_pages=256, stream_mib=64, range_mib=4, counter_ops=100,
                     migrate_mib=[1, 4], work_mib=4, reread_rounds=2, scaling_nodes=[2, 4], nodes=4,
                     fio_mib=8, stress_mib=2, client_s=1, dd_mib=4, pwrite_small=200, pwrite_big=4, shm_ops=20)
    else:
        sizes = dict(data_mib=64, cached_mib=256, fault_pages=2048, stream_mib=1024, range_mib=16,
                     counter_ops=1000, migrate_mib=[1, 16, 256], work_mib=16, reread_rounds=8,
                     scaling_nodes=[2, 4, 8], nodes=8,
                     fio_mib=256, stress_mib=16, client_s=10, dd_mib=256, pwrite_small=5000, pwrite_big=256,
                     shm_ops=500)
    work = tempfile.mkdtemp(prefix="cshm-bench.")
    os.chmod(work, 0o755)
    setup = Setup(build, work, sizes["nodes"], sizes["data_mib"])
    samples = {}
    try:
        setup.start()
        runner = Runner(build)
        for i in range(rounds):
            one_round(runner, setup, sizes, samples)
            print("bench: round %d of %d done" % (i + 1, rounds), file=sys.stderr)
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        setup.stop()

    medians = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "short" if a.short else "full",
        "rounds": rounds,
        "machine": machine(),
        "sizes": sizes,
        "cases": {k: {"median": medians[k], "unit": unit_of(k), "samples": samples[k]} for k in sorted(samples)},
        "targets": [],
    }
    for name, what, f, op, bound in TARGETS:
        v = f(medians)
        met = v >= bound if op == ">=" else v <= bound
        result["targets"].append({"name": name, "what": what, "measured": round(v, 4), "op": op, "target": bound,
                                  "met": met})
    os.makedirs(a.out, exist_ok=True)
    js = os.path.join(a.out, "latest.json")
    with open(js, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    png = os.path.join(a.out, "latest.png")
    try:
        plot(result, png, work)
    except (BenchError, OSError) as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        subprocess.run(["rm", "-rf", work])

    print("%-28s %12s  %s" % ("case", "median", "unit"))
    for k in sorted(medians):
        print("%-28s %12.3f  %s" % (k, medians[k], unit_of(k)))
    print()
    print("%-62s %9s %9s  %s" % ("target", "measured", "bound", ""))
    for t in result["targets"]:
        print("%-62s %9.3f %2s %6.2f  %s" % (t["what"], t["measured"], t["op"], t["target"],
                                             "met" if t["met"] else "MISSED"))
    print("\nwrote %s and %s" % (js, png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
