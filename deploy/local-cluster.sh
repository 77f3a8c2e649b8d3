#!/usr/bin/env bash
# A local cshm cluster for demos: N nodes on this machine, each its own cshmfs
# daemon with its own port on 127.0.0.1, mount point and state dir, sharing
# one config and secret. Everything lives under DIR.
#
#   deploy/local-cluster.sh up DIR [N]     start N nodes (default 3): DIR/mN
#   deploy/local-cluster.sh down DIR       unmount and stop every node of DIR
#   deploy/local-cluster.sh status DIR     show what runs
#
# `up` first cleans up what a crashed earlier run of the same DIR left behind.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${CSHMFS:-$here/build/bin/cshmfs}
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down|status DIR [N]" >&2; exit 2; }

alive() { [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" | grep -q '^Z'; }

# Mount points of DIR that are mounted (live or dead), the metadata node (m0)
# last: the others need it to answer until they are gone.
mounted() { awk -v d="$dir/m" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r; }

down() {
  for m in $(mounted); do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for p in "$dir"/s*/cshmfs.pid; do
    [ -s "$p" ] || continue
    pid=$(cat "$p")
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  return 0
}

case "$cmd" in
  up)
    n=${3:-3}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    down
    [ -s "$dir/secret" ] || head -c 32 /dev/urandom | base64 > "$dir/secret"
    chmod 600 "$dir/secret"
    port=$(( 20000 + RANDOM % 20000 ))
    {
      echo '[cluster]'; echo 'secret_file = "secret"'
      for i in $(seq 0 $((n - 1))); do printf '[[node]]\nid = %d\nhost = "127.0.0.1"\nport = %d\n' "$i" $((port + i)); done
    } > "$dir/cluster.toml"
    for i in $(seq 0 $((n - 1))); do
      mkdir -p "$dir/m$i"
      "$bin" "$dir/m$i" --config "$dir/cluster.toml" --node "$i" --state-dir "$dir/s$i"
    done
    echo "cluster of $n nodes up under $dir (mounts $dir/m0 .. $dir/m$((n - 1)))"
    ;;
  down)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    down
    ;;
  status)
    dir=$(cd "$dir" && pwd)
    for m in "$dir"/m*; do
      if grep -qs " $m fuse.cshmfs " /proc/mounts; then echo "$m: mounted"; else echo "$m: not mounted"; fi
    done
    for p in "$dir"/s*/cshmfs.pid; do
      [ -s "$p" ] && alive "$(cat "$p")" && echo "daemon $(cat "$p") of $(dirname "$p") runs"
    done
    true
    ;;
  *) echo "usage: $0 up|down|status DIR [N]" >&2; exit 2 ;;
esac
