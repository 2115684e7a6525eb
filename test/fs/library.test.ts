// The fs library below the FUSE layer: geometries mkfs accepts, directories at scale with
// stable readdir offsets, extent trees growing and shrinking, xattrs, rename semantics and
// space accounting. Every case ends with a clean fsck.
import t, { Test } from 'tap';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import { dirLookup, dirReaddir } from '../../fs/dir';
import { FsError } from '../../fs/errors';
import { allRecords } from '../../fs/extent-tree';
import { allocateRange, readFile, truncateClusters, writeFile } from '../../fs/file-data';
import { EXTENT_FL, S_IFDIR, S_IFREG, SYSFILE } from '../../fs/format/constants';
import { fsck } from '../../fs/fsck/index';
import { planMkfs } from '../../fs/mkfs';
import { createNode, destroyInode, renameNode, resolvePath, unlinkName } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';
import { XATTR_CREATE, XATTR_REPLACE, getXattr, listXattrs, removeXattr, setXattr } from '../../fs/xattr';
import { Prng } from '../../fs/prng';
import { makeVolume, slotContext } from './populate';


/** Awaits a promise that must fail with FsError `errno`. */
async function rejectsErrno(t: Test, p: Promise<unknown>, errno: string, msg?: string): Promise<void> {
  try {
    await p;
    t.fail(`expected ${errno}${msg ? ': ' + msg : ''}`);
  } catch (e) {
    t.equal((e as FsError).errno, errno, msg ?? `fails with ${errno}`);
  }
}

process.on('unhandledRejection', (err) => {
  throw err;
});

const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-lib-'));
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
let n = 0;

async function freshVolume(sizeBytes = 128 << 20, o = {}): Promise<{ dev: BlockDevice; vol: Volume }> {
  const p = path.join(dir, `v${n++}.img`);
  await makeVolume(p, sizeBytes, { journalBytes: 4 << 20, ...o });
  const dev = await openFileDevice(p, {});
  return { dev, vol: await Volume.open(dev) };
}

async function expectClean(t: Test, dev: BlockDevice): Promise<void> {
  const lines: string[] = [];
  const r = await fsck(dev, { repair: false, log: (l) => lines.push(l) });
  t.equal(r.exitCode, 0, `fsck clean${r.exitCode ? ': ' + lines.join(' | ') : ''}`);
}

async function freeClusters(vol: Volume): Promise<number> {
  const tx = new Transaction(vol);
  const ino = await tx.getInode(await vol.systemInode(SYSFILE.globalBitmap));
  return ino.id1b - ino.id1a;
}

/**
 * Suballocators grow by whole groups and keep them; allocating (and freeing) a little of
 * everything first makes free-space comparisons exact.
 */
