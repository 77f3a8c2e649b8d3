#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan, UBSan, LeakSanitizer) and runs
# each for a short while from the corpus in tests/fuzz/corpus (copied: the repo
# is not written). Fails on any crash, leak, or allocation over the limit (a
# length field trusted too much).
# Usage: run_fuzzers.sh BUILD_DIR [SECONDS]
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
build=$1
seconds=${2:-15}
if ! command -v clang++ >/dev/null; then echo "clang++ is missing (scripts/install-deps.sh installs it)"; exit 1; fi
cmake -S "$src" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"${JOBS:-2}" >/dev/null
for t in fuzz_frame fuzz_messages fuzz_config fuzz_args fuzz_shim; do
  corpus="$build/corpus-$t"
  rm -rf "$corpus" && mkdir -p "$corpus" && cp "$src/corpus/$t/"* "$corpus/"
  # A deadline of its own: a crash inside the sanitizer's report must not hang the suite.
  if ! timeout -k 5 $((seconds + 60)) "$build/$t" "$corpus" -max_total_time="$seconds" -malloc_limit_mb=128 -rss_limit_mb=1024 \
       -print_final_stats=1 -artifact_prefix="$build/$t-" > "$build/$t.log" 2>&1; then
    echo "FAIL: $t"; tail -40 "$build/$t.log"; exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/$t.log" | grep -o '[0-9]*$')
  echo "$t: $runs executions in ${seconds}s, corpus $(ls "$corpus" | wc -l) inputs, no crash, leak or oversized allocation"
done
