#!/usr/bin/env bash
# Starts a 3-node cluster on loopback, runs cluster_bench ROUNDS times, prints
# medians and ratios to the limits measured in the same run, and tears the
# cluster down (also on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
bin=$PWD/build/bin
work=$(mktemp -d /tmp/cshm-bench.XXXXXX)
pids=()
cleanup() {
  for i in 0 1 2; do
    grep -qs " $work/m$i fuse.cshmfs " /proc/mounts && { fusermount3 -u "$work/m$i" || fusermount3 -u -z "$work/m$i"; }
  done
  rm -rf "$work"
}
trap cleanup EXIT
head -c 32 /dev/urandom | base64 > "$work/secret"
port=$(( 20000 + RANDOM % 20000 ))
{
  echo '[cluster]'; echo 'secret_file = "secret"'; echo 'request_timeout_ms = 20000'
  echo '[migrate]'; echo 'enabled = false'
  for i in 0 1 2; do printf '[[node]]\nid = %d\nhost = "127.0.0.1"\nport = %d\n' "$i" $((port + i)); done
} > "$work/cluster.toml"
for i in 0 1 2; do
  mkdir -p "$work/m$i"
  "$bin/cshmfs" "$work/m$i" --config "$work/cluster.toml" --node "$i" --state-dir "$work/s$i"
done
for r in $(seq "$rounds"); do
  "$bin/cluster_bench" "$work/m0" "$work/m1" "$work/m2" >> "$work/results.jsonl"
done
python3 - "$work/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
print(json.dumps(m, indent=1))
print("remote fault / TCP 4 KiB round trip  = %.2f" % (m["remote_fault_us"] / m["tcp_rtt_us"]))
print("remote fault / local (owner) fault   = %.2f" % (m["remote_fault_us"] / m["local_fault_us"]))
print("remote sequential read / /dev/shm    = %.3f" % (m["remote_seq_gbs"] / m["shm_seq_gbs"]))
for k in (0, 1, 2):
    print("msync, %d sharers / TCP round trip   = %.2f" % (k, m["msync_us_sharers_%d" % k] / m["tcp_rtt_us"]))
print("migration ms for 1 / 16 / 256 MiB    = %.1f / %.1f / %.1f" % (m["migrate_ms_1"], m["migrate_ms_16"], m["migrate_ms_256"]))
print("remote-heavy re-read after / before  = %.2f" % (m["reread_gbs_after"] / m["reread_gbs_before"]))
PY
