/* locks.pml: a Promela model of cluster-wide locks as release points under
 * faults (DESIGN.md contract 4 and "Faults: leases, epochs and fencing";
 * fs/lock_client.cc LockClient::SetLock, Lose; ownership/lock_service.cc Serve,
 * InGrace; fs/cluster.cc LoseGrantsOf, ForgetNode, Write's kept write-backs; ownership/owned_segments.cc Apply with
 * expectations), checked with spin in the test suite
 * (tests/model/check_model.sh; docs/model.md).
 *
 * Node 0 owns a counter's page and its lock table. Nodes 1 and 2 each add 1
 * to the counter twice, each time under the write lock: acquire, fault the
 * page in if not cached, store, write back, release (Sync, unlock). Faults,
 * at any step: a writer is cut off (alive, partitioned) and later healed;
 * the owner restarts once (lock table and copysets gone, pages kept). Where
 * it corresponds to the code:
 *
 *   holder              ownership::LockTable at the owner
 *   mine[n], locklost[n]  Cluster::held_ / lost_locks_ on node n
 *   HolderLease         transport on_lease_lost -> LoseGrantsOf: node n gives
 *                       up its cached pages and its locks (lease minus margin)
 *   Forget              transport on_peer_forgotten -> ForgetNode: the owner
 *                       frees n's lock and copyset bits (a whole lease)
 *   kept[n]             a write-back that failed (EIO) kept as late, with the
 *                       twin's value; Deliver lands it only where unchanged
 *   grace, seen[n]      InGrace and kIncarnationSeen after an owner restart
 *   cs[], inv[], pending  copysets and invalidation rounds, as in
 *                       coherence.pml; a round to a cut-off node is retried
 *                       until it is forgotten (Cluster::InvalidateRemote)
 *
 * Checked: no invalid end state; a holder that takes the lock with a valid
 * lease reads every acknowledged increment; no two acknowledged increments
 * wrote one value (exclusion); the counter never goes back (no write lands
 * on newer bytes); at the end it holds every acknowledged increment.
 * Broken variants that must fail:
 *   -DUNLOCK_BEFORE_SYNC   the lock goes before the round is acknowledged
 *   -DOWNER_FORGETS_FIRST  the owner frees a cut-off holder's lock before the
 *                          holder's own lease ran out (no holder-side lease)
 *   -DLATE_UNCONDITIONAL   a kept write-back lands whatever the page holds now
 *   -DNO_GRACE             a restarted owner grants at once
 *   -DLOST_UNLOCK_UNSENT   the unlock of a lost lock is not told to the owner
 *                          (the holder healed before the owner forgot it: the
 *                          lock stays granted to nobody who will free it)
 */

#define N 3
#define FREE 255

byte store;            /* the owner's copy of the counter (kept across its restart) */
bool cs[N];            /* copyset */
bool cached[N];
byte val[N];
byte holder = FREE;    /* the owner's lock table */
bool mine[N];          /* node n believes it holds the lock */
bool locklost[N];      /* ... but lost it: its writes and its unlock fail */
bool cut[N];           /* node n is cut off from the owner (alive) */
bool leasegone[N];     /* node n's lease with the owner ran out */
bool forgotten[N];     /* the owner forgot node n */
bool kept[N];          /* node n's late write-back: the value it read, the value it wrote */
byte kbase[N];
byte kval[N];
bool grace;            /* the owner restarted: no grants yet */
bool seen[N];          /* node n gave up the old incarnation's locks (kIncarnationSeen) */
bool restarted;
byte pending;          /* invalidation acks outstanding */
byte acked;            /* bit v: an acknowledged increment wrote v */
byte maxack;           /* the highest of them */
byte finished;
bool faulted;          /* one cut per run, to keep the state space small */
chan inv[N] = [2] of { byte };

inline apply(v) {      /* the owner writes v and starts the round */
  assert(v >= store);  /* never back over newer bytes */
  store = v;
  t = 1;
  do
  :: t < N -> if :: cs[t] -> pending++; inv[t]!0; cs[t] = false :: else -> skip fi; t++
  :: t == N -> break
  od
}

proctype Invalidator(byte n) {
end:
  do
  :: atomic { !cut[n] && inv[n]?[_] -> inv[n]?_; cached[n] = false; pending-- }
  od
}

