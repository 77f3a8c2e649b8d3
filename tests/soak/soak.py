#!/usr/bin/env python3
"""Random mixed operations on the nodes of a running cluster, checked against a
model of the expected contents. Each operation goes through a random node's
mount; every write is released (fsync) before the next operation, so every
read on any node must match the model exactly. Segments also move between the
nodes ("move": user.cshm.owner).

Usage: soak.py SECONDS SEED MOUNT0 MOUNT1 ...
Prints the counts; exits non-zero at the first difference."""
import os, random, sys, time

seconds, seed, mounts = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rnd = random.Random(seed)
model = {}          # name -> bytearray
counts = {}
MAXF = 12
MAXSIZE = 256 * 1024

def path(name, mount=None):
    return os.path.join(mount or rnd.choice(mounts), "soak", name)

def check(name, where):
    with open(os.path.join(where, "soak", name), "rb") as f:
        got = f.read()
    want = bytes(model[name])
    if got != want:
        diff = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        sys.exit(f"MISMATCH {name} via {where}: size {len(got)} vs {len(want)}, first difference at {diff}")

os.makedirs(os.path.join(mounts[0], "soak"), exist_ok=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    op = rnd.choice(["create", "write", "write", "write", "read", "read", "truncate", "rename", "unlink", "mmap",
                     "move"])
    names = sorted(model)
    if op == "create" or not names:
        if len(model) >= MAXF:
            continue
        name = f"f{rnd.randrange(1 << 20)}"
        if name in model:
            continue
        open(path(name), "xb").close()
        model[name] = bytearray()
    elif op == "write":
        name = rnd.choice(names)
        off = rnd.randrange(MAXSIZE)
        data = rnd.randbytes(rnd.randrange(1, 9000))
        fd = os.open(path(name), os.O_WRONLY)
        os.pwrite(fd, data, off)
        os.fsync(fd)
        os.close(fd)
        m = model[name]
        if len(m) < off + len(data):
            m.extend(b"\0" * (off + len(data) - len(m)))
        m[off:off + len(data)] = data
    elif op == "mmap":
        import mmap
        name = rnd.choice(names)
        if len(model[name]) < 4096:
            continue
        fd = os.open(path(name), os.O_RDWR)
        mm = mmap.mmap(fd, len(model[name]))
        off = rnd.randrange(len(model[name]) - 16)
        data = rnd.randbytes(16)
        mm[off:off + 16] = data
        mm.flush()
        mm.close()
        os.close(fd)
        model[name][off:off + 16] = data
    elif op == "read":
        name = rnd.choice(names)
        check(name, rnd.choice(mounts))
    elif op == "truncate":
        name = rnd.choice(names)
        size = rnd.randrange(MAXSIZE)
        os.truncate(path(name), size)
        m = model[name]
        if size < len(m):
            del m[size:]
        else:
            m.extend(b"\0" * (size - len(m)))
    elif op == "rename":
        a = rnd.choice(names)
        b = f"f{rnd.randrange(1 << 20)}"
        mnt = rnd.choice(mounts)  # one node's mount for both names
        os.rename(path(a, mnt), path(b, mnt))
        model[b] = model.pop(a)
    elif op == "move":
        # Its ownership moves to a random node (the same node: nothing to do).
        name = rnd.choice(names)
        os.setxattr(path(name), "user.cshm.owner", str(rnd.randrange(len(mounts))).encode())
    elif op == "unlink":
        name = rnd.choice(names)
        os.unlink(path(name))
        del model[name]
        for mnt in mounts:
            if os.path.exists(os.path.join(mnt, "soak", name)):
                sys.exit(f"MISMATCH {name} still visible via {mnt} after unlink")
    counts[op] = counts.get(op, 0) + 1
for name in model:
    for mnt in mounts:
        check(name, mnt)
print("soak: %d operations (%s), %d files checked on %d nodes, no difference"
      % (sum(counts.values()), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), len(model), len(mounts)))
