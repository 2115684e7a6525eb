// Extended attributes: kept in the inode's inline area first, then in one external xattr
// block; values above XATTR_INLINE_VALUE_MAX live in their own contiguous clusters
// (format/xattr.ts). Like ext4, one inode's xattrs are bounded by what those two areas
// hold: past that, ENOSPC.
import { AllocContext, allocDataClusters, allocMetaBlock, freeClusters, freeMetaBlock } from './alloc';
import { FsError } from './errors';
import { DYN } from './format/constants';
import type { Inode } from './format/inode';
import {
  XATTR_INLINE_VALUE_MAX, XATTR_NAME_MAX, XATTR_VALUE_MAX, XattrEntry, decodeXattrList, encodeXattrList,
  fullXattrName, splitXattrName, xattrBlockListCapacity, xattrListBytes,
} from './format/xattr';
import type { Transaction } from './transaction';

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

interface Where {
  inline: XattrEntry[];
  block: XattrEntry[];
}

function inlineEntries(ino: Inode): XattrEntry[] {
  if (!(ino.dyn & DYN.inlineXattr) || ino.xattrInlineBytes === 0) return [];
  return decodeXattrList(ino.inlineXattr, 0, ino.xattrInlineBytes, ino.blkno);
}

async function load(tx: Transaction, ino: Inode): Promise<Where> {
  const block = ino.xattrBlkno ? (await tx.getXattrBlock(ino.xattrBlkno)).entries : [];
  return { inline: inlineEntries(ino), block };
}

function parseName(full: string): { prefix: number; name: Buffer } {
  const parsed = splitXattrName(full);
  if (!parsed) throw new FsError('EOPNOTSUPP', `unsupported xattr namespace: ${full}`);
  if (parsed.name.length > XATTR_NAME_MAX) throw new FsError('ERANGE', 'xattr name too long');
  return parsed;
}

function indexOf(list: XattrEntry[], prefix: number, name: Buffer): number {
  return list.findIndex((e) => e.prefix === prefix && e.name.equals(name));
}

async function valueOf(tx: Transaction, e: XattrEntry): Promise<Buffer> {
  if (e.value) return e.value;
  const bs = tx.bs;
  const data = await tx.vol.readData(e.valueBlkno, Math.ceil(e.valueLen / bs));
  return data.subarray(0, e.valueLen);
}

export async function getXattr(tx: Transaction, ino: Inode, full: string): Promise<Buffer> {
  const { prefix, name } = parseName(full);
  const w = await load(tx, ino);
  for (const list of [w.inline, w.block]) {
    const i = indexOf(list, prefix, name);
    if (i >= 0) return valueOf(tx, list[i]);
  }
  throw new FsError('ENODATA');
}

export async function listXattrs(tx: Transaction, ino: Inode): Promise<string[]> {
  const w = await load(tx, ino);
  return [...w.inline, ...w.block].map(fullXattrName);
}

async function freeValue(tx: Transaction, e: XattrEntry): Promise<void> {
  if (e.value) return;
  const cs = tx.vol.geo.clusterSize;
  await freeClusters(tx, tx.vol.blockToCluster(e.valueBlkno), Math.max(1, Math.ceil(e.valueLen / cs)));
}

async function store(tx: Transaction, ctx: AllocContext, ino: Inode, w: Where): Promise<void> {
  if (ino.xattrInlineBytes > 0 && ino.dyn & DYN.inlineXattr) {
    encodeXattrList(w.inline, ino.inlineXattr, 0, ino.xattrInlineBytes);
  }
  if (w.block.length === 0 && ino.xattrBlkno) {
    const xb = await tx.getXattrBlock(ino.xattrBlkno);
    await freeMetaBlock(tx, xb.blkno, xb.suballoc);
    ino.xattrBlkno = 0;
    ino.dyn &= ~DYN.hasXattr;
  } else if (w.block.length > 0) {
    if (!ino.xattrBlkno) {
      const mb = await allocMetaBlock(tx, ctx.extentAllocBlkno, ctx.slot);
      tx.putXattrBlock({ blkno: mb.blkno, fsGeneration: tx.vol.fsGeneration, suballoc: mb.suballoc, ownerBlkno: ino.blkno, entries: w.block });
      ino.xattrBlkno = mb.blkno;
      ino.dyn |= DYN.hasXattr;
    } else {
      const xb = await tx.getXattrBlock(ino.xattrBlkno);
      xb.entries = w.block;
      tx.putXattrBlock(xb);
    }
  }
  tx.putInode(ino);
}

