/* migration.pml: a Promela model of moving a segment's ownership (docs/migrator.md,
 * fs/cluster.cc Cluster::MoveSegment), checked with spin in the test suite
 * (tests/model/check_model.sh; docs/model.md).
 *
 * Node A owns the segment and moves it to node B while a writer on a third
 * node writes it back twice. B may die before it installs the segment; the
 * metadata node's answer to the directory update may be lost after the
 * update was made. Where it corresponds to the code:
 *
 *   dir                 the inode's owner_node at the metadata node (meta().SetOwner)
 *   state[n]            ownership::OwnedSegments::State of node n: serving,
 *                       frozen (Freeze), forwarding (Unfreeze(moved_to)),
 *                       none (no state: loaded from the directory on first use)
 *   store[n]            node n's page store
 *   Owner(n)            Cluster::Handle(kWriteBack) -> ApplyAsOwner
 *   Writer              Cluster::Deliver / AtOwner: follows kMoved answers
 *   Migrator            MoveSegment: Freeze, MigratePages, MigrateInstall,
 *                       SetOwner, Unfreeze; on failure MigrateAbort
 *
 * Checked: no invalid end state, and at the end the owner the directory
 * names holds the last value whose write-back was answered (nothing
 * acknowledged is lost), and at no time do two nodes serve the segment to
 * writers. With -DTRUST_LOST_ANSWER, A treats a failed directory update as
 * not made (what the code did before): spin finds the lost write.
 */

#define A 0
#define B 1
#define NONE 0
#define SERVING 1
#define FROZEN 2
#define FORWARD 3

mtype = { OK, MOVED };

byte dir = A;
byte state[2];
byte fwd[2];
byte store[2];
byte acked;
bool writer_done, migrator_done;
chan req[2] = [1] of { byte, chan };

/* The write-back handler of node `me`. A frozen segment makes requests wait. */
proctype Owner(byte me) {
  byte v;
  chan back;
end:
  do
  :: req[me]?v, back ->
     (state[me] != FROZEN);
     atomic {
       if
       :: state[me] == NONE && dir == me -> state[me] = SERVING   /* first use: the directory says ours */
       :: else -> skip
       fi;
       if
       :: state[me] == SERVING -> store[me] = v; back!OK, 0
       :: state[me] == FORWARD -> back!MOVED, fwd[me]
       :: state[me] == NONE -> back!MOVED, dir
       fi
     }
  od
}

proctype Writer() {
  byte i = 1, to = A, m;
  mtype r;
  chan back = [1] of { mtype, byte };
  do
  :: i <= 2 ->
     do
     :: req[to]!i, back;
        back?r, m;
        if
        :: r == OK -> acked = i; break
        :: r == MOVED -> to = m
        fi
     od;
     i++
  :: i > 2 -> break
  od;
  writer_done = true
}

proctype Migrator() {
  atomic { state[A] == SERVING -> state[A] = FROZEN };   /* Freeze: after any Apply in progress */
  if
  :: skip
  :: goto abort_early                                      /* B dies before installing */
  fi;
  store[B] = store[A];                                     /* MigratePages */
  state[B] = SERVING;                                      /* MigrateInstall */
  if
  :: dir = B; goto commit                                  /* SetOwner answered */
  :: goto abort                                            /* SetOwner refused */
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
  atomic { fwd[A] = B; state[A] = FORWARD };               /* Unfreeze(target): forward */
  goto done;
abort:
  atomic { state[B] = NONE; state[A] = SERVING };          /* MigrateAbort; Unfreeze(nullopt) */
  goto done;
abort_early:
  state[A] = SERVING;
done:
  migrator_done = true
}

/* One owner at a time: two nodes never both serve. */
active proctype OneOwner() {
end:
  do
  :: atomic { state[A] == SERVING && state[B] == SERVING && dir == B -> assert(false) }
  :: atomic { writer_done && migrator_done -> break }
  od
}

init {
  atomic {
    state[A] = SERVING; state[B] = NONE;
    run Owner(A); run Owner(B); run Writer(); run Migrator()
  };
  (writer_done && migrator_done);
  assert(state[dir] == SERVING || state[dir] == NONE);
  assert(store[dir] == acked)
}
