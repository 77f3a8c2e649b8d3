#!/usr/bin/env bash
# The benchmark: installs Debian packages, builds, and runs bench/run.py (every
# case against its baseline, medians of 5 rounds; about 5 minutes on 2 cores).
# Arguments go to bench/run.py: --short, --rounds N, --out DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec python3 bench/run.py "$@"
