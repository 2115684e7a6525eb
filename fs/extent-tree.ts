// The extent tree: a B+tree of ExtentRecs rooted in an inode's id2 (format/extent-list.ts),
// with interior nodes and leaves in extent blocks. Keys are the records' cpos.
//
// Invariants (fsck checks them): records in a node are sorted by strictly increasing cpos;
// an interior record's cpos equals the smallest cpos in its subtree; all leaves are at
// depth 0 and the root's depth is the tree height; no node is empty except a depth-0 root.
//
// The tree knows nothing of what keys mean: file data (cpos = logical cluster) and indexed
// directories (cpos = first major hash of a leaf) both sit on top of it. Functions take
// the owning Inode object, change it (body.list) and put it into the transaction; callers
// keep using that same object afterwards.
import { AllocContext, allocMetaBlock, freeMetaBlock } from './alloc';
import { FsError } from './errors';
import { extentBlockCapacity } from './format/extent-block';
import type { ExtentList, ExtentRec } from './format/extent-list';
import type { Inode } from './format/inode';
import type { Transaction } from './transaction';

const MAX_DEPTH = 6;

interface PathStep {
  /** null for the root (in the inode). */
  blkno: number | null;
  list: ExtentList;
  /** Index of the record followed (interior) or found (leaf; -1 = before all). */
  index: number;
}

function rootList(ino: Inode): ExtentList {
  if (ino.body.kind !== 'extents') throw new Error(`assertion: inode ${ino.blkno} has no extent tree`);
  return ino.body.list;
}

