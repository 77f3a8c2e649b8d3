/* A plain SysV shm program used by the shim's tests: it knows nothing of cshm.
 * Run under LD_PRELOAD=libcshm_ipc.so CSHM_MOUNT=<mount>.
 *   shm_check local KEY          every single-node rule, errno by errno
 *   shm_check create KEY SIZE    create, write a pattern, detach; prints the shmid
 *   shm_check verify KEY SIZE    attach by key, check the pattern; prints nattch
 *   shm_check hold ID            attach by shmid, write "held", print nattch,
 *                                wait for a line on stdin, check, detach
 *   shm_check stat ID            prints "nattch MODE KEY" or the errno
 *   shm_check rmid ID            IPC_RMID
 *   shm_check ftok PATH          prints ftok(PATH, 'c')
 *   shm_check posix NAME         shm_open/ftruncate/mmap/write/shm_unlink
 *   shm_check hold-exit ID       as hold, but exits without shmdt
 * Exit 0 on success; on a failed check, a message and the line number. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* Whether an SHM_STAT walk of indexes 0..max meets `id`. */
static int walk_finds(int id, int max) {
  for (int i = 0; i <= max; i++) {
    struct shmid_ds d;
    if (shmctl(i, SHM_STAT_ANY, &d) == id) return 1;
  }
  return 0;
}

static int nattch(int id) {
  struct shmid_ds ds;
  if (shmctl(id, IPC_STAT, &ds) != 0) return -1;
  return (int)ds.shm_nattch;
}

/* nattch once it equals `want`, or its value after 10 s: a process that just
 * exited (or exec'd) gives up its attachment when the kernel has released its
 * files, which FUSE does asynchronously; see docs/ipc_compat.md. */
