// The life of a mount: mount(8) and the helper, clean shutdown on umount, SIGTERM and
// SIGINT, a killed server (the mount point recovered, the volume refused until fsck),
// cluster volumes and nocluster, bad options, and damaged volumes under each errors=
// policy.
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { isFuseMounted, readaheadKb } from '../../fs/fuse/mount';
import { fsckClean, forceCleanup, mountExisting, mountFresh, run, serverPid, tempDir, tool } from './harness';

const dir = tempDir(t, 'o2fs-life-');
const STACK_LINE = /^\s+at .+/m;

async function waitFor(cond: () => boolean, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('mount -t fuse.o2fs and umount(8)', { skip: existsSync('/sbin/mount.fuse.o2fs') ? false : 'scripts/setup.sh installs /sbin/mount.fuse.o2fs' }, async (t) => {
  const img = path.join(dir, 'm8.img');
  const mp = path.join(dir, 'm8');
  await fsp.mkdir(mp);
  t.teardown(() => forceCleanup(mp));
  t.equal(tool('mkfs', ['-q', '--size', '128M', img]).status, 0);
  const m = run('mount', ['-t', 'fuse.o2fs', img, mp, '-o', 'allow_other']);
  t.equal(m.status, 0, m.err);
  t.ok(isFuseMounted(mp));
  await fsp.writeFile(path.join(mp, 'f'), 'via mount(8)');
  const pid = serverPid(mp)!;
  t.equal(run('umount', [mp]).status, 0);
  t.ok(await waitFor(() => !alive(pid)), 'the server finishes once the kernel lets go');
  t.equal(fsckClean(img).status, 0, 'clean after umount(8)');
});

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${sig} unmounts cleanly`, async (t) => {
    const m = await mountFresh(t, dir);
    await fsp.writeFile(path.join(m.mp, 'f'), sig);
    process.kill(m.pid, sig);
    t.ok(await waitFor(() => !alive(m.pid)), 'server exits');
    t.notOk(isFuseMounted(m.mp), 'mount gone');
    t.equal(fsckClean(m.img).status, 0);
    const again = await mountExisting(t, m.img, m.mp);
    t.equal(await fsp.readFile(path.join(again.mp, 'f'), 'utf8'), sig, 'data kept; remounts without fsck');
    t.equal(again.umount().status, 0);
  });
}

t.test('foreground mode: -f serves until interrupted', async (t) => {
  const img = path.join(dir, 'fg.img');
  const mp = path.join(dir, 'fg');
  await fsp.mkdir(mp);
  t.teardown(() => forceCleanup(mp));
  t.equal(tool('mkfs', ['-q', '--size', '128M', img]).status, 0);
  const child = spawn(process.execPath, [path.resolve(__dirname, '../../tools/o2fs.js'), 'mount', '-f', img, mp], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  t.ok(await waitFor(() => isFuseMounted(mp) && serverPid(mp) !== null), 'mounted');
  await fsp.writeFile(path.join(mp, 'x'), 'fg');
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  t.equal(await exited, 0, 'exit status 0');
  t.equal(fsckClean(img).status, 0);
});

t.test('a killed server: umount recovers the mount point, remount replays the journal', async (t) => {
  const m = await mountFresh(t, dir);
  await fsp.writeFile(path.join(m.mp, 'kept'), 'synced');
  const fd = await fsp.open(path.join(m.mp, 'kept'), 'r+');
  await fd.sync();
  await fd.close();
  process.kill(m.pid, 'SIGKILL');
  t.ok(await waitFor(() => !alive(m.pid)));
  const u = tool('o2fs', ['umount', m.mp]);
  t.equal(u.status, 0, u.err);
  t.notOk(isFuseMounted(m.mp), 'dead mount cleared');
  const check = tool('fsck', ['-n', m.img]);
  t.equal(check.status, 4, 'fsck -n sees a journal to replay');
  t.match(check.out, /fsck -n does not replay/);
  const again = await mountExisting(t, m.img, m.mp);
  t.equal(await fsp.readFile(path.join(again.mp, 'kept'), 'utf8'), 'synced', 'the fsync\'d file survived');
  t.equal(again.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});

t.test('a volume mounted once refuses a second mount', async (t) => {
  const m = await mountFresh(t, dir);
  const second = path.join(dir, 'second');
  await fsp.mkdir(second);
  t.teardown(() => forceCleanup(second));
  const r = tool('o2fs', ['mount', m.img, second]);
  t.equal(r.status, 32);
  t.match(r.err, /mounted already/);
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});

t.test('cluster volumes need their stack, or -o nocluster', async (t) => {
  const img = path.join(dir, 'o2cb.img');
  const mp = path.join(dir, 'o2cb');
  await fsp.mkdir(mp);
  t.teardown(() => forceCleanup(mp));
  t.equal(tool('mkfs', ['-q', '--size', '128M', '--cluster-stack=o2cb', '--cluster-name', 'alpha', img]).status, 0);
  const r = tool('o2fs', ['mount', img, mp]);
  t.equal(r.status, 32);
  t.match(r.err, /o2cb cluster stack.*nocluster/);
  const m = await mountExisting(t, img, mp, 'nocluster');
  await fsp.writeFile(path.join(m.mp, 'x'), '1');
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(img).status, 0);
});

t.test('readahead= sets the mount\'s readahead window (default 1024 KiB; 0 keeps the kernel\'s)', async (t) => {
  const data = Buffer.alloc(8 << 20);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  const first = await mountFresh(t, dir);
  t.equal(readaheadKb(first.mp), 1024, 'default');
  await fsp.writeFile(path.join(first.mp, 'seq'), data);
  t.equal(first.umount().status, 0);
  for (const [opt, kb] of [['readahead=0', 128], ['readahead=4096', 4096], ['readahead=1024', 1024]] as const) {
    const m = await mountExisting(t, first.img, first.mp, opt);
    t.equal(readaheadKb(m.mp), kb, opt);
    // A fresh mount caches no pages: this read goes through readahead to the server.
    t.ok((await fsp.readFile(path.join(m.mp, 'seq'))).equals(data), `${opt}: a cold sequential read returns the data`);
    t.equal(m.umount().status, 0);
  }
  const bad = tool('o2fs', ['mount', '-o', 'readahead=-1', first.img, first.mp]);
  t.equal(bad.status, 1);
  t.match(bad.err, /readahead= takes KiB/);
  t.equal(fsckClean(first.img).status, 0);
});

t.test('bad options and missing devices are clear errors', async (t) => {
  const mp = path.join(dir, 'bad');
  await fsp.mkdir(mp);
  t.teardown(() => forceCleanup(mp));
  const img = path.join(dir, 'bad.img');
  t.equal(tool('mkfs', ['-q', '--size', '128M', img]).status, 0);
  const opt = tool('o2fs', ['mount', '-o', 'frobnicate', img, mp]);
  t.equal(opt.status, 1);
  t.match(opt.err, /unknown mount option "frobnicate"/);
  const missing = tool('o2fs', ['mount', path.join(dir, 'nope.img'), mp]);
  t.equal(missing.status, 32);
  t.match(missing.err, /no such file/);
  const junk = path.join(dir, 'junk.img');
  await fsp.writeFile(junk, Buffer.alloc(16 << 20, 1));
  const nv = tool('o2fs', ['mount', junk, mp]);
  t.equal(nv.status, 32);
  t.match(nv.err, /not an o2fs volume/);
  for (const x of [opt, missing, nv]) t.notMatch(x.err, STACK_LINE);
  t.notOk(isFuseMounted(mp));
});

async function damagedVolume(name: string): Promise<{ img: string; victim: number }> {
  const img = path.join(dir, `${name}.img`);
  const mp = path.join(dir, `${name}-prep`);
  const prep = await mountFresh(t, dir);
  await fsp.writeFile(path.join(prep.mp, 'victim'), 'v');
  await fsp.writeFile(path.join(prep.mp, 'fine'), 'fine');
  const victim = (await fsp.stat(path.join(prep.mp, 'victim'))).ino;
  t.equal(prep.umount().status, 0);
  await fsp.rename(prep.img, img);
  const fh = await fsp.open(img, 'r+');
  await fh.write(Buffer.alloc(64, 0xee), 0, 64, victim * 4096 + 0x30);
  await fh.close();
  void mp;
  return { img, victim };
}

for (const policy of ['remount-ro', 'continue', 'panic'] as const) {
  t.test(`a damaged inode with errors=${policy}`, async (t) => {
    const { img } = await damagedVolume(`dmg-${policy}`);
    const m = await mountExisting(t, img, path.join(dir, `dmg-${policy}`), `errors=${policy}`);
    await t.rejects(fsp.stat(path.join(m.mp, 'victim')), { code: 'EIO' }, 'the damaged inode gives EIO');
    if (policy === 'panic') {
      t.ok(await waitFor(() => !alive(m.pid)), 'panic stops the mount');
      t.ok(await waitFor(() => !isFuseMounted(m.mp) || run('stat', [m.mp]).status !== 0), 'the mount is aborted');
      return;
    }
    t.equal(await fsp.readFile(path.join(m.mp, 'fine'), 'utf8'), 'fine', 'the rest still reads');
    const write = fsp.writeFile(path.join(m.mp, 'after'), 'x');
    if (policy === 'remount-ro') await t.rejects(write, { code: 'EROFS' }, 'remounted read-only');
    else await t.resolves(write, 'continue keeps writing');
    t.equal(m.umount().status, 0);
    const f = tool('fsck', ['-y', '-f', img]);
    t.equal(f.status, 1, 'fsck repairs it');
    t.equal(fsckClean(img).status, 0);
  });
}
