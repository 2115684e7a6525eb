// Creating and freeing inodes: an inode is a block from an inode suballocator.
import { randomInt } from 'node:crypto';
import { AllocContext, allocMetaBlock, freeMetaBlock } from './alloc';
import { DYN, INODE_FL, NO_SLOT } from './format/constants';
import { encodeXattrList, XATTR_LIST_HEADER_BYTES } from './format/xattr';
import { Inode, InodeBody, Timespec, inodeExtentCapacity } from './format/inode';
import type { Transaction } from './transaction';

export interface NewInodeOptions {
  mode: number;
  uid: number;
  gid: number;
  flags?: number;
  parentBlkno?: number;
  rdev?: number;
  /** Reserve the volume's inline xattr area (user-visible inodes; not allocator files). */
  inlineXattr?: boolean;
  time?: Timespec;
  sysFileId?: number;
}

// Wall-clock nanoseconds from one reading of Date.now() plus the monotonic clock since:
// timestamps never go backwards within a mount (ctime/mtime ordering is visible to users).
const WALL_ANCHOR_NS = BigInt(Date.now()) * 1_000_000n;
const HR_ANCHOR_NS = process.hrtime.bigint();
let lastNs = 0n;

export function nowTimespec(): Timespec {
  let ns = WALL_ANCHOR_NS + (process.hrtime.bigint() - HR_ANCHOR_NS);
  if (ns <= lastNs) ns = lastNs + 1n;
  lastNs = ns;
  return { sec: Number(ns / 1_000_000_000n), nsec: Number(ns % 1_000_000_000n) };
}

export function emptyExtentBody(bs: number, xattrInlineBytes: number): InodeBody {
  return { kind: 'extents', list: { depth: 0, count: inodeExtentCapacity(bs, xattrInlineBytes), records: [] } };
}

/** Allocates and initialises an inode (not yet linked anywhere); the caller puts it. */
export async function newInode(tx: Transaction, allocBlkno: number, slot: number, o: NewInodeOptions): Promise<Inode> {
  const mb = await allocMetaBlock(tx, allocBlkno, slot);
  tx.markCreated(mb.blkno);
  const t = o.time ?? nowTimespec();
  const xattrInlineBytes = o.inlineXattr ? tx.vol.sb.xattrInlineBytes : 0;
  const inlineXattr = Buffer.alloc(xattrInlineBytes);
  if (xattrInlineBytes >= XATTR_LIST_HEADER_BYTES) encodeXattrList([], inlineXattr, 0, xattrInlineBytes);
  const ino: Inode = {
    blkno: mb.blkno,
    fsGeneration: tx.vol.fsGeneration,
    generation: randomInt(1, 0xffffffff),
    suballoc: mb.suballoc,
    mode: o.mode,
    uid: o.uid,
    gid: o.gid,
    links: 1,
    size: 0,
    clusters: 0,
    flags: INODE_FL.valid | (o.flags ?? 0),
    dyn: xattrInlineBytes > 0 ? DYN.inlineXattr : 0,
    xattrInlineBytes,
    attr: 0,
    atime: t,
    ctime: t,
    mtime: t,
    dtime: { sec: 0, nsec: 0 },
    rdev: o.rdev ?? 0,
    xattrBlkno: 0,
    orphanedSlot: NO_SLOT,
    sysFileId: o.sysFileId ?? 0,
    id1a: 0,
    id1b: 0,
    parentBlkno: o.parentBlkno ?? 0,
    body: emptyExtentBody(tx.bs, xattrInlineBytes),
    inlineXattr,
  };
  return ino;
}

export async function newUserInode(tx: Transaction, ctx: AllocContext, o: NewInodeOptions): Promise<Inode> {
  return newInode(tx, ctx.inodeAllocBlkno, ctx.slot, { inlineXattr: true, ...o });
}

/** Returns an inode's block to its allocator. Its data and xattrs must be freed already. */
export async function freeInode(tx: Transaction, ino: Inode): Promise<void> {
  await freeMetaBlock(tx, ino.blkno, ino.suballoc);
  // The block is written back cleared (OCFS2 wipes a freed dinode the same way): left as
  // it was, it would still read as a live inode of its generation, and a node with an old
  // lock of that generation (or a value block filled from such an image) would take the
  // block for that inode after another node's create has reused it.
  tx.putInode({ ...ino, flags: ino.flags & ~INODE_FL.valid, links: 0, dtime: nowTimespec() });
}
