// File contents: inline data while small, then clusters mapped by the extent tree.
// Holes read as zeros; unwritten extents (fallocate) read as zeros until written.
// Data is written straight to its clusters before the transaction that points at them
// commits (ordered data): a crash never exposes metadata pointing at unwritten clusters.
import type { AllocContext } from './alloc';
import { allocDataClusters, freeClusters } from './alloc';
import { FsError } from './errors';
import { DYN, EXTENT_FL, MAX_LEAF_CLUSTERS } from './format/constants';
import type { ExtentRec } from './format/extent-list';
import { Inode, inlineDataCapacity } from './format/inode';
import { allRecords, freeTree, insertRecord, lookupFloor, recordsFrom, removeRecord, updateRecord } from './extent-tree';
import { emptyExtentBody } from './inode-alloc';
import type { Transaction } from './transaction';

export function isInline(ino: Inode): boolean {
  return (ino.dyn & DYN.inlineData) !== 0;
}

/** Makes a new empty regular file inline (when the volume and inode allow it). */
export function initInlineFile(ino: Inode): void {
  ino.dyn |= DYN.inlineData;
  ino.body = { kind: 'inline', data: Buffer.alloc(0) };
}

/** The extent covering logical cluster `cpos`, or null for a hole. */
export async function extentAt(tx: Transaction, ino: Inode, cpos: number): Promise<ExtentRec | null> {
  const r = await lookupFloor(tx, ino, cpos);
  return r && cpos < r.cpos + r.clusters ? r : null;
}

/** Maps clusters [cpos, cpos+count) that are holes to newly allocated clusters. */
export async function allocateRange(tx: Transaction, ctx: AllocContext, ino: Inode, cpos: number, count: number, flags = 0): Promise<Array<{ cpos: number; run: { startCluster: number; clusters: number } }>> {
  const made: Array<{ cpos: number; run: { startCluster: number; clusters: number } }> = [];
  let c = cpos;
  const end = cpos + count;
  while (c < end) {
    const cur = await extentAt(tx, ino, c);
    if (cur) {
      c = cur.cpos + cur.clusters;
      continue;
    }
    // The hole runs to the next extent or the end of the range.
    const [next] = await recordsFrom(tx, ino, c + 1, 1);
    const holeEnd = Math.min(end, next ? next.cpos : end);
    const want = Math.min(holeEnd - c, MAX_LEAF_CLUSTERS);
    const prev = await lookupFloor(tx, ino, c - 1);
    const hint = prev ? tx.vol.blockToCluster(prev.blkno) + prev.clusters : tx.vol.blockToCluster(ino.blkno);
    const run = await allocDataClusters(tx, want, 1, hint);
    await addExtent(tx, ctx, ino, { cpos: c, clusters: run.clusters, flags, blkno: tx.vol.clusterToBlock(run.startCluster) });
    made.push({ cpos: c, run });
    c += run.clusters;
  }
  return made;
}

/** Inserts a leaf record, merging it into the previous one when physically contiguous. */
async function addExtent(tx: Transaction, ctx: AllocContext, ino: Inode, rec: ExtentRec): Promise<void> {
  ino.clusters += rec.clusters;
  const prev = rec.cpos > 0 ? await lookupFloor(tx, ino, rec.cpos - 1) : null;
  const bpc = tx.vol.geo.blocksPerCluster;
  if (prev && prev.cpos + prev.clusters === rec.cpos && prev.blkno + prev.clusters * bpc === rec.blkno && prev.flags === rec.flags && prev.clusters + rec.clusters <= MAX_LEAF_CLUSTERS) {
    prev.clusters += rec.clusters;
    await updateRecord(tx, ino, prev);
  } else {
    await insertRecord(tx, ctx, ino, rec);
  }
  tx.putInode(ino);
}

/** Makes `cpos` the start of an extent if an extent covers it (splitting that extent). */
export async function splitExtentAt(tx: Transaction, ctx: AllocContext, ino: Inode, cpos: number): Promise<void> {
  const r = await extentAt(tx, ino, cpos);
  if (!r || r.cpos === cpos) return;
  const head = cpos - r.cpos;
  const bpc = tx.vol.geo.blocksPerCluster;
  await updateRecord(tx, ino, { ...r, clusters: head });
  await insertRecord(tx, ctx, ino, { cpos, clusters: r.clusters - head, flags: r.flags, blkno: r.blkno + head * bpc });
}

