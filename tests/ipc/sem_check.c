/* A plain SysV semaphore program used by the shim's tests: it knows nothing of
 * cshm. Run under LD_PRELOAD=libcshm_ipc.so CSHM_MOUNT=<mount>.
 *   sem_check local KEY            every single-node rule, errno by errno
 *   sem_check ring KEY SLOTS       creates the textbook ring: a segment of SLOTS
 *                                  records and a set {empty = SLOTS, full = 0}
 *   sem_check produce KEY N        writes N checksummed records into the ring:
 *                                  P(empty), store, V(full); no msync
 *   sem_check consume KEY N        P(full), check the record is the next one
 *                                  and intact, V(empty); prints "ok N"
 *   sem_check make KEY NSEMS VAL   a set with every value VAL; prints the semid
 *   sem_check take KEY             semop(-1, SEM_UNDO) on semaphore 0, prints
 *                                  "held", waits for a line on stdin, then
 *                                  exits without giving it back
 *   sem_check wait KEY             semop(-1) on semaphore 0; prints "errno E"
 *                                  (0: it got it); with a SIGUSR1 handler
 *   sem_check get KEY NUM          prints the value
 *   sem_check post KEY NUM         semop(+1)
 *   sem_check rmid KEY             IPC_RMID
 *   sem_check crowd KEY N          N children wait on semaphore 0 (set to 0) at
 *                                  once; one post of N lets them all through;
 *                                  prints "ok N"
 * Exit 0 on success; on a failed check, a message and the line number. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

union semun {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
  struct seminfo* __buf;
};

static int getval(int id, int num) { return semctl(id, num, GETVAL); }

static int setval(int id, int num, int v) {
  union semun a;
  a.val = v;
  return semctl(id, num, SETVAL, a);
}

/* `num`'s value once it equals `want`, or its value after 10 s (SEM_UNDO at
 * exit is applied when the daemon sees the process gone). */
