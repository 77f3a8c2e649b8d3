/* migration.pml: a Promela model of moving a segment's ownership (docs/migrator.md,
 * fs/segment_transfer.cc SegmentTransfer::Move), checked with spin in the test suite
 * (tests/model/check_model.sh; docs/model.md).
 *
 * Node A owns a two-page segment and moves it to node B. A writer on a third
 * node W writes page 0 back twice; a writer on B writes page 1 back once, and
 * updates its twin of page 1 only after the answer (as Cluster::Write does);
 * B's kernel reads page 0 once, holding the folio locked until its fetch is
 * answered. A write-back of page 0 while B's kernel may hold it starts an
 * invalidation round to B, which B's kernel answers only when the folio is
 * unlocked. B may die before it installs the segment; the metadata node's
 * answer to the directory update may be lost after the update was made.
 * Where it corresponds to the code:
 *
 *   dir                 the inode's owner_node at the metadata node (meta().SetOwner)
 *   state[n]            ownership::OwnedSegments::State of node n: serving,
 *                       frozen (Freeze), forwarding (Unfreeze(moved_to)),
 *                       none (no state: loaded from the directory on first use)
 *   p0[n], p1[n]        node n's page store
 *   inB0, inB1          B in the copysets (they travel with the segment)
 *   twinB0, twinB1      B's twins (fs/twin_cache.h)
 *   rounds[n]           Cluster::Rounds of node n: invalidations unacknowledged
 *   folio               B's kernel holds page 0's folio locked (a read in flight)
 *   Owner(n)            Cluster::Handle / TryServeInline: fetch and write-back
 *   Writer, WriterB     Cluster::Write -> Deliver / AtOwner: follow kMoved
 *   ReaderB             a fault on B: FUSE READ -> Cluster::Read
 *   InvalidatorB        Cluster::InvalidateLocal -> notify_inval_inode
 *   Migrator            SegmentTransfer::Move: rounds Wait, Freeze (again if a round
 *                       started meanwhile), MigratePages (twins checked by
 *                       hash), MigrateInstall (staged frozen at B), SetOwner,
 *                       MigrateCommit (B serves), Unfreeze; on failure
 *                       MigrateAbort, a one-way message that may arrive late.
 *                       Up to two attempts, each with its own move id.
 *   cacheB              B's owner cache (Cluster::owner_of_), which its own
 *                       writes follow: set to B at the commit
 *   aborts, staged      the aborts in flight to B, and the move id B stages
 *
 * Checked: no invalid end state (no deadlock), and at the end the owner the
 * directory names holds the last value of each page whose write-back was
 * answered (nothing acknowledged is lost), and at no time do two nodes serve
 * the segment to writers. Variants that must fail:
 *   -DTRUST_LOST_ANSWER     A treats a failed directory update as not made
 *                           (what the code did before): a lost write
 *   -DTRUST_TWIN            B's twin is installed without the hash check: the
 *                           write-back whose answer has not yet updated the
 *                           twin is lost
 *   -DSERVE_BEFORE_COMMIT   B serves (and its own writes go to it) from the
 *                           install on, as the code did: the abort after a
 *                           failed directory update loses what B acknowledged
 *   -DNO_MOVE_ID            B applies any abort: a late abort of the first,
 *                           failed attempt removes the second, committed one
 *   -DFREEZE_BEFORE_ROUNDS  A freezes, then waits for its rounds: the round
 *                           waits for B's folio, the folio for B's fetch, the
 *                           fetch for the frozen segment (the folio cycle of
 *                           DESIGN.md through the freeze; a deadlock here,
 *                           a timed-out invalidation in the code)
 */

#define A 0
#define B 1
#define NONE 0
#define SERVING 1
#define FROZEN 2
#define FORWARD 3

#define FETCH 0
#define WB0 1    /* write-back of page 0 by W */
#define WB1 2    /* write-back of page 1 by B */

mtype = { OK, MOVED };

byte dir = A;
byte state[2];
byte fwd[2];
byte p0[2], p1[2];
bool inB0 = true, inB1 = true;   /* B fetched both pages before */
byte twinB0, twinB1;
byte rounds[2];
bool folio;
byte acked0, acked1;
bool writer_done, writerB_done, reader_done, migrator_done;
chan req[2] = [2] of { byte, byte, chan };
chan inv = [4] of { byte };       /* to B: drop page 0, from owner n */
byte cacheB = A;                  /* where B's own writes go first */
byte staged;                      /* the move id B stages (0: none) */
chan aborts = [2] of { byte };    /* MigrateAbort {move id}, one-way, to B */

/* The request handler of node `me`. A frozen segment makes requests wait. */
proctype Owner(byte me) {
  byte kind, v;
  chan back;
end:
  do
  :: req[me]?kind, v, back ->
     (state[me] != FROZEN);
     atomic {
       if
       :: state[me] == NONE && dir == me -> state[me] = SERVING   /* first use: the directory says ours */
       :: else -> skip
       fi;
       if
       :: state[me] == SERVING ->
          if
          :: kind == FETCH -> inB0 = true; back!OK, p0[me]
          :: kind == WB0 ->
             p0[me] = v;
             if
             :: inB0 -> inB0 = false; rounds[me]++; inv!me   /* StartRound: B must drop it */
             :: else -> skip
             fi;
             back!OK, 0
          :: kind == WB1 -> p1[me] = v; inB1 = true; back!OK, 0   /* the writer keeps its copy */
          fi
       :: state[me] == FORWARD -> back!MOVED, fwd[me]
       :: state[me] == NONE -> back!MOVED, dir
       fi
     }
  od
}

