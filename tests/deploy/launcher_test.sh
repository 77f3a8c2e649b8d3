#!/usr/bin/env bash
# The local cluster launcher and the deploy files, checked for real:
#  - up/down of a 3-node cluster in network namespaces leaves nothing behind
#    (no namespaces, links, mounts or daemons), and its nodes share data;
#  - a second `up` after a crashed run (daemons killed, mounts dead) recovers;
#  - the loopback fallback works;
#  - mount -t fuse.cshmfs with fstab-style options mounts a node;
#  - the systemd unit passes systemd-analyze verify.
# Usage: launcher_test.sh BUILD_BIN_DIR
set -euo pipefail
bindir=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
launcher="$here/deploy/local-cluster.sh"
export CSHMFS="$bindir/cshmfs"
dir=$(mktemp -d /tmp/cshm-launcher.XXXXXX)
tag=$(printf '%s' "$dir" | md5sum | cut -c1-4)
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() { "$launcher" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

leftovers() {
  { ip netns list 2>/dev/null | grep "^cshm-$tag-" || true
    ip -o link show 2>/dev/null | grep "cshm${tag}" || true
    grep " $dir/" /proc/mounts || true
    for p in "$dir"/s*/cshmfs.pid; do [ -s "$p" ] && [ -d "/proc/$(cat "$p")" ] && ! grep -q '^State:.*Z' "/proc/$(cat "$p")/status" && echo "daemon $(cat "$p")"; done
  } 2>/dev/null | grep -v '^$' || true
}

echo "== up in network namespaces, share, down"
"$launcher" up "$dir" 3
[ "$(ip netns list | grep -c "^cshm-$tag-n")" = 3 ] || fail "expected 3 namespaces"
echo "from node 0" > "$dir/m0/shared"
[ "$(cat "$dir/m2/shared")" = "from node 0" ] || fail "node 2 does not see node 0's file"
grep -q '10.213' "$dir/cluster.toml" || fail "nodes do not have their own addresses"
"$launcher" down "$dir"
[ -z "$(leftovers)" ] || fail "left behind after down: $(leftovers)"

echo "== a crashed run, then up again"
"$launcher" up "$dir" 3
for p in "$dir"/s*/cshmfs.pid; do kill -9 "$(cat "$p")"; done
"$launcher" up "$dir" 3
[ "$(cat "$dir/m1/shared")" = "from node 0" ] || fail "data lost across the crash"
"$launcher" down "$dir"
[ -z "$(leftovers)" ] || fail "left behind: $(leftovers)"

echo "== loopback fallback"
"$launcher" up "$dir" 2 --loopback
echo loop > "$dir/m1/l"
[ "$(cat "$dir/m0/l")" = loop ] || fail "loopback cluster does not share"
"$launcher" down "$dir"
[ -z "$(leftovers)" ] || fail "left behind: $(leftovers)"

echo "== the mount helper form, with fstab-style options"
# mount -t fuse.cshmfs runs mount.fuse3 with a sanitized PATH; run the helper
# directly so that it finds this build's cshmfs.
mkdir -p "$dir/mnt"
PATH="$bindir:$PATH" mount.fuse3 cshm "$dir/mnt" -t cshmfs -o "state_dir=$dir/helper-state,size=64m,nosuid,nodev"
grep -q " $dir/mnt fuse.cshmfs " /proc/mounts || fail "mount(8) did not mount it"
echo via-mount > "$dir/mnt/f" && [ "$(cat "$dir/mnt/f")" = via-mount ] || fail "helper mount unusable"
fusermount3 -u "$dir/mnt"
for _ in $(seq 100); do [ -s "$dir/helper-state/cshmfs.pid" ] || break; pid=$(cat "$dir/helper-state/cshmfs.pid"); [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" || break; sleep 0.05; done

echo "== systemd unit"
if command -v systemd-analyze >/dev/null; then
  unit="$dir/cshmfs@.service"
  # The unit names cshmfs without a path (systemd finds it in /usr/bin or
  # /usr/local/bin); here it is the build's. Its man pages are not installed.
  sed "s#^ExecStart=cshmfs #ExecStart=$bindir/cshmfs #" "$here/deploy/cshmfs@.service" > "$unit"
  grep -q "^ExecStart=$bindir/cshmfs " "$unit" || fail "the unit's ExecStart is not 'cshmfs ...'"
  out=$(systemd-analyze verify --man=no "$unit" 2>&1 | grep -v -E "Failed to (prepare|create) |Cannot add dependency job|No such file|not running" || true)
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
else
  echo "systemd-analyze not installed: skipped"
fi
echo "PASS"