static int nattch_eventually(int id, int want) {
  int n = -1;
  for (int i = 0; i < 1000; i++) {
    n = nattch(id);
    if (n == want) return n;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return n;
}

/* Runs fn in a child and returns its wait status. */
static int in_child(void (*fn)(void* arg), void* arg) {
  pid_t pid = fork();
  if (pid == 0) {
    fn(arg);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

static void write_first_byte(void* p) { *(volatile char*)p = 1; }

struct nobody_args { key_t key; int id; };
static void as_nobody(void* a) {
  struct nobody_args* n = a;
  if (setgid(65534) != 0 || setuid(65534) != 0) _exit(90);
  if (!(shmget(n->key, 0, 0600) == -1 && errno == EACCES)) _exit(91);
  if (!(shmctl(n->id, IPC_RMID, NULL) == -1 && errno == EPERM)) _exit(92);
  struct shmid_ds ds;
  if (!(shmctl(n->id, IPC_STAT, &ds) == -1 && errno == EACCES)) _exit(93);
  _exit(0);
}

static void local_rules(key_t key) {
  long page = sysconf(_SC_PAGESIZE);
  /* shmget */
  int id = shmget(key, 1000, IPC_CREAT | 0600);
  CHECK(id >= 0);
  CHECK_ERR(shmget(key, 1000, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
  CHECK_ERR(shmget(key, 2000, 0600), EINVAL); /* larger than it is */
  CHECK(shmget(key, 500, 0600) == id);
  CHECK(shmget(key, 0, 0) == id);
  CHECK_ERR(shmget(key + 1, 100, 0600), ENOENT);
  CHECK_ERR(shmget(key + 1, 0, IPC_CREAT | 0600), EINVAL);
  int p1 = shmget(IPC_PRIVATE, 100, 0600), p2 = shmget(IPC_PRIVATE, 100, 0600);
  CHECK(p1 >= 0 && p2 >= 0 && p1 != p2);
  /* IPC_STAT */
  struct shmid_ds ds;
  CHECK(shmctl(id, IPC_STAT, &ds) == 0);
  CHECK(ds.shm_segsz == 1000);
  CHECK((ds.shm_perm.mode & 0777) == 0600);
  CHECK(ds.shm_perm.__key == key);
  CHECK(ds.shm_cpid == getpid());
  CHECK(ds.shm_nattch == 0);
  CHECK(ds.shm_perm.uid == geteuid());
  CHECK(ds.shm_lpid == 0 && ds.shm_atime == 0 && ds.shm_dtime == 0);
  const time_t t0 = time(NULL);
  /* shmat: NULL address, given address, SHM_RND, SHM_RDONLY, SHM_REMAP */
  char* a = shmat(id, NULL, 0);
  CHECK(a != (void*)-1);
  strcpy(a, "first");
  CHECK(nattch(id) == 1);
  /* shm_lpid is the last attach's or detach's, with its time */
  CHECK(shmctl(id, IPC_STAT, &ds) == 0);
  CHECK(ds.shm_lpid == getpid() && ds.shm_atime >= t0 && ds.shm_atime <= time(NULL) && ds.shm_dtime == 0);
  pid_t lp = fork();
  if (lp == 0) _exit(shmdt(a) == 0 ? 0 : 1); /* the attachment it inherited; ours stays */
  int lst = 0;
  CHECK(waitpid(lp, &lst, 0) == lp && WIFEXITED(lst) && WEXITSTATUS(lst) == 0);
  CHECK(nattch_eventually(id, 1) == 1); /* the child's inherited one went with it */
  CHECK(shmctl(id, IPC_STAT, &ds) == 0);
  CHECK(ds.shm_lpid == lp && ds.shm_dtime >= t0 && ds.shm_dtime <= time(NULL)); /* its detach came after our attach */
  char* area = mmap(NULL, 8 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(area != MAP_FAILED);
  munmap(area, 8 * page);
  char* b = shmat(id, area + 2 * page, 0);
  CHECK(b == area + 2 * page);
  CHECK(strcmp(b, "first") == 0); /* the same memory */
  CHECK_ERR((long)shmat(id, area + 4 * page + 1, 0), EINVAL);
  char* c = shmat(id, area + 4 * page + 1, SHM_RND);
  CHECK(c == area + 4 * page);
  CHECK_ERR((long)shmat(id, c, 0), EINVAL); /* occupied, no SHM_REMAP */
  char* c2 = shmat(id, c, SHM_REMAP);
  CHECK(c2 == c);
  CHECK(shmdt(c2) == 0);
  char* r = shmat(id, NULL, SHM_RDONLY);
  CHECK(r != (void*)-1);
  CHECK(strcmp(r, "first") == 0);
  int st = in_child(write_first_byte, r);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
  CHECK(nattch_eventually(id, 3) == 3); /* the crashed child's went with it */
  /* fork inherits attachments; exec drops them */
  int to_child[2], from_child[2];
  CHECK(pipe(to_child) == 0 && pipe(from_child) == 0);
  pid_t kid = fork();
  if (kid == 0) {
    char line[8];
    int n = nattch(id);
    if (write(from_child[1], &n, sizeof(n)) != sizeof(n)) _exit(2);
    if (read(to_child[0], line, 1) != 1) _exit(3);
    _exit(0);
  }
  int seen = 0;
  CHECK(read(from_child[0], &seen, sizeof(seen)) == sizeof(seen));
  CHECK(seen == 6); /* 3 here + 3 inherited */
  CHECK(write(to_child[1], "x", 1) == 1);
  waitpid(kid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(nattch_eventually(id, 3) == 3); /* the child's went with it */
  kid = fork();
  if (kid == 0) {
    dup2(to_child[0], 0);
    execl("/bin/sh", "sh", "-c", "read x", (char*)NULL);
    _exit(127);
  }
  /* While the exec'd child runs, it holds no attachment. */
  CHECK(nattch_eventually(id, 3) == 3);
  CHECK(write(to_child[1], "\n", 1) == 1);
  waitpid(kid, &st, 0);
  /* shmdt */
  CHECK(shmdt(r) == 0);
  CHECK(nattch(id) == 2);
  CHECK_ERR(shmdt(area + 7 * page), EINVAL);
  /* IPC_SET */
  CHECK(shmctl(id, IPC_STAT, &ds) == 0);
  ds.shm_perm.mode = 0640;
  CHECK(shmctl(id, IPC_SET, &ds) == 0);
  CHECK(shmctl(id, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & 0777) == 0640);
  /* Another user: EACCES on get/stat, EPERM on removal. */
  ds.shm_perm.mode = 0600;
  CHECK(shmctl(id, IPC_SET, &ds) == 0);
  struct nobody_args na = {key, id};
  st = in_child(as_nobody, &na);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  /* SHM_LOCK, IPC_INFO */
  CHECK(shmctl(id, SHM_LOCK, NULL) == 0 && shmctl(id, SHM_UNLOCK, NULL) == 0);
  struct shminfo info;
  CHECK(shmctl(0, IPC_INFO, (struct shmid_ds*)&info) >= 0);
  /* SHM_INFO and SHM_STAT: the mount's segments follow the kernel's in its
   * index space, walked as LTP's shmctl01 and shmctl04 walk it; one of the
   * kernel's own is made behind the shim's back. */
  int kernel_id = (int)syscall(SYS_shmget, IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  CHECK(kernel_id >= 0);
  struct shm_info si;
  int max = shmctl(0, SHM_INFO, (struct shmid_ds*)&si);
  CHECK(max >= 1 && si.used_ids >= 2);
  CHECK(shmctl(0, IPC_INFO, (struct shmid_ds*)&info) == max);
  int seen_ours = 0, seen_kernels = 0;
  for (int i = 0; i <= max; i++) {
    struct shmid_ds d;
    int got = shmctl(i, SHM_STAT, &d);
    CHECK(got >= 0 || errno == EINVAL || errno == EACCES);
    if (got == id) seen_ours = d.shm_segsz == 1000;
    if (got == kernel_id) seen_kernels = 1;
    if (got >= 0) CHECK(shmctl(i, SHM_STAT_ANY, &d) == got);
  }
  CHECK(seen_ours && seen_kernels);
  CHECK(shmctl(id, SHM_STAT_ANY, &ds) == id); /* an id for an index, as the kernel takes one */
  CHECK_ERR(shmctl(max + 1, SHM_STAT, &ds), EINVAL);
  /* A walk sees what changed since the last one (the shim lists the mount's
   * segments again only when .sysv has changed). */
  int extra = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  CHECK(extra >= 0);
  CHECK(walk_finds(extra, shmctl(0, SHM_INFO, (struct shmid_ds*)&si)));
  CHECK(shmctl(extra, IPC_RMID, NULL) == 0);
  CHECK(!walk_finds(extra, shmctl(0, SHM_INFO, (struct shmid_ds*)&si)));
  CHECK(syscall(SYS_shmctl, kernel_id, IPC_RMID, NULL) == 0);
  /* IPC_RMID while attached: the key is free at once, the memory lives. */
  CHECK(shmctl(id, IPC_RMID, NULL) == 0);
  CHECK(shmctl(id, IPC_STAT, &ds) == 0);
  CHECK(ds.shm_perm.mode & SHM_DEST);
  CHECK(ds.shm_perm.__key == IPC_PRIVATE);
  CHECK_ERR(shmget(key, 100, 0600), ENOENT);
  int id2 = shmget(key, 100, IPC_CREAT | IPC_EXCL | 0600);
  CHECK(id2 >= 0 && id2 != id);
  CHECK(strcmp(a, "first") == 0);
  strcpy(b, "still here");
  CHECK(strcmp(a, "still here") == 0);
  CHECK(shmdt(a) == 0 && shmdt(b) == 0);
  CHECK_ERR(shmctl(id, IPC_STAT, &ds), EINVAL); /* gone with the last detach */
  CHECK(shmctl(id2, IPC_RMID, NULL) == 0);
  CHECK(shmctl(p1, IPC_RMID, NULL) == 0 && shmctl(p2, IPC_RMID, NULL) == 0);
  CHECK_ERR(shmctl(p1, IPC_STAT, &ds), EINVAL);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
  }
  const char* cmd = argv[1];
  if (strcmp(cmd, "local") == 0) {
    local_rules((key_t)strtol(argv[2], NULL, 0));
    puts("ok");
    return 0;
  }
  if (strcmp(cmd, "create") == 0 || strcmp(cmd, "verify") == 0) {
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    size_t size = (size_t)strtoul(argv[3], NULL, 0);
    int create = strcmp(cmd, "create") == 0;
    int id = shmget(key, size, create ? IPC_CREAT | 0666 : 0);
    CHECK(id >= 0);
    unsigned char* p = shmat(id, NULL, 0);
    CHECK(p != (void*)-1);
    for (size_t i = 0; i < size; i++) {
      if (create) p[i] = (unsigned char)(i * 7 + 3);
      else CHECK(p[i] == (unsigned char)(i * 7 + 3));
    }
    if (!create) printf("nattch %d\n", nattch(id));
    CHECK(shmdt(p) == 0);
    if (create) printf("%d\n", id);
    return 0;
  }
  int id = atoi(argv[2]);
  if (strcmp(cmd, "hold") == 0 || strcmp(cmd, "hold-exit") == 0) {
    char* p = shmat(id, NULL, 0);
    CHECK(p != (void*)-1);
    strcpy(p + 100, "held");
    printf("nattch %d\n", nattch(id));
    fflush(stdout);
    char line[64];
    CHECK(fgets(line, sizeof(line), stdin) != NULL);
    strcpy(p + 200, "still usable");
    CHECK(strcmp(p + 200, "still usable") == 0);
    if (strcmp(cmd, "hold-exit") == 0) {
      puts("exiting attached");
      return 0; /* exit detaches, as on Linux */
    }
    CHECK(shmdt(p) == 0);
    puts("detached");
    return 0;
  }
  if (strcmp(cmd, "stat") == 0) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0) {
      printf("errno %d\n", errno);
      return 0;
    }
    printf("nattch %d mode %o key %d\n", (int)ds.shm_nattch, ds.shm_perm.mode, ds.shm_perm.__key);
    return 0;
  }
  if (strcmp(cmd, "rmid") == 0) {
    CHECK(shmctl(id, IPC_RMID, NULL) == 0);
    return 0;
  }
  if (strcmp(cmd, "ftok") == 0) {
    key_t k = ftok(argv[2], 'c');
    CHECK(k != -1);
    printf("%d\n", k);
    return 0;
  }
  if (strcmp(cmd, "posix") == 0) {
    int fd = shm_open(argv[2], O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    CHECK_ERR(shm_open(argv[2], O_CREAT | O_EXCL | O_RDWR, 0600), EEXIST);
    CHECK(ftruncate(fd, 4096) == 0);
    char* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED);
    strcpy(p, "posix");
    CHECK(msync(p, 4096, MS_SYNC) == 0);
    close(fd);
    CHECK(shm_unlink(argv[2]) == 0);
    CHECK_ERR(shm_unlink(argv[2]), ENOENT);
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", cmd);
  return 2;
}
