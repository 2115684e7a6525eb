// Directories: name -> inode maps kept inline in the inode while small and as hashed leaf
// blocks indexed by the inode's extent tree once they outgrow it (format/dirent.ts).
// Lookups and inserts in an indexed directory read one root-to-leaf path plus one leaf,
// so they stay fast at millions of entries.
import type { AllocContext } from './alloc';
import { allocMetaBlock, freeMetaBlock } from './alloc';
import { FsError } from './errors';
import { DYN } from './format/constants';
import {
  COOKIE_MINOR_BITS, Dirent, DirLeaf, decodeInlineDir, direntBytes, encodeInlineDir, inlineDirBytes,
  leafCapacityBytes, majorOfCookie, nameCookie,
} from './format/dirent';
import { Inode, inlineDataCapacity } from './format/inode';
import { allRecords, freeTree, insertRecord, lookupFloor, recordsFrom, removeRecord } from './extent-tree';
import type { Transaction } from './transaction';

function entriesBytes(entries: Dirent[]): number {
  return entries.reduce((n, e) => n + direntBytes(e.name.length), 0);
}

function isIndexed(dir: Inode): boolean {
  return (dir.dyn & DYN.indexedDir) !== 0;
}

function inlineEntries(dir: Inode): Dirent[] {
  if (dir.body.kind !== 'inline') throw new FsError('EIO', `directory ${dir.blkno} is neither inline nor indexed`);
  return decodeInlineDir(dir.body.data, dir.blkno);
}

/** Sets up an empty inline directory body on a new directory inode. */
export function initEmptyDir(dir: Inode): void {
  dir.dyn = (dir.dyn | DYN.inlineData) & ~DYN.indexedDir;
  dir.body = { kind: 'inline', data: encodeInlineDir([], Infinity) };
  dir.size = dir.body.data.length;
}

async function leafFor(tx: Transaction, dir: Inode, major: number): Promise<DirLeaf> {
  const rec = await lookupFloor(tx, dir, major);
  if (!rec) throw new FsError('EIO', `indexed directory ${dir.blkno} has no leaf for hash ${major}`);
  const leaf = await tx.getDirLeaf(rec.blkno);
  if (leaf.ownerBlkno !== dir.blkno) throw new FsError('EIO', `directory leaf ${leaf.blkno} belongs to ${leaf.ownerBlkno}, not ${dir.blkno}`);
  return leaf;
}

/**
 * Index of the first entry with a cookie >= `cookie`. Entry lists are sorted by cookie:
 * decoding rejects any other order, and every change keeps it (insertSorted, splice).
 */
function firstAtOrAfter(entries: Dirent[], cookie: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].cookie < cookie) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The entries of one major hash: a contiguous run [start, end) of the sorted list. */
function majorRange(entries: Dirent[], major: number): { start: number; end: number } {
  const start = firstAtOrAfter(entries, major * 2 ** COOKIE_MINOR_BITS);
  let end = start;
  while (end < entries.length && majorOfCookie(entries[end].cookie) === major) end++;
  return { start, end };
}

function findByName(entries: Dirent[], name: Buffer, major: number): number {
  const { start, end } = majorRange(entries, major);
  for (let i = start; i < end; i++) if (entries[i].name.equals(name)) return i;
  return -1;
}

export async function dirLookup(tx: Transaction, dir: Inode, name: Buffer): Promise<Dirent | null> {
  const seed = tx.vol.sb.dirHashSeed;
  const major = majorOfCookie(nameCookie(name, seed));
  const entries = isIndexed(dir) ? (await leafFor(tx, dir, major)).entries : inlineEntries(dir);
  const i = findByName(entries, name, major);
  return i >= 0 ? entries[i] : null;
}

/** A cookie for `name` not used by any entry (all entries of its major hash are in `entries`). */
function uniqueCookie(entries: Dirent[], name: Buffer, seed: number): number {
  const preferred = nameCookie(name, seed);
  const major = majorOfCookie(preferred);
  const base = major * 2 ** COOKIE_MINOR_BITS;
  const { start, end } = majorRange(entries, major);
  const used = new Set(entries.slice(start, end).map((e) => e.cookie));
  const span = 2 ** COOKIE_MINOR_BITS;
  for (let k = 0; k < span; k++) {
    const c = base + ((preferred - base + k) % span);
    if (c >= 3 && !used.has(c)) return c;
  }
  throw new FsError('ENOSPC', 'directory hash bucket exhausted');
}

function insertSorted(entries: Dirent[], e: Dirent): void {
  let i = entries.length;
  while (i > 0 && entries[i - 1].cookie > e.cookie) i--;
  entries.splice(i, 0, e);
}

