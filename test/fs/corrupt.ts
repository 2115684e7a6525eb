// Test helper: locates interesting metadata blocks of a populated volume and damages them.
import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../../blockdev/types';
import { allRecords } from '../../fs/extent-tree';
import { SYSFILE, slotFileName } from '../../fs/format/constants';
import { resolvePath } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';

export type Damage = 'garbage' | 'flip' | 'zero';

/** Named metadata blocks of a volume made by populate(). */
export async function interestingBlocks(dev: BlockDevice): Promise<Map<string, number>> {
  const vol = await Volume.open(dev, { readOnly: true });
  const tx = new Transaction(vol);
  const out = new Map<string, number>();
  out.set('superblock', 2);
  out.set('global bitmap group 0', vol.sb.firstGroupBlkno);
  out.set('root inode', vol.sb.rootBlkno);
  const dir = await resolvePath(tx, '/dir');
  out.set('directory inode', dir.blkno);
  const leaves = await allRecords(tx, dir);
  out.set('directory leaf', leaves[Math.floor(leaves.length / 2)].blkno);
  out.set('first directory leaf', leaves[0].blkno);
  const file = await resolvePath(tx, '/dir/file-00010-with-a-longish-name');
  out.set('file inode', file.blkno);
  const sparse = await resolvePath(tx, '/sparse.bin');
  if (sparse.body.kind === 'extents' && sparse.body.list.depth > 0) out.set('extent block', sparse.body.list.records[0].blkno);
  const big = await resolvePath(tx, '/big.bin');
  if (big.xattrBlkno) out.set('xattr block', big.xattrBlkno);
  const ia = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, 0)));
  if (ia.body.kind === 'chain') out.set('inode allocator group', ia.body.chain.recs[0].blkno);
  out.set('inode allocator inode', ia.blkno);
  const ea = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.extentAlloc, 0)));
  if (ea.body.kind === 'chain') out.set('extent allocator group', ea.body.chain.recs[0].blkno);
  const gb = await tx.getInode(await vol.systemInode(SYSFILE.globalBitmap));
  out.set('global bitmap inode', gb.blkno);
  const j = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.journal, 1)));
  if (j.body.kind === 'extents') out.set('journal superblock', j.body.list.records[0].blkno);
  const hb = await tx.getInode(await vol.systemInode(SYSFILE.heartbeat));
  if (hb.body.kind === 'extents') out.set('heartbeat block', hb.body.list.records[0].blkno + 3);
  const sm = await tx.getInode(await vol.systemInode(SYSFILE.slotMap));
  if (sm.body.kind === 'extents') out.set('slot map block', sm.body.list.records[0].blkno);
  out.set('system directory inode', vol.sb.systemDirBlkno);
  out.set('global inode allocator group', vol.sb.systemDirBlkno - 3);
  out.set('global inode allocator inode', vol.sb.systemDirBlkno - 1);
  const sysDir = await tx.getInode(vol.sb.systemDirBlkno);
  if (sysDir.body.kind === 'extents') out.set('system directory leaf', (await allRecords(tx, sysDir))[0].blkno);
  out.set('extent allocator inode', ea.blkno);
  out.set('orphan dir inode', await vol.systemInode(slotFileName(SYSFILE.orphanDir, 1)));
  return out;
}

export async function damageBlock(dev: BlockDevice, blockSize: number, blkno: number, how: Damage): Promise<void> {
  const off = blkno * blockSize;
  const buf = await dev.read(off, blockSize);
  if (how === 'garbage') randomBytes(blockSize).copy(buf);
  else if (how === 'zero') buf.fill(0);
  else buf[Math.floor(blockSize / 2) + 3] ^= 0x5a;
  await dev.write(off, buf);
  await dev.flush();
}
