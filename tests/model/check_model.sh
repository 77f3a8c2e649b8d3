#!/usr/bin/env bash
# Model-checks ownership/coherence.pml with spin (docs/model.md):
#  1. the protocol as built: every reachable state of one write + release per
#     writer, with node 0's kernel reading at any moment: no deadlock, no
#     assertion (visibility at release, no lost update) may fail;
#  2. two variants that must fail, so that the model is known to be able to:
#     a write-back that waits for its round (deadlock), and a release that does
#     not wait for its round (a stale read), and one that skips its Sync
#     although a write-back's answer said a round was pending;
#  3. the ownership transfer (migration.pml): writers on a third node and on
#     the target, the target's kernel reading, a move that may abort or lose
#     the directory's answer, two attempts whose aborts may arrive late;
#     nothing acknowledged is lost, no deadlock, and the variants that trust
#     a lost answer or an unchecked twin, serve before the commit or ignore
#     move ids must lose a write, the one that freezes before the rounds must
#     deadlock;
#  4. locks as release points under faults (locks.pml): a holder cut off
#     while alive and healed, an owner restart, late write-backs; the variants
#     without the holder-side lease, with unconditional late write-backs,
#     without the grace period, with a silent unlock of a lost lock, and with
#     the unlock before the round must each fail.
# Usage: check_model.sh MODEL WORKDIR
set -euo pipefail
model=$(realpath "$1")
work=$2
mkdir -p "$work"
cd "$work"
run() {  # name, spin -D flags... (MODEL: the file, default the coherence model)
  local name=$1; shift
  rm -f ./*.trail
  spin "$@" -a "${MODEL:-$model}" >/dev/null
  gcc -O2 -w -DSAFETY -DCOLLAPSE -DVECTORSZ=2048 -o "pan_$name" pan.c
  ./"pan_$name" -m100000 -w26 > "$name.out" 2>&1 || true
  grep -E "errors:|states, stored" "$name.out" | sed "s/^/$name: /"
}
run protocol -DITER=1
grep -q "errors: 0" protocol.out || { echo "FAIL: the protocol model has errors"; cat protocol.out; exit 1; }
grep -q "search not completed" protocol.out && { echo "FAIL: the search did not complete"; exit 1; }
run write_waits -DITER=1 -DWRITE_WAITS_FOR_ROUND
grep -q "invalid end state" write_waits.out || { echo "FAIL: the deadlock variant was not caught"; exit 1; }
run sync_skips -DITER=1 -DSYNC_SKIPS_ROUNDS
grep -q "assertion violated" sync_skips.out || { echo "FAIL: the stale-read variant was not caught"; exit 1; }
run sync_without_flag -DITER=1 -DSYNC_WITHOUT_FLAG
grep -q "assertion violated" sync_without_flag.out || { echo "FAIL: the skipped-sync variant was not caught"; exit 1; }
# Ownership transfer (migration.pml beside the coherence model): exhaustive,
# and the variant that trusts a lost answer of the directory update must lose
# an acknowledged write.
migration=$(dirname "$model")/migration.pml
MODEL=$migration run migration
grep -q "errors: 0" migration.out || { echo "FAIL: the migration model has errors"; cat migration.out; exit 1; }
MODEL=$migration run trust_lost_answer -DTRUST_LOST_ANSWER
grep -q "assertion violated" trust_lost_answer.out || { echo "FAIL: the lost-answer variant was not caught"; exit 1; }
# ...the variant that installs the target's twin without the hash check must
# lose the target's own write-back, and the one that freezes before waiting
# for the rounds must deadlock on the target's locked folio.
MODEL=$migration run trust_twin -DTRUST_TWIN
grep -q "assertion violated" trust_twin.out || { echo "FAIL: the unchecked-twin variant was not caught"; exit 1; }
MODEL=$migration run freeze_before_rounds -DFREEZE_BEFORE_ROUNDS
grep -q "invalid end state" freeze_before_rounds.out || { echo "FAIL: the freeze-first deadlock was not caught"; exit 1; }
# ...and the target that serves before the commit, and the one that takes a
# late abort of an earlier attempt for the current move, must lose writes.
for v in SERVE_BEFORE_COMMIT NO_MOVE_ID; do
  MODEL=$migration run "$v" -D"$v"
  grep -q "assertion violated" "$v.out" || { echo "FAIL: the migration variant $v was not caught"; exit 1; }
done
# Locks as release points (locks.pml), with a holder that may crash: and the
# variant that unlocks before the round is acknowledged must read stale.
locks=$(dirname "$model")/locks.pml
MODEL=$locks run locks
grep -q "errors: 0" locks.out || { echo "FAIL: the locks model has errors"; cat locks.out; exit 1; }
MODEL=$locks run unlock_before_sync -DUNLOCK_BEFORE_SYNC
grep -q "assertion violated" unlock_before_sync.out || { echo "FAIL: the early-unlock variant was not caught"; exit 1; }
for v in OWNER_FORGETS_FIRST LATE_UNCONDITIONAL NO_GRACE; do
  MODEL=$locks run "$v" -D"$v"
  grep -q "assertion violated" "$v.out" || { echo "FAIL: the locks variant $v was not caught"; exit 1; }
done
MODEL=$locks run LOST_UNLOCK_UNSENT -DLOST_UNLOCK_UNSENT
grep -q "invalid end state" LOST_UNLOCK_UNSENT.out || { echo "FAIL: the silent lost unlock was not caught"; exit 1; }
echo PASS
