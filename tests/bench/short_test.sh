#!/usr/bin/env bash
# The benchmark harness in its short mode: every case runs once on a 4-node
# cluster, the contended lock counter must come out exact (bench/run.py fails
# otherwise), and the JSON and the plot are written. No timing is asserted.
#   short_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
out=$(mktemp -d /tmp/cshm-bench-test.XXXXXX)
trap 'rm -rf "$out"' EXIT

# A build dir without the binaries is refused with a clear message.
if python3 "$src/bench/run.py" --short --build-dir "$out" --out "$out" 2>"$out/err"; then
  echo "FAIL: run.py accepted a build dir without binaries" >&2; exit 1
fi
grep -q "is missing; build first" "$out/err" || { echo "FAIL: unclear error: $(cat "$out/err")" >&2; exit 1; }

python3 "$src/bench/run.py" --short --build-dir "$build" --out "$out"

python3 - "$out/latest.json" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
want = ["cached_memset_gbs.shm", "cached_memset_gbs.cshm", "cached_rand_mops.shm", "cached_rand_mops.cshm",
        "fault_us.shm", "fault_us.floor", "fault_us.owner", "fault_us.remote",
        "seq_gbs.shm", "seq_gbs.floor", "seq_gbs.owner", "seq_gbs.remote", "read_gbs.remote",
        "tcp_rtt_us", "tcp_rtt_same_cpu_us", "tcp_stream_gbs", "msync_us.sharers_0", "msync_us.sharers_1", "msync_us.sharers_2",
        "msync_range_ms", "lock_rtt_us", "lock_counter_ops", "migrate_ms.1", "migrate_ms.4",
        "reread_gbs.before", "reread_gbs.after", "scaling_gbs.2", "scaling_gbs.4"]
# The real clients (fio, stress-ng, dd) and write(2) and the shim, on every target.
for t in ("shm", "floor", "owner"):
    want.append("fio_mibs." + t)
want.append("fio_mibs.remote")
for t in ("shm", "floor", "owner", "node1"):
    want += ["stress_mmap_ops." + t, "dd_s." + t, "pwrite_4k_us." + t, "pwrite_1m_gbs." + t]
want += ["shm_attach_us.native", "shm_attach_us.shim", "shm_attach_us.shim_remote"]
missing = [k for k in want if k not in r["cases"]]
assert not missing, "cases missing from latest.json: %s" % missing
for k, v in r["cases"].items():
    assert len(v["samples"]) == r["rounds"] == 1, k
    assert math.isfinite(v["median"]) and v["median"] > 0, (k, v)
names = [t["name"] for t in r["targets"]]
assert names == ["cached_memset", "cached_random", "owner_seq", "owner_fault", "remote_fault", "remote_seq",
                 "msync_2_sharers", "fio_shm", "fio_floor", "fio_remote", "stress_mmap", "pwrite_4k", "pwrite_1m",
                 "shm_attach", "shm_attach_remote"], names
for t in r["targets"]:
    assert t["met"] == (t["measured"] >= t["target"] if t["op"] == ">=" else t["measured"] <= t["target"]), t
assert r["mode"] == "short" and r["machine"]["cores"] >= 1
PY
head -c 8 "$out/latest.png" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" || { echo "FAIL: latest.png is not a PNG" >&2; exit 1; }
# fio and stress-ng left nothing on the FUSE floor or /dev/shm either.
if ls /dev/shm | grep -q "^cshm-bench\."; then echo "FAIL: a bench dir was left in /dev/shm" >&2; exit 1; fi
# Nothing of the run is left mounted.
if grep -q "cshm-bench\." /proc/mounts; then echo "FAIL: a bench mount was left behind" >&2; exit 1; fi
echo "bench short mode: OK"
