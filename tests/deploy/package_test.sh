#!/usr/bin/env bash
# The Debian package end to end: build it from BUILD_DIR with cpack, check it
# with lintian (no errors), install it with dpkg -i, mount with
# `mount -t cshmfs`, with an fstab line of type cshmfs and with
# `-t fuse.cshmfs` (each running only what the package installed), share a
# mapping between two processes and a System V segment through the installed
# shim, unmount, remove it with dpkg --purge, and check that nothing it
# installed is left.
#
# Usage: package_test.sh BUILD_DIR   (as root; it installs and removes the
# package "cshm" on this machine, so it refuses to run where one is installed)
set -euo pipefail
build=$(readlink -f "$1")
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (dpkg -i)"; exit 77; }
if dpkg-query -W -f='${Status}' cshm 2>/dev/null | grep -q "installed"; then
  echo "SKIP: a cshm package is installed here; this test would replace and remove it"
  exit 77
fi

work=$(mktemp -d /tmp/cshm-pkg.XXXXXX)
installed=
cleanup() {
  if mountpoint -q "$work/mnt" 2>/dev/null; then fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt"; fi
  if [ -n "$installed" ]; then dpkg --purge cshm >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Waits up to 10 s for a command to succeed.
wait_for() {
  local what=$1; shift
  for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done
  fail "$what"
}
# Only what the package installed: no build tree, no /usr/local.
run_installed() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "== building the package"
cpack --config "$build/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(ls "$work"/pkg/cshm_*_amd64.deb)
echo "$deb"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
for lib in libfuse3-3 librocksdb fuse3 libc6; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (dpkg-shlibdeps did not run?)"
done

echo "== lintian"
# Accepted warnings and infos are printed, errors fail the test.
rc=0
lintian --fail-on error --info --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 || rc=$?
grep -v "root privileges" "$work/lintian.txt" || true
[ $rc -eq 0 ] || fail "lintian reported errors (exit $rc)"

echo "== dpkg -i"
dpkg -i "$deb" >/dev/null
installed=1
for f in /usr/bin/cshmfs /usr/bin/cshmctl /sbin/mount.cshmfs /usr/lib/x86_64-linux-gnu/cshm/libcshm_ipc.so \
         /lib/systemd/system/cshmfs@.service /usr/share/doc/cshm/cluster.example.toml /usr/share/doc/cshm/copyright \
         /usr/share/man/man8/cshmfs.8.gz /usr/share/man/man8/cshmctl.8.gz /usr/share/man/man7/cshm.7.gz \
         /usr/share/man/man8/mount.cshmfs.8.gz; do
  [ -e "$f" ] || fail "$f not installed"
done
for page in cshmfs.8 cshmctl.8 cshm.7; do
  out=$(MANWIDTH=80 man --warnings -l "/usr/share/man/man${page##*.}/$page.gz" 2>&1 >/dev/null) || fail "man $page"
  [ -z "$out" ] || fail "man $page warns: $out"
done
[ "$(run_installed cshmfs --version)" != "" ] || fail "cshmfs --version"

mkdir -p "$work/mnt" "$work/state"
mounted_by() {  # the mount's type and its daemon's binary
  grep -q " $work/mnt fuse.cshmfs " /proc/self/mounts || fail "$1: $work/mnt is not a cshmfs mount"
  local pid
  pid=$(cat "$work/state/cshmfs.pid")
  [ "$(readlink "/proc/$pid/exe")" = /usr/bin/cshmfs ] || fail "$1: the daemon is $(readlink "/proc/$pid/exe"), not /usr/bin/cshmfs"
  echo "$pid"
}
unmount() {
  local pid=$1
  umount "$work/mnt"
  wait_for "the daemon $pid did not exit after umount" sh -c "! kill -0 $pid 2>/dev/null"
}

echo "== mount -t cshmfs"
run_installed mount -t cshmfs -o size=64m,state_dir="$work/state" cshm "$work/mnt"
pid=$(mounted_by "mount -t cshmfs")
# Two processes share one mapping: the reader maps first and sees the
# writer's store in its own mapping.
python3 - "$work/mnt/shared" <<'PY'
import mmap, os, subprocess, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 4096)
mm = mmap.mmap(fd, 4096)
writer = subprocess.run([sys.executable, "-c", """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
mm = mmap.mmap(fd, 4096)
mm[100:111] = b"from writer"
mm.flush()
""", path])
deadline = time.monotonic() + 10
while mm[100:111] != b"from writer":
    if writer.returncode != 0 or time.monotonic() > deadline:
        sys.exit("FAIL: the reader's mapping never showed the writer's store")
    time.sleep(0.01)
PY
# The installed shim: a System V segment becomes a file of the mount.
env -i PATH=/usr/bin:/bin LD_PRELOAD=/usr/lib/x86_64-linux-gnu/cshm/libcshm_ipc.so CSHM_MOUNT="$work/mnt" \
  python3 -c 'import sysv_ipc; m = sysv_ipc.SharedMemory(0x5eed, sysv_ipc.IPC_CREX, size=4096); m.write(b"sysv"); m.detach(); m.remove()' \
  || fail "a System V segment under the installed shim"
ls -a "$work/mnt/.sysv" >/dev/null 2>&1 || fail "the shim did not put the segment in the mount ($work/mnt/.sysv missing)"
unmount "$pid"

echo "== fstab line of type cshmfs"
echo "cshm $work/mnt cshmfs size=16m,state_dir=$work/state,_netdev,nofail 0 0" >"$work/fstab"
run_installed mount -T "$work/fstab" "$work/mnt"
pid=$(mounted_by "fstab")
[ "$(cat "$work/mnt/shared" | head -c 111 | tail -c 11)" = "from writer" ] || fail "the first mount's file is not there after remounting"
unmount "$pid"

echo "== mount -t fuse.cshmfs (mount.fuse3)"
run_installed mount -t fuse.cshmfs -o state_dir="$work/state" cshm "$work/mnt"
pid=$(mounted_by "mount -t fuse.cshmfs")
unmount "$pid"

echo "== a bad option: a clear error, nothing mounted"
if out=$(run_installed mount -t cshmfs -o state_dir="$work/state",bogus=1 cshm "$work/mnt" 2>&1); then
  fail "mount with an unknown option succeeded"
fi
[[ $out == *"unknown mount option 'bogus=1'"* ]] || fail "the error does not name the option: $out"
mountpoint -q "$work/mnt" && fail "mounted after all"

echo "== dpkg --purge"
dpkg -L cshm >"$work/files"
dpkg --purge cshm >/dev/null
installed=
left=()
while read -r f; do
  [ -d "$f" ] && continue
  if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done <"$work/files"
for d in /usr/share/doc/cshm /usr/lib/x86_64-linux-gnu/cshm; do [ -e "$d" ] && left+=("$d"); done
[ ${#left[@]} -eq 0 ] || fail "left after dpkg --purge: ${left[*]}"
echo PASS