/** Adds name -> ino; EEXIST if the name is present. Changes and puts `dir`. */
export async function dirInsert(tx: Transaction, ctx: AllocContext, dir: Inode, name: Buffer, ino: number, fileType: number): Promise<Dirent> {
  if (name.length === 0 || name.length > 255) throw new FsError('ENAMETOOLONG');
  const seed = tx.vol.sb.dirHashSeed;
  const major = majorOfCookie(nameCookie(name, seed));
  if (!isIndexed(dir)) {
    const entries = inlineEntries(dir);
    if (findByName(entries, name, major) >= 0) throw new FsError('EEXIST');
    const e: Dirent = { ino, cookie: uniqueCookie(entries, name, seed), fileType, name: Buffer.from(name) };
    const grown = [...entries];
    insertSorted(grown, e);
    if (inlineDirBytes(grown) <= inlineDataCapacity(tx.bs, dir.xattrInlineBytes)) {
      dir.body = { kind: 'inline', data: encodeInlineDir(grown, Infinity) };
      dir.size = dir.body.data.length;
      tx.putInode(dir);
      return e;
    }
    // Outgrown: index what is there (it fits one leaf), then insert as into any indexed dir.
    await convertToIndexed(tx, ctx, dir, entries);
  }
  const leaf = await leafFor(tx, dir, major);
  if (findByName(leaf.entries, name, major) >= 0) throw new FsError('EEXIST');
  const e: Dirent = { ino, cookie: uniqueCookie(leaf.entries, name, seed), fileType, name: Buffer.from(name) };
  insertSorted(leaf.entries, e);
  if (entriesBytes(leaf.entries) <= leafCapacityBytes(tx.bs)) {
    tx.putDirLeaf(leaf);
    return e;
  }
  await splitLeaf(tx, ctx, dir, leaf);
  return e;
}

async function newLeaf(tx: Transaction, ctx: AllocContext, dir: Inode, entries: Dirent[]): Promise<DirLeaf> {
  const mb = await allocMetaBlock(tx, ctx.extentAllocBlkno, ctx.slot);
  const leaf: DirLeaf = { blkno: mb.blkno, fsGeneration: tx.vol.fsGeneration, suballoc: mb.suballoc, ownerBlkno: dir.blkno, entries };
  tx.putDirLeaf(leaf);
  return leaf;
}

async function convertToIndexed(tx: Transaction, ctx: AllocContext, dir: Inode, entries: Dirent[]): Promise<void> {
  if (entriesBytes(entries) > leafCapacityBytes(tx.bs)) throw new Error('assertion: inline directory larger than a leaf');
  dir.dyn = (dir.dyn & ~DYN.inlineData) | DYN.indexedDir;
  dir.body = { kind: 'extents', list: { depth: 0, count: Math.floor((tx.bs - 0xc0 - dir.xattrInlineBytes - 16) / 16), records: [] } };
  const leaf = await newLeaf(tx, ctx, dir, entries);
  dir.size = tx.bs;
  await insertRecord(tx, ctx, dir, { cpos: 0, clusters: 1, flags: 0, blkno: leaf.blkno });
}

/**
 * Splits an overfull leaf at major-hash boundaries (all entries of one major hash stay
 * together): in two, at the boundary that balances the halves best, or, when no two-way
 * split fits (long names in small blocks), into as many leaves as it takes.
 */
async function splitLeaf(tx: Transaction, ctx: AllocContext, dir: Inode, leaf: DirLeaf): Promise<void> {
  const es = leaf.entries;
  const cap = leafCapacityBytes(tx.bs);
  const sizes = es.map((e) => direntBytes(e.name.length));
  const total = sizes.reduce((a, b) => a + b, 0);
  let best = -1;
  let bestSkew = Infinity;
  for (let i = 1, before = sizes[0]; i < es.length; before += sizes[i], i++) {
    if (majorOfCookie(es[i].cookie) === majorOfCookie(es[i - 1].cookie)) continue;
    if (before > cap || total - before > cap) continue;
    const skew = Math.abs(total - 2 * before);
    if (skew < bestSkew) {
      best = i;
      bestSkew = skew;
    }
  }
  const chunks: Dirent[][] = [];
  if (best > 0) chunks.push(es.slice(0, best), es.slice(best));
  else {
    let cur: Dirent[] = [];
    let curBytes = 0;
    for (let i = 0; i < es.length; ) {
      let j = i;
      let groupBytes = 0;
      while (j < es.length && majorOfCookie(es[j].cookie) === majorOfCookie(es[i].cookie)) groupBytes += sizes[j++];
      if (groupBytes > cap) throw new FsError('ENOSPC', `directory ${dir.blkno}: too many long names share one hash`);
      if (curBytes + groupBytes > cap && cur.length > 0) {
        chunks.push(cur);
        cur = [];
        curBytes = 0;
      }
      cur.push(...es.slice(i, j));
      curBytes += groupBytes;
      i = j;
    }
    chunks.push(cur);
  }
  leaf.entries = chunks[0];
  tx.putDirLeaf(leaf);
  for (const chunk of chunks.slice(1)) {
    const sibling = await newLeaf(tx, ctx, dir, chunk);
    dir.size += tx.bs;
    await insertRecord(tx, ctx, dir, { cpos: majorOfCookie(chunk[0].cookie), clusters: 1, flags: 0, blkno: sibling.blkno });
  }
}

