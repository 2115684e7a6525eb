// A seeded random POSIX workload from several processes at once (workload-runner.ts: creates,
// writes at random offsets with holes and multi-cluster extents, appends, truncates up and
// down, renames over files and directories, hard links, symlinks, unlinks of open files that
// are read afterwards, mkdir/rmdir, chmod/chown, utimes, user xattrs, fsync), run with the
// same seed against an o2fs mount and against a directory on the host filesystem. Proves:
//   - every operation has the same outcome on both (same errno, bytes, data hashes, stat
//     fields), compared line by line in the workers' logs;
//   - the final trees are the same: names, types, sizes, contents, modes, link counts and
//     which names share an inode, owners, symlink targets, user.* xattrs, and the mtimes the
//     workload set explicitly — both through the live mount and after a remount (from disk);
//   - the volume unmounts cleanly and `fsck.o2fs -n` finds nothing to fix.
// One case uses the default mount options, one `-o nokernelcache`, one 1 KiB blocks and
// 16 KiB clusters (so writes straddle clusters and blocks differently).
//
// Replay a failing seed:  O2FS_WORKLOAD_SEEDS='<seed>[:<mount options>[:<mkfs args>]][,...]' \
//   npx tap --reporter=tap dist/test/mount/workload.test.js
// (O2FS_WORKLOAD_OPS=<n> changes the operations per worker), or run one worker by hand:
//   node dist/test/mount/workload-runner.js --seed S --worker K --root DIR --ops N
import t from 'tap';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsckClean, mountExisting, mountFresh, py, tempDir } from './harness';

const OPS_PER_WORKER = Number(process.env.O2FS_WORKLOAD_OPS ?? 1500);
const WORKERS = 3;
const WORKER_TIMEOUT_MS = 150_000;
const VOLUME_BYTES = 512 << 20;
const DIFFS_SHOWN_MAX = 25;
/** What a fresh o2fs volume holds before the workload starts. */
const O2FS_OWN = ['lost+found'];
const RUNNER = path.join(__dirname, 'workload-runner.js');

interface Case {
  seed: number;
  options?: string;
  /** mkfs.o2fs arguments (a geometry other than the default 4 KiB blocks and clusters). */
  mkfs?: string[];
}

function cases(): Case[] {
  const env = process.env.O2FS_WORKLOAD_SEEDS;
  if (!env) return [{ seed: 1 }, { seed: 2, options: 'nokernelcache' }, { seed: 3, mkfs: ['-b', '1024', '-C', '16384'] }];
  return env.split(',').map((s) => {
    const [seed, options, mkfs] = s.split(':', 3) as [string, string | undefined, string | undefined];
    return { seed: Number(seed), options: options || undefined, mkfs: mkfs ? mkfs.split(' ') : undefined };
  });
}

interface WorkerResult {
  log: string[];
  manifest: { mismatches: number; explicitMtimes: string[]; opCounts: Record<string, number>; errCounts: Record<string, number> };
}

function runWorker(seed: number, worker: number, root: string, outDir: string): Promise<WorkerResult> {
  const log = path.join(outDir, `w${worker}.log`);
  const manifest = path.join(outDir, `w${worker}.json`);
  const args = [RUNNER, '--seed', String(seed), '--worker', String(worker), '--root', root, '--ops', String(OPS_PER_WORKER), '--log', log, '--manifest', manifest];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: WORKER_TIMEOUT_MS, killSignal: 'SIGKILL' });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0) {
        reject(new Error(`seed ${seed} worker ${worker} on ${root} ended with ${signal ?? code}: ${err.slice(-2000)}`));
        return;
      }
      Promise.all([fsp.readFile(log, 'utf8'), fsp.readFile(manifest, 'utf8')])
        .then(([l, m]) => resolve({ log: l.trimEnd().split('\n'), manifest: JSON.parse(m) }))
        .catch(reject);
    });
  });
}

async function runWorkload(seed: number, root: string, outDir: string): Promise<WorkerResult[]> {
  await fsp.mkdir(outDir, { recursive: true });
  return Promise.all(Array.from({ length: WORKERS }, (_, k) => runWorker(seed, k, root, outDir)));
}