/* Sends one request to the owner, following "moved" answers. */
inline Call(kind, v, to, back, r, m) {
  do
  :: req[to]!kind, v, back;
     back?r, m;
     if
     :: r == OK -> break
     :: r == MOVED -> to = m
     fi
  od
}

proctype Writer() {
  byte i = 1, to = A, m;
  mtype r;
  chan back = [1] of { mtype, byte };
  do
  :: i <= 2 -> Call(WB0, i, to, back, r, m); acked0 = i; i++
  :: i > 2 -> break
  od;
  writer_done = true
}

/* B's own write-back of page 1: the answer first, the twin after. */
proctype WriterB() {
  byte to, m;
  mtype r;
  chan back = [1] of { mtype, byte };
  to = cacheB;
  Call(WB1, 7, to, back, r, m);
  acked1 = 7;
  twinB1 = 7;
  writerB_done = true
}

/* A fault on B: the folio stays locked until the fetch is answered. */
proctype ReaderB() {
  byte to = A, m;
  mtype r;
  chan back = [1] of { mtype, byte };
  folio = true;
  Call(FETCH, 0, to, back, r, m);
  twinB0 = m;
  folio = false;
  reader_done = true
}

/* B's invalidation handler: the kernel drops the page once it can lock it. */
proctype InvalidatorB() {
  byte from;
end:
  do
  :: inv?from -> (!folio); atomic { rounds[from]-- }
  od
}

/* B's handler of late aborts. */
proctype AbortsB() {
  byte id;
end:
  do
#ifdef NO_MOVE_ID
  :: aborts?id -> atomic { state[B] = NONE; staged = 0; p0[B] = 0; p1[B] = 0 }
#else
  :: aborts?id -> atomic { if :: staged == id -> state[B] = NONE; staged = 0; p0[B] = 0; p1[B] = 0 :: else -> skip fi }
#endif
  od
}

proctype Migrator() {
  byte retries = 0, id = 0;
again:
  id++;
  retries = 0;
#ifdef FREEZE_BEFORE_ROUNDS
  atomic { state[A] == SERVING -> state[A] = FROZEN };
  (rounds[A] == 0);
#else
  do
  :: (rounds[A] == 0);                                     /* WaitRounds, not frozen */
     atomic { state[A] == SERVING -> state[A] = FROZEN };   /* Freeze: after any Apply in progress */
     if
     :: rounds[A] == 0 -> break
     :: rounds[A] > 0 && retries < 2 -> state[A] = SERVING; retries++   /* a round started meanwhile */
     :: rounds[A] > 0 && retries == 2 -> state[A] = SERVING; goto done  /* kBusy: try again later */
     fi
  od;
#endif
  if
  :: skip
  :: id == 1 -> goto abort_early                          /* B dies before installing */
  fi;
  staged = id;                                             /* MigrateQuery: B stages this move */
  atomic {                                                 /* MigratePages */
    if
    :: inB0 && twinB0 == p0[A] -> p0[B] = twinB0           /* "use your twin", hash equal */
    :: else -> p0[B] = p0[A]
    fi;
#ifdef TRUST_TWIN
    if
    :: inB1 -> p1[B] = twinB1
    :: else -> p1[B] = p1[A]
    fi
#else
    if
    :: inB1 && twinB1 == p1[A] -> p1[B] = twinB1
    :: else -> p1[B] = p1[A]                               /* needed after all: a repair chunk */
    fi
#endif
  };
#ifdef SERVE_BEFORE_COMMIT
  atomic { state[B] = SERVING; cacheB = B };               /* MigrateInstall, served at once */
#else
  state[B] = FROZEN;                                       /* MigrateInstall: staged */
#endif
  if
  :: dir = B; goto commit                                  /* SetOwner answered */
  :: id == 1 -> goto abort                                 /* SetOwner refused (the first time) */
  :: dir = B; goto lost                                    /* made, but the answer was lost */
  fi;
lost:
#ifdef TRUST_LOST_ANSWER
  goto abort;
#else
  if                                                       /* ask the directory which it is */
  :: dir == B -> goto commit
  :: else -> goto abort
  fi;
#endif
commit:
  atomic { state[B] = SERVING; cacheB = B; staged = 0 };  /* MigrateCommit (or B's Resolve) */
  atomic { fwd[A] = B; state[A] = FORWARD };               /* Unfreeze(target): forward */
  goto done;
abort:
  atomic { aborts!id; state[A] = SERVING };                /* MigrateAbort (arrives when it does); Unfreeze */
  if
  :: id < 2 -> goto again                                  /* a later attempt */
  :: else -> goto done
  fi;
abort_early:
  state[A] = SERVING;
  goto again;
done:
  migrator_done = true
}

/* One owner at a time: two nodes never both serve. */
active proctype OneOwner() {
end:
  do
  :: atomic { state[A] == SERVING && state[B] == SERVING && dir == B -> assert(false) }
  :: atomic { writer_done && writerB_done && reader_done && migrator_done -> break }
  od
}

init {
  atomic {
    state[A] = SERVING; state[B] = NONE;
    run Owner(A); run Owner(B); run InvalidatorB(); run AbortsB();
    run Writer(); run WriterB(); run ReaderB(); run Migrator()
  };
  (writer_done && writerB_done && reader_done && migrator_done);
  assert(state[dir] == SERVING || state[dir] == NONE);
  assert(p0[dir] == acked0 && p1[dir] == acked1)
}
