#!/usr/bin/env bash
# The main job: installs, builds, mounts a one-node cshm, and shows two
# processes (a C writer and a Python reader) sharing memory through a mapped
# file; then unmounts. Exits 0 only if every step did what it said.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

work=$(mktemp -d /tmp/cshm-demo.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt"
pid=""
# Running and not a zombie (an exited daemon may wait a moment to be reaped).
alive() { [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" | grep -q '^Z'; }
cleanup() {
  if grep -qs " $mnt fuse.cshmfs " /proc/mounts; then fusermount3 -u "$mnt" || fusermount3 -u -z "$mnt" || true; fi
  if [ -n "$pid" ] && alive "$pid"; then
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

say "Mounting cshm (one node) at $mnt"
build/bin/cshmfs "$mnt" --state-dir "$work/state" -o size=256m
pid=$(cat "$work/state/cshmfs.pid")
grep " $mnt " /proc/mounts
df -h "$mnt"

say "A C writer maps $mnt/board and writes a message; a Python reader maps the same file, reads it and answers"
build/bin/mmap_writer "$mnt/board" &
writer=$!
# The reader waits for the writer's message itself (with a deadline).
python3 examples/mmap_reader.py "$mnt/board"
wait "$writer"

say "The bytes are in cshm's store: read back with cat after the writer is gone"
head -c 64 "$mnt/board" | tr -d '\0'; echo

say "Unmounting"
fusermount3 -u "$mnt"
for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
if alive "$pid"; then echo "demo: the daemon did not exit after unmount" >&2; exit 1; fi
pid=""
say "Done: two processes shared memory through a cshm file."
