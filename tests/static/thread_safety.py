#!/usr/bin/env python3
"""Compiles the core's files with clang's -Wthread-safety (syntax only) and
fails on any warning: every field marked GUARDED_BY is touched only with its
mutex held, every function marked REQUIRES is called with it
(common/thread_annotations.h, common/mutex.h, docs/locking.md).

usage: thread_safety.py BUILD_DIR [FILE...]   (default: every file of fs/, meta/,
migrator/, ownership/, store/, net/ and the simulated cluster's tests/sim/ in
BUILD_DIR/compile_commands.json; the project builds with GCC, which ignores
the annotations)
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

FLAGS = ["-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta", "-Werror=thread-safety",
         "-Wno-unknown-warning-option"]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    clang = shutil.which("clang++")
    if clang is None:
        sys.exit("clang++ not found: scripts/install-deps.sh installs clang")
    db_path = os.path.join(build, "compile_commands.json")
    try:
        with open(db_path) as f:
            db = json.load(f)
    except OSError as e:
        sys.exit(f"{db_path}: {e.strerror} (configure the build first: scripts/build.sh)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wanted = [os.path.abspath(p) for p in sys.argv[2:]]
    entries = []
    for e in db:
        path = os.path.abspath(os.path.join(e["directory"], e["file"]))
        rel = os.path.relpath(path, root)
        if wanted:
            if path in wanted:
                entries.append((rel, e))
        elif rel.split(os.sep)[0] in ("fs", "ownership", "migrator", "meta", "store", "net") or \
                rel.startswith(os.path.join("tests", "sim") + os.sep):
            entries.append((rel, e))
    if not entries:
        sys.exit("no files to check in " + db_path)

    def check(item):
        rel, e = item
        args = shlex.split(e["command"]) if "command" in e else e["arguments"]
        keep = []
        for i, a in enumerate(args[1:], 1):
            if a.startswith(("-D", "-I", "-std=")):
                keep.append(a)
            elif a == "-isystem" and i + 1 < len(args):
                keep += [a, args[i + 1]]
        r = subprocess.run([clang, *keep, *FLAGS, e["file"]], cwd=e["directory"], capture_output=True, text=True,
                           timeout=300)
        return rel, r.returncode, r.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for rel, rc, err in pool.map(check, sorted(entries)):
            if rc != 0 or "warning:" in err:
                failed += 1
                print(f"--- {rel}\n{err}", end="")
    print(f"thread safety: {len(entries)} files, {failed} with findings")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