/** Extents lying entirely within [cpos, cpos+count), after splitting at both edges. */
async function extentsWithin(tx: Transaction, ctx: AllocContext, ino: Inode, cpos: number, count: number): Promise<ExtentRec[]> {
  await splitExtentAt(tx, ctx, ino, cpos);
  await splitExtentAt(tx, ctx, ino, cpos + count);
  return (await recordsFrom(tx, ino, cpos)).filter((r) => r.cpos < cpos + count);
}

/** Frees the clusters of [cpos, cpos+count) (a hole punched in the file). */
export async function punchClusters(tx: Transaction, ctx: AllocContext, ino: Inode, cpos: number, count: number): Promise<void> {
  if (isInline(ino) || count <= 0) return;
  for (const r of await extentsWithin(tx, ctx, ino, cpos, count)) {
    await removeRecord(tx, ino, r.cpos);
    await freeClusters(tx, tx.vol.blockToCluster(r.blkno), r.clusters);
    ino.clusters -= r.clusters;
  }
  tx.putInode(ino);
}

/** Marks [cpos, cpos+count) as written (clearing the unwritten flag where set). */
export async function markWritten(tx: Transaction, ctx: AllocContext, ino: Inode, cpos: number, count: number): Promise<void> {
  // At most `count` extents start inside the range, plus the one covering its start.
  const first = await lookupFloor(tx, ino, cpos);
  const candidates = [...(first ? [first] : []), ...(await recordsFrom(tx, ino, cpos + 1, count))];
  const unwritten = candidates.some((r) => r.flags & EXTENT_FL.unwritten && r.cpos < cpos + count && r.cpos + r.clusters > cpos);
  if (!unwritten) return;
  tx.orderedData = true; // reading as zeros until now: what is written there goes down first
  for (const r of await extentsWithin(tx, ctx, ino, cpos, count)) {
    if (r.flags & EXTENT_FL.unwritten) await updateRecord(tx, ino, { ...r, flags: r.flags & ~EXTENT_FL.unwritten });
  }
}

/** Frees every cluster at or beyond logical cluster `fromCpos`. */
export async function truncateClusters(tx: Transaction, ino: Inode, fromCpos: number): Promise<void> {
  if (isInline(ino)) return;
  const recs = (await allRecords(tx, ino)).filter((r) => r.cpos + r.clusters > fromCpos);
  for (const r of recs.reverse()) {
    if (r.cpos >= fromCpos) {
      await removeRecord(tx, ino, r.cpos);
      await freeClusters(tx, tx.vol.blockToCluster(r.blkno), r.clusters);
      ino.clusters -= r.clusters;
    } else {
      const keep = fromCpos - r.cpos;
      await freeClusters(tx, tx.vol.blockToCluster(r.blkno) + keep, r.clusters - keep);
      ino.clusters -= r.clusters - keep;
      await updateRecord(tx, ino, { ...r, clusters: keep });
    }
  }
  tx.putInode(ino);
}

/** Frees all data of an inode (inline or clusters) and its extent blocks. */
export async function freeAllData(tx: Transaction, ino: Inode): Promise<void> {
  if (isInline(ino)) {
    ino.body = { kind: 'inline', data: Buffer.alloc(0) };
    tx.putInode(ino);
    return;
  }
  const recs = await freeTree(tx, ino);
  for (const r of recs) await freeClusters(tx, tx.vol.blockToCluster(r.blkno), r.clusters);
  ino.clusters = 0;
  tx.putInode(ino);
}