/** Index of the last record with cpos <= key, or -1. */
function floorIndex(recs: ExtentRec[], key: number): number {
  let lo = 0;
  let hi = recs.length - 1;
  let ans = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (recs[mid].cpos <= key) {
      ans = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return ans;
}

async function descend(tx: Transaction, ino: Inode, key: number): Promise<PathStep[]> {
  const path: PathStep[] = [];
  let list = rootList(ino);
  let blkno: number | null = null;
  for (let level = 0; ; level++) {
    if (level > MAX_DEPTH) throw new FsError('EIO', `extent tree of inode ${ino.blkno} deeper than ${MAX_DEPTH}`);
    const idx = floorIndex(list.records, key);
    if (list.depth === 0) {
      path.push({ blkno, list, index: idx });
      return path;
    }
    if (list.records.length === 0) throw new FsError('EIO', `empty interior extent node in inode ${ino.blkno}`);
    const index = Math.max(0, idx);
    path.push({ blkno, list, index });
    const child = await tx.getExtentBlock(list.records[index].blkno);
    if (child.ownerBlkno !== ino.blkno) throw new FsError('EIO', `extent block ${child.blkno} belongs to inode ${child.ownerBlkno}, not ${ino.blkno}`);
    if (child.list.depth !== list.depth - 1) throw new FsError('EIO', `extent block ${child.blkno} has depth ${child.list.depth}, expected ${list.depth - 1}`);
    blkno = child.blkno;
    list = child.list;
  }
}

async function saveNode(tx: Transaction, ino: Inode, step: PathStep): Promise<void> {
  if (step.blkno === null) {
    tx.putInode(ino);
    return;
  }
  const eb = await tx.getExtentBlock(step.blkno);
  eb.list = step.list;
  tx.putExtentBlock(eb);
}

/** After the first key of path[level] changed, fix the keys of its ancestors. */
function fixKeysUpward(path: PathStep[], level: number): number {
  let changedFrom = level;
  for (let l = level; l > 0; l--) {
    const node = path[l].list;
    const parent = path[l - 1];
    const newKey = node.records[0].cpos;
    if (parent.list.records[parent.index].cpos === newKey) break;
    parent.list.records[parent.index].cpos = newKey;
    changedFrom = l - 1;
    if (parent.index !== 0) break;
  }
  return changedFrom;
}

/** The leaf record with the greatest cpos <= key, or null. */
export async function lookupFloor(tx: Transaction, ino: Inode, key: number): Promise<ExtentRec | null> {
  const path = await descend(tx, ino, key);
  const leaf = path[path.length - 1];
  if (leaf.index >= 0) return { ...leaf.list.records[leaf.index] };
  return null;
}

/** Leaf records in order with cpos >= fromKey, at most `limit` of them. */
export async function recordsFrom(tx: Transaction, ino: Inode, fromKey: number, limit = Infinity): Promise<ExtentRec[]> {
  const out: ExtentRec[] = [];
  const walk = async (list: ExtentList): Promise<void> => {
    if (list.depth === 0) {
      for (const r of list.records) {
        if (out.length >= limit) return;
        if (r.cpos >= fromKey) out.push({ ...r });
      }
      return;
    }
    for (let i = 0; i < list.records.length && out.length < limit; i++) {
      const next = list.records[i + 1];
      if (next && next.cpos <= fromKey) continue;
      const child = await tx.getExtentBlock(list.records[i].blkno);
      await walk(child.list);
    }
  };
  await walk(rootList(ino));
  return out;
}

export async function allRecords(tx: Transaction, ino: Inode): Promise<ExtentRec[]> {
  return recordsFrom(tx, ino, 0);
}

/** Inserts a leaf record; its cpos must not be in the tree. Splits nodes as needed. */
export async function insertRecord(tx: Transaction, ctx: AllocContext, ino: Inode, rec: ExtentRec): Promise<void> {
  const path = await descend(tx, ino, rec.cpos);
  const leaf = path[path.length - 1];
  if (leaf.index >= 0 && leaf.list.records[leaf.index].cpos === rec.cpos) throw new Error(`assertion: extent key ${rec.cpos} already present in inode ${ino.blkno}`);
  leaf.list.records.splice(leaf.index + 1, 0, { ...rec });
  leaf.index += 1;
  const dirtyFrom = leaf.index === 0 ? fixKeysUpward(path, path.length - 1) : path.length - 1;
  for (let l = path.length - 1; l >= dirtyFrom; l--) if (path[l].list.records.length <= path[l].list.count) await saveNode(tx, ino, path[l]);
  await splitOverflow(tx, ctx, ino, path);
}

async function splitOverflow(tx: Transaction, ctx: AllocContext, ino: Inode, path: PathStep[]): Promise<void> {
  const cap = extentBlockCapacity(tx.bs);
  for (let l = path.length - 1; l >= 0; l--) {
    const step = path[l];
    if (step.list.records.length <= step.list.count) return;
    if (step.blkno === null) {
      // Root overflow: push every record down into a new block, then split that if needed.
      if (step.list.depth >= MAX_DEPTH) throw new FsError('ENOSPC', `extent tree of inode ${ino.blkno} is full`);
      const nb = await allocMetaBlock(tx, ctx.extentAllocBlkno, ctx.slot);
      const child: ExtentList = { depth: step.list.depth, count: cap, records: step.list.records };
      step.list.depth += 1;
      step.list.records = [{ cpos: child.records[0].cpos, clusters: 0, flags: 0, blkno: nb.blkno }];
      const childStep: PathStep = { blkno: nb.blkno, list: child, index: 0 };
      tx.putExtentBlock({ blkno: nb.blkno, fsGeneration: tx.vol.fsGeneration, suballoc: nb.suballoc, ownerBlkno: ino.blkno, list: child });
      tx.putInode(ino);
      if (child.records.length > cap) await splitOverflow(tx, ctx, ino, [{ blkno: null, list: step.list, index: 0 }, childStep]);
      return;
    }
    const nb = await allocMetaBlock(tx, ctx.extentAllocBlkno, ctx.slot);
    const half = Math.ceil(step.list.records.length / 2);
    const upper = step.list.records.splice(half);
    const sibling: ExtentList = { depth: step.list.depth, count: cap, records: upper };
    tx.putExtentBlock({ blkno: nb.blkno, fsGeneration: tx.vol.fsGeneration, suballoc: nb.suballoc, ownerBlkno: ino.blkno, list: sibling });
    await saveNode(tx, ino, step);
    const parent = path[l - 1];
    parent.list.records.splice(parent.index + 1, 0, { cpos: upper[0].cpos, clusters: 0, flags: 0, blkno: nb.blkno });
    if (parent.list.records.length <= parent.list.count) await saveNode(tx, ino, parent);
  }
}

/** Replaces the leaf record whose cpos is rec.cpos. */
export async function updateRecord(tx: Transaction, ino: Inode, rec: ExtentRec): Promise<void> {
  const path = await descend(tx, ino, rec.cpos);
  const leaf = path[path.length - 1];
  if (leaf.index < 0 || leaf.list.records[leaf.index].cpos !== rec.cpos) throw new Error(`assertion: no extent at ${rec.cpos} in inode ${ino.blkno}`);
  leaf.list.records[leaf.index] = { ...rec };
  await saveNode(tx, ino, leaf);
}

/** Removes the leaf record whose cpos is `key`; empty nodes are freed. */
export async function removeRecord(tx: Transaction, ino: Inode, key: number): Promise<ExtentRec> {
  const path = await descend(tx, ino, key);
  const leafLevel = path.length - 1;
  const leaf = path[leafLevel];
  if (leaf.index < 0 || leaf.list.records[leaf.index].cpos !== key) throw new Error(`assertion: no extent at ${key} in inode ${ino.blkno}`);
  const [removed] = leaf.list.records.splice(leaf.index, 1);
  let l = leafLevel;
  // Free nodes that became empty, removing them from their parents.
  while (l > 0 && path[l].list.records.length === 0) {
    const step = path[l];
    const eb = await tx.getExtentBlock(step.blkno!);
    await freeMetaBlock(tx, eb.blkno, eb.suballoc);
    const parent = path[l - 1];
    parent.list.records.splice(parent.index, 1);
    l -= 1;
  }
  const root = rootList(ino);
  if (root.records.length === 0) {
    root.depth = 0;
    tx.putInode(ino);
    return removed;
  }
  const node = path[l];
  const removedIndex = l === leafLevel ? leaf.index : path[l].index;
  let dirtyFrom = l;
  if (removedIndex === 0 && node.list.records.length > 0) dirtyFrom = fixKeysUpward(path, l);
  for (let k = l; k >= dirtyFrom; k--) await saveNode(tx, ino, path[k]);
  return removed;
}

/** Frees every extent block of the tree and empties the root; returns the leaf records. */
export async function freeTree(tx: Transaction, ino: Inode): Promise<ExtentRec[]> {
  const out: ExtentRec[] = [];
  const walk = async (list: ExtentList): Promise<void> => {
    if (list.depth === 0) {
      out.push(...list.records);
      return;
    }
    for (const r of list.records) {
      const child = await tx.getExtentBlock(r.blkno);
      await walk(child.list);
      await freeMetaBlock(tx, child.blkno, child.suballoc);
    }
  };
  const root = rootList(ino);
  await walk(root);
  root.depth = 0;
  root.records = [];
  tx.putInode(ino);
  return out;
}
