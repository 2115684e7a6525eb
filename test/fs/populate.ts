// Test helper: builds a volume whose every structure is non-trivial (indexed directories
// with split leaves, a depth >= 1 extent tree, inline and block xattrs with an external
// value, fast and slow symlinks, hard links, nested directories) through the library.
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import type { AllocContext } from '../../fs/alloc';
import { writeFile } from '../../fs/file-data';
import { S_IFDIR, S_IFLNK, S_IFREG, slotFileName, SYSFILE } from '../../fs/format/constants';
import { mkfs, MkfsOptions } from '../../fs/mkfs';
import { createNode, linkNode, resolvePath } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';
import { setXattr } from '../../fs/xattr';

export async function slotContext(vol: Volume, slot = 0): Promise<AllocContext> {
  return {
    slot,
    inodeAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, slot)),
    extentAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.extentAlloc, slot)),
  };
}

export async function makeVolume(path: string, sizeBytes: number, o: MkfsOptions = {}): Promise<void> {
  const dev = await openFileDevice(path, { create: { sizeBytes, resize: true } });
  try {
    await mkfs(dev, { slots: 2, ...o });
  } finally {
    await dev.close();
  }
}

export interface Populated {
  /** Paths of files and their expected contents. */
  files: Map<string, Buffer>;
}

/** Fills a freshly made volume; returns what it wrote. */
export async function populate(dev: BlockDevice, o: { manyFiles?: number; sparseExtents?: number } = {}): Promise<Populated> {
  const vol = await Volume.open(dev);
  const ctx = await slotContext(vol);
  const files = new Map<string, Buffer>();
  const mk = async (dirPath: string, name: string, mode: number, data?: Buffer, target?: string) => {
    const tx = new Transaction(vol);
    const dir = await resolvePath(tx, dirPath);
    const ino = await createNode(tx, ctx, dir, Buffer.from(name), { mode, uid: 1000, gid: 1000, target: target ? Buffer.from(target) : undefined });
    if (data) await writeFile(tx, ctx, ino, 0, data);
    await tx.commit();
    if (data) files.set(`${dirPath === '/' ? '' : dirPath}/${name}`, data);
    return ino;
  };
  await mk('/', 'dir', S_IFDIR | 0o755);
  await mk('/dir', 'sub', S_IFDIR | 0o750);
  await mk('/dir/sub', 'deep.txt', S_IFREG | 0o644, Buffer.from('deep file contents\n'));
  const many = o.manyFiles ?? 600;
  for (let i = 0; i < many; i += 50) {
    const tx = new Transaction(vol);
    const dir = await resolvePath(tx, '/dir');
    for (let k = i; k < Math.min(many, i + 50); k++) {
      const name = `file-${k.toString().padStart(5, '0')}-with-a-longish-name`;
      const ino = await createNode(tx, ctx, dir, Buffer.from(name), { mode: S_IFREG | 0o644, uid: 1000, gid: 1000 });
      const data = Buffer.from(`contents of ${name}\n`);
      await writeFile(tx, ctx, ino, 0, data);
      files.set(`/dir/${name}`, data);
    }
    await tx.commit();
  }
  // A file of one block every other cluster: one extent record per block, so the extent
  // tree outgrows the inode and gains at least one level.
  const sparse = await mk('/', 'sparse.bin', S_IFREG | 0o600);
  {
    const tx = new Transaction(vol);
    const cs = vol.geo.clusterSize;
    const n = o.sparseExtents ?? 400;
    const expect = Buffer.alloc((2 * (n - 1) + 1) * cs);
    for (let i = 0; i < n; i++) {
      const block = Buffer.alloc(vol.geo.blockSize, (i % 250) + 1);
      await writeFile(tx, ctx, sparse, 2 * i * cs, block);
      block.copy(expect, 2 * i * cs);
    }
    await tx.commit();
    files.set('/sparse.bin', expect.subarray(0, sparse.size));
  }
  const big = Buffer.alloc(3 * 1024 * 1024 + 123);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
  const bigIno = await mk('/', 'big.bin', S_IFREG | 0o644, big);
  await mk('/', 'fast-link', S_IFLNK | 0o777, undefined, 'dir/sub/deep.txt');
  await mk('/', 'slow-link', S_IFLNK | 0o777, undefined, 'x/'.repeat(1500) + 'target');
  {
    const tx = new Transaction(vol);
    const root = await resolvePath(tx, '/');
    const ino = await tx.getInode(bigIno.blkno);
    await linkNode(tx, ctx, root, Buffer.from('big-hardlink'), ino);
    await setXattr(tx, ctx, ino, 'user.small', Buffer.from('v1'));
    await setXattr(tx, ctx, ino, 'user.medium', Buffer.alloc(200, 0x41));
    await setXattr(tx, ctx, ino, 'user.large', Buffer.alloc(9000, 0x42));
    for (let i = 0; i < 20; i++) await setXattr(tx, ctx, ino, `trusted.attr-${i}`, Buffer.alloc(100, i));
    await tx.commit();
  }
  return { files };
}