/** setxattr(2) semantics; flags is XATTR_CREATE, XATTR_REPLACE or 0. Changes and puts `ino`. */
export async function setXattr(tx: Transaction, ctx: AllocContext, ino: Inode, full: string, value: Buffer, flags = 0): Promise<void> {
  const { prefix, name } = parseName(full);
  if (value.length > XATTR_VALUE_MAX) throw new FsError('E2BIG', 'xattr value too large');
  const w = await load(tx, ino);
  const ii = indexOf(w.inline, prefix, name);
  const bi = indexOf(w.block, prefix, name);
  const exists = ii >= 0 || bi >= 0;
  if (flags & XATTR_CREATE && exists) throw new FsError('EEXIST');
  if (flags & XATTR_REPLACE && !exists) throw new FsError('ENODATA');
  const old = ii >= 0 ? w.inline.splice(ii, 1)[0] : bi >= 0 ? w.block.splice(bi, 1)[0] : null;
  let entry: XattrEntry;
  if (value.length <= XATTR_INLINE_VALUE_MAX) {
    entry = { prefix, name, value: Buffer.from(value), valueLen: value.length, valueBlkno: 0 };
  } else {
    const cs = tx.vol.geo.clusterSize;
    const clusters = Math.ceil(value.length / cs);
    const run = await allocDataClusters(tx, clusters, clusters, tx.vol.blockToCluster(ino.blkno));
    const blkno = tx.vol.clusterToBlock(run.startCluster);
    const padded = Buffer.alloc(clusters * cs);
    value.copy(padded);
    await tx.vol.writeData(blkno, padded);
    entry = { prefix, name, value: null, valueLen: value.length, valueBlkno: blkno };
  }
  if (ino.xattrInlineBytes > 0 && ino.dyn & DYN.inlineXattr && xattrListBytes([...w.inline, entry]) <= ino.xattrInlineBytes) {
    w.inline.push(entry);
  } else if (xattrListBytes([...w.block, entry]) <= xattrBlockListCapacity(tx.bs)) {
    w.block.push(entry);
  } else {
    if (!entry.value) await freeValue(tx, entry);
    throw new FsError('ENOSPC', 'no room for more extended attributes on this inode');
  }
  if (old) await freeValue(tx, old);
  await store(tx, ctx, ino, w);
}

export async function removeXattr(tx: Transaction, ctx: AllocContext, ino: Inode, full: string): Promise<void> {
  const { prefix, name } = parseName(full);
  const w = await load(tx, ino);
  const ii = indexOf(w.inline, prefix, name);
  const bi = indexOf(w.block, prefix, name);
  const old = ii >= 0 ? w.inline.splice(ii, 1)[0] : bi >= 0 ? w.block.splice(bi, 1)[0] : null;
  if (!old) throw new FsError('ENODATA');
  await freeValue(tx, old);
  await store(tx, ctx, ino, w);
}

/** Frees every xattr of a dying inode. */
export async function freeAllXattrs(tx: Transaction, ctx: AllocContext, ino: Inode): Promise<void> {
  const w = await load(tx, ino);
  for (const e of [...w.inline, ...w.block]) await freeValue(tx, e);
  await store(tx, ctx, ino, { inline: [], block: [] });
}
