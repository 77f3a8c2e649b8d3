#!/usr/bin/env bash
# The soak run (not part of the quick suite): a 3-node cluster, random mixed
# operations through every node for SECONDS (default 180), checked against a
# model of the expected contents. Run: cmake --build build --target soak
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bindir=${1:-$here/build/bin}
seconds=${2:-180}
export CSHMFS="$bindir/cshmfs"
dir=$(mktemp -d /tmp/cshm-soak.XXXXXX)
trap '"$here/deploy/local-cluster.sh" down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$here/deploy/local-cluster.sh" up "$dir" 3
python3 "$here/tests/soak/soak.py" "$seconds" "${SEED:-$RANDOM}" "$dir/m0" "$dir/m1" "$dir/m2"