static int getval_eventually(int id, int num, int want) {
  int v = -1;
  for (int i = 0; i < 1000; i++) {
    v = getval(id, num);
    if (v == want) return v;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return v;
}

static int count_eventually(int id, int cmd, int want) {
  int v = -1;
  for (int i = 0; i < 1000; i++) {
    v = semctl(id, 0, cmd);
    if (v == want) return v;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return v;
}

static double since(const struct timespec* t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_signal(int sig) { (void)sig; }

static void local_rules(key_t key) {
  struct sembuf up = {0, 1, 0}, down = {0, -1, 0};
  /* semget */
  CHECK_ERR(semget(key, 2, 0600), ENOENT);
  CHECK_ERR(semget(key, 0, IPC_CREAT | 0600), EINVAL);
  CHECK_ERR(semget(key, -1, IPC_CREAT | 0600), EINVAL);
  int id = semget(key, 3, IPC_CREAT | 0600);
  CHECK(id >= 0);
  CHECK_ERR(semget(key, 3, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
  CHECK_ERR(semget(key, 4, 0600), EINVAL); /* more than it has */
  CHECK(semget(key, 2, 0600) == id);
  CHECK(semget(key, 0, 0) == id);
  int p1 = semget(IPC_PRIVATE, 1, 0600), p2 = semget(IPC_PRIVATE, 1, 0600);
  CHECK(p1 >= 0 && p2 >= 0 && p1 != p2);
  /* a new set is zeros; IPC_STAT */
  for (int i = 0; i < 3; i++) CHECK(getval(id, i) == 0);
  struct semid_ds ds;
  union semun a;
  a.buf = &ds;
  CHECK(semctl(id, 0, IPC_STAT, a) == 0);
  CHECK(ds.sem_nsems == 3);
  /* SEM_INFO and SEM_STAT: the mount's sets follow the kernel's in its
   * index space; one of the kernel's own is made behind the shim's back. */
  int kernel_id = (int)syscall(SYS_semget, IPC_PRIVATE, 2, IPC_CREAT | 0600);
  CHECK(kernel_id >= 0);
  struct seminfo si;
  union semun ia;
  ia.__buf = &si;
  int max = semctl(0, 0, SEM_INFO, ia);
  CHECK(max >= 3 && si.semusz >= 4 && si.semaem >= 3 + 1 + 1 + 2);
  CHECK(semctl(0, 0, IPC_INFO, ia) == max);
  int seen_ours = 0, seen_kernels = 0;
  for (int i = 0; i <= max; i++) {
    struct semid_ds d;
    union semun da;
    da.buf = &d;
    int got = semctl(i, 0, SEM_STAT, da);
    CHECK(got >= 0 || errno == EINVAL || errno == EACCES);
    if (got == id) seen_ours = d.sem_nsems == 3;
    if (got == kernel_id) seen_kernels = d.sem_nsems == 2;
    if (got >= 0) CHECK(semctl(i, 0, SEM_STAT_ANY, da) == got);
  }
  CHECK(seen_ours && seen_kernels);
  CHECK(semctl(id, 0, SEM_STAT_ANY, a) == id); /* an id for an index, as the kernel takes one */
  CHECK_ERR(semctl(max + 1, 0, SEM_STAT, a), EINVAL);
  CHECK(syscall(SYS_semctl, kernel_id, 0, IPC_RMID, 0) == 0);
  CHECK((ds.sem_perm.mode & 0777) == 0600);
  CHECK(ds.sem_perm.__key == key);
  CHECK(ds.sem_perm.uid == geteuid() && ds.sem_perm.cuid == geteuid());
  CHECK(ds.sem_otime == 0 && ds.sem_ctime != 0);
  /* IPC_SET: the mode changes, the owner stays, ctime moves */
  ds.sem_perm.mode = 0640;
  CHECK(semctl(id, 0, IPC_SET, a) == 0);
  memset(&ds, 0, sizeof(ds));
  CHECK(semctl(id, 0, IPC_STAT, a) == 0);
  CHECK((ds.sem_perm.mode & 0777) == 0640);
  CHECK(ds.sem_perm.uid == geteuid() && ds.sem_nsems == 3);
  ds.sem_perm.mode = 0600;
  CHECK(semctl(id, 0, IPC_SET, a) == 0);
  /* semop: argument errors */
  CHECK_ERR(semop(id, &up, 0), EINVAL);
  struct sembuf past = {3, 1, 0};
  CHECK_ERR(semop(id, &past, 1), EFBIG);
  /* a bad address is EFAULT, as from the kernel, not a crash */
  CHECK_ERR(semop(id, (struct sembuf*)8, 1), EFAULT);
  CHECK_ERR(semtimedop(id, &up, 1, (struct timespec*)8), EFAULT);
  union semun badbuf;
  badbuf.buf = (struct semid_ds*)8;
  CHECK_ERR(semctl(id, 0, IPC_STAT, badbuf), EFAULT);
  CHECK_ERR(semctl(id, 0, IPC_SET, badbuf), EFAULT);
  badbuf.array = (unsigned short*)8;
  CHECK_ERR(semctl(id, 0, GETALL, badbuf), EFAULT);
  CHECK_ERR(semctl(id, 0, SETALL, badbuf), EFAULT);
  struct timespec bad = {0, 1000000000L};
  CHECK_ERR(semtimedop(id, &down, 1, &bad), EINVAL);
  /* IPC_NOWAIT, a deadline, ERANGE */
  struct sembuf nowait = {0, -1, IPC_NOWAIT};
  CHECK_ERR(semop(id, &nowait, 1), EAGAIN);
  struct timespec t0, to = {0, 200 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK_ERR(semtimedop(id, &down, 1, &to), EAGAIN);
  CHECK(since(&t0) >= 0.19);
  struct sembuf most = {0, 32767, 0};
  CHECK(semop(id, &most, 1) == 0);
  CHECK_ERR(semop(id, &up, 1), ERANGE);
  CHECK(getval(id, 0) == 32767);
  CHECK(ds.sem_otime == 0);
  CHECK(semctl(id, 0, IPC_STAT, a) == 0 && ds.sem_otime != 0);
  CHECK(semctl(id, 0, GETPID) == getpid());
  /* all or nothing: the second operation cannot proceed, so the first is not applied */
  CHECK(setval(id, 0, 0) == 0 && setval(id, 1, 0) == 0);
  struct sembuf pair[2] = {{0, 1, 0}, {1, -1, IPC_NOWAIT}};
  CHECK_ERR(semop(id, pair, 2), EAGAIN);
  CHECK(getval(id, 0) == 0);
  /* SETVAL, SETALL, GETALL */
  CHECK_ERR(setval(id, 0, -1), ERANGE);
  CHECK_ERR(setval(id, 0, 32768), ERANGE);
  CHECK_ERR(setval(id, 3, 1), EINVAL);
  unsigned short vals[3] = {4, 5, 6}, got[3] = {0, 0, 0};
  a.array = vals;
  CHECK(semctl(id, 0, SETALL, a) == 0);
  a.array = got;
  CHECK(semctl(id, 0, GETALL, a) == 0);
  CHECK(got[0] == 4 && got[1] == 5 && got[2] == 6);
  CHECK(setval(id, 0, 0) == 0 && setval(id, 2, 1) == 0);
  /* a waiter is woken by a post from another process, and counted meanwhile */
  pid_t pid = fork();
  if (pid == 0) _exit(semop(id, &down, 1) == 0 ? 0 : 1);
  CHECK(count_eventually(id, GETNCNT, 1) == 1);
  CHECK(semop(id, &up, 1) == 0);
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(getval(id, 0) == 0);
  /* wait-for-zero: counted in GETZCNT, woken when the value reaches 0 */
  struct sembuf zero = {2, 0, 0}, dec2 = {2, -1, 0};
  pid = fork();
  if (pid == 0) _exit(semop(id, &zero, 1) == 0 ? 0 : 1);
  for (int i = 0; i < 1000 && semctl(id, 2, GETZCNT) != 1; i++) usleep(10000);
  CHECK(semctl(id, 2, GETZCNT) == 1);
  CHECK(semop(id, &dec2, 1) == 0);
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  /* SEM_UNDO: given back when the process exits */
  CHECK(setval(id, 1, 1) == 0);
  pid = fork();
  if (pid == 0) {
    struct sembuf take = {1, -1, SEM_UNDO};
    _exit(semop(id, &take, 1) == 0 && getval(id, 1) == 0 ? 0 : 1);
  }
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(getval_eventually(id, 1, 1) == 1);
  /* SETVAL clears adjustments: an exit after it changes nothing */
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid = fork();
  if (pid == 0) {
    struct sembuf take = {1, -1, SEM_UNDO};
    if (semop(id, &take, 1) != 0) _exit(1);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(2);
    pause();
    _exit(0);
  }
  char c;
  CHECK(read(ready[0], &c, 1) == 1);
  CHECK(setval(id, 1, 7) == 0);
  kill(pid, SIGKILL);
  CHECK(waitpid(pid, &st, 0) == pid);
  usleep(300 * 1000);
  CHECK(getval(id, 1) == 7);
  /* a signal interrupts a wait (EINTR), and the operation is not applied later */
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
  CHECK(setval(id, 0, 0) == 0);
  pid = fork();
  if (pid == 0) _exit(semop(id, &down, 1) == -1 && errno == EINTR ? 0 : 1);
  CHECK(count_eventually(id, GETNCNT, 1) == 1);
  kill(pid, SIGUSR1);
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(semctl(id, 0, GETNCNT) == 0);
  CHECK(semop(id, &up, 1) == 0);
  CHECK(getval(id, 0) == 1);
  /* IPC_RMID: waiters get EIDRM, the key is free, the id invalid */
  CHECK(setval(id, 0, 0) == 0);
  pid = fork();
  if (pid == 0) _exit(semop(id, &down, 1) == -1 && errno == EIDRM ? 0 : 1);
  CHECK(count_eventually(id, GETNCNT, 1) == 1);
  CHECK(semctl(id, 0, IPC_RMID) == 0);
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK_ERR(getval(id, 0), EINVAL);
  CHECK_ERR(semget(key, 1, 0600), ENOENT);
  CHECK(semctl(p1, 0, IPC_RMID) == 0 && semctl(p2, 0, IPC_RMID) == 0);
  /* permissions: read-only users may look and wait for zero, not alter */
  int ro = semget(key, 1, IPC_CREAT | 0644);
  CHECK(ro >= 0);
  pid = fork();
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(90);
    struct sembuf z = {0, 0, IPC_NOWAIT};
    if (semop(ro, &z, 1) != 0) _exit(91);
    if (!(semop(ro, &up, 1) == -1 && errno == EACCES)) _exit(92);
    if (!(setval(ro, 0, 1) == -1 && errno == EACCES)) _exit(93);
    if (!(semctl(ro, 0, IPC_RMID) == -1 && errno == EPERM)) _exit(94);
    /* its own set of mode 0: it may not look, but it may change the mode and remove it */
    int mine = semget(IPC_PRIVATE, 1, IPC_CREAT | 0);
    if (mine < 0) _exit(95);
    struct semid_ds d;
    union semun u;
    u.buf = &d;
    if (!(semctl(mine, 0, IPC_STAT, u) == -1 && errno == EACCES)) _exit(96);
    memset(&d, 0, sizeof(d));
    d.sem_perm.uid = geteuid();
    d.sem_perm.gid = getegid();
    d.sem_perm.mode = 0400;
    if (semctl(mine, 0, IPC_SET, u) != 0) _exit(97);
    if (semctl(mine, 0, IPC_STAT, u) != 0 || (d.sem_perm.mode & 0777) != 0400) _exit(98);
    if (semctl(mine, 0, IPC_RMID) != 0) _exit(99);
    if (!(semctl(mine, 0, GETVAL) == -1 && errno == EINVAL)) _exit(100);
    _exit(0);
  }
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
  if (geteuid() == 0 && WEXITSTATUS(st) != 0) {
    fprintf(stderr, "as nobody: step %d failed\n", WEXITSTATUS(st));
    exit(1);
  }
  CHECK(semctl(ro, 0, IPC_RMID) == 0);
}

/* The ring: a header and SLOTS records in one segment. */
static struct record* attach_ring(key_t key, int* semid, uint32_t* slots) {
  int shm = shmget(key, 0, 0);
  CHECK(shm >= 0);
  uint32_t* head = shmat(shm, NULL, 0);
  CHECK(head != (void*)-1);
  *slots = head[0];
  *semid = semget(key, 2, 0);
  CHECK(*semid >= 0);
  return (struct record*)(head + 16);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
  }
  const char* cmd = argv[1];
  const key_t key = (key_t)strtol(argv[2], NULL, 0);
  struct sembuf up = {0, 1, 0}, down = {0, -1, 0};
  if (strcmp(cmd, "local") == 0) {
    local_rules(key);
    puts("ok");
    return 0;
  }
  if (strcmp(cmd, "ring") == 0) {
    const uint32_t slots = (uint32_t)strtoul(argv[3], NULL, 0);
    int shm = shmget(key, 64 + slots * sizeof(struct record), IPC_CREAT | IPC_EXCL | 0666);
    CHECK(shm >= 0);
    uint32_t* head = shmat(shm, NULL, 0);
    CHECK(head != (void*)-1);
    head[0] = slots;
    CHECK(shmdt(head) == 0);
    int id = semget(key, 2, IPC_CREAT | IPC_EXCL | 0666);
    CHECK(id >= 0);
    unsigned short v[2] = {(unsigned short)slots, 0};
    union semun a;
    a.array = v;
    CHECK(semctl(id, 0, SETALL, a) == 0);
    return 0;
  }
  if (strcmp(cmd, "produce") == 0 || strcmp(cmd, "consume") == 0) {
    const long n = strtol(argv[3], NULL, 0);
    const int produce = strcmp(cmd, "produce") == 0;
    int id;
    uint32_t slots;
    struct record* ring = attach_ring(key, &id, &slots);
    struct sembuf p = {produce ? 0 : 1, -1, 0}, v = {produce ? 1 : 0, 1, 0};
    for (long i = 0; i < n; i++) {
      CHECK(semop(id, &p, 1) == 0);
      struct record* r = &ring[i % slots];
      if (produce) {
        r->seq = (uint64_t)i;
        snprintf(r->text, sizeof(r->text), "message %ld of %ld", i, n);
        r->sum = checksum(r);
      } else {
        if (r->seq != (uint64_t)i || r->sum != checksum(r)) {
          fprintf(stderr, "record %ld: seq %llu, checksum %s\n", i, (unsigned long long)r->seq,
                  r->sum == checksum(r) ? "good" : "bad");
          return 1;
        }
      }
      CHECK(semop(id, &v, 1) == 0);
    }
    if (!produce) printf("ok %ld\n", n);
    return 0;
  }
  if (strcmp(cmd, "make") == 0) {
    const int nsems = atoi(argv[3]), val = atoi(argv[4]);
    int id = semget(key, nsems, IPC_CREAT | IPC_EXCL | 0666);
    CHECK(id >= 0);
    for (int i = 0; i < nsems; i++) CHECK(setval(id, i, val) == 0);
    printf("%d\n", id);
    return 0;
  }
  int id = semget(key, 0, 0);
  CHECK(id >= 0);
  if (strcmp(cmd, "take") == 0) {
    struct sembuf take = {0, -1, SEM_UNDO};
    CHECK(semop(id, &take, 1) == 0);
    puts("held");
    fflush(stdout);
    char line[16];
    CHECK(fgets(line, sizeof(line), stdin) != NULL);
    return 0;
  }
  if (strcmp(cmd, "wait") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    puts("waiting");
    fflush(stdout);
    int r = semop(id, &down, 1);
    printf("errno %d\n", r == 0 ? 0 : errno);
    return 0;
  }
  if (strcmp(cmd, "get") == 0) {
    int v = getval(id, atoi(argv[3]));
    CHECK(v >= 0);
    printf("%d\n", v);
    return 0;
  }
  if (strcmp(cmd, "post") == 0) {
    up.sem_num = (unsigned short)atoi(argv[3]);
    CHECK(semop(id, &up, 1) == 0);
    return 0;
  }
  if (strcmp(cmd, "crowd") == 0) {
    const int n = atoi(argv[3]);
    CHECK(setval(id, 0, 0) == 0);
    pid_t* kids = calloc((size_t)n, sizeof(pid_t));
    for (int i = 0; i < n; i++) {
      kids[i] = fork();
      CHECK(kids[i] >= 0);
      if (kids[i] == 0) _exit(semop(id, &down, 1) == 0 ? 0 : 1);
    }
    CHECK(count_eventually(id, GETNCNT, n) == n);
    struct sembuf all = {0, (short)n, 0};
    CHECK(semop(id, &all, 1) == 0);
    for (int i = 0; i < n; i++) {
      int st = 0;
      CHECK(waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK(getval(id, 0) == 0);
    free(kids);
    printf("ok %d\n", n);
    return 0;
  }
  if (strcmp(cmd, "rmid") == 0) {
    CHECK(semctl(id, 0, IPC_RMID) == 0);
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", cmd);
  return 2;
}