interface Entry {
  type: string;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  mtime_ns: number;
  xattrs?: Record<string, string>;
  /** Every path of the tree that names the same inode (files and symlinks with nlink > 1). */
  links?: string[];
}

/** Walks a tree without following symlinks; one Python process, JSON out. */
function dumpTree(root: string, ignoreTop: string[] = []): Record<string, Entry> {
  const code = `
import hashlib, json, os, stat, sys
root = ${JSON.stringify(root)}
ignore_top = ${JSON.stringify(ignoreTop)}
out = {}
by_ino = {}
def walk(rel):
    p = os.path.join(root, rel) if rel else root
    st = os.lstat(p)
    e = {'mode': stat.S_IMODE(st.st_mode), 'nlink': st.st_nlink, 'uid': st.st_uid, 'gid': st.st_gid, 'mtime_ns': st.st_mtime_ns}
    if stat.S_ISDIR(st.st_mode):
        e['type'] = 'dir'
    elif stat.S_ISLNK(st.st_mode):
        e['type'] = 'symlink'; e['size'] = st.st_size; e['target'] = os.readlink(p)
    elif stat.S_ISREG(st.st_mode):
        e['type'] = 'file'; e['size'] = st.st_size
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        e['sha256'] = h.hexdigest()
    else:
        e['type'] = 'other'
    if e['type'] != 'symlink':
        e['xattrs'] = {n: os.getxattr(p, n, follow_symlinks=False).hex() for n in sorted(os.listxattr(p, follow_symlinks=False)) if n.startswith('user.')}
    if e['type'] != 'dir' and st.st_nlink > 1:
        by_ino.setdefault(st.st_ino, []).append(rel)
        e['_ino'] = st.st_ino
    out[rel or '.'] = e
    if e['type'] == 'dir':
        for name in sorted(os.listdir(p)):
            if not rel and name in ignore_top:
                continue
            walk(os.path.join(rel, name) if rel else name)
walk('')
for e in out.values():
    ino = e.pop('_ino', None)
    if ino is not None:
        e['links'] = sorted(by_ino[ino])
print(json.dumps(out))
`;
  return py(code) as Record<string, Entry>;
}

/** Differences between two trees, as readable lines. */
function diffTrees(host: Record<string, Entry>, o2: Record<string, Entry>, explicitMtimes: Set<string>): string[] {
  const out: string[] = [];
  for (const p of Object.keys(host)) if (!(p in o2)) out.push(`${p}: missing on o2fs (${host[p]!.type})`);
  for (const p of Object.keys(o2)) if (!(p in host)) out.push(`${p}: only on o2fs (${o2[p]!.type})`);
  for (const [p, h] of Object.entries(host)) {
    const o = o2[p];
    if (!o) continue;
    const fields: (keyof Entry)[] = ['type', 'mode', 'uid', 'gid', 'nlink', 'size', 'sha256', 'target', 'xattrs', 'links'];
    for (const f of fields) {
      // The root of the workload is the test's directory on the host, the mount's root on o2fs.
      if (p === '.' && f !== 'type' && f !== 'xattrs') continue;
      if (JSON.stringify(h[f]) !== JSON.stringify(o[f])) out.push(`${p}: ${f} host ${JSON.stringify(h[f])?.slice(0, 200)} o2fs ${JSON.stringify(o[f])?.slice(0, 200)}`);
    }
    if (explicitMtimes.has(p) && h.mtime_ns !== o.mtime_ns) out.push(`${p}: mtime_ns (set by utimes) host ${h.mtime_ns} o2fs ${o.mtime_ns}`);
  }
  return out;
}

function firstLogDifference(host: string[], o2: string[]): string | null {
  const n = Math.max(host.length, o2.length);
  for (let i = 0; i < n; i++) {
    if (host[i] !== o2[i]) return `line ${i + 1}:\n  host: ${host[i] ?? '(end)'}\n  o2fs: ${o2[i] ?? '(end)'}`;
  }
  return null;
}

