#!/usr/bin/env python3
"""fsync latency and small-file create throughput in one directory (used by bench/fsync.sh).

usage: fsync.py DIR LABEL  -> prints one JSON line of results
"""
import json, os, random, statistics, sys, time

d, label = sys.argv[1], sys.argv[2]
rng = random.Random(7)
block = os.urandom(4096)

# fsync latency: 4 KiB write at a random offset of a 16 MiB file, then fsync.
p = os.path.join(d, 'fsync-target')
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b'\0' * (16 << 20), 0)
os.fsync(fd)
lat = []
for _ in range(500):
    os.pwrite(fd, block, 4096 * rng.randrange(4096))
    t0 = time.perf_counter()
    os.fsync(fd)
    lat.append((time.perf_counter() - t0) * 1000)
os.close(fd)
os.unlink(p)
lat.sort()

def creates(n, sync):
    sub = os.path.join(d, 'creates-%s' % ('fsync' if sync else 'nosync'))
    os.mkdir(sub)
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(os.path.join(sub, 'f%05d' % i), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, block)
        if sync:
            os.fsync(fd)
        os.close(fd)
    dt = time.perf_counter() - t0
    for i in range(n):
        os.unlink(os.path.join(sub, 'f%05d' % i))
    os.rmdir(sub)
    return n / dt

print(json.dumps({
    'target': label,
    'fsync_ms_median': round(statistics.median(lat), 3),
    'fsync_ms_p99': round(lat[int(len(lat) * 0.99) - 1], 3),
    'creates_per_s_group_commit': round(creates(2000, False)),
    'creates_per_s_fsync_each': round(creates(500, True)),
}))
