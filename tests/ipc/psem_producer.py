"""The producer of the POSIX-semaphore ring, in Python: it knows nothing of
cshm. Run under LD_PRELOAD=libcshm_ipc.so CSHM_MOUNT=<mount>.

    psem_producer.py NAME FILE SLOTS N

Makes FILE (SLOTS records) and the named semaphores NAME-empty (SLOTS) and
NAME-full (0), then writes N checksummed records: sem_wait(empty), store
through the mapping, sem_post(full); no msync. The semaphore calls go through
ctypes to the process's own symbols (CDLL(None)), so the preloaded ones serve
them, as they would any C extension's.
"""
import ctypes
import mmap
import os
import struct
import sys

RECORD = struct.Struct("<QQ64s")


def checksum(seq, text):
    h = 1469598103934665603 ^ seq
    for b in text:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    name, path, slots, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    libc.sem_wait.argtypes = libc.sem_post.argtypes = [ctypes.c_void_p]
    with open(path, "wb") as f:
        f.truncate(slots * RECORD.size)
    sems = {}
    for suffix, value in (("empty", slots), ("full", 0)):
        s = libc.sem_open(f"{name}-{suffix}".encode(), os.O_CREAT | os.O_EXCL, 0o666, value)
        if s is None or s == ctypes.c_void_p(-1).value:
            sys.exit(f"sem_open {name}-{suffix}: {os.strerror(ctypes.get_errno())}")
        sems[suffix] = s
    fd = os.open(path, os.O_RDWR)
    ring = mmap.mmap(fd, slots * RECORD.size, mmap.MAP_SHARED)
    for i in range(n):
        if libc.sem_wait(sems["empty"]) != 0:
            sys.exit(f"sem_wait: {os.strerror(ctypes.get_errno())}")
        text = f"message {i} of {n}".encode().ljust(64, b"\0")
        RECORD.pack_into(ring, (i % slots) * RECORD.size, i, checksum(i, text), text)
        if libc.sem_post(sems["full"]) != 0:
            sys.exit(f"sem_post: {os.strerror(ctypes.get_errno())}")


if __name__ == "__main__":
    main()
