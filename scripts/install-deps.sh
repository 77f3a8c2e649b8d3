#!/usr/bin/env bash
# Installs the Debian 12 packages cshm builds and tests with. Idempotent: does
# nothing when everything is present. Needs root.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libfuse3-dev fuse3
  librocksdb-dev libboost-dev libspdlog-dev libfmt-dev libcli11-dev libtomlplusplus-dev libssl-dev libxxhash-dev
  libgtest-dev libgmock-dev
  python3 gnuplot-nox
  python3-sysv-ipc stress-ng fio
  spin clang libclang-rt-14-dev
  go-md2man lintian nlohmann-json3-dev python3-prometheus-client
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: these Debian packages are missing: ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
