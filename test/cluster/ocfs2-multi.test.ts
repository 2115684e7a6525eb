// Multi-node cases modelled on ocfs2-test's multiple_run.sh (docs: reference/ocfs2.md §8),
// on ONE three-node o2cb cluster mounted once for the whole file: every case works in its
// own directory. "On node i" means through node i's mount point: the test process itself or
// python workers (host processes, tracked by the harness) that keep descriptors open between
// the steps the test drives in lockstep. Nodes 0 and 2 mount with kernel caching (names and
// attributes), node 1 with -o nokernelcache; node 2 keeps at most 16 inodes' locks
// (-o lockcache=16), so its cache gives locks back all the time.
//
//   (run in this order: the sequential cases first, the concurrent ones after)
//   open_delete             open on A (and C), unlinked on B: the descriptor still works;
//                           the space comes back after the last close (orphan scan)
//   write_append_truncate   A and B append records and truncate in lockstep, C checks
//                           (also with descriptors held across steps: O_APPEND, ftruncate)
//   attr_coherence          size, mtime, mode, nlink, owner changed on one node, read on two
//   inode_reuse             unlinked on A while open on B, freed at B's close; A's next create
//                           reuses the block: B and C read and append under the new inode's lock
//   disjoint_writers        A and B write their halves of one file in 64 KiB pieces
//   read_ahead              A reads a file in order (read ahead) while B overwrites ahead of
//                           it and truncates it: A sees each change
//   range_writers           A and B overwrite their halves of an 8 MiB file at once, C reads
//   rename_race             A moves x into y while B moves y into x; three nodes race one file
//   cross_delete            A builds a tree, B and C remove it concurrently
//   create_racer            6 racers (2 per node) O_CREAT|O_EXCL the same names
//   unmount + fsck.o2fs -n (and no slot left in use)
//   + on a 2-node cluster of its own: two dlmglues both converting PR->EX (conversion deadlock)
//
// A step that times out (a lock never granted: the cluster is wedged) skips the cases after
// it. O2FS_MULTI_ONLY=open_delete,... runs only the named cases; O2FS_MULTI_SEED replays.
import t, { Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { abortFuse, isFuseMounted } from '../../fs/fuse/mount';
import { DlmGlue } from '../../fs/dlmglue';
import { LOCK_TYPE, lockName } from '../../fs/lock-names';
import { nodeEnv, waitFor } from './harness';
import { O2cbCluster } from './o2cb-cluster';
import { FSCK, Mount, PyWorker, dlmStateOf, dumpLogs, errCode, mountOn, prng, step, unmount, walk } from './multi-helpers';

const SEED = Number(process.env.O2FS_MULTI_SEED ?? (Date.now() % 1_000_000));

async function statAll(mps: string[], rel: string): Promise<Array<import('node:fs').BigIntStats | string>> {
  return Promise.all(mps.map((mp) => fsp.stat(path.join(mp, rel), { bigint: true }).catch((e) => errCode(e))));
}

/** The fields every node must agree on (atime aside: reads move it). */
function attrKey(s: import('node:fs').BigIntStats | string): string {
  if (typeof s === 'string') return s;
  return JSON.stringify([s.ino, s.size, s.mode, s.nlink, s.uid, s.gid, s.mtimeNs, s.ctimeNs, s.blocks].map(String));
}

t.test('ocfs2-test multi-node cases on one 3-node o2cb cluster', async (t) => {
  const t0 = Date.now();
  t.comment(`seed ${SEED} (O2FS_MULTI_SEED to replay)`);
  const c = await O2cbCluster.create({ nodes: 3, diskBytes: 1024 * 1024 * 1024 });
  const mounts: Mount[] = [];
  const workers: PyWorker[] = [];
  t.teardown(async () => {
    for (const w of workers) w.close();
    for (const m of mounts) if (isFuseMounted(m.mp)) await abortFuse(m.mp).catch(() => undefined);
    await c.close();
  });
  // Nodes 0 and 2 let their kernels cache names and attributes (the downconvert invalidates
  // them); node 1 caches nothing (-o nokernelcache): both ways meet in every case. Node 2
  // gives idle locks back beyond 16 inodes (each with what it covered).
  const options = ['', 'nokernelcache', 'lockcache=16'];
  for (let i = 0; i < 3; i++) mounts.push(await step(c, `mount on node ${i}`, mountOn(c, i, options[i]), 90_000));
  const mp = mounts.map((m) => m.mp);
  // Two workers per node: W[node][k].
  const W: PyWorker[][] = [0, 1, 2].map((i) => [0, 1].map((k) => {
    const w = new PyWorker(c, i, mp[i], `py-n${i}-${k}`);
    workers.push(w);
    return w;
  }));
  await step(c, 'workers start', Promise.all(workers.map((w) => w.ok('R = os.getpid()'))), 30_000);
  t.comment(`cluster up and mounted in ${Date.now() - t0} ms`);
  // A step that times out leaves the cluster wedged (a lock nobody will ever grant): the
  // cases after it are skipped rather than each waiting for its own timeout.
  let wedged: string | null = null;
  const only = process.env.O2FS_MULTI_ONLY?.split(',').filter(Boolean) ?? null;
  // Every case is bounded as a whole (90 s; its own steps have tighter bounds), so no await
  // in it can hang the file, and the timeout error carries the logs and DLM dumps.
  const timed = async (key: string, name: string, fn: (t: Test) => Promise<void>, budgetMs = 90_000) => {
    if (only && !only.includes(key)) return;
    const s = Date.now();
    const skip = wedged ? `the cluster is wedged since "${wedged}" timed out` : false;
    await t.test(`${key}: ${name}`, { skip }, async (t) => {
      try {
        await step(c, `case ${key}`, fn(t), budgetMs);
      } catch (e) {
        if (/no result in \d+ ms/.test((e as Error).message)) wedged = key;
        throw e;
      }
      t.comment(`${key}: ${Date.now() - s} ms`);
    });
  };

  // --- 2. open_delete ----------------------------------------------------------------------
  await timed('open_delete', 'open on nodes 0 and 2, unlinked on node 1; space back after the last close', async (t) => {
    const dir = 'open_delete';
    await fsp.mkdir(path.join(mp[0], dir));
    const rel = path.join(dir, 'victim');
    const free = async (i: number) => (await fsp.statfs(path.join(mp[i], dir), { bigint: false })).bfree;
    // Baseline with the inode and its directory entry already allocated: only data counts.
    await fsp.writeFile(path.join(mp[0], rel), '');
    const base = await Promise.all([0, 1, 2].map(free));
    t.ok(base.every((b) => b === base[0]), `statfs agrees on every node: ${base}`);
    const size = 8 * 1024 * 1024;
    const data = randomBytes(size);
    const ha = await fsp.open(path.join(mp[0], rel), 'r+');
    await ha.write(data, 0, size, 0);
    const hc = await fsp.open(path.join(mp[2], rel), 'r');
    const cs = (await fsp.statfs(mp[0])).bsize;
    const used = await free(0);
    t.ok(base[0] - used >= size / cs, `8 MiB written: ${base[0] - used} clusters of ${cs} bytes taken`);
    await step(c, 'unlink on node 1', fsp.unlink(path.join(mp[1], rel)));
    for (let i = 0; i < 3; i++) {
      t.equal(await fsp.stat(path.join(mp[i], rel)).then(() => 'exists', errCode), 'ENOENT', `the name is gone on node ${i}`);
      t.same(await fsp.readdir(path.join(mp[i], dir)), [], `node ${i} lists nothing`);
    }
    // Node 0 still reads and writes the file through its descriptor, node 2 reads it.
    const back = Buffer.alloc(size);
    t.equal((await ha.read(back, 0, size, 0)).bytesRead, size);
    t.ok(back.equals(data), 'node 0 reads the unlinked file in full');
    const patch = randomBytes(300_000);
    patch.copy(data, 1_000_000);
    await ha.write(patch, 0, patch.length, 1_000_000);
    const tail = randomBytes(1024 * 1024 + 17);
    await ha.write(tail, 0, tail.length, size);
    const full = Buffer.concat([data, tail]);
    t.equal((await ha.stat()).size, full.length, 'node 0 extended it through the descriptor');
    t.equal((await hc.stat()).size, full.length, 'node 2 sees the new size through its descriptor');
    const viaC = Buffer.alloc(full.length + 100);
    t.equal((await hc.read(viaC, 0, viaC.length, 0)).bytesRead, full.length);
    t.ok(viaC.subarray(0, full.length).equals(full), 'node 2 reads node 0\'s writes to the unlinked file');
    t.ok(await free(1) < used, 'the space is still taken while it is open');
    // Node 0 closes; node 2 still holds it, across more than one orphan scan.
    await ha.close();
    const until = Date.now() + 6_000;
    let reads = 0;
    let bad = 0;
    while (Date.now() < until) {
      const b = Buffer.alloc(full.length);
      const { bytesRead } = await step(c, 'read on node 2 after node 0 closed', hc.read(b, 0, b.length, 0), 20_000);
      if (bytesRead !== full.length || !b.equals(full)) bad++;
      reads++;
      await new Promise((r) => setTimeout(r, 500));
    }
    t.equal(bad, 0, `node 2 read it intact ${reads} times over 6 s (orphan scans) after node 0 closed`);
    t.ok(await free(0) < used, 'not freed while node 2 holds it open');
    await hc.close();
    const closedAt = Date.now();
    let now: number[] = [];
    const deadline = closedAt + 5_000 + 10_000;
    while (Date.now() < deadline) {
      now = await step(c, 'statfs', Promise.all([0, 1, 2].map(free)));
      if (now.every((f) => f === base[0])) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    t.same(now, [base[0], base[0], base[0]], `free clusters back to ${base[0]} on every node ${Date.now() - closedAt} ms after the last close (was ${now})`);
    if (!now.every((f) => f === base[0])) t.comment(dumpLogs(c, 20));
    t.equal(await fsp.open(path.join(mp[0], rel), 'r').then(async (h) => { await h.close(); return 'opened'; }, errCode), 'ENOENT', 'reopening fails');
  });

  // --- 3. write_append_truncate --------------------------------------------------------------
  const REC = 1000; // deliberately unaligned
  const record = (who: number, seq: number): Buffer => {
    const head = Buffer.from(`<node${who} rec ${String(seq).padStart(6, '0')}|`);
    const b = Buffer.alloc(REC, 0x2e);
    head.copy(b);
    b[REC - 1] = 0x0a;
    return b;
  };
  const appendTruncate = async (t: Test, dir: string, heldFds: boolean, steps: number, todo?: string) => {
    await fsp.mkdir(path.join(mp[0], dir));
    const rel = path.join(dir, 'f');
    await fsp.writeFile(path.join(mp[0], rel), '');
    const rand = prng(SEED + (heldFds ? 1 : 0));
    const writers = [W[0][0], W[1][0]];
    const checker = W[2][0];
    if (heldFds) {
      for (const w of writers) await w.ok(`S['wat'] = os.open(os.path.join(args['mp'], args['rel']), os.O_WRONLY | os.O_APPEND)`, { mp: w.mp, rel });
      await checker.ok(`S['wat'] = os.open(os.path.join(args['mp'], args['rel']), os.O_RDONLY)`, { mp: checker.mp, rel });
    }
    let expect: Buffer = Buffer.alloc(0);
    let seq = 0;
    const log: string[] = [];
    let firstBad: string | null = null;
    for (let s = 0; s < steps && firstBad === null; s++) {
      const who = s % 2; // A, B, A, B...
      const w = writers[who];
      let what: string;
      if (s % 3 === 2) {
        // Truncate (down, or now and then up: a hole reads as zeros) at a record boundary.
        const recs = expect.length / REC;
        const to = rand() < 0.25 ? recs + 1 + Math.floor(rand() * 3) : Math.floor(rand() * (recs + 1));
        const len = to * REC;
        what = `node ${who} truncates to ${to} records`;
        if (heldFds) await step(c, what, w.ok(`os.ftruncate(S['wat'], args['len'])`, { len }));
        else await step(c, what, w.ok(`os.truncate(os.path.join(args['mp'], args['rel']), args['len'])`, { mp: w.mp, rel, len }));
        expect = len <= expect.length ? expect.subarray(0, len) : Buffer.concat([expect, Buffer.alloc(len - expect.length)]);
      } else {
        const r = record(who, seq++);
        what = `node ${who} appends record ${seq - 1}`;
        if (heldFds) await step(c, what, w.ok(`os.write(S['wat'], bytes.fromhex(args['hex']))`, { hex: r.toString('hex') }));
        else await step(c, what, w.ok(`fd = os.open(os.path.join(args['mp'], args['rel']), os.O_WRONLY | os.O_APPEND)\ntry:\n    os.write(fd, bytes.fromhex(args['hex']))\nfinally:\n    os.close(fd)`, { mp: w.mp, rel, hex: r.toString('hex') }));
        expect = Buffer.concat([expect, r]);
      }
      log.push(what);
      // Node 2 checks size and content at once: by path, and (held) through its descriptor.
      const st = await fsp.stat(path.join(mp[2], rel));
      const got = await fsp.readFile(path.join(mp[2], rel));
      let held: { size: number; hex: string } | null = null;
      if (heldFds) held = await step(c, 'check on node 2', checker.ok<{ size: number; hex: string }>(`R = {'size': os.fstat(S['wat']).st_size, 'hex': os.pread(S['wat'], args['n'], 0).hex()}`, { n: expect.length + 4 * REC }));
      const problems: string[] = [];
      if (st.size !== expect.length) problems.push(`stat size ${st.size}, expected ${expect.length}`);
      if (!got.equals(expect)) problems.push(`content by path differs (${got.length} bytes read)${describeDiff(got, expect)}`);
      if (held && held.size !== expect.length) problems.push(`fstat size ${held.size} on node 2's descriptor`);
      if (held && !Buffer.from(held.hex, 'hex').equals(expect)) problems.push(`content through node 2's descriptor differs${describeDiff(Buffer.from(held.hex, 'hex'), expect)}`);
      if (problems.length > 0) firstBad = `after step ${s} (${what}): ${problems.join('; ')}\nsteps: ${log.slice(-8).join(', ')}`;
    }
    if (heldFds) for (const w of [...writers, checker]) await w.ok(`os.close(S.pop('wat'))`);
    t.equal(firstBad, null, `${steps} lockstep steps: size and content exact on node 2 after each`, { todo });
    for (let i = 0; i < 2; i++) t.ok((await fsp.readFile(path.join(mp[i], rel))).equals(expect), `node ${i} agrees at the end`, { todo });
  };
  await timed('write_append_truncate', 'open/append/close and truncate by path in lockstep, checked on a third node', async (t) => {
    await appendTruncate(t, 'wat_open_each', false, 60);
  });
  // O_APPEND on a descriptor opened before another node appended: the server must write at
  // the size it sees under the meta lock, not at the kernel's (stale) offset.
  await timed('write_append_truncate_held', 'descriptors held open across steps (O_APPEND, ftruncate)', async (t) => {
    await appendTruncate(t, 'wat_held', true, 60);
  });

  // --- 6. attribute coherence -------------------------------------------------------------------
  await timed('attr_coherence', 'truncate, utimes, chmod, chown, link on one node, identical on the others at once', async (t) => {
    const dir = 'attr_coherence';
    await fsp.mkdir(path.join(mp[0], dir));
    const rel = path.join(dir, 'f');
    await fsp.writeFile(path.join(mp[0], rel), randomBytes(5000));
    const rand = prng(SEED + 7);
    const problems: string[] = [];
    let links = 0;
    let k = 0;
    const check = async (what: string, pred: (s: import('node:fs').BigIntStats) => string | null) => {
      const st = await step(c, what, statAll(mp, rel));
      const keys = st.map(attrKey);
      if (keys.some((x) => x !== keys[0])) problems.push(`${what}: nodes disagree: ${keys.join(' | ')}`);
      for (let i = 0; i < 3; i++) {
        const s = st[i];
        if (typeof s === 'string') { problems.push(`${what}: node ${i}: ${s}`); continue; }
        const bad = pred(s);
        if (bad) problems.push(`${what}: node ${i}: ${bad}`);
      }
    };
    for (let round = 0; round < 6; round++) {
      for (let n = 0; n < 3; n++, k++) {
        const p = path.join(mp[n], rel);
        const size = Math.floor(rand() * 300_000);
        await step(c, `truncate on node ${n}`, fsp.truncate(p, size));
        await check(`round ${round}: truncate to ${size} on node ${n}`, (s) => (s.size === BigInt(size) ? null : `size ${s.size}`));
        const sec = 1_500_000_000 + k * 1000 + Math.floor(rand() * 1000);
        await fsp.utimes(p, sec + 0.5, sec + 0.25);
        const mtimeNs = BigInt(sec) * 1_000_000_000n + 250_000_000n;
        await check(`round ${round}: utimes on node ${n}`, (s) => (s.mtimeNs === mtimeNs && s.atimeNs === mtimeNs + 250_000_000n ? null : `mtime ${s.mtimeNs} atime ${s.atimeNs}, expected ${mtimeNs}`));
        const mode = 0o600 | Math.floor(rand() * 0o100);
        await fsp.chmod(p, mode);
        await check(`round ${round}: chmod ${mode.toString(8)} on node ${n}`, (s) => ((Number(s.mode) & 0o7777) === mode ? null : `mode ${(Number(s.mode) & 0o7777).toString(8)}`));
        const uid = 1000 + k;
        await fsp.chown(p, uid, 2000 + k);
        await check(`round ${round}: chown on node ${n}`, (s) => (Number(s.uid) === uid && Number(s.gid) === 2000 + k ? null : `uid/gid ${s.uid}/${s.gid}`));
        if (rand() < 0.6 || links === 0) {
          await fsp.link(p, path.join(mp[n], dir, `l${k}`));
          links++;
        } else {
          const names = (await fsp.readdir(path.join(mp[n], dir))).filter((x) => x.startsWith('l'));
          await fsp.unlink(path.join(mp[n], dir, names[Math.floor(rand() * names.length)]));
          links--;
        }
        await check(`round ${round}: link/unlink on node ${n}`, (s) => (Number(s.nlink) === 1 + links ? null : `nlink ${s.nlink}, expected ${1 + links}`));
      }
    }
    t.same(problems, [], `${k} rounds of changes: every attribute identical on all three nodes right after the change`);
  });

  // --- 6b. an inode block freed on one node and reused by another ------------------------------
  // The node that frees an inode keeps its lock (cached, at EX): when the block comes back
  // as a new inode, that node must notice (its lock names the old generation) and neither
  // trust the old lock's value block nor its image of the block.
  await timed('inode_reuse', 'unlinked on node 1 while open on node 0 or 2, freed there at its close; node 1\'s next create reuses the block: reads and appends coherent everywhere', async (t) => {
    const dir = 'inode_reuse';
    await fsp.mkdir(path.join(mp[1], dir));
    const problems: string[] = [];
    let reused = 0;
    const ROUNDS = 8;
    for (let k = 0; k < ROUNDS; k++) {
      const f = k % 2 === 0 ? 0 : 2;
      const x = path.join(dir, `x${k}`);
      const y = path.join(dir, `y${k}`);
      const first = randomBytes(3000 + k);
      await step(c, `round ${k}: create on node 1`, fsp.writeFile(path.join(mp[1], x), first));
      const fh = await step(c, `round ${k}: open on node ${f}`, fsp.open(path.join(mp[f], x), 'r'));
      const xIno = (await fh.stat()).ino;
      // Unlinked while node f holds it: an orphan, freed at node f's close (the last use).
      await step(c, `round ${k}: unlink on node 1`, fsp.unlink(path.join(mp[1], x)));
      const seen = Buffer.alloc(first.length + 10);
      const { bytesRead } = await step(c, `round ${k}: read on node ${f}`, fh.read(seen, 0, seen.length, 0));
      if (!seen.subarray(0, bytesRead).equals(first)) problems.push(`round ${k}: node ${f} read ${bytesRead} bytes of the unlinked x, not what node 1 wrote`);
      await fh.close();
      await new Promise((resolve) => setTimeout(resolve, 200));
      const second = randomBytes(5000 + k);
      await step(c, `round ${k}: create again on node 1`, fsp.writeFile(path.join(mp[1], y), second));
      if ((await fsp.stat(path.join(mp[1], y))).ino === xIno) reused++;
      const want = async (node: number, buf: Buffer, what: string) => {
        const got = await step(c, `round ${k}: ${what}: read on node ${node}`, fsp.readFile(path.join(mp[node], y)).catch((e) => errCode(e)));
        if (typeof got === 'string') problems.push(`round ${k}: ${what}: node ${node}: ${got}`);
        else if (!got.equals(buf)) problems.push(`round ${k}: ${what}: node ${node} read ${got.length} bytes, expected ${buf.length}${describeDiff(got, buf)}`);
        const st = await fsp.stat(path.join(mp[node], y)).catch((e) => errCode(e));
        if (typeof st !== 'string' && st.size !== buf.length) problems.push(`round ${k}: ${what}: node ${node} says size ${st.size}, expected ${buf.length}`);
      };
      await want(f, second, 'after the create');
      const more = randomBytes(700);
      await fsp.appendFile(path.join(mp[1], y), more);
      await want(f, Buffer.concat([second, more]), 'after node 1 appended');
      const last = randomBytes(900);
      await fsp.appendFile(path.join(mp[f], y), last);
      await want(1, Buffer.concat([second, more, last]), `after node ${f} appended`);
      await want(2 - f, Buffer.concat([second, more, last]), `after node ${f} appended`);
    }
    t.ok(reused > 0, `the freed block was taken again by the next create in ${reused} of ${ROUNDS} rounds`);
    t.same(problems, [], 'every node reads what was written last, whichever inode had the block before');
  });

  // --- 7. concurrent writers on disjoint ranges -------------------------------------------------
  await timed('disjoint_writers', 'nodes 0 and 1 write their halves of one file in 64 KiB pieces', async (t) => {
    const dir = 'disjoint_writers';
    await fsp.mkdir(path.join(mp[0], dir));
    const rel = path.join(dir, 'f');
    await fsp.writeFile(path.join(mp[0], rel), '');
    const PIECE = 64 * 1024;
    const PIECES = 24;
    const ITERS = 4;
    const label = (w: number, it: number, p: number) => `w${w} it${String(it).padStart(3, '0')} pc${String(p).padStart(4, '0')} ;`;
    const piece = (w: number, it: number, p: number) => Buffer.from(label(w, it, p).repeat(Math.ceil(PIECE / label(w, it, p).length)).slice(0, PIECE));
    const code = String.raw`
fd = os.open(os.path.join(args['mp'], args['rel']), os.O_RDWR)
P = args['PIECE']; n = args['PIECES']; w = args['w']
try:
    for it in range(args['ITERS']):
        order = range(n) if it % 2 == 0 else range(n - 1, -1, -1)
        for p in order:
            lab = 'w%d it%03d pc%04d ;' % (w, it, p)
            buf = (lab * (P // len(lab) + 1))[:P].encode()
            off = (w * n + p) * P
            if os.pwrite(fd, buf, off) != P:
                raise Exception('short write')
finally:
    os.close(fd)
R = True
`;
    await step(c, 'the two writers', Promise.all([0, 1].map((w) => W[w][1].ok(code, { mp: mp[w], rel, PIECE, PIECES, ITERS, w }))), 120_000);
    const expect = Buffer.concat([0, 1].flatMap((w) => Array.from({ length: PIECES }, (_, p) => piece(w, ITERS - 1, p))));
    for (let i = 0; i < 3; i++) {
      const got = await step(c, `read on node ${i}`, fsp.readFile(path.join(mp[i], rel)));
      t.equal(got.length, expect.length, `node ${i}: size`);
      t.ok(got.equals(expect), `node ${i}: every byte is what its writer wrote last${describeDiff(got, expect)}`);
    }
  });

  await timed('read_ahead', 'node 0 reads a 16 MiB file in order (read ahead: its mount caches no pages) while node 1 overwrites a piece ahead of it, then truncates it: node 0 sees each change', async (t) => {
    // Node 0 fetches up to 4 MiB past its reads (fs/read-ahead.ts) under its inode and
    // extent locks at PR. Node 1's overwrites take the piece's extent lock at EX while the
    // file's times are under a second old (as here: removing the extent lock's hook fails
    // this case), its inode lock at EX otherwise; its truncate takes the inode lock at EX.
    // Each must make node 0 drop what it fetched.
    const MiB = 1 << 20;
    const rel = path.join('read_ahead', 'f');
    await fsp.mkdir(path.join(mp[1], 'read_ahead'));
    let data = Buffer.alloc(16 * MiB);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    await fsp.writeFile(path.join(mp[1], rel), data);
    const r = W[0][1];
    await r.ok(`S['ra'] = os.open(os.path.join(args['mp'], args['rel']), os.O_RDONLY)`, { mp: r.mp, rel });
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    const expectMiB = async (k: number, what: string): Promise<void> => {
      const want = data.subarray(k * MiB, (k + 1) * MiB);
      const got = await step(c, `node 0 reads MiB ${k}`, r.ok<[number, string]>(`import hashlib
b = os.pread(S['ra'], 1 << 20, args['k'] << 20)
R = [len(b), hashlib.sha256(b).hexdigest()]`, { k }));
      t.same(got, [want.length, sha(want)], what);
    };
    const overwrite = async (fill: number): Promise<void> => {
      const marker = Buffer.alloc(4096, fill);
      const w = await fsp.open(path.join(mp[1], rel), 'r+');
      await w.write(marker, 0, marker.length, 3 * MiB + 8192);
      await w.close();
      marker.copy(data, 3 * MiB + 8192);
    };
    await expectMiB(0, 'MiB 0');
    await expectMiB(1, 'MiB 1 (node 0 now reads ahead)');
    await overwrite(0xa5);
    await expectMiB(2, 'MiB 2');
    await overwrite(0x5a);
    await expectMiB(3, 'MiB 3 holds node 1\'s last overwrite');
    await fsp.truncate(path.join(mp[1], rel), 5 * MiB + 100);
    data = data.subarray(0, 5 * MiB + 100);
    await expectMiB(4, 'MiB 4');
    await expectMiB(5, 'MiB 5: the 100 bytes before node 1\'s new end');
    await expectMiB(6, 'MiB 6: nothing');
    await r.ok(`os.close(S.pop('ra'))`);
  });

  await timed('range_writers', 'nodes 0 and 1 overwrite their halves of an 8 MiB file at once (extent locks); node 2 reads meanwhile', async (t) => {
    // Overwrites of written data in a file of at least one extent-lock chunk (4 MiB) hold the
    // inode lock at PR and their ranges at EX (fs/inode-locks.ts): both writers go on at
    // once, and a reader (ranges at PR) never sees a piece half written.
    const rel = path.join('range_writers', 'f');
    await fsp.mkdir(path.join(mp[0], 'range_writers'));
    const SIZE = 8 * 1024 * 1024;
    await fsp.writeFile(path.join(mp[0], rel), Buffer.alloc(SIZE, 0x2e));
    const PIECE = 64 * 1024;
    const writer = String.raw`
fd = os.open(os.path.join(args['mp'], args['rel']), os.O_RDWR)
P = args['PIECE']; half = args['SIZE'] // 2; w = args['w']; n = half // P
try:
    for it in range(args['ITERS']):
        for p in range(n):
            lab = 'w%d it%03d pc%04d ;' % (w, it, p)
            buf = (lab * (P // len(lab) + 1))[:P].encode()
            if os.pwrite(fd, buf, w * half + p * P) != P:
                raise Exception('short write')
finally:
    os.close(fd)
R = True
`;
    const reader = String.raw`
import time
fd = os.open(os.path.join(args['mp'], args['rel']), os.O_RDONLY)
P = args['PIECE']; n = args['SIZE'] // P; torn = []; reads = 0
rnd = __import__('random').Random(args['seed'])
deadline = time.time() + args['seconds']
try:
    while time.time() < deadline:
        p = rnd.randrange(n)
        buf = os.pread(fd, P, p * P)
        reads += 1
        if buf == b'.' * P:
            continue
        lab = buf[:buf.index(b';') + 1]
        if (lab * (P // len(lab) + 1))[:P] != buf:
            torn.append(p)
finally:
    os.close(fd)
R = {'torn': torn[:10], 'reads': reads}
`;
    const ITERS = 3;
    const t1 = Date.now();
    const [, , seen] = await step(c, 'two writers and a reader', Promise.all([
      W[0][1].ok(writer, { mp: mp[0], rel, PIECE, SIZE, ITERS, w: 0 }),
      W[1][1].ok(writer, { mp: mp[1], rel, PIECE, SIZE, ITERS, w: 1 }),
      W[2][1].ok<{ torn: number[]; reads: number }>(reader, { mp: mp[2], rel, PIECE, SIZE, seed: SEED, seconds: 3 }),
    ]), 120_000);
    t.comment(`range_writers: writers done in ${Date.now() - t1} ms; node 2 read ${seen.reads} pieces meanwhile`);
    t.same(seen.torn, [], 'node 2 never read a piece half written');
    const piece = (w: number, it: number, p: number): Buffer => {
      const lab = `w${w} it${String(it).padStart(3, '0')} pc${String(p).padStart(4, '0')} ;`;
      return Buffer.from(lab.repeat(Math.ceil(PIECE / lab.length)).slice(0, PIECE));
    };
    const n = SIZE / 2 / PIECE;
    const expect = Buffer.concat([0, 1].flatMap((w) => Array.from({ length: n }, (_, p) => piece(w, ITERS - 1, p))));
    for (let i = 0; i < 3; i++) {
      const got = await step(c, `read on node ${i}`, fsp.readFile(path.join(mp[i], rel)));
      t.ok(got.equals(expect), `node ${i}: every byte is what its writer wrote last${describeDiff(got, expect)}`);
    }
  });

  // --- 4. rename races ------------------------------------------------------------------------
  await timed('rename_race', 'x into y against y into x, and one file renamed by three nodes', async (t) => {
    const R = 'rename_race';
    await fsp.mkdir(path.join(mp[0], R));
    await fsp.mkdir(path.join(mp[0], R, 'x'));
    await fsp.mkdir(path.join(mp[0], R, 'y'));
    await fsp.writeFile(path.join(mp[0], R, 'x', 'mx'), 'x');
    await fsp.writeFile(path.join(mp[0], R, 'y', 'my'), 'y');
    const A = W[0][0];
    const B = W[1][0];
    const C = W[2][0];
    const ren = `os.rename(os.path.join(args['mp'], args['a']), os.path.join(args['mp'], args['b']))`;
    const tally: Record<string, number> = {};
    const problems: string[] = [];
    const checkTree = async (k: number, expectPaths: string[]) => {
      const walks = await step(c, `walk ${k}`, Promise.all(mp.map((m) => walk(path.join(m, R), 8, 1000))));
      const keys = walks.map((w) => JSON.stringify(w.entries.map((e) => [e.path, e.ino, e.nlink])));
      walks.forEach((w, i) => w.errors.length && problems.push(`iteration ${k}, node ${i}: ${w.errors.join('; ')}`));
      if (keys.some((x) => x !== keys[0])) problems.push(`iteration ${k}: the nodes see different trees: ${keys.join(' | ')}`);
      const paths = walks[0].entries.map((e) => e.path).sort();
      if (JSON.stringify(paths) !== JSON.stringify([...expectPaths].sort())) problems.push(`iteration ${k}: tree ${paths} expected ${[...expectPaths].sort()}`);
      for (const e of walks[0].entries.filter((e) => e.dir)) {
        const subdirs = walks[0].entries.filter((s) => s.dir && path.dirname(s.path) === e.path).length;
        if (e.nlink !== 2 + subdirs) problems.push(`iteration ${k}: ${e.path} has nlink ${e.nlink}, ${2 + subdirs} subdirs+2`);
      }
    };
    const ITER = 25;
    for (let k = 0; k < ITER; k++) {
      const [ra, rb] = await step(c, `rename race ${k}`, Promise.all([
        A.call(ren, { mp: A.mp, a: `${R}/x`, b: `${R}/y/x` }),
        B.call(ren, { mp: B.mp, a: `${R}/y`, b: `${R}/x/y` }),
      ]));
      const outcome = `A:${ra.ok ? 'ok' : ra.errno} B:${rb.ok ? 'ok' : rb.errno}`;
      tally[outcome] = (tally[outcome] ?? 0) + 1;
      if (ra.ok === rb.ok) problems.push(`iteration ${k}: ${outcome}: exactly one must succeed`);
      for (const r of [ra, rb]) if (!r.ok && r.errno !== 'ENOENT' && r.errno !== 'EINVAL') problems.push(`iteration ${k}: unexpected ${r.errno} ${r.msg}`);
      const expectPaths = ra.ok && !rb.ok ? ['y', 'y/my', 'y/x', 'y/x/mx'] : rb.ok && !ra.ok ? ['x', 'x/mx', 'x/y', 'x/y/my'] : [];
      if (ra.ok !== rb.ok) await checkTree(k, expectPaths);
      if (problems.length > 0) break;
      // Put it back, from a node that took no part.
      const m = mp[2];
      if (ra.ok) await fsp.rename(path.join(m, R, 'y', 'x'), path.join(m, R, 'x'));
      else await fsp.rename(path.join(m, R, 'x', 'y'), path.join(m, R, 'y'));
    }
    t.same(problems, [], `${ITER} iterations: never both, never a loop, the same tree everywhere`);
    t.comment(`dir rename outcomes: ${JSON.stringify(tally)}`);
    // Three nodes move the same file to three places.
    const ftally: Record<string, number> = {};
    const fproblems: string[] = [];
    for (let k = 0; k < 25 && fproblems.length === 0; k++) {
      await fsp.writeFile(path.join(mp[0], R, 'f'), `file ${k}`);
      const rs = await step(c, `file rename race ${k}`, Promise.all([
        A.call(ren, { mp: A.mp, a: `${R}/f`, b: `${R}/x/f` }),
        B.call(ren, { mp: B.mp, a: `${R}/f`, b: `${R}/y/f` }),
        C.call(ren, { mp: C.mp, a: `${R}/f`, b: `${R}/g` }),
      ]));
      const winners = rs.map((r, i) => (r.ok ? i : -1)).filter((i) => i >= 0);
      ftally[winners.join(',')] = (ftally[winners.join(',')] ?? 0) + 1;
      if (winners.length !== 1) fproblems.push(`iteration ${k}: winners ${winners}`);
      for (const r of rs) if (!r.ok && r.errno !== 'ENOENT') fproblems.push(`iteration ${k}: unexpected ${r.errno} ${r.msg}`);
      const target = [`x/f`, `y/f`, `g`][winners[0] ?? 0];
      await checkTree(100 + k, ['x', 'x/mx', 'y', 'y/my', target]);
      if (problems.length > 0) fproblems.push(...problems.splice(0));
      for (let i = 0; i < 3; i++) {
        const got = await fsp.readFile(path.join(mp[i], R, target), 'utf8').catch(errCode);
        if (got !== `file ${k}`) fproblems.push(`iteration ${k}: node ${i} reads ${target} as ${got}`);
      }
      await fsp.unlink(path.join(mp[k % 3], R, target));
    }
    t.same(fproblems, [], '25 three-way file renames: exactly one wins, the file exists once, same everywhere');
    t.comment(`file rename winners: ${JSON.stringify(ftally)}`);
  });

  // --- 5. cross_delete -----------------------------------------------------------------------
  await timed('cross_delete', 'node 0 builds 20 dirs x 20 files, nodes 1 and 2 remove it concurrently', async (t) => {
    const top = 'cross_delete';
    const D = 20;
    const F = 20;
    await step(c, 'build the tree on node 0', W[0][0].ok(String.raw`
top = os.path.join(args['mp'], args['top'])
os.mkdir(top)
for d in range(args['D']):
    p = os.path.join(top, 'd%02d' % d)
    os.mkdir(p)
    for f in range(args['F']):
        with open(os.path.join(p, 'f%02d' % f), 'wb') as h:
            h.write(b'%d/%d ' % (d, f) * 50)
`, { mp: mp[0], top, D, F }), 90_000);
    const seen = await Promise.all([1, 2].map(async (i) => (await walk(path.join(mp[i], top))).entries.length));
    t.same(seen, [D * F + D, D * F + D], 'nodes 1 and 2 see the whole tree');
    const rm = String.raw`
import stat
st = {'removed': 0, 'enoent': 0, 'errors': []}
def rm(p):
    try:
        names = sorted(os.listdir(p))
    except FileNotFoundError:
        st['enoent'] += 1
        return
    except OSError as e:
        st['errors'].append([p, 'listdir', en(e)])
        return
    for n in names:
        q = os.path.join(p, n)
        try:
            s = os.lstat(q)
        except FileNotFoundError:
            st['enoent'] += 1
            continue
        if stat.S_ISDIR(s.st_mode):
            rm(q)
            continue
        try:
            os.unlink(q)
            st['removed'] += 1
        except FileNotFoundError:
            st['enoent'] += 1
        except OSError as e:
            st['errors'].append([q, 'unlink', en(e)])
    try:
        os.rmdir(p)
        st['removed'] += 1
    except FileNotFoundError:
        st['enoent'] += 1
    except OSError as e:
        st['errors'].append([p, 'rmdir', en(e)])
rm(os.path.join(args['mp'], args['top']))
R = st
`;
    type RmRes = { removed: number; enoent: number; errors: [string, string, string][] };
    const res = await step(c, 'concurrent removal on nodes 1 and 2', Promise.all([1, 2].map((i) => W[i][0].ok<RmRes>(rm, { mp: mp[i], top }))), 120_000);
    t.same(res.flatMap((r) => r.errors), [], 'no error other than ENOENT races');
    t.equal(res[0].removed + res[1].removed, D * F + D + 1, `every entry removed exactly once (node 1: ${res[0].removed}, node 2: ${res[1].removed}, ENOENT races: ${res[0].enoent + res[1].enoent})`);
    for (let i = 0; i < 3; i++) {
      t.equal(await fsp.stat(path.join(mp[i], top)).then(() => 'exists', errCode), 'ENOENT', `gone on node ${i}`);
      t.notOk((await fsp.readdir(mp[i])).includes(top), `not listed on node ${i}`);
    }
  });

  // --- 1. create_racer ---------------------------------------------------------------------
  await timed('create_racer', 'O_CREAT|O_EXCL races on three nodes, names visible everywhere at once', async (t) => {
    const dir = 'create_racer';
    await fsp.mkdir(path.join(mp[0], dir));
    const names = Array.from({ length: 60 }, (_, k) => `n${String(k).padStart(3, '0')}`);
    const racers = W.flat();
    const code = String.raw`
res = {'created': [], 'eexist': 0, 'errors': [], 'statfail': []}
me = args['mp']; d = args['dir']; tag = args['tag'].encode()
for n in args['names']:
    p = os.path.join(me, d, n)
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, tag)
        finally:
            os.close(fd)
        res['created'].append(n)
    except FileExistsError:
        res['eexist'] += 1
    except OSError as e:
        res['errors'].append([n, en(e)])
    for m in args['mps']:
        try:
            os.stat(os.path.join(m, d, n))
        except OSError as e:
            res['statfail'].append([n, m, en(e)])
R = res
`;
    type Res = { created: string[]; eexist: number; errors: [string, string][]; statfail: [string, string, string][] };
    const results = await step(c, 'create_racer', Promise.all(racers.map((w) => w.ok<Res>(code, { mp: w.mp, mps: mp, dir, names, tag: w.proc.label }))), 60_000);
    const owner = new Map<string, string[]>();
    results.forEach((r, k) => r.created.forEach((n) => owner.set(n, [...(owner.get(n) ?? []), racers[k].proc.label])));
    t.same(results.flatMap((r) => r.errors), [], 'no error other than EEXIST');
    t.same(results.flatMap((r) => r.statfail), [], 'every name stat()s on all three nodes right after its create (or EEXIST)');
    const twice = names.filter((n) => (owner.get(n) ?? []).length !== 1).map((n) => [n, owner.get(n) ?? []]);
    t.same(twice, [], 'every name created by exactly one racer');
    if (twice.length > 0) {
      // Two nodes each held the directory's lock at EX: show what the lock managers think.
      const ino = (await fsp.stat(path.join(mp[0], dir))).ino;
      t.comment(`directory inode ${ino}: lock state\n${dlmStateOf(c, ino.toString(16).padStart(16, '0'))}\n${dumpLogs(c, 60)}`);
    }
    t.equal(results.reduce((a, r) => a + r.eexist, 0), names.length * (racers.length - 1), 'all other attempts got EEXIST');
    t.comment(`creates per racer: ${results.map((r, k) => `${racers[k].proc.label}=${r.created.length}`).join(' ')}`);
    for (let i = 0; i < 3; i++) {
      t.same((await fsp.readdir(path.join(mp[i], dir))).sort(), names, `node ${i} lists every name once`);
      const wrong: string[] = [];
      for (const n of names) {
        const content = await fsp.readFile(path.join(mp[i], dir, n), 'utf8');
        if (content !== owner.get(n)?.[0]) wrong.push(`${n}: ${JSON.stringify(content)} (created by ${owner.get(n)})`);
      }
      t.same(wrong, [], `node ${i} reads each file as its creator wrote it`);
    }
  });

  // --- 8. unmount all, fsck ----------------------------------------------------------------------
  // Not skipped when wedged: then the mounts are aborted (the lock space must be free for 9).
  const unmountAll = async (t: Test) => {
    for (const w of workers) w.close();
    if (wedged) {
      for (const m of mounts) await abortFuse(m.mp).catch(() => undefined);
      const exited = await Promise.race([Promise.all(mounts.map((m) => m.server.exited)).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5_000))]);
      t.comment(`cluster wedged since ${wedged}: mounts aborted${exited ? '' : ' (their servers, stuck on the cluster lock, have not exited 5 s later: the teardown kills them)'}; fsck not run`);
      return;
    }
    await step(c, 'workers exit', Promise.all(workers.map((w) => w.proc.exited)), 20_000);
    for (const m of mounts) t.equal(await step(c, `unmount of node ${m.node}`, unmount(m)), 0, `node ${m.node} unmounts cleanly`);
    const given = /(\d+) given back \(bound 16\)/.exec(mounts[2].server.stderr());
    t.ok(given && Number(given[1]) > 0, `node 2 (lockcache=16) gave idle locks back: ${given?.[0] ?? 'no lock statistics logged'}`);
    const fsck = await c.world.run(0, process.execPath, [FSCK, '-n', c.world.sharedDisk], { env: nodeEnv(), timeoutMs: 120_000 });
    t.equal(fsck.status, 0, `fsck.o2fs -n: ${fsck.stdout}${fsck.stderr}`);
    // Every node unmounted cleanly: no slot may still be marked in use.
    t.notMatch(fsck.stdout + fsck.stderr, /volume is in use/, 'the slot map is empty after three clean unmounts');
  };
  if (only && !only.includes('umount_fsck')) await unmountAll(t);
  else await t.test('umount_fsck: unmount on all three nodes, then fsck.o2fs -n is clean', unmountAll);

  t.comment(`total ${Date.now() - t0} ms`);
});

