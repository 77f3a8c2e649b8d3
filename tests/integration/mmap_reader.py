#!/usr/bin/env python3
"""Maps a file of the mount with the standard library's mmap and prints its
first 32 bytes and a checksum of all of them (same formula as mmap_test.cc)."""
import mmap
import sys

path, size = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ)
    data = m[:size]
    m.close()
total = 0
for b in data:
    total = (total * 31 + b) % 1000000007
sys.stdout.write(data[:32].decode("latin-1") + "\n")
sys.stdout.write("sum=%d\n" % total)
