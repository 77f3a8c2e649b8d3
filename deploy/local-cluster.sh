#!/usr/bin/env bash
# A local cshm cluster for demos and tests: N nodes on this machine, each its
# own cshmfs daemon with its own mount point (DIR/mI) and state dir (DIR/sI).
#
#   deploy/local-cluster.sh up DIR [N] [--loopback]   start N nodes (default 3)
#   deploy/local-cluster.sh down DIR                  stop and remove everything of DIR
#   deploy/local-cluster.sh status DIR
#
# By default every node runs in a network namespace of its own, with its own
# address on a private bridge (veth pairs; 10.213.X.0/24, never routed
# anywhere), so that nodes look like separate hosts. Without network namespaces
# (or with --loopback) nodes share 127.0.0.1 with distinct ports. The daemons
# only enter the network namespace: their mounts are in the caller's mount
# namespace, where users see them.
#
# `up` first removes what a crashed earlier run of the same DIR left behind
# (mounts, daemons, namespaces, links). A slower LAN is emulated by the
# transport's own seam: set CSHM_NET_DELAY_US (and CSHM_NET_LOSS_PPM) in the
# environment of `up` (this kernel has no tc netem).
# CSHM_METRICS_PORT=P makes node i serve Prometheus metrics at its address, port P + i.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${CSHMFS:-$here/build/bin/cshmfs}
cmd=${1:-}; dir=${2:-}
usage() { echo "usage: $0 up DIR [N] [--loopback] | down DIR | status DIR" >&2; exit 2; }
[ -n "$cmd" ] && [ -n "$dir" ] || usage

alive() { [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" | grep -q '^Z'; }

# Names derived from DIR, so that clusters of different DIRs can coexist and a
# crashed run's leftovers are found again. Interface names stay under 15 chars.
tag_of() { printf '%s' "$1" | md5sum | cut -c1-4; }
ns_name() { echo "cshm-$tag-n$1"; }
bridge() { echo "cshm${tag}br"; }
veth() { echo "cshm${tag}v$1"; }
subnet() { echo "10.213.$(( 0x${tag:0:2} ))"; }

mounted() { awk -v d="$dir/m" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r; }

# Every thread gone or a zombie (a zombie leader may still have live threads).
dead() { local t; for t in /proc/"$1"/task/*/stat; do [ -r "$t" ] || continue; sed 's/.*) //' "$t" | grep -q '^Z' || return 1; done; return 0; }
down() {
  # The FUSE connections of our mounts, noted before unmounting them: a
  # daemon killed while its thread waits in the kernel inside a notify (for a
  # page a read holds, the read waiting for that daemon) keeps /dev/fuse open
  # and never dies until its connection is aborted.
  local conns m p pid c
  conns=$(awk -v d="$dir/m" 'index($5, d) == 1 { split($3, a, ":"); print a[2] }' /proc/self/mountinfo)
  for m in $(mounted); do
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for p in "$dir"/s*/cshmfs.pid; do
    [ -s "$p" ] || continue
    pid=$(cat "$p")
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
    for _ in $(seq 30); do dead "$pid" && break; sleep 0.1; done
    if ! dead "$pid"; then
      mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
      for c in $conns; do [ -w "/sys/fs/fuse/connections/$c/abort" ] && echo 1 > "/sys/fs/fuse/connections/$c/abort"; done
      for _ in $(seq 50); do dead "$pid" && break; sleep 0.1; done
    fi
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^cshm-$tag-n" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^cshm${tag}" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  return 0
}

netns_works() { ip netns add "cshm-$tag-probe" 2>/dev/null && ip netns del "cshm-$tag-probe"; }

case "$cmd" in
  up)
    n=3; loopback=0
    for a in "${@:3}"; do
      case "$a" in --loopback) loopback=1 ;; [0-9]*) n=$a ;; *) usage ;; esac
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    tag=$(tag_of "$dir")
    down
    if [ $loopback = 0 ] && ! netns_works; then
      echo "network namespaces are not available here: using loopback ports" >&2
      loopback=1
    fi
    [ -s "$dir/secret" ] || head -c 32 /dev/urandom | base64 > "$dir/secret"
    chmod 600 "$dir/secret"
    port=$(( 20000 + RANDOM % 20000 ))
    if [ $loopback = 0 ]; then
      ip link add "$(bridge)" type bridge
      ip link set "$(bridge)" up
      for i in $(seq 0 $((n - 1))); do
        ns=$(ns_name "$i")
        ip netns add "$ns"
        ip link add "$(veth "$i")" type veth peer name eth0 netns "$ns"
        ip link set "$(veth "$i")" master "$(bridge)" up
        ip -n "$ns" addr add "$(subnet).$((10 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
      done
    fi
    {
      echo '[cluster]'; echo 'secret_file = "secret"'
      # CSHM_CLUSTER_SETTINGS: more [cluster] keys, e.g. "lease_ms = 2000".
      [ -n "${CSHM_CLUSTER_SETTINGS:-}" ] && printf '%s\n' "$CSHM_CLUSTER_SETTINGS"
      for i in $(seq 0 $((n - 1))); do
        if [ $loopback = 0 ]; then host="$(subnet).$((10 + i))"; p=7400; else host=127.0.0.1; p=$((port + i)); fi
        printf '[[node]]\nid = %d\nhost = "%s"\nport = %d\n' "$i" "$host" "$p"
        # CSHM_METRICS_PORT=P: node i serves Prometheus metrics at its host, port P + i.
        if [ -n "${CSHM_METRICS_PORT:-}" ]; then printf 'metrics = "%s:%d"\n' "$host" $((CSHM_METRICS_PORT + i)); fi
      done
    } > "$dir/cluster.toml"
    [ -n "${CSHM_EXTRA_CONFIG:-}" ] && printf '%s\n' "$CSHM_EXTRA_CONFIG" >> "$dir/cluster.toml"
    for i in $(seq 0 $((n - 1))); do
      mkdir -p "$dir/m$i"
      if [ $loopback = 0 ]; then
        nsenter --net="/run/netns/$(ns_name "$i")" -- \
          "$bin" "$dir/m$i" --config "$dir/cluster.toml" --node "$i" --state-dir "$dir/s$i"
      else
        "$bin" "$dir/m$i" --config "$dir/cluster.toml" --node "$i" --state-dir "$dir/s$i"
      fi
    done
    how=$([ $loopback = 0 ] && echo "network namespaces, $(subnet).10.." || echo "loopback")
    echo "cluster of $n nodes up under $dir ($how); mounts $dir/m0 .. $dir/m$((n - 1))"
    ;;
  down)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    tag=$(tag_of "$dir")
    down
    ;;
  status)
    dir=$(cd "$dir" && pwd)
    tag=$(tag_of "$dir")
    for m in "$dir"/m*; do
      if grep -qs " $m fuse.cshmfs " /proc/mounts; then echo "$m: mounted"; else echo "$m: not mounted"; fi
    done
    for p in "$dir"/s*/cshmfs.pid; do
      [ -s "$p" ] && alive "$(cat "$p")" && echo "daemon $(cat "$p") of $(dirname "$p") runs"
    done
    ip netns list 2>/dev/null | grep "^cshm-$tag-n" | sed 's/^/namespace /' || true
    true
    ;;
  *) usage ;;
esac
