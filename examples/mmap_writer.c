/* A plain C program that shares memory through a file of a cshm mount:
 * creates FILE (one page), maps it MAP_SHARED, writes a message, releases it
 * with msync (so that other nodes see it), and waits (at most 20 s) for a
 * reader, on this node or another, to write an answer at offset 2048.
 * Usage: mmap_writer FILE */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, 4096) != 0) {
    perror(argv[1]);
    return 1;
  }
  char* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  /* The answer area first, then the message: the reader starts on seeing it. */
  memset(p + 2048, 0, 64);
  snprintf(p, 128, "hello from C writer pid %d", (int)getpid());
  if (msync(p, 4096, MS_SYNC) != 0) {
    perror("msync");
    return 1;
  }
  printf("writer: stored \"%s\" in the mapping and released it (msync)\n", p);
  fflush(stdout);
  for (int i = 0; i < 2000; i++) { /* 20 s deadline */
    if (p[2048] != 0) {
      printf("writer: reader answered \"%.*s\" through the same memory\n", 64, p + 2048);
      if (msync(p, 4096, MS_SYNC) != 0) {
        perror("msync");
        return 1;
      }
      return 0;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  fprintf(stderr, "writer: no answer from a reader within 20 s\n");
  return 1;
}
