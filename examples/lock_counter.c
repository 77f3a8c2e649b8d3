/* Increments a 64-bit counter at the start of FILE N times, each time under an
 * fcntl write lock on its 8 bytes, through a shared mapping. The unlock is the
 * release: on a cshm cluster, processes on every node doing this end with the
 * exact total. Prints the counter as this process last saw it.
 * Usage: lock_counter FILE N */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int lock8(int fd, short type) {
  struct flock l = {0};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 8;
  return fcntl(fd, F_SETLKW, &l);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s FILE N\n", argv[0]);
    return 2;
  }
  long n = atol(argv[2]);
  int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  struct stat;
  if (lseek(fd, 0, SEEK_END) < 4096 && ftruncate(fd, 4096) != 0) {
    perror("ftruncate");
    return 1;
  }
  volatile uint64_t* c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (c == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  uint64_t last = 0;
  for (long i = 0; i < n; i++) {
    if (lock8(fd, F_WRLCK) != 0 || (last = ++*c, lock8(fd, F_UNLCK)) != 0) {
      perror("fcntl");
      return 1;
    }
  }
  printf("%llu\n", (unsigned long long)last);
  return 0;
}
