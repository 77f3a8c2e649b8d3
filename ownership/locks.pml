/* locks.pml: a Promela model of cluster-wide locks as release points (DESIGN.md
 * contract 4; fs/cluster.cc Cluster::SetLock, ServeLock), checked with spin in
 * the test suite (tests/model/check_model.sh; docs/model.md).
 *
 * Node 0 owns a counter's page and its lock table. Nodes 1 and 2 each add 1
 * to the counter twice, each time under the write lock: acquire, fault the
 * page in if not cached, store, release. Either may crash while holding the
 * lock (its unreleased store dies with it; its lease expires and frees the
 * lock). Where it corresponds to the code:
 *
 *   holder              ownership::LockTable at the owner (ServeLock kSet/kUnlock);
 *                       a waiter retries until granted (SetLock with wait)
 *   Lease               the owner dropping a dead node's locks when its
 *                       lease runs out (Cluster on_peer_down / lease timer)
 *   unlock              SetLock(F_UNLCK): the node's dirty pages of the range
 *                       are written back (the kernel, on InvalidateLocal),
 *                       Sync waits for the invalidation round, then kUnlock
 *   cs[], inv[], pending  copysets and rounds, as in coherence.pml
 *
 * Checked: no invalid end state; one holder at a time; whoever takes the
 * lock reads every increment released before (no stale cached copy); at the
 * end the owner holds exactly the released increments. -DUNLOCK_BEFORE_SYNC
 * (the lock goes before the round is acknowledged) must fail: spin finds a
 * holder reading its stale cached copy.
 */

#define N 3
#define FREE 255

byte store;            /* the owner's copy of the counter */
bool cs[N];            /* copyset */
bool cached[N];
byte val[N];
bool alive[N];
byte holder = FREE;
byte pending;          /* invalidation acks outstanding */
byte released;         /* increments whose release returned */
byte finished;
chan inv[N] = [2] of { byte };

proctype Invalidator(byte n) {
end:
  do
  :: inv[n]?_ -> atomic { cached[n] = false; pending-- }   /* a dead node's copy is gone too */
  od
}

/* The owner frees a dead holder's lock when its lease runs out. */
proctype Lease() {
end:
  do
  :: atomic { holder != FREE && !alive[holder] -> holder = FREE }
  od
}

proctype Writer(byte n) {
  byte i = 0, t;
  do
  :: i < 2 && alive[n] ->
     atomic { holder == FREE -> holder = n };                 /* granted */
     if
     :: !cached[n] -> atomic { cs[n] = true; val[n] = store; cached[n] = true }
     :: else -> skip
     fi;
     assert(holder == n);
     assert(val[n] == store);                                 /* no stale copy: sees every released increment */
     val[n]++;                                                /* the store: dirty, not yet released */
     if
     :: atomic { alive[n] = false; cached[n] = false; cs[n] = false }; goto dead   /* crash holding the lock */
     :: skip
     fi;
     atomic {                                                 /* write-back: the owner applies, starts the round */
       store = val[n];
       t = 0;
       do
       :: t < N -> if :: t != n && cs[t] -> pending++; inv[t]!0; cs[t] = false :: else -> skip fi; t++
       :: t == N -> break
       od
     };
#ifdef UNLOCK_BEFORE_SYNC
     holder = FREE;
     (pending == 0);
#else
     (pending == 0);                                          /* Sync */
     holder = FREE;                                           /* kUnlock */
#endif
     released++;
     i++
  :: i == 2 || !alive[n] -> break
  od;
dead:
  finished++
}

init {
  atomic {
    alive[0] = true; alive[1] = true; alive[2] = true;
    run Invalidator(1); run Invalidator(2); run Lease();
    run Writer(1); run Writer(2)
  };
  (finished == 2);
  (pending == 0);
  assert(store == released)
}