async function warmUp(vol: Volume): Promise<void> {
  const ctx = await slotContext(vol);
  const tx = new Transaction(vol);
  const root = await resolvePath(tx, '/');
  const f = await createNode(tx, ctx, root, Buffer.from('warm-up'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  for (let i = 0; i < 300; i++) await writeFile(tx, ctx, f, 2 * i * vol.geo.clusterSize, Buffer.from('w'));
  await setXattr(tx, ctx, f, 'user.w', Buffer.alloc(3000));
  for (let i = 0; i < 30; i++) await setXattr(tx, ctx, f, `user.w${i}`, Buffer.alloc(100));
  await destroyInode(tx, ctx, await unlinkName(tx, root, Buffer.from('warm-up'), false));
  await tx.commit();
}

t.test('transactions: a put records the state then; copies handed out are private', async (t) => {
  const { dev, vol } = await freshVolume();
  const rootBlkno = vol.sb.rootBlkno;
  const before = await new Transaction(vol).getInode(rootBlkno);
  {
    const tx = new Transaction(vol);
    const root = await tx.getInode(rootBlkno);
    root.uid = 4242;
    tx.putInode(root);
    root.gid = 4343; // not put again: not part of the transaction
    const again = await tx.getInode(rootBlkno);
    t.equal(again.uid, 4242, 'a get sees the last put');
    t.equal(again.gid, before.gid, 'a get does not see changes made after the put');
    again.mode = 0;
    t.equal((await tx.getInode(rootBlkno)).mode, before.mode, 'changing a copy changes nothing else');
    await t.rejects(tx.getGroup(rootBlkno), /read as O2GROUP1/, 'a changed block read as another kind is damage');
    const raw = await tx.read(rootBlkno, 'O2INODE1');
    t.equal(raw.readUInt32LE(0x34), 4242, 'a raw read sees the put state encoded');
    await tx.commit();
  }
  const tx = new Transaction(vol);
  const after = await tx.getInode(rootBlkno);
  t.equal(after.uid, 4242);
  t.equal(after.gid, before.gid);
  after.uid = 1;
  t.equal((await tx.getInode(rootBlkno)).uid, 4242, 'the copy kept beside the cached image is not handed out');
  vol.dropCaches();
  t.equal((await new Transaction(vol).getInode(rootBlkno)).uid, 4242, 'the same from the disk');
  await expectClean(t, dev);
  await dev.close();
});

t.test('mkfs geometries: block and cluster sizes, slot counts', async (t) => {
  for (const [bs, cs, slots] of [[512, 4096, 1], [1024, 65536, 3], [2048, 1 << 20, 2], [4096, 4096, 8]]) {
    const { dev, vol } = await freshVolume(160 << 20, { blockSize: bs, clusterSize: cs, slots });
    t.equal(vol.geo.blockSize, bs);
    t.equal(vol.geo.clusterSize, cs);
    t.equal(vol.sb.maxSlots, slots);
    await expectClean(t, dev);
    await dev.close();
  }
  t.throws(() => planMkfs(1 << 30, { blockSize: 8192 }), /block size/);
  t.throws(() => planMkfs(1 << 30, { clusterSize: 3000 }), /power of two/);
  t.throws(() => planMkfs(1 << 30, { slots: 256 }), /1\.\.255/);
  t.throws(() => planMkfs(16 << 20, {}), /too small/);
  t.throws(() => planMkfs(1 << 30, { journalBytes: 1 << 20 }), /minimum/);
});

t.test('a directory of 3000 entries: lookups, stable readdir offsets, shrinking back', async (t) => {
  const { dev, vol } = await freshVolume();
  const ctx = await slotContext(vol);
  const names = Array.from({ length: 3000 }, (_, i) => `entry-${i}-${'x'.repeat(i % 40)}`);
  {
    const tx = new Transaction(vol);
    const d = await createNode(tx, ctx, await resolvePath(tx, '/'), Buffer.from('big'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    for (const name of names) await createNode(tx, ctx, d, Buffer.from(name), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    await tx.commit();
  }
  const tx = new Transaction(vol);
  const d = await resolvePath(tx, '/big');
  t.ok(d.size > vol.geo.blockSize * 10, `indexed directory spans ${d.size / vol.geo.blockSize} leaves`);
  let found = 0;
  for (const name of names) if (await dirLookup(tx, d, Buffer.from(name))) found++;
  t.equal(found, names.length, 'every name found');
  t.equal(await dirLookup(tx, d, Buffer.from('absent')), null);
  await rejectsErrno(t, createNode(tx, ctx, d, Buffer.from(names[5]), { mode: S_IFREG, uid: 0, gid: 0 }), 'EEXIST');
  // Page through readdir while the directory changes under us: no entry that stays is
  // skipped or repeated.
  const seen = new Set<string>();
  const repeats: string[] = [];
  let cookie = 0;
  const removed = new Set<string>();
  for (let page = 0; page < 1000; page++) {
    const batch = await dirReaddir(tx, d, cookie, 97);
    if (batch.length === 0) break;
    for (const e of batch) {
      const s = e.name.toString();
      if (seen.has(s)) repeats.push(s);
      seen.add(s);
    }
    cookie = batch[batch.length - 1].cookie;
    for (let k = 0; k < 5; k++) {
      const victim = names[(page * 37 + k * 11) % names.length];
      if (!removed.has(victim) && !seen.has(victim)) {
        await destroyInode(tx, ctx, await unlinkName(tx, d, Buffer.from(victim), false));
        removed.add(victim);
      }
      await createNode(tx, ctx, d, Buffer.from(`new-${page}-${k}`), { mode: S_IFREG | 0o644, uid: 0, gid: 0 }).catch(() => undefined);
    }
  }
  t.same(repeats, [], 'no entry listed twice');
  t.same(names.filter((name) => !removed.has(name) && !seen.has(name)), [], 'every entry that stayed was listed');
  t.ok(removed.size > 50, `${removed.size} entries removed while listing`);
  await tx.commit();
  await expectClean(t, dev);
  dev.close();
});

t.test('extent trees grow past the inode and shrink back; space is returned', async (t) => {
  const { dev, vol } = await freshVolume();
  const ctx = await slotContext(vol);
  await warmUp(vol);
  const free0 = await freeClusters(vol);
  const cs = vol.geo.clusterSize;
  let tx = new Transaction(vol);
  const f = await createNode(tx, ctx, await resolvePath(tx, '/'), Buffer.from('holey'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  for (let i = 0; i < 700; i++) await writeFile(tx, ctx, f, 2 * i * cs + 100, Buffer.from(`block ${i}`));
  await tx.commit();
  tx = new Transaction(vol);
  let ino = await resolvePath(tx, '/holey');
  t.ok(ino.body.kind === 'extents' && ino.body.list.depth >= 1, 'tree has interior levels');
  t.equal((await allRecords(tx, ino)).length, 700);
  t.equal((await readFile(tx, ino, 2 * 350 * cs + 100, 9)).toString(), 'block 350');
  t.same(await readFile(tx, ino, cs, 10), Buffer.alloc(10), 'holes read as zeros');
  await expectClean(t, dev);
  tx = new Transaction(vol);
  ino = await resolvePath(tx, '/holey');
  await truncateClusters(tx, ino, 301);
  ino.size = 301 * cs;
  tx.putInode(ino);
  await tx.commit();
  tx = new Transaction(vol);
  ino = await resolvePath(tx, '/holey');
  t.equal((await allRecords(tx, ino)).length, 151, 'records past the new end are gone');
  await expectClean(t, dev);
  const root = await resolvePath(tx, '/');
  const victim = await unlinkName(tx, root, Buffer.from('holey'), false);
  await destroyInode(tx, ctx, victim);
  await tx.commit();
  t.equal(await freeClusters(vol), free0, 'every cluster came back to the global bitmap');
  await expectClean(t, dev);
  await dev.close();
});

t.test('xattrs: flags, limits, inline, block and external values', async (t) => {
  const { dev, vol } = await freshVolume();
  const ctx = await slotContext(vol);
  await warmUp(vol);
  const free0 = await freeClusters(vol);
  const tx = new Transaction(vol);
  const f = await createNode(tx, ctx, await resolvePath(tx, '/'), Buffer.from('x'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  await setXattr(tx, ctx, f, 'user.a', Buffer.from('1'));
  await rejectsErrno(t, setXattr(tx, ctx, f, 'user.a', Buffer.from('2'), XATTR_CREATE), 'EEXIST');
  await rejectsErrno(t, setXattr(tx, ctx, f, 'user.b', Buffer.from('2'), XATTR_REPLACE), 'ENODATA');
  await setXattr(tx, ctx, f, 'user.a', Buffer.from('22'), XATTR_REPLACE);
  t.equal((await getXattr(tx, f, 'user.a')).toString(), '22');
  await rejectsErrno(t, getXattr(tx, f, 'user.none'), 'ENODATA');
  await rejectsErrno(t, setXattr(tx, ctx, f, 'bogus.ns', Buffer.from('1')), 'EOPNOTSUPP');
  await rejectsErrno(t, setXattr(tx, ctx, f, 'user.' + 'n'.repeat(256), Buffer.from('1')), 'ERANGE');
  await rejectsErrno(t, setXattr(tx, ctx, f, 'user.toolarge', Buffer.alloc(65537)), 'E2BIG');
  const big = Buffer.alloc(65536, 7);
  await setXattr(tx, ctx, f, 'user.big', big);
  t.same(await getXattr(tx, f, 'user.big'), big);
  for (let i = 0; i < 30; i++) await setXattr(tx, ctx, f, `trusted.k${i}`, Buffer.alloc(90, i));
  t.ok(f.xattrBlkno > 0, 'an external xattr block was needed');
  let hitLimit = false;
  for (let i = 0; i < 200 && !hitLimit; i++) {
    try {
      await setXattr(tx, ctx, f, `user.fill-${i}`, Buffer.alloc(200, 1));
    } catch (e) {
      t.equal((e as FsError).errno, 'ENOSPC');
      hitLimit = true;
    }
  }
  t.ok(hitLimit, 'xattr space is bounded and says ENOSPC');
  t.ok((await listXattrs(tx, f)).includes('trusted.k29'));
  await removeXattr(tx, ctx, f, 'user.big');
  await rejectsErrno(t, removeXattr(tx, ctx, f, 'user.big'), 'ENODATA');
  await tx.commit();
  await expectClean(t, dev);
  const tx2 = new Transaction(vol);
  const root = await resolvePath(tx2, '/');
  await destroyInode(tx2, ctx, await unlinkName(tx2, root, Buffer.from('x'), false));
  await tx2.commit();
  t.equal(await freeClusters(vol), free0, 'external values are freed');
  await expectClean(t, dev);
  await dev.close();
});

t.test('rename: replace, noreplace, exchange, loops, non-empty targets', async (t) => {
  const { dev, vol } = await freshVolume();
  const ctx = await slotContext(vol);
  const tx = new Transaction(vol);
  const root = await resolvePath(tx, '/');
  const mk = (parent: typeof root, name: string, dirMode = false) => createNode(tx, ctx, parent, Buffer.from(name), { mode: dirMode ? S_IFDIR | 0o755 : S_IFREG | 0o644, uid: 0, gid: 0 });
  const a = await mk(root, 'a', true);
  const b = await mk(a, 'b', true);
  await mk(b, 'file');
  await mk(root, 'f1');
  await mk(root, 'f2');
  await rejectsErrno(t, renameNode(tx, ctx, root, Buffer.from('a'), b, Buffer.from('a2')), 'EINVAL', 'no directory into its own subtree');
  await rejectsErrno(t, renameNode(tx, ctx, root, Buffer.from('f1'), root, Buffer.from('f2'), 1), 'EEXIST', 'RENAME_NOREPLACE');
  await rejectsErrno(t, renameNode(tx, ctx, root, Buffer.from('f1'), root, Buffer.from('a')), 'EISDIR');
  await rejectsErrno(t, renameNode(tx, ctx, a, Buffer.from('b'), root, Buffer.from('f1')), 'ENOTDIR');
  const empty = await mk(root, 'empty', true);
  await rejectsErrno(t, renameNode(tx, ctx, root, Buffer.from('empty'), root, Buffer.from('a')), 'ENOTEMPTY');
  const r = await renameNode(tx, ctx, root, Buffer.from('f1'), root, Buffer.from('f2'));
  t.equal(r.replaced?.links, 0, 'the replaced file lost its last link');
  await destroyInode(tx, ctx, r.replaced!);
  await renameNode(tx, ctx, root, Buffer.from('f2'), a, Buffer.from('moved'), 2).catch((e) => t.equal(e.errno, 'ENOENT', 'exchange needs both'));
  await renameNode(tx, ctx, a, Buffer.from('b'), root, Buffer.from('empty'), 2);
  t.equal((await dirLookup(tx, root, Buffer.from('empty')))?.ino, b.blkno, 'exchanged');
  t.equal((await dirLookup(tx, a, Buffer.from('b')))?.ino, empty.blkno);
  t.equal((await tx.getInode(b.blkno)).parentBlkno, root.blkno, '.. follows the exchange');
  await renameNode(tx, ctx, root, Buffer.from('empty'), a, Buffer.from('b2'));
  t.equal((await tx.getInode(a.blkno)).links, 4, 'a has two subdirectories');
  await tx.commit();
  await expectClean(t, dev);
  await dev.close();
});

t.test('long names in small blocks: inline conversion and multi-way leaf splits', async (t) => {
  for (const bs of [512, 1024]) {
    const { dev, vol } = await freshVolume(128 << 20, { blockSize: bs });
    const ctx = await slotContext(vol);
    const tx = new Transaction(vol);
    const d = await createNode(tx, ctx, await resolvePath(tx, '/'), Buffer.from('d'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    const names = [...Array.from({ length: 40 }, (_, i) => `s${i}`), ...Array.from({ length: 300 }, (_, i) => `L${String(i).padStart(3, '0')}_${'x'.repeat(245 + (i % 6))}`)];
    for (const n of names) await createNode(tx, ctx, d, Buffer.from(n), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    await tx.commit();
    const tx2 = new Transaction(vol);
    const dd = await tx2.getInode(d.blkno);
    let missing = 0;
    for (const n of names) if (!(await dirLookup(tx2, dd, Buffer.from(n)))) missing++;
    t.equal(missing, 0, `${bs}-byte blocks: every long name found`);
    await expectClean(t, dev);
    await dev.close();
  }
});

t.test('unaligned writes over holes, preallocated and written clusters never show old contents (16 KiB clusters)', async (t) => {
  const { dev, vol } = await freshVolume(64 << 20, { clusterSize: 16384 });
  const ctx = await slotContext(vol);
  const cs = vol.geo.clusterSize;
  const SPAN = 64 * cs;
  // Clusters full of garbage, freed: the file below gets them back.
  let tx = new Transaction(vol);
  const root = await resolvePath(tx, '/');
  const junk = await createNode(tx, ctx, root, Buffer.from('junk'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  // Most of the volume, so that whatever the file below gets held garbage.
  for (let i = 0; i < 40; i++) await writeFile(tx, ctx, junk, i << 20, Buffer.alloc(1 << 20, 0xaa));
  await destroyInode(tx, ctx, await unlinkName(tx, root, Buffer.from('junk'), false));
  await tx.commit();
  tx = new Transaction(vol);
  const f = await createNode(tx, ctx, await resolvePath(tx, '/'), Buffer.from('f'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  const model = Buffer.alloc(SPAN);
  let size = 0;
  const p = new Prng(77);
  const rng = (): number => p.float();
  const int = (n: number): number => p.int(0, n);
  for (let op = 0; op < 300; op++) {
    if (rng() < 0.15) {
      // Preallocate (unwritten) a few clusters: they read as zeros until written.
      const c = int(60);
      await allocateRange(tx, ctx, f, c, 1 + int(3), EXTENT_FL.unwritten);
      continue;
    }
    const off = int(SPAN - 1);
    const len = 1 + int(Math.min(SPAN - off, rng() < 0.5 ? 300 : 3 * cs));
    const data = Buffer.alloc(len, 1 + (op % 250));
    await writeFile(tx, ctx, f, off, data);
    data.copy(model, off);
    size = Math.max(size, off + len);
    if (op % 50 === 49) {
      await tx.commit();
      tx = new Transaction(vol);
    }
  }
  await tx.commit();
  tx = new Transaction(vol);
  const ino = await resolvePath(tx, '/f');
  t.equal(ino.size, size);
  const got = await readFile(tx, ino, 0, size);
  const bad = got.findIndex((b, i) => b !== model[i]);
  t.equal(bad, -1, bad < 0 ? 'every byte as written, zeros elsewhere' : `byte ${bad} is ${got[bad]}, expected ${model[bad]}`);
  await expectClean(t, dev);
  await dev.close();
});
