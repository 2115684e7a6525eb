// Cluster mounts on o2cb (issue 6: the volume-wide meta lock, open locks, orphan
// scan, recovery of dead nodes): three nodes, each with its own o2cbd and its own `o2fs mount`
// server in its network namespace, all on one shared disk file. This process (which serves
// none of the mounts) reads and writes through all three mount points.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, promises as fsp, readSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { abortFuse, isFuseMounted } from '../../fs/fuse/mount';
import { nodeEnv, waitFor } from './harness';
import { O2cbCluster } from './o2cb-cluster';
import { FSCK, Mount, dumpLogs, mountOn, step, unmount } from './multi-helpers';

// Both ways (issue 6): the kernel caching names and attributes (invalidated by the lock
// downconvert), and with -o nokernelcache (nothing cached in the kernel).
for (const options of ['', 'nokernelcache']) t.test(`three nodes mount one volume${options ? ` (-o ${options})` : ''}: coherent data and metadata, open-unlink across nodes, kill -9 and recovery`, async (t) => {
  const c = await O2cbCluster.create({ nodes: 3, diskBytes: 1024 * 1024 * 1024 });
  const mounts: Mount[] = [];
  t.teardown(async () => {
    for (const m of mounts) if (isFuseMounted(m.mp)) await abortFuse(m.mp).catch(() => undefined);
    await c.close();
  });
  for (let i = 0; i < 3; i++) mounts.push(await mountOn(c, i, options));
  // Whatever gets stuck, the state is kept for a post-mortem (O2FS_CLUSTER_DIAG names the file).
  const watchdog = setTimeout(() => {
    const file = process.env.O2FS_CLUSTER_DIAG ?? path.join(c.world.tmpDir, 'stuck.txt');
    require('node:fs').writeFileSync(file, dumpLogs(c));
  }, 100_000);
  watchdog.unref();
  t.teardown(() => clearTimeout(watchdog));
  const [a, b, d] = mounts.map((m) => m.mp);

  // Written on node 0, read byte-exact on 1 and 2 right after the writer's close.
  const data = randomBytes(3 * 1024 * 1024 + 123);
  await step(c, 'the first write', fsp.writeFile(path.join(a, 'f'), data));
  for (const mp of [b, d]) t.ok((await fsp.readFile(path.join(mp, 'f'))).equals(data), `${path.basename(mp)} reads what node 0 wrote`);
  const st = [a, b, d].map((mp) => statSync(path.join(mp, 'f')));
  t.same(st.map((s) => [s.size, s.mode, s.nlink, s.mtimeMs, s.ino]), [0, 1, 2].map(() => [st[0].size, st[0].mode, st[0].nlink, st[0].mtimeMs, st[0].ino]), 'stat agrees everywhere');

  // Metadata changes on one node are seen at once on the others.
  await fsp.mkdir(path.join(b, 'dir'));
  await fsp.rename(path.join(b, 'f'), path.join(b, 'dir', 'g'));
  await fsp.chmod(path.join(d, 'dir', 'g'), 0o600);
  t.same((await fsp.readdir(a)).sort(), ['dir', 'lost+found'], 'node 0 sees node 1\'s rename');
  t.equal(statSync(path.join(a, 'dir', 'g')).mode & 0o777, 0o600, 'node 0 sees node 2\'s chmod');
  t.ok(readFileSync(path.join(d, 'dir', 'g')).equals(data), 'content unchanged by the rename');

  // Open on node 2, unlinked on node 0: still readable through node 2's descriptor.
  const keep = randomBytes(200_000);
  await fsp.writeFile(path.join(a, 'doomed'), keep);
  const fd = openSync(path.join(d, 'doomed'), 'r');
  await fsp.unlink(path.join(a, 'doomed'));
  t.notOk((await fsp.readdir(d)).includes('doomed'), 'the name is gone on node 2 too');
  const back = Buffer.alloc(keep.length);
  t.equal(readSync(fd, back, 0, back.length, 0), keep.length);
  t.ok(back.equals(keep), 'node 2 still reads the unlinked file it holds open');
  closeSync(fd);
  // The same between nodes 0 and 1 (both unmount cleanly: their counts are checked below).
  // Node 0 tries to free its orphan once its kernel lets go, finds node 1 holding it open,
  // and leaves it; node 1's close is the last use anywhere, so node 1 frees it then (or
  // node 0 does, if node 1 let go first): not the periodic scan.
  await fsp.writeFile(path.join(a, 'doomed2'), keep);
  const fd1 = openSync(path.join(b, 'doomed2'), 'r');
  t.equal(readSync(fd1, back, 0, 10, 0), 10, 'node 1 reads the file it is about to lose');
  await fsp.unlink(path.join(a, 'doomed2'));
  await new Promise((resolve) => setTimeout(resolve, 300));
  closeSync(fd1);

  // flock is cluster-wide: held on node 0, refused (LOCK_NB) on node 1, waited for on node 2.
  await fsp.writeFile(path.join(a, 'lockfile'), '');
  const flockPy = (mp: string, code: string): string => {
    const r = spawnSync('/usr/bin/python3', ['-c', `import fcntl, os, sys, time\nfd = os.open(${JSON.stringify(path.join(mp, 'lockfile'))}, os.O_RDWR)\n${code}`], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`python: ${r.stderr}`);
    return r.stdout.trim();
  };
  const marker = path.join(c.world.tmpDir, 'flock-held');
  const holder = spawn('/usr/bin/python3', ['-c', `import fcntl, os, time\nfd = os.open(${JSON.stringify(path.join(a, 'lockfile'))}, os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\nopen(${JSON.stringify(marker)}, 'w').close()\ntime.sleep(2)\n`], { stdio: 'ignore' });
  const holderExit = new Promise((resolve) => holder.on('exit', resolve));
  await step(c, 'the flock holder on node 0', waitFor(() => existsSync(marker), 30_000, 'flock holder'));
  t.equal(flockPy(b, `try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('granted')\nexcept BlockingIOError: print('EWOULDBLOCK')`), 'EWOULDBLOCK', 'node 1 cannot take the flock node 0 holds');
  const waited = Number(flockPy(d, 't0 = time.time(); fcntl.flock(fd, fcntl.LOCK_EX); print(time.time() - t0)'));
  t.ok(waited > 0.5, `node 2 waited ${waited.toFixed(2)} s for node 0 to let go`);
  await holderExit;

  // POSIX record locks (fcntl) are cluster-wide too: bytes 0..99 write-locked by a process on
  // node 0; on node 1 F_SETLK fails, F_GETLK names the holder, F_SETLKW is interrupted by a
  // signal, then waits until the holder closes its descriptor (not until it exits: POSIX
  // drops a process's locks at its first close); node 2 locks bytes 100..199 meanwhile.
  await fsp.writeFile(path.join(a, 'records'), Buffer.alloc(4096));
  const plockPy = (mp: string, code: string): string => {
    const r = spawnSync('/usr/bin/python3', ['-c', `import fcntl, os, signal, struct, sys, time\nfd = os.open(${JSON.stringify(path.join(mp, 'records'))}, os.O_RDWR)\n${code}`], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`python: ${r.stderr}`);
    return r.stdout.trim();
  };
  const plockMarker = path.join(c.world.tmpDir, 'plock-held');
  const plockHolder = spawn('/usr/bin/python3', ['-c', `import fcntl, os, time\nfd = os.open(${JSON.stringify(path.join(a, 'records'))}, os.O_RDWR)\nfcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)\nopen(${JSON.stringify(plockMarker)}, 'w').close()\ntime.sleep(3)\nos.close(fd)\ntime.sleep(4)\n`], { stdio: 'ignore' });
  const plockHolderExit = new Promise((resolve) => plockHolder.on('exit', resolve));
  await step(c, 'the record-lock holder on node 0', waitFor(() => existsSync(plockMarker), 30_000, 'record-lock holder'));
  t.equal(plockPy(b, `try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0); print('granted')\nexcept OSError as e: print(e.errno in (11, 13) and 'EAGAIN' or e)`), 'EAGAIN', 'node 1 cannot lock the bytes node 0 holds');
  t.equal(plockPy(b, `st = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('@hhqqi4x', fcntl.F_WRLCK, 0, 50, 10, 0))\nty, wh, start, ln, pid = struct.unpack('@hhqqi4x', st)\nprint(ty == fcntl.F_WRLCK, start, ln, pid)`), `True 0 100 ${plockHolder.pid}`, 'F_GETLK on node 1 names node 0\'s lock and its holder');
  t.equal(plockPy(d, `fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 100); print('granted')`), 'granted', 'node 2 locks the next 100 bytes');
  // (The handler raises: Python retries a system call a returning handler interrupted.)
  t.equal(plockPy(b, `class Alarm(Exception): pass\ndef ring(*a): raise Alarm()\nsignal.signal(signal.SIGALRM, ring)\nsignal.alarm(1)\ntry:\n    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0); print('granted')\nexcept Alarm: print('interrupted')`), 'interrupted', 'a signal interrupts F_SETLKW on node 1 (the server answers the kernel\'s INTERRUPT)');
  t.equal(plockHolder.exitCode, null, 'while node 0 still holds the lock');
  const plockWaited = plockPy(b, `t0 = time.time()\nfcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)\nprint('%.2f' % (time.time() - t0))`);
  t.ok(Number(plockWaited) > 0.2 && plockHolder.exitCode === null, `F_SETLKW on node 1 waited ${plockWaited} s, granted when node 0's holder closed its descriptor (still running)`);
  await plockHolderExit;

  // Node 1 writes and fsyncs files; node 2 is killed in the middle; survivors carry on.
  const fsynced: string[] = [];
  for (let k = 0; k < 20; k++) {
    const p = path.join(b, `fs-${k}`);
    const h = await fsp.open(p, 'w');
    await h.writeFile(`content ${k}\n`);
    await h.sync();
    await h.close();
    fsynced.push(`fs-${k}`);
  }
  // Node 2 allocates and fsyncs last, so it dies holding the meta lock at EX with a journal
  // nobody has replayed; node 0 asks for the lock only after the kill. Node 0 must not
  // change the volume from the disk's older state before node 2's journal is replayed
  // (its allocation would overwrite, or be overwritten by, node 2's: fsck would see it).
  const node2Data = randomBytes(256 * 1024);
  const h2 = await fsp.open(path.join(d, 'from-node2'), 'w');
  await h2.writeFile(node2Data);
  await h2.sync();
  await h2.close();
  const killedAt = Date.now();
  await c.kill(2);
  await abortFuse(d).catch(() => undefined);
  // Node 0 can change the volume again once node 2 is declared dead and recovered.
  const survivorData = randomBytes(256 * 1024);
  await step(c, 'a write on node 0 after node 2 was killed', fsp.writeFile(path.join(a, 'after-kill'), survivorData));
  const failoverMs = Date.now() - killedAt;
  t.ok(failoverMs < c.deadMs + 15_000, `a survivor wrote again ${failoverMs} ms after the kill (dead time ${c.deadMs} ms)`);
  t.ok(readFileSync(path.join(b, 'after-kill')).equals(survivorData), 'node 1 sees it');
  t.ok(readFileSync(path.join(a, 'from-node2')).equals(node2Data), 'the dead node\'s fsync\'d file is intact');
  for (const n of fsynced) t.equal(readFileSync(path.join(a, n), 'utf8'), `content ${n.slice(3)}\n`, `fsync'd ${n} intact`);

  // All unmount; the volume is fsck-clean (the dead node's slot recovered by a survivor).
  for (const m of mounts.slice(0, 2)) t.equal(await step(c, `unmount of ${m.mp}`, unmount(m)), 0, `${path.basename(m.mp)} unmounts cleanly`);
  // Stats of inodes another node changed last came from the inode locks' value blocks
  // (each node logs its count at unmount); the checks above say they were right.
  const fromLvb = mounts.slice(0, 2).map((m) => Number(/(\d+) stats answered from one/.exec(m.server.stderr() + m.server.stdout())?.[1] ?? -1));
  t.ok(fromLvb.every((x) => x >= 0) && fromLvb.some((x) => x > 0), `stats answered from inode value blocks, no read (nodes 0/1: ${fromLvb.join('/')})`);
  const atLastUse = mounts.slice(0, 2).map((m) => Number(/orphans freed: (\d+) at their last use here/.exec(m.server.stderr() + m.server.stdout())?.[1] ?? -1));
  t.ok(atLastUse.every((x) => x >= 0) && atLastUse[0] + atLastUse[1] >= 1, `orphans freed at their last use, not left to the scan (nodes 0/1: ${atLastUse.join('/')})`);
  const fsck = c.world.exec(0, process.execPath, [FSCK, '-n', c.world.sharedDisk], { env: nodeEnv(), timeoutMs: 120_000 });
  t.equal(fsck.status, 0, `fsck.o2fs -n: ${fsck.stdout}${fsck.stderr}`);
  // The killed node's slot was recovered (under its journal lock) and freed by a survivor.
  t.notMatch(fsck.stdout + fsck.stderr, /volume is in use/, 'no slot left in use: the dead node\'s slot was recovered');
});
