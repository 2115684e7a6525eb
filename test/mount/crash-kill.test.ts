// Crash of the mount process: several processes work on a mount (creates, writes, renames,
// truncates, unlinks of open files, fsyncs); at a seeded moment the serving process is
// killed with SIGKILL. The dead mount is cleared, the volume mounted again (journal
// replay), and then every file whose fsync returned has exactly its content, no file holds
// words another file wrote, and after unmounting fsck finds nothing.
// O2FS_KILL_SEEDS=N runs N seeds (CI: 3).
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Prng } from '../../fs/prng';
import { fsckClean, mountExisting, mountFresh, tempDir, tool } from './harness';

const SEEDS = Number(process.env.O2FS_KILL_SEEDS ?? 3);
const dir = tempDir(t, 'o2fs-kill-');

/**
 * A worker: its own directory; "kept" files are written once, fsync'd, then listed in the
 * manifest (outside the mount) with their content hash; "noise" files get rewritten,
 * truncated, renamed and unlinked while open. Every 8-byte word written says which file
 * (by a number in its name) wrote it.
 */
const WORKER = `
import os, sys, hashlib, random, struct
root, manifest, seed, wid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed * 100 + wid)
d = os.path.join(root, 'w%d' % wid); os.makedirs(d, exist_ok=True)
man = open(manifest, 'a', buffering=1)
def words(fid, n):
    return b''.join(struct.pack('<IHBB', fid, rng.randrange(65536), 0, 0xA5) for _ in range(n))
fid = wid * 1000000
noise = []
for i in range(100000):
    fid += 1
    k = rng.randrange(10)
    if k < 4:
        p = os.path.join(d, 'k%d' % fid)
        data = words(fid, rng.randrange(1, 3000))
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, data); os.fsync(fd); os.close(fd)
        man.write('%s %s %d\\n' % (p, hashlib.sha256(data).hexdigest(), len(data)))
    elif k < 7 or not noise:
        p = os.path.join(d, 'n%d' % fid)
        with open(p, 'wb') as f: f.write(words(fid, rng.randrange(1, 5000)))
        noise.append((p, fid))
    elif k == 7:
        p, nid = rng.choice(noise)
        with open(p, 'r+b') as f:
            f.seek(8 * rng.randrange(2000)); f.write(words(nid, rng.randrange(1, 500)))
            f.truncate(8 * rng.randrange(3000))
    elif k == 8:
        j = rng.randrange(len(noise)); p, nid = noise[j]
        q = os.path.join(d, 'n%d' % nid + 'r%d' % fid); os.rename(p, q); noise[j] = (q, nid)
    else:
        j = rng.randrange(len(noise)); p, nid = noise.pop(j)
        f = open(p, 'r+b'); os.unlink(p); f.write(words(nid, 10)); f.flush(); f.close()
`;

const CHECK = `
import os, sys, hashlib, json, struct, re
root, manifests = sys.argv[1], sys.argv[2:]
bad_kept = []; foreign = []; kept = 0
for m in manifests:
    for line in open(m):
        parts = line.split()
        if len(parts) != 3: continue
        p, h, n = parts
        kept += 1
        try: data = open(p, 'rb').read()
        except OSError as e: bad_kept.append(p + ': ' + str(e)); continue
        if hashlib.sha256(data).hexdigest() != h: bad_kept.append(p + ': content differs (%d bytes, expected %s)' % (len(data), n))
for dirpath, dirs, files in os.walk(root):
    for name in files:
        p = os.path.join(dirpath, name)
        m = re.match(r'[kn](\\d+)', name)
        if not m: continue
        fid = int(m.group(1)); data = open(p, 'rb').read()
        for off in range(0, len(data) - len(data) % 8, 8):
            w = data[off:off + 8]
            if w == b'\\0' * 8: continue
            if w[7] != 0xA5 or struct.unpack('<I', w[:4])[0] != fid:
                foreign.append('%s at %d' % (p, off)); break
print(json.dumps({'kept': kept, 'bad_kept': bad_kept[:10], 'foreign': foreign[:10]}))
`;

for (let seed = 1; seed <= SEEDS; seed++) {
  t.test(`SIGKILL of the mount, seed ${seed}`, async (t) => {
    const rng = new Prng(seed);
    const m = await mountFresh(t, dir, { sizeBytes: 512 << 20, options: `commit=${1 + rng.int(0, 5)}` });
    const manifests = [0, 1, 2].map((w) => path.join(dir, `manifest-${seed}-${w}`));
    const workers = [0, 1, 2].map((w) => spawn('/usr/bin/python3', ['-c', WORKER, m.mp, manifests[w], String(seed), String(w)], { stdio: 'ignore' }));
    t.teardown(() => workers.forEach((p) => p.kill('SIGKILL')));
    await new Promise((r) => setTimeout(r, 1500 + rng.int(0, 2500)));
    process.kill(m.pid, 'SIGKILL');
    for (const p of workers) p.kill('SIGKILL');
    await Promise.all(workers.map((p) => new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r(null) : p.once('exit', r)))));
    const u = tool('o2fs', ['umount', m.mp]);
    t.equal(u.status, 0, `dead mount cleared ${u.err}`);
    const again = await mountExisting(t, m.img, m.mp);
    const res = JSON.parse(spawnSync('/usr/bin/python3', ['-c', CHECK, again.mp, ...manifests], { timeout: 120_000 }).stdout.toString()) as { kept: number; bad_kept: string[]; foreign: string[] };
    t.ok(res.kept > 0, `${res.kept} files were fsync'd before the kill`);
    t.same(res.bad_kept, [], "every fsync'd file has exactly its content");
    t.same(res.foreign, [], 'no file holds words another file wrote');
    t.equal(again.umount().status, 0);
    const f = fsckClean(m.img);
    t.equal(f.status, 0, f.out);
    for (const mf of manifests) await fsp.rm(mf, { force: true });
  });
}
