#!/usr/bin/env python3
"""Maps a file written by mmap_writer (standard library mmap only), on the
same node or another, waits up to 20 s for its message, prints it, answers at
offset 2048 and releases the answer (flush = msync)."""
import mmap
import os
import sys
import time

path = sys.argv[1]
deadline = time.monotonic() + 20
while not os.path.exists(path) or os.path.getsize(path) < 4096:
    if time.monotonic() > deadline:
        sys.exit("reader: %s did not appear within 20 s" % path)
    time.sleep(0.01)
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    while m[0] == 0:
        if time.monotonic() > deadline:
            sys.exit("reader: no message within 20 s")
        time.sleep(0.01)
    msg = m[:128].split(b"\0", 1)[0].decode()
    print('reader: found "%s" in the mapping' % msg)
    answer = b"hello back from Python reader pid %d" % os.getpid()
    m[2048:2048 + len(answer)] = answer
    m.flush()
    m.close()