/* The network and the owner's restart; leases on both ends. */
proctype Env() {
  byte n;
end:
  do
  :: atomic { !faulted -> faulted = true; if :: n = 1 :: n = 2 fi; cut[n] = true }
  :: atomic { cut[1] -> cut[1] = false; leasegone[1] = false; forgotten[1] = false }  /* heal: a new lease */
  :: atomic { cut[2] -> cut[2] = false; leasegone[2] = false; forgotten[2] = false }
  /* The holder's lease runs out first: it drops its copies, its lock is lost. */
  :: atomic { cut[1] && !leasegone[1] -> leasegone[1] = true; cached[1] = false; if :: mine[1] -> locklost[1] = true :: else -> skip fi }
  :: atomic { cut[2] && !leasegone[2] -> leasegone[2] = true; cached[2] = false; if :: mine[2] -> locklost[2] = true :: else -> skip fi }
  /* The owner forgets a node a whole lease after it last heard it. */
#ifdef OWNER_FORGETS_FIRST
  :: atomic { cut[1] && !forgotten[1] -> forgotten[1] = true; cs[1] = false; if :: holder == 1 -> holder = FREE :: else -> skip fi; do :: inv[1]?[_] -> inv[1]?_; pending-- :: else -> break od }
  :: atomic { cut[2] && !forgotten[2] -> forgotten[2] = true; cs[2] = false; if :: holder == 2 -> holder = FREE :: else -> skip fi; do :: inv[2]?[_] -> inv[2]?_; pending-- :: else -> break od }
#else
  :: atomic { cut[1] && leasegone[1] && !forgotten[1] -> forgotten[1] = true; cs[1] = false; if :: holder == 1 -> holder = FREE :: else -> skip fi; do :: inv[1]?[_] -> inv[1]?_; pending-- :: else -> break od }
  :: atomic { cut[2] && leasegone[2] && !forgotten[2] -> forgotten[2] = true; cs[2] = false; if :: holder == 2 -> holder = FREE :: else -> skip fi; do :: inv[2]?[_] -> inv[2]?_; pending-- :: else -> break od }
#endif
  /* The owner restarts (between rounds): empty lock table and copysets. */
  :: atomic { !restarted && pending == 0 -> restarted = true; holder = FREE; cs[1] = false; cs[2] = false;
#ifndef NO_GRACE
              grace = true
#endif
     }
  /* A node learns of the restart when it next reaches the owner: its copies
     and its locks of the old incarnation are gone; it says so. */
  :: atomic { restarted && !seen[1] && !cut[1] -> seen[1] = true; cached[1] = false; if :: mine[1] -> locklost[1] = true :: else -> skip fi }
  :: atomic { restarted && !seen[2] && !cut[2] -> seen[2] = true; cached[2] = false; if :: mine[2] -> locklost[2] = true :: else -> skip fi }
  /* Grace ends when every node said so, or a lease passed (its lease ran out). */
  :: atomic { grace && (seen[1] || leasegone[1]) && (seen[2] || leasegone[2]) -> grace = false }
  od
}

/* A kept write-back, delivered once the owner answers. */
proctype Deliver(byte n) {
  byte t;
end:
  do
  :: atomic { kept[n] && !cut[n] ->
       kept[n] = false;
#ifdef LATE_UNCONDITIONAL
       apply(kval[n]);
#else
       if :: store == kbase[n] -> apply(kval[n]) :: else -> skip fi;   /* the page changed: dropped */
#endif
       cached[n] = false; cs[n] = false }                             /* the writer drops its copy too */
  od
}

proctype Writer(byte n) {
  byte i = 0, t, base;
  do
  :: i < 2 ->
     atomic { !cut[n] && holder == FREE && !grace -> holder = n; mine[n] = true; locklost[n] = false };  /* granted */
     if
     :: !cached[n] && !cut[n] -> atomic { cs[n] = true; val[n] = store; cached[n] = true }
     :: !cached[n] && cut[n] -> goto failed                             /* EIO: cannot fault it in */
     :: cached[n] -> skip
     fi;
     atomic {
       if
       :: !locklost[n] && !cut[n] && holder == n -> assert(val[n] >= maxack)  /* sees every acknowledged increment */
       :: else -> skip
       fi
     };
     base = val[n];
     val[n]++;                                                /* the store: dirty, not yet released */
     if
     :: atomic { locklost[n] -> cached[n] = false }; goto failed              /* refused here: EIO */
     :: atomic { !locklost[n] && cut[n] -> kept[n] = true; kbase[n] = base; kval[n] = val[n]; cached[n] = false };
        goto failed                                                            /* EIO, kept as late */
     :: atomic { !locklost[n] && !cut[n] -> apply(val[n]) }
     fi;
#ifdef UNLOCK_BEFORE_SYNC
     if
     :: atomic { !locklost[n] && !cut[n] && holder == n -> holder = FREE; mine[n] = false }
     :: atomic { locklost[n] || cut[n] } -> goto failed
     fi;
     (pending == 0 || cut[n]);
#else
     (pending == 0 || cut[n] || locklost[n]);                 /* Sync; or it fails */
     if
     :: atomic { pending == 0 && !locklost[n] && !cut[n] && holder == n -> holder = FREE; mine[n] = false }   /* kUnlock */
     :: atomic { locklost[n] || cut[n] } -> goto failed
     fi;
#endif
     assert(!(acked & (1 << val[n])));                         /* exclusion: no value acknowledged twice */
     acked = acked | (1 << val[n]);
     if :: val[n] > maxack -> maxack = val[n] :: else -> skip fi;
     i++;
     goto next;
failed:
     /* EIO to the application: it unlocks (the unlock of a lost lock fails
        too, and still tells the owner) and tries the next increment. */
#ifdef LOST_UNLOCK_UNSENT
     atomic { !cut[n] -> if :: holder == n && !locklost[n] -> holder = FREE :: else -> skip fi; mine[n] = false; locklost[n] = false };
#else
     atomic { !cut[n] -> if :: holder == n -> holder = FREE :: else -> skip fi; mine[n] = false; locklost[n] = false };
#endif
     i++;
next:
     skip
  :: i == 2 -> break
  od;
  finished++
}

init {
  atomic {
    run Invalidator(1); run Invalidator(2); run Env(); run Deliver(1); run Deliver(2);
    run Writer(1); run Writer(2)
  };
  (finished == 2);
  (!kept[1] && !kept[2] && !cut[1] && !cut[2]);
  (pending == 0);
  assert(store >= maxack)  /* every acknowledged increment is in the counter */
}