for (const c of cases()) {
  const label = `seed ${c.seed}, ${WORKERS} workers x ${OPS_PER_WORKER} ops, ${c.options ? `-o ${c.options}` : 'default options'}${c.mkfs ? `, mkfs ${c.mkfs.join(' ')}` : ''}`;
  const spec = `${c.seed}${c.options || c.mkfs ? `:${c.options ?? ''}` : ''}${c.mkfs ? `:${c.mkfs.join(' ')}` : ''}`;
  const replay = `replay: O2FS_WORKLOAD_SEEDS='${spec}' O2FS_WORKLOAD_OPS=${OPS_PER_WORKER} npx tap --reporter=tap dist/test/mount/workload.test.js`;
  t.test(label, async (t) => {
    const dir = tempDir(t, 'o2fs-workload-');
    const hostRoot = path.join(dir, 'host');
    await fsp.mkdir(hostRoot);
    const m = await mountFresh(t, dir, { sizeBytes: VOLUME_BYTES, options: c.options, mkfsArgs: c.mkfs });
    const started = Date.now();
    const [hostRes, o2Res] = await Promise.all([runWorkload(c.seed, hostRoot, path.join(dir, 'out-host')), runWorkload(c.seed, m.mp, path.join(dir, 'out-o2fs'))]);
    t.comment(`workload ran in ${((Date.now() - started) / 1000).toFixed(1)} s (host and o2fs side by side)`);

    const opCounts: Record<string, number> = {};
    const errCounts: Record<string, number> = {};
    for (const r of hostRes) {
      for (const [k, v] of Object.entries(r.manifest.opCounts)) opCounts[k] = (opCounts[k] ?? 0) + v;
      for (const [k, v] of Object.entries(r.manifest.errCounts)) errCounts[k] = (errCounts[k] ?? 0) + v;
    }
    t.comment(`operations: ${Object.entries(opCounts).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    t.comment(`expected errors (host): ${Object.entries(errCounts).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`);

    for (let k = 0; k < WORKERS; k++) {
      const h = hostRes[k]!;
      const o = o2Res[k]!;
      // A mismatch on the host means the workload's model is wrong, not o2fs.
      t.equal(h.manifest.mismatches, 0, `worker ${k}: host run agrees with the workload's model`, { found: h.log.filter((l) => l.startsWith('MISMATCH')).slice(0, 10) });
      t.equal(o.manifest.mismatches, 0, `worker ${k}: o2fs run agrees with the workload's model (${replay})`, { found: o.log.filter((l) => l.startsWith('MISMATCH')).slice(0, 10) });
      const d = firstLogDifference(h.log, o.log);
      t.equal(d, null, `worker ${k}: every operation has the same outcome on o2fs as on the host (${replay})`);
    }

    const explicit = new Set(hostRes.flatMap((r) => r.manifest.explicitMtimes.map((p) => p || '.')));
    t.same(o2Res.flatMap((r) => r.manifest.explicitMtimes).sort(), [...explicit].sort(), 'same paths keep an explicit mtime');
    t.comment(`${explicit.size} paths keep the mtime the workload set`);
    const hostTree = dumpTree(hostRoot);
    const live = diffTrees(hostTree, dumpTree(m.mp, O2FS_OWN), explicit);
    t.same(live.slice(0, DIFFS_SHOWN_MAX), [], `live mount: same tree as the host (${Object.keys(hostTree).length} entries; ${replay})`);

    const u = m.umount();
    t.equal(u.status, 0, `umount: ${u.err}`);
    const fsck1 = fsckClean(m.img);
    t.equal(fsck1.status, 0, `fsck -n after the workload is clean: ${fsck1.out}${fsck1.err}`);

    // Everything above may have come from caches; read it all back from disk.
    const again = await mountExisting(t, m.img, m.mp, c.options);
    const remounted = diffTrees(hostTree, dumpTree(again.mp, O2FS_OWN), explicit);
    t.same(remounted.slice(0, DIFFS_SHOWN_MAX), [], `after a remount: same tree as the host (${replay})`);
    const u2 = again.umount();
    t.equal(u2.status, 0, `umount after the remount: ${u2.err}`);
    const fsck2 = fsckClean(m.img);
    t.equal(fsck2.status, 0, `fsck -n after the remount is clean: ${fsck2.out}${fsck2.err}`);
  });
}
