/* coherence.pml: a Promela model of cshm's page coherence protocol, checked
 * with spin in the test suite (tests/model/check_model.sh; docs/model.md).
 *
 * One page of two bytes. Node 0 owns it (ownership::OwnedSegments) and its
 * kernel also reads it; node 1 writes byte 0, node 2 writes byte 1 (false
 * sharing, TreadMarks' multiple writers). Where it corresponds to the code:
 *
 *   Owner handlers      fs/cluster.cc Handle(kFetch, kWriteBack, kSync),
 *                       ownership/owned_segments.cc Fetch/Apply
 *   copyset cs[]        OwnedSegments::State::copyset (cleared when a round starts)
 *   rounds              ownership/invalidation_rounds.h Start / Wait (pending[r])
 *   Invalidate(n)       Cluster::InvalidateLocal: the kernel's notify waits for
 *                       the folio (busy[n]), writes a dirty page back, drops it
 *   busy[n]             the kernel's folio lock / writeback of node n's page,
 *                       held across a fault's fetch and a write-back's WRITE
 *   twin[n]             fs/twin_cache.h; a write-back sends bytes != twin
 *   release             msync: WRITE (write-back) then FSYNC (Sync)
 *   unsynced[n]         Cluster::unsynced_: set when a write-back's answer
 *                       says a round was pending (WriteBackReply); a release
 *                       Syncs only if it is set. The code may hold the
 *                       answer until the round is over (250 us at most,
 *                       Cluster::AnswerAfterRound): here the answer, with
 *                       the flag as it is then, may come at any time after
 *                       the merge, which includes that.
 *
 * Checked: no invalid end state (no deadlock, in particular not the folio
 * cycle of DESIGN.md), and the assertions: a release returns only when no
 * other node caches an older value of the released byte; at the end the owner
 * holds every writer's last released value (no lost update).
 * With -DWRITE_WAITS_FOR_ROUND the owner answers a write-back only after its
 * round (DESIGN.md's first sketch): spin finds the deadlock that made us
 * change it (docs/architecture.md "Why it cannot deadlock"). With
 * -DSYNC_SKIPS_ROUNDS a release does not wait for its round: spin finds the
 * stale read. Both variants are checked to fail, so the model can.
 */

#define N 3
#ifndef ITER
#define ITER 2
#endif
#define MAXR 8

mtype = { FETCH, WB, SYNC, DATA, OK, INV };

typedef Page { byte b[2] };

byte store[2];
bool cs[N];
bool cached[N];
bool busy[N];
bool dirty[N];
Page val[N];
Page twin[N];

bool unsynced[N];     /* a write-back here was answered with rounds pending */
byte nrounds;
byte pending[MAXR];   /* acks a round still waits for */
byte released[2];     /* last value each writer released */
byte finished;

/* The owner's transport worker pools: fetches and write-backs go to the fast
 * pool (never waits), Sync to the slow one (waits for rounds). */
chan to_fast = [8] of { mtype, byte, byte, byte, chan };
chan to_slow = [4] of { mtype, byte, byte, byte, chan };
chan inv[N] = [4] of { mtype, byte };

/* Whether any round is still waiting for acks (the write-back answer's flag). */
inline Pending(busyflag) {
  busyflag = false;
  t = 0;
  do
  :: t < nrounds -> busyflag = busyflag || pending[t] > 0; t++
  :: t == nrounds -> break
  od
}

/* A worker thread of the owner's fast pool (or its I/O thread): fetches and
 * write-backs. */
proctype FastWorker() {
  byte kind, n, b, v, t, r;
  bool busyflag;
  chan back;
end:
  do
  :: to_fast?kind, n, b, v, back ->
     if
     :: kind == FETCH ->
        atomic { cs[n] = true; back!DATA(store[0], store[1]) }
     :: kind == WB ->
        atomic {
          store[b] = v;
          r = nrounds;
          nrounds++;
          assert(nrounds < MAXR);
          t = 0;
          do
          :: t < N ->
             if
             :: t != n && cs[t] -> pending[r]++; inv[t]!INV(r); cs[t] = false
             :: else -> skip
             fi;
             t++
          :: t == N -> break
          od;
          cs[n] = true
        };
#ifdef WRITE_WAITS_FOR_ROUND
        (pending[r] == 0);
#endif
        atomic { Pending(busyflag); back!OK(busyflag, 0) }
     fi
  od
}