/** Where `name` is: its entry list (inline, or the leaf holding it) and its index. ENOENT if absent. */
async function locate(tx: Transaction, dir: Inode, name: Buffer): Promise<{ entries: Dirent[]; i: number; leaf: DirLeaf | null; major: number }> {
  const major = majorOfCookie(nameCookie(name, tx.vol.sb.dirHashSeed));
  const leaf = isIndexed(dir) ? await leafFor(tx, dir, major) : null;
  const entries = leaf ? leaf.entries : inlineEntries(dir);
  const i = findByName(entries, name, major);
  if (i < 0) throw new FsError('ENOENT');
  return { entries, i, leaf, major };
}

function storeInline(tx: Transaction, dir: Inode, entries: Dirent[]): void {
  dir.body = { kind: 'inline', data: encodeInlineDir(entries, Infinity) };
  dir.size = dir.body.data.length;
  tx.putInode(dir);
}

/** Removes `name`; ENOENT if absent. Changes and puts `dir`. */
export async function dirRemove(tx: Transaction, dir: Inode, name: Buffer): Promise<Dirent> {
  const { entries, i, leaf, major } = await locate(tx, dir, name);
  const [e] = entries.splice(i, 1);
  if (!leaf) {
    storeInline(tx, dir, entries);
    return e;
  }
  const rec = await lookupFloor(tx, dir, major);
  if (leaf.entries.length === 0 && rec && rec.cpos !== 0) {
    // An empty leaf other than the first goes; the leaf before it covers its hashes.
    await removeRecord(tx, dir, rec.cpos);
    await freeMetaBlock(tx, leaf.blkno, leaf.suballoc);
    dir.size -= tx.bs;
    tx.putInode(dir);
  } else {
    tx.putDirLeaf(leaf);
  }
  return e;
}

/** Changes the inode (and file type) a name points to, keeping its cookie. */
export async function dirRetarget(tx: Transaction, dir: Inode, name: Buffer, ino: number, fileType: number): Promise<void> {
  const { entries, i, leaf } = await locate(tx, dir, name);
  entries[i] = { ...entries[i], ino, fileType };
  if (leaf) tx.putDirLeaf(leaf);
  else storeInline(tx, dir, entries);
}

/** Entries with cookie > afterCookie in cookie order, at most `limit`. */
export async function dirReaddir(tx: Transaction, dir: Inode, afterCookie: number, limit: number): Promise<Dirent[]> {
  if (!isIndexed(dir)) return inlineEntries(dir).filter((e) => e.cookie > afterCookie).slice(0, limit);
  const out: Dirent[] = [];
  const startRec = await lookupFloor(tx, dir, majorOfCookie(afterCookie));
  let from = startRec ? startRec.cpos : 0;
  for (let rounds = 0; out.length < limit; rounds++) {
    const recs = await recordsFrom(tx, dir, from, 16);
    if (recs.length === 0) break;
    for (const r of recs) {
      const leaf = await tx.getDirLeaf(r.blkno);
      for (const e of leaf.entries) if (e.cookie > afterCookie && out.length < limit) out.push(e);
      if (out.length >= limit) break;
    }
    from = recs[recs.length - 1].cpos + 1;
    if (from > 0xffffffff) break;
  }
  return out;
}

export async function listDirectory(tx: Transaction, dirBlkno: number): Promise<Dirent[]> {
  const dir = await tx.getInode(dirBlkno);
  return dirReaddir(tx, dir, 0, Infinity);
}

export async function dirIsEmpty(tx: Transaction, dir: Inode): Promise<boolean> {
  return (await dirReaddir(tx, dir, 0, 1)).length === 0;
}

/** Frees an indexed directory's leaves and tree (the directory must be empty or dying). */
export async function dirFreeStorage(tx: Transaction, dir: Inode): Promise<void> {
  if (!isIndexed(dir)) return;
  for (const r of await allRecords(tx, dir)) {
    const leaf = await tx.getDirLeaf(r.blkno);
    await freeMetaBlock(tx, leaf.blkno, leaf.suballoc);
  }
  await freeTree(tx, dir);
}
