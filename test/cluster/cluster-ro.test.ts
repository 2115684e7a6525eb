// A read-only cluster mount beside a read-write one (two nodes, each in its own network
// namespace with its own o2cbd): the read-only node claims no slot, reads under the
// cluster's locks what the other node writes, and refuses every change with EROFS.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { abortFuse, isFuseMounted } from '../../fs/fuse/mount';
import { nodeEnv } from './harness';
import { O2cbCluster } from './o2cb-cluster';
import { FSCK, Mount, errCode, mountOn, step, unmount } from './multi-helpers';

t.test('a read-only cluster mount reads what a read-write node writes and changes nothing', async (t) => {
  const c = await O2cbCluster.create({ nodes: 2, diskBytes: 256 * 1024 * 1024 });
  const mounts: Mount[] = [];
  t.teardown(async () => {
    for (const m of mounts) if (isFuseMounted(m.mp)) await abortFuse(m.mp).catch(() => undefined);
    await c.close();
  });
  mounts.push(await step(c, 'read-write mount on node 0', mountOn(c, 0)));
  const [rw] = mounts.map((m) => m.mp);
  const data = randomBytes(300_000);
  await fsp.writeFile(path.join(rw, 'f'), data);
  mounts.push(await step(c, 'read-only mount on node 1', mountOn(c, 1, 'ro')));
  const ro = mounts[1].mp;

  t.ok((await fsp.readFile(path.join(ro, 'f'))).equals(data), 'node 1 (ro) reads what node 0 wrote');
  const more = randomBytes(70_000);
  await fsp.appendFile(path.join(rw, 'f'), more);
  await fsp.mkdir(path.join(rw, 'd'));
  await fsp.rename(path.join(rw, 'f'), path.join(rw, 'd', 'g'));
  await fsp.chmod(path.join(rw, 'd', 'g'), 0o640);
  const st = await fsp.stat(path.join(ro, 'd', 'g'));
  t.equal(st.size, data.length + more.length, 'node 1 sees the new size at once');
  t.equal(st.mode & 0o777, 0o640, 'and the new mode');
  t.ok((await fsp.readFile(path.join(ro, 'd', 'g'))).equals(Buffer.concat([data, more])), 'and the appended bytes');
  t.same(await fsp.readdir(ro), ['d', 'lost+found'], 'and the rename');

  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['write', () => fsp.writeFile(path.join(ro, 'd', 'g'), 'x')],
    ['create', () => fsp.writeFile(path.join(ro, 'new'), 'x')],
    ['unlink', () => fsp.unlink(path.join(ro, 'd', 'g'))],
    ['mkdir', () => fsp.mkdir(path.join(ro, 'e'))],
    ['chmod', () => fsp.chmod(path.join(ro, 'd', 'g'), 0o600)],
    ['rename', () => fsp.rename(path.join(ro, 'd'), path.join(ro, 'd2'))],
  ];
  for (const [what, f] of attempts) t.equal(await f().then(() => 'ok', errCode), 'EROFS', `${what} on the read-only node: EROFS`);
  // Record locks on a read-only mount are the kernel's, node-local: a reader's shared lock
  // works (it failed with EROFS while the mount tried to record it in the volume).
  const lockf = spawnSync('python3', ['-c', 'import fcntl, sys; f = open(sys.argv[1]); fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB, 100, 0); fcntl.lockf(f, fcntl.LOCK_UN); print("locked")', path.join(ro, 'd', 'g')], { encoding: 'utf8', timeout: 30_000 });
  t.equal(lockf.stdout.trim(), 'locked', `F_SETLK F_RDLCK on the read-only node: ${lockf.stderr}`);
  t.ok((await fsp.readFile(path.join(rw, 'd', 'g'))).equals(Buffer.concat([data, more])), 'node 0 still reads its file intact');

  for (const m of [...mounts].reverse()) t.equal(await step(c, `unmount of node ${m.node}`, unmount(m)), 0, `node ${m.node} unmounts cleanly`);
  const fsck = await c.world.run(0, process.execPath, [FSCK, '-n', c.world.sharedDisk], { env: nodeEnv(), timeoutMs: 120_000 });
  t.equal(fsck.status, 0, `fsck.o2fs -n: ${fsck.stdout}${fsck.stderr}`);
  t.notMatch(fsck.stdout + fsck.stderr, /volume is in use/, 'no slot left in use (the read-only node never took one)');
});

t.test('a read-only mount waits out a node death: a read-write survivor recovers, the reader sees the dead node\'s fsync\'d data', async (t) => {
  const c = await O2cbCluster.create({ nodes: 3, diskBytes: 256 * 1024 * 1024 });
  const mounts: Mount[] = [];
  t.teardown(async () => {
    for (const m of mounts) if (isFuseMounted(m.mp)) await abortFuse(m.mp).catch(() => undefined);
    await c.close();
  });
  mounts.push(await step(c, 'read-write mount on node 0', mountOn(c, 0)));
  mounts.push(await step(c, 'read-write mount on node 1', mountOn(c, 1)));
  mounts.push(await step(c, 'read-only mount on node 2', mountOn(c, 2, 'ro')));
  const [a, b, r] = mounts.map((m) => m.mp);
  // Node 1 dies holding the meta lock with an fsync'd journal nobody has replayed yet.
  const last = randomBytes(200_000);
  const h = await fsp.open(path.join(b, 'from-node1'), 'w');
  await h.writeFile(last);
  await h.sync();
  await h.close();
  await c.kill(1);
  await abortFuse(b).catch(() => undefined);
  // The reader's next look waits for node 0 to recover node 1's slot, then sees it all.
  const got = await step(c, 'a read on the read-only node after the kill', fsp.readFile(path.join(r, 'from-node1')), 60_000);
  t.ok(got.equals(last), "the read-only node reads the dead node's fsync'd file intact");
  await fsp.writeFile(path.join(a, 'after'), 'survivor\n');
  t.equal(await fsp.readFile(path.join(r, 'after'), 'utf8'), 'survivor\n', "and the survivor's later write");
  for (const m of [mounts[2], mounts[0]]) t.equal(await step(c, `unmount of node ${m.node}`, unmount(m)), 0, `node ${m.node} unmounts cleanly`);
  const fsck = await c.world.run(0, process.execPath, [FSCK, '-n', c.world.sharedDisk], { env: nodeEnv(), timeoutMs: 120_000 });
  t.equal(fsck.status, 0, `fsck.o2fs -n: ${fsck.stdout}${fsck.stderr}`);
  t.notMatch(fsck.stdout + fsck.stderr, /volume is in use/, "node 1's slot was recovered by node 0");
});
