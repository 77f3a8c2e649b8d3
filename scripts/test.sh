#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs Debian packages, builds,
# and runs every unit and integration test (integration tests mount real cshmfs
# filesystems, so this needs root and /dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
cd build
ctest --output-on-failure -j"${JOBS:-2}" --timeout 300 "$@"