// --- 9. the conversion deadlock, at the dlmglue level -------------------------------------------
// A regression test for the first wedge these cases found: two nodes cache PR on a lock and
// both want EX. The DLM queues both converts; the head's BAST goes to the other
// node, which must cancel its own convert in flight (reference/ocfs2.md §2.4 "BUSY otherwise
// -> cancel") or neither convert is ever granted (dlmglue without the cancel hung here). Deterministic, no filesystem involved:
// two DlmGlue instances on the daemons of a cluster of its own (a mount claims the lock
// space for itself, and the daemons may not survive the stuck clients' disconnect).
t.test('dlmglue: two nodes holding PR both convert to EX (conversion deadlock)', async (t) => {
  const c = await O2cbCluster.create({ nodes: 2 });
  t.teardown(() => c.close());
  const group = c.group();
  const glues = [new DlmGlue(), new DlmGlue()];
  const conns = await step(c, 'connect two lock clients', Promise.all([0, 1].map((i) => c.connect(i, { group, proto: { major: 1, minor: 0 } }, glues[i].callbacks, () => undefined))), 30_000);
  try {
    conns.forEach((x, i) => glues[i].attach(x));
    // The race is timing-dependent: up to ROUNDS rounds, each on a fresh lock (mastered by
    // node 0, its first user): EX on 0, EX on 1 (0 drops to NL), PR on 0, PR on 1 (1 drops
    // to PR), then both ask EX at once, as two mounts do (a lookup's PR, then a create's EX).
    const ROUNDS = 12;
    let outcome = 'both granted';
    let round = 0;
    let state = '';
    for (; round < ROUNDS && outcome === 'both granted'; round++) {
      const name = lockName(LOCK_TYPE.meta, 0x7000 + round);
      const res = glues.map((g) => g.resource(name, { onDownconvert: async () => undefined }));
      for (const [i, mode] of [[0, 'EX'], [1, 'EX'], [0, 'PR'], [1, 'PR']] as const) {
        (await step(c, `round ${round}: ${mode} on node ${i}`, glues[i].lock(res[i], mode), 10_000)).release();
      }
      const both = Promise.all([0, 1].map(async (i) => (await glues[i].lock(res[i], 'EX')).release()));
      both.catch(() => undefined);
      outcome = await Promise.race([both.then(() => 'both granted'), new Promise<string>((r) => setTimeout(() => r('stuck'), 10_000))]);
      state = res.map((r, i) => `node ${i} level ${r.level} busy ${r.busy} blocking ${r.blocking}`).join('; ');
    }
    t.equal(outcome, 'both granted', `${round} round(s): both concurrent EX requests granted in turn each time (last state: ${state})`);
  } finally {
    await step(c, 'disconnect the lock clients', Promise.all(conns.map((x) => x.disconnect().catch(() => undefined))), 20_000);
    await new Promise((r) => setTimeout(r, 500));
    t.comment(`daemons after the disconnect: ${c.daemons.map((d, i) => `node ${i} ${d?.running ? 'running' : `exited ${JSON.stringify(d?.exitStatus)}`}`).join(', ')}`);
  }
});

/** Where two buffers first differ, for messages. */
function describeDiff(got: Buffer, want: Buffer): string {
  if (got.equals(want)) return '';
  const n = Math.min(got.length, want.length);
  let k = 0;
  while (k < n && got[k] === want[k]) k++;
  return ` [lengths ${got.length}/${want.length}, first difference at byte ${k}: got ${JSON.stringify(got.subarray(k, k + 40).toString('latin1'))}, want ${JSON.stringify(want.subarray(k, k + 40).toString('latin1'))}]`;
}
