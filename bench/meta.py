#!/usr/bin/env python3
"""Metadata benchmark driver for bench/run.sh: create, stat and unlink N empty files.

    meta.py DIR --files 10000 --dirs 1      # all files in one directory
    meta.py DIR --files 10000 --dirs 100    # spread over 100 directories (100 files each)

Phases, each timed on its own: create (mkdir of the directories, then open(O_CREAT|O_EXCL)
+ close of every file), stat (lstat of every file by path), unlink (unlink every file, then
rmdir the directories). With --drop-caches (root), the kernel's dentry, inode and page
caches are dropped before each phase so stat and unlink pay for real lookups, the same way
on every filesystem. Prints one JSON object: seconds and operations per second per phase.
"""
import argparse
import json
import os
import sys
import time


def drop_caches() -> None:
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('dir')
    ap.add_argument('--files', type=int, default=10000)
    ap.add_argument('--dirs', type=int, default=1)
    ap.add_argument('--drop-caches', action='store_true')
    a = ap.parse_args()
    if a.files < 1 or a.dirs < 1 or a.files % a.dirs:
        ap.error('--files must be a positive multiple of --dirs')

    root = os.path.join(a.dir, f'meta-{a.files}x{a.dirs}')
    os.mkdir(root)
    dirs = [root] if a.dirs == 1 else [os.path.join(root, f'd{i:03d}') for i in range(a.dirs)]
    per = a.files // a.dirs
    paths = [os.path.join(d, f'file-{j:06d}') for d in dirs for j in range(per)]
    out = {'files': a.files, 'dirs': a.dirs}

    def phase(name, fn):
        if a.drop_caches:
            drop_caches()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        out[f'{name}_s'] = round(dt, 3)
        out[f'{name}_ops_per_s'] = round(a.files / dt, 1)

    def create():
        if a.dirs > 1:
            for d in dirs:
                os.mkdir(d)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for p in paths:
            os.close(os.open(p, flags, 0o644))

    def stat():
        for p in paths:
            os.lstat(p)

    def unlink():
        for p in paths:
            os.unlink(p)
        if a.dirs > 1:
            for d in dirs:
                os.rmdir(d)

    phase('create', create)
    phase('stat', stat)
    phase('unlink', unlink)
    os.rmdir(root)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == '__main__':
    sys.exit(main())