/** Moves inline data out to clusters (the file is about to outgrow its inode). */
async function uninline(tx: Transaction, ctx: AllocContext, ino: Inode): Promise<void> {
  if (ino.body.kind !== 'inline') throw new Error('assertion: uninline of a non-inline inode');
  const data = ino.body.data;
  ino.dyn &= ~DYN.inlineData;
  ino.body = emptyExtentBody(tx.bs, ino.xattrInlineBytes);
  if (data.length > 0) {
    const cs = tx.vol.geo.clusterSize;
    await allocateRange(tx, ctx, ino, 0, 1);
    const ext = (await extentAt(tx, ino, 0))!;
    const buf = Buffer.alloc(cs);
    data.copy(buf);
    await tx.vol.writeData(ext.blkno, buf);
  }
  tx.putInode(ino);
}

/**
 * Reads `length` bytes at `offset`, clipped to the file size. The result is a view into a
 * buffer covering whole blocks, so each extent's blocks are read straight into it (one read
 * per extent, no copy); holes and unwritten extents are zero-filled.
 */
export async function readFile(tx: Transaction, ino: Inode, offset: number, length: number): Promise<Buffer> {
  const end = Math.min(ino.size, offset + length);
  if (end <= offset) return Buffer.alloc(0);
  if (ino.body.kind === 'inline') return Buffer.from(ino.body.data.subarray(offset, end));
  const cs = tx.vol.geo.clusterSize;
  const bs = tx.bs;
  const baseBlock = Math.floor(offset / bs);
  const whole = Buffer.allocUnsafe((Math.ceil(end / bs) - baseBlock) * bs);
  let pos = offset;
  while (pos < end) {
    const cpos = Math.floor(pos / cs);
    const ext = await extentAt(tx, ino, cpos);
    const next = ext ? Math.min(end, (ext.cpos + ext.clusters) * cs) : Math.min(end, (cpos + 1) * cs);
    // Blocks [firstBlock, lastBlock) of `whole` hold bytes [pos, next): chunks meet on
    // extent boundaries, which are block-aligned, so no two chunks share a block.
    const firstBlock = Math.floor(pos / bs);
    const lastBlock = Math.ceil(next / bs);
    const view = whole.subarray((firstBlock - baseBlock) * bs, (lastBlock - baseBlock) * bs);
    if (!ext || ext.flags & EXTENT_FL.unwritten) view.fill(0);
    else await tx.vol.readData(ext.blkno + (firstBlock - ext.cpos * (cs / bs)), lastBlock - firstBlock, view);
    pos = next;
  }
  return whole.subarray(offset - baseBlock * bs, end - baseBlock * bs);
}

/**
 * Writes `data` at `offset`, allocating clusters (zero-filled where partly written). With
 * `hold`, the data write may go behind (Volume.writeData): `data` stays unchanged until
 * every promise handed to `hold` has settled.
 */
export async function writeFile(tx: Transaction, ctx: AllocContext, ino: Inode, offset: number, data: Buffer, hold?: (done: Promise<void>) => void): Promise<void> {
  const end = offset + data.length;
  if (end > Number.MAX_SAFE_INTEGER) throw new FsError('EFBIG');
  if (ino.body.kind === 'inline') {
    if (end <= inlineDataCapacity(tx.bs, ino.xattrInlineBytes)) {
      const cur = ino.body.data;
      const next = Buffer.alloc(Math.max(cur.length, end));
      cur.copy(next);
      data.copy(next, offset);
      ino.body = { kind: 'inline', data: next };
      ino.size = Math.max(ino.size, end);
      tx.putInode(ino);
      return;
    }
    await uninline(tx, ctx, ino);
  }
  const cs = tx.vol.geo.clusterSize;
  const bs = tx.bs;
  const firstC = Math.floor(offset / cs);
  const lastC = Math.ceil(end / cs);
  const made = await allocateRange(tx, ctx, ino, firstC, lastC - firstC);
  // Clusters whose old contents must never show: new ones, and preallocated (unwritten)
  // ones at the edges. Their blocks this write does not reach are zero-filled here; the
  // partly written blocks at its edges start from zeros instead of a read (writeMapped).
  const fresh = new Set<number>();
  for (const m of made) {
    for (const c of [m.cpos, m.cpos + m.run.clusters - 1]) fresh.add(c);
  }
  for (const c of new Set([firstC, lastC - 1])) {
    const ext = await extentAt(tx, ino, c);
    if (ext && ext.flags & EXTENT_FL.unwritten) fresh.add(c);
  }
  const bpc = tx.vol.geo.blocksPerCluster;
  const firstB = Math.floor(offset / bs);
  const endB = Math.ceil(end / bs);
  for (const c of fresh) {
    if (c < firstC || c >= lastC) continue;
    const ext = await extentAt(tx, ino, c);
    if (!ext) throw new Error(`assertion: cluster ${c} of inode ${ino.blkno} not mapped after allocation`);
    const phys = ext.blkno + (c - ext.cpos) * bpc;
    // The cluster's blocks before and after the ones this write covers.
    const before = Math.max(0, Math.min(bpc, firstB - c * bpc));
    const after = Math.max(0, Math.min(bpc, (c + 1) * bpc - endB));
    if (before > 0) await tx.vol.writeData(phys, Buffer.alloc(before * bs));
    if (after > 0) await tx.vol.writeData(phys + bpc - after, Buffer.alloc(after * bs));
  }
  await markWritten(tx, ctx, ino, firstC, lastC - firstC);
  await writeMapped(tx, ino, offset, data, fresh, hold);
  ino.size = Math.max(ino.size, end);
  tx.putInode(ino);
}