/* A worker thread of the owner's slow pool: Sync waits for every round
 * started before it. */
proctype SlowWorker() {
  byte kind, n, b, v, t, target;
  chan back;
end:
  do
  :: to_slow?kind, n, b, v, back ->
     target = nrounds;
     t = 0;
#ifndef SYNC_SKIPS_ROUNDS
     do
     :: t < target -> (pending[t] == 0); t++
     :: t == target -> break
     od;
#endif
     back!OK(0, 0)
  od
}

/* The daemon's invalidation handler on node n, and the kernel's notify. */
proctype Invalidator(byte n) {
  byte r, b;
  bool c;
  chan back = [1] of { mtype, byte, byte };
end:
  do
  :: inv[n]?INV(r) ->
     atomic { !busy[n] -> busy[n] = true };      /* the folio */
     if
     :: dirty[n] ->                               /* written back first */
        b = n - 1;
        if
        :: val[n].b[b] != twin[n].b[b] ->
           to_fast!WB, n, b, val[n].b[b], back;
           atomic { back?OK(c, _); unsynced[n] = unsynced[n] || c }
        :: else -> skip
        fi;
        dirty[n] = false
     :: else -> skip
     fi;
     atomic { cached[n] = false; busy[n] = false; pending[r]-- }
  od
}

/* Fault the page in (a kernel READ: the folio is held across the fetch). */
inline FaultIn(n, back) {
  atomic { !busy[n] && !cached[n] -> busy[n] = true };
  to_fast!FETCH, n, 0, 0, back;
  back?DATA(val[n].b[0], val[n].b[1]);
  atomic { twin[n].b[0] = val[n].b[0]; twin[n].b[1] = val[n].b[1]; cached[n] = true; busy[n] = false }
}

/* A writer process on node n (n = 1, 2) writing byte n-1, then msync. */
proctype Writer(byte n) {
  byte i = 1, b = n - 1, m;
  bool c, dosync;
  chan back = [1] of { mtype, byte, byte };
  do
  :: i <= ITER ->
     if
     :: atomic { cached[n] && !busy[n] -> val[n].b[b] = i; dirty[n] = true }
     :: atomic { !cached[n] && !busy[n] } -> FaultIn(n, back)   /* then retry the store */
     fi;
     if
     :: dirty[n] && val[n].b[b] == i ->
        /* release: write back (WRITE), then Sync (FSYNC) */
        atomic { !busy[n] -> busy[n] = true };
        if
        :: dirty[n] ->
           to_fast!WB, n, b, val[n].b[b], back;
           atomic { back?OK(c, _); unsynced[n] = unsynced[n] || c };
           twin[n].b[b] = i;
           dirty[n] = false
        :: else -> skip   /* an invalidation wrote it back already */
        fi;
        busy[n] = false;
#ifdef SYNC_WITHOUT_FLAG
        dosync = false;   /* a release that trusts nothing was pending: wrong */
#else
        atomic { dosync = unsynced[n]; unsynced[n] = false };
#endif
        if
        :: dosync -> to_slow!SYNC, n, 0, 0, back; back?OK(_, _)
        :: else -> skip   /* no round was pending at any answer since the last Sync */
        fi;
        released[b] = i;
        /* contract 2: no other node can read an older value now */
        m = 0;
        do
        :: m < N ->
           assert(m == n || !cached[m] || val[m].b[b] >= i);
           m++
        :: m == N -> break
        od;
        i++
     :: else -> skip      /* the page went while storing: store again */
     fi
  :: i > ITER -> break
  od;
  finished++
}

/* Node 0's own kernel reads the page (once, at any moment). */
proctype Reader() {
  chan back = [1] of { mtype, byte, byte };
  FaultIn(0, back)
}

init {
  atomic {
    run FastWorker(); run FastWorker(); run SlowWorker(); run SlowWorker();
    run Invalidator(0); run Invalidator(1); run Invalidator(2);
    run Writer(1); run Writer(2); run Reader()
  };
  (finished == 2);
  /* every round answered, then: no lost update */
  byte r = 0;
  do
  :: r < nrounds -> (pending[r] == 0); r++
  :: r == nrounds -> break
  od;
  assert(store[0] == released[0] && store[1] == released[1])
}
