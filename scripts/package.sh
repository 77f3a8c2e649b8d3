#!/usr/bin/env bash
# Builds the Debian package: build/cshm_<version>_amd64.deb (after
# ./scripts/build.sh; builds what is missing). Install it with
#   dpkg -i build/cshm_*_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/CMakeCache.txt ] || ./scripts/build.sh
cmake --build build -j"${JOBS:-2}"
cd build
cpack -G DEB >/dev/null
ls "$PWD"/cshm_*_amd64.deb