/** True when every cluster of bytes [start, end) is allocated and written (not a hole, not unwritten). */
export async function isWrittenRange(tx: Transaction, ino: Inode, start: number, end: number): Promise<boolean> {
  if (ino.body.kind === 'inline') return false;
  const cs = tx.vol.geo.clusterSize;
  const lastC = Math.ceil(end / cs);
  for (let c = Math.floor(start / cs); c < lastC;) {
    const ext = await extentAt(tx, ino, c);
    if (!ext || ext.flags & EXTENT_FL.unwritten) return false;
    c = ext.cpos + ext.clusters;
  }
  return true;
}

/**
 * Writes `data` at `offset` into clusters already mapped. A block the data covers only in
 * part is completed from its old contents (one block read) or, in a cluster listed in
 * `fresh` (logical cluster numbers whose old contents must not show), from zeros; each
 * extent's run goes down in one write. (Direct I/O from a buffer that is not page-aligned
 * reaches us as a large write ending mid-block and a small one after it.)
 */
export async function writeMapped(tx: Transaction, ino: Inode, offset: number, data: Buffer, fresh: ReadonlySet<number> = new Set(), hold?: (done: Promise<void>) => void): Promise<void> {
  const cs = tx.vol.geo.clusterSize;
  const bs = tx.bs;
  const end = offset + data.length;
  let pos = offset;
  while (pos < end) {
    const cpos = Math.floor(pos / cs);
    const ext = await extentAt(tx, ino, cpos);
    if (!ext) throw new Error(`assertion: cluster ${cpos} of inode ${ino.blkno} not mapped after allocation`);
    const chunkEnd = Math.min(end, (ext.cpos + ext.clusters) * cs);
    const firstBlock = Math.floor(pos / bs);
    const lastBlock = Math.ceil(chunkEnd / bs);
    const phys = ext.blkno + (firstBlock - ext.cpos * (cs / bs));
    let buf: Buffer;
    if (pos % bs === 0 && chunkEnd % bs === 0) {
      buf = data.subarray(pos - offset, chunkEnd - offset);
    } else {
      buf = Buffer.allocUnsafe((lastBlock - firstBlock) * bs);
      // The partly covered blocks at either edge, as they are (or zeros where fresh).
      const edges = new Set<number>();
      if (pos % bs !== 0) edges.add(firstBlock);
      if (chunkEnd % bs !== 0) edges.add(lastBlock - 1);
      for (const b of edges) {
        const at = (b - firstBlock) * bs;
        if (fresh.has(Math.floor((b * bs) / cs))) buf.fill(0, at, at + bs);
        else (await tx.vol.readData(phys + (b - firstBlock), 1)).copy(buf, at);
      }
      data.copy(buf, pos - firstBlock * bs, pos - offset, chunkEnd - offset);
    }
    await tx.vol.writeData(phys, buf, hold);
    pos = chunkEnd;
  }
}
