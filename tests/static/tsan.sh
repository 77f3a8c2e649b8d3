#!/usr/bin/env bash
# Builds the unit and simulation tests with ThreadSanitizer (GCC's, -O0, in a
# build dir of their own) and runs them: fails on any data race, lock
# misuse or use after free that it reports. No suppressions: a report is
# either a bug or, said here with the reason, the sanitizer's.
# Usage: tsan.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
tests=(common_test store_test meta_test net_test ownership_test migrator_test fs_test sim_scenarios_test sim_test)
# Nice: the suite's timing-sensitive mounts run beside this build.
nice -n 10 cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="-fsanitize=thread" \
  -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >"$build.configure.log" 2>&1 ||
  { tail -30 "$build.configure.log"; exit 1; }
nice -n 10 cmake --build "$build" -j"${JOBS:-2}" --target "${tests[@]}" >"$build.build.log" 2>&1 ||
  { tail -30 "$build.build.log"; exit 1; }
failed=0
for t in "${tests[@]}"; do
  log="$build/$t.tsan.log"
  # exitcode 66 on a report; a deadline of its own so that a hang in a report cannot hang the suite.
  rc=0
  TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1" timeout -k 5 600 "$build/bin/$t" >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "$t: $(grep -c '^\[       OK \]' "$log") tests, no ThreadSanitizer report"
  else
    failed=1
    echo "FAIL: $t (exit $rc; 66: ThreadSanitizer): $(grep -c 'WARNING: ThreadSanitizer' "$log") report(s); $log"
    grep -A25 'WARNING: ThreadSanitizer' "$log" | head -120
    grep '^\[  FAILED  \]' "$log" | head -20
  fi
done
exit $failed
