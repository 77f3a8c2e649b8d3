/* A plain POSIX named semaphore program used by the shim's tests: it knows
 * nothing of cshm. Run under LD_PRELOAD=libcshm_ipc.so CSHM_MOUNT=<mount>.
 *   psem_check local NAME           every single-node rule, errno by errno
 *   psem_check consume NAME FILE N  the consumer of the ring that
 *                                   tests/ipc/psem_producer.py fills: FILE is
 *                                   mapped, NAME-empty/NAME-full guard it;
 *                                   checks every record; prints "ok N"
 *   psem_check wait NAME            sem_wait; prints "errno E" (0: got it)
 *   psem_check get NAME             prints the value
 * Exit 0 on success; on a failed check, a message and the line number. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static int value(sem_t* s) {
  int v = -1;
  CHECK(sem_getvalue(s, &v) == 0);
  return v;
}

static void local_rules(const char* name) {
  sem_unlink(name);
  CHECK(sem_open(name, 0) == SEM_FAILED && errno == ENOENT);
  CHECK(sem_open("/a/b", O_CREAT, 0600, 0) == SEM_FAILED && errno == EINVAL);
  sem_t* s = sem_open(name, O_CREAT | O_EXCL, 0600, 2);
  CHECK(s != SEM_FAILED);
  CHECK(sem_open(name, O_CREAT | O_EXCL, 0600, 0) == SEM_FAILED && errno == EEXIST);
  sem_t* again = sem_open(name, O_CREAT, 0600, 9); /* exists: the value stays */
  CHECK(again == s);                              /* one handle per semaphore, as glibc */
  CHECK(value(s) == 2);
  CHECK(sem_wait(s) == 0 && sem_trywait(s) == 0);
  CHECK_ERR(sem_trywait(s), EAGAIN);
  struct timespec t0, abs;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  clock_gettime(CLOCK_REALTIME, &abs);
  abs.tv_nsec += 200 * 1000 * 1000;
  if (abs.tv_nsec >= 1000000000L) abs.tv_sec++, abs.tv_nsec -= 1000000000L;
  CHECK_ERR(sem_timedwait(s, &abs), ETIMEDOUT);
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec) >= 190e6);
  abs.tv_nsec = 1000000000L;
  CHECK_ERR(sem_timedwait(s, &abs), EINVAL);
  /* a post from another process wakes a waiter */
  pid_t pid = fork();
  if (pid == 0) _exit(sem_wait(s) == 0 ? 0 : 1);
  usleep(100 * 1000);
  CHECK(sem_post(s) == 0);
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CHECK(value(s) == 0);
  /* unlinked: the name is gone at once, the semaphore lives while open */
  CHECK(sem_unlink(name) == 0);
  CHECK(sem_open(name, 0) == SEM_FAILED && errno == ENOENT);
  CHECK_ERR(sem_unlink(name), ENOENT);
  CHECK(sem_post(s) == 0 && value(s) == 1);
  CHECK(sem_close(again) == 0);
  CHECK(sem_close(s) == 0);
  /* an unnamed semaphore is still the C library's */
  sem_t local;
  CHECK(sem_init(&local, 0, 1) == 0);
  CHECK(sem_wait(&local) == 0);
  CHECK_ERR(sem_trywait(&local), EAGAIN);
  CHECK(sem_post(&local) == 0 && sem_destroy(&local) == 0);
  /* values past SEMVMX are refused, the largest accepted */
  CHECK(sem_open(name, O_CREAT | O_EXCL, 0600, 40000) == SEM_FAILED && errno == EINVAL);
  s = sem_open(name, O_CREAT | O_EXCL, 0600, 32767);
  CHECK(s != SEM_FAILED);
  CHECK_ERR(sem_post(s), EOVERFLOW);
  CHECK(sem_close(s) == 0 && sem_unlink(name) == 0);
}


static sem_t* open_named(const char* name, const char* suffix) {
  char full[256];
  snprintf(full, sizeof(full), "%s-%s", name, suffix);
  sem_t* s = SEM_FAILED;
  /* The producer makes them; wait for it (10 s). */
  for (int i = 0; i < 1000 && s == SEM_FAILED; i++) {
    s = sem_open(full, 0);
    if (s == SEM_FAILED) usleep(10 * 1000);
  }
  CHECK(s != SEM_FAILED);
  return s;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top\n");
    return 2;
  }
  const char* cmd = argv[1];
  const char* name = argv[2];
  if (strcmp(cmd, "local") == 0) {
    local_rules(name);
    puts("ok");
    return 0;
  }
  if (strcmp(cmd, "consume") == 0) {
    const long n = strtol(argv[4], NULL, 0);
    sem_t* empty = open_named(name, "empty");
    sem_t* full = open_named(name, "full");
    int fd = open(argv[3], O_RDWR);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0);
    struct record* ring = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(ring != MAP_FAILED);
    const long slots = (long)(st.st_size / (off_t)sizeof(struct record));
    for (long i = 0; i < n; i++) {
      CHECK(sem_wait(full) == 0);
      const struct record* r = &ring[i % slots];
      if (r->seq != (uint64_t)i || r->sum != checksum(r)) {
        fprintf(stderr, "record %ld: seq %llu, checksum %s\n", i, (unsigned long long)r->seq,
                r->sum == checksum(r) ? "good" : "bad");
        return 1;
      }
      CHECK(sem_post(empty) == 0);
    }
    printf("ok %ld\n", n);
    return 0;
  }
  sem_t* s = sem_open(name, 0);
  CHECK(s != SEM_FAILED);
  if (strcmp(cmd, "wait") == 0) {
    puts("waiting");
    fflush(stdout);
    int r = sem_wait(s);
    printf("errno %d\n", r == 0 ? 0 : errno);
    return 0;
  }
  if (strcmp(cmd, "get") == 0) {
    printf("%d\n", value(s));
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", cmd);
  return 2;
}
