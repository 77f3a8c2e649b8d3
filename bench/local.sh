#!/usr/bin/env bash
# Runs local_bench on /dev/shm and on a fresh one-node cshm mount, alternating
# ROUNDS times, and prints medians and cshm/shm ratios. The cshm mount is
# unmounted and its daemon stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
bin=build/bin
work=$(mktemp -d /tmp/cshm-bench.XXXXXX)
mkdir -p "$work/mnt" "$work/shm"
cleanup() {
  grep -qs " $work/mnt fuse.cshmfs " /proc/mounts && fusermount3 -u -z "$work/mnt"
  rm -rf "$work"
  rm -rf /dev/shm/cshm-bench.$$
}
trap cleanup EXIT
"$bin/cshmfs" "$work/mnt" --state-dir "$work/state"
mkdir -p /dev/shm/cshm-bench.$$
for i in $(seq "$rounds"); do
  "$bin/local_bench" /dev/shm/cshm-bench.$$ >> "$work/shm.jsonl"
  "$bin/local_bench" "$work/mnt" >> "$work/cshm.jsonl"
done
python3 - "$work/shm.jsonl" "$work/cshm.jsonl" <<'PY'
import json, statistics, sys
shm = [json.loads(l) for l in open(sys.argv[1])]
cs = [json.loads(l) for l in open(sys.argv[2])]
print("%-18s %12s %12s %8s" % ("metric", "/dev/shm", "cshm", "ratio"))
for k in ("fault_us_median", "dirty_memset_gbs", "dirty_rand_mops"):
    a = statistics.median(r[k] for r in shm)
    b = statistics.median(r[k] for r in cs)
    print("%-18s %12.3f %12.3f %8.2f" % (k, a, b, b / a))
PY
