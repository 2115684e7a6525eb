// Chain allocators: the global cluster bitmap and the block suballocators (inode_alloc,
// extent_alloc, global_inode_alloc). Layout in format/inode.ts (chain list) and
// format/group.ts (group descriptors). Every change goes through a Transaction and keeps
// three counts in step: group.free, the chain record's free, and the allocator inode's
// used bits (id1a; id1b = total bits).
import { FsError } from './errors';
import { SUBALLOC_GROUP_BYTES, SYSFILE } from './format/constants';
import { GroupDesc, clearBit, groupBitmapCapacityBits, setBit, testBit } from './format/group';
import type { Suballoc } from './format/header';
import type { ChainList, Inode } from './format/inode';
import type { Transaction } from './transaction';

export interface ClusterRun {
  startCluster: number;
  clusters: number;
}

export interface MetaBlock {
  blkno: number;
  suballoc: Suballoc;
}

/** Which suballocators this mount (or tool) allocates metadata blocks from. */
export interface AllocContext {
  slot: number;
  inodeAllocBlkno: number;
  extentAllocBlkno: number;
}

function chainOf(ino: Inode): ChainList {
  if (ino.body.kind !== 'chain') throw new FsError('EIO', `inode ${ino.blkno} is not a chain allocator`);
  return ino.body.chain;
}

/** Descriptor block of global-bitmap group g. */
export function globalGroupBlkno(tx: Transaction, g: number, cpg: number): number {
  return g === 0 ? tx.vol.sb.firstGroupBlkno : tx.vol.clusterToBlock(g * cpg);
}

/** Finds a run of free bits: the first run of >= min bits at or after `from`, up to `want`. */
export function findFreeRun(bitmap: Buffer, bits: number, from: number, min: number, want: number): { start: number; len: number } | null {
  let i = from;
  while (i < bits) {
    if ((i & 7) === 0 && bitmap[i >> 3] === 0xff) {
      i += 8;
      continue;
    }
    if (testBit(bitmap, i)) {
      i++;
      continue;
    }
    let j = i;
    while (j < bits && j - i < want && !testBit(bitmap, j)) j++;
    if (j - i >= min) return { start: i, len: j - i };
    i = j;
  }
  return null;
}

async function updateCounts(tx: Transaction, allocBlkno: number, g: GroupDesc, delta: number): Promise<void> {
  g.free -= delta;
  if (g.free < 0 || g.free > g.bits) throw new Error(`assertion: group ${g.blkno} free count ${g.free}`);
  tx.putGroup(g);
  const ino = await tx.getInode(allocBlkno);
  const chain = chainOf(ino);
  const rec = chain.recs[g.chain];
  if (!rec) throw new FsError('EIO', `group ${g.blkno} names chain ${g.chain} that allocator ${allocBlkno} lacks`);
  rec.free -= delta;
  ino.id1a += delta;
  if (rec.free < 0 || ino.id1a < 0 || ino.id1a > ino.id1b) throw new Error(`assertion: allocator ${allocBlkno} counts out of range`);
  tx.putInode(ino);
}

/**
 * Allocates up to `want` contiguous clusters (at least `min`) from the global bitmap,
 * preferring the group that holds `hintCluster`. Throws ENOSPC when no run of `min` exists.
 */
export async function allocClusters(tx: Transaction, want: number, min = 1, hintCluster = 0): Promise<ClusterRun> {
  try {
    return await allocClustersOnce(tx, want, min, hintCluster);
  } catch (e) {
    // Space freed by earlier operations becomes usable once their transaction commits:
    // commit now rather than fail (the caller's own frees stay pending).
    const journal = tx.vol.journal;
    if (!(e instanceof FsError) || e.errno !== 'ENOSPC' || !journal || journal.pendingFrees().length === 0) throw e;
    await journal.commit();
    return allocClustersOnce(tx, want, min, hintCluster);
  }
}

/**
 * Clusters for file data (a file's extents, an xattr value): as allocClusters, and the
 * transaction then asks for ordered data (Transaction.orderedData): their old contents must
 * never show, so what is written into them goes down before the commit that points at them.
 */
export async function allocDataClusters(tx: Transaction, want: number, min = 1, hintCluster = 0): Promise<ClusterRun> {
  const run = await allocClusters(tx, want, min, hintCluster);
  tx.orderedData = true;
  return run;
}

async function allocClustersOnce(tx: Transaction, want: number, min: number, hintCluster: number): Promise<ClusterRun> {
  if (want < 1 || min < 1 || min > want) throw new Error(`assertion: allocClusters(${want}, ${min})`);
  const bitmapBlkno = await tx.vol.systemInode(SYSFILE.globalBitmap);
  const ino = await tx.getInode(bitmapBlkno);
  const chain = chainOf(ino);
  if (ino.id1b - ino.id1a < min) throw new FsError('ENOSPC', 'no free clusters');
  const groups = Math.ceil(tx.vol.geo.totalClusters / chain.cpg);
  const hintGroup = Math.min(groups - 1, Math.floor(hintCluster / chain.cpg));
  let best: { g: GroupDesc; gi: number; start: number; len: number } | null = null;
  // Clusters freed by transactions that are not durable yet look used to the search.
  const pending = [...tx.freedClusters, ...(tx.vol.journal?.pendingFrees() ?? [])];
  for (let k = 0; k < groups; k++) {
    const gi = (hintGroup + k) % groups;
    const g = await tx.getGroup(globalGroupBlkno(tx, gi, chain.cpg));
    if (g.free < min) continue;
    const from = k === 0 ? Math.max(0, hintCluster - gi * chain.cpg) : 0;
    const bitmap = maskPending(g.bitmap, gi * chain.cpg, g.bits, pending);
    let run = findFreeRun(bitmap, g.bits, from, min, want);
    if (!run && from > 0) run = findFreeRun(bitmap, g.bits, 0, min, want);
    if (!run) continue;
    if (!best || run.len > best.len) best = { g, gi, start: run.start, len: run.len };
    // Runs never cross a group, so a run as long as the group's free space is the best
    // this search can do; stop rather than read every group of a large volume.
    if (run.len === want || run.len >= g.free) break;
  }
  if (!best) throw new FsError('ENOSPC', `no run of ${min} free clusters`);
  for (let i = 0; i < best.len; i++) setBit(best.g.bitmap, best.start + i);
  await updateCounts(tx, bitmapBlkno, best.g, best.len);
  return { startCluster: best.gi * chain.cpg + best.start, clusters: best.len };
}

/**
 * Allocates `clusters` clusters in as few runs as the bitmap allows (runs never cross a
 * bitmap group, so a large file such as a journal may need several).
 */
export async function allocClusterRuns(tx: Transaction, clusters: number, hintCluster = 0): Promise<ClusterRun[]> {
  const runs: ClusterRun[] = [];
  let left = clusters;
  let hint = hintCluster;
  while (left > 0) {
    const run = await allocClusters(tx, left, 1, hint);
    runs.push(run);
    left -= run.clusters;
    hint = run.startCluster + run.clusters;
  }
  return runs;
}

/** The bitmap of a group starting at cluster `base`, with pending frees shown as used. */
function maskPending(bitmap: Buffer, base: number, bits: number, pending: ReadonlyArray<ClusterRun>): Buffer {
  let out: Buffer | null = null;
  for (const p of pending) {
    const lo = Math.max(p.startCluster, base);
    const hi = Math.min(p.startCluster + p.clusters, base + bits);
    if (lo >= hi) continue;
    out ??= Buffer.from(bitmap);
    for (let c = lo; c < hi; c++) setBit(out, c - base);
  }
  return out ?? bitmap;
}

/** Returns clusters to the global bitmap; they must all be allocated. */
export async function freeClusters(tx: Transaction, startCluster: number, clusters: number): Promise<void> {
  tx.freedClusters.push({ startCluster, clusters });
  const bitmapBlkno = await tx.vol.systemInode(SYSFILE.globalBitmap);
  const cpg = chainOf(await tx.getInode(bitmapBlkno)).cpg;
  let c = startCluster;
  const end = startCluster + clusters;
  if (end > tx.vol.geo.totalClusters) throw new FsError('EIO', `freeing clusters ${startCluster}+${clusters} beyond the volume`);
  while (c < end) {
    const gi = Math.floor(c / cpg);
    const g = await tx.getGroup(globalGroupBlkno(tx, gi, cpg));
    const stop = Math.min(end, (gi + 1) * cpg);
    for (let x = c; x < stop; x++) {
      const bit = x - gi * cpg;
      if (!testBit(g.bitmap, bit)) throw new FsError('EIO', `freeing cluster ${x} that is already free`);
      clearBit(g.bitmap, bit);
    }
    await updateCounts(tx, bitmapBlkno, g, -(stop - c));
    c = stop;
  }
}

/** Bits per suballocator group for this geometry: about 4 MiB, whole clusters, one bitmap. */
export function suballocGroupClusters(bs: number, cs: number): number {
  const bpc = cs / bs;
  const maxBits = Math.min(SUBALLOC_GROUP_BYTES / bs, groupBitmapCapacityBits(bs));
  return Math.max(1, Math.floor(maxBits / bpc));
}

/** Adds a group of fresh blocks to a suballocator (taking clusters from the global bitmap). */
async function growSuballocator(tx: Transaction, allocBlkno: number): Promise<void> {
  const chain = chainOf(await tx.getInode(allocBlkno));
  const { blockSize: bs, blocksPerCluster: bpc } = tx.vol.geo;
  const run = await allocClusters(tx, chain.cpg, chain.cpg, tx.vol.blockToCluster(allocBlkno));
  const bits = chain.cpg * bpc;
  const blkno = tx.vol.clusterToBlock(run.startCluster);
  // Put the group on a new chain while there is room, else on the chain with fewest bits.
  let chainIdx: number;
  const fresh = await tx.getInode(allocBlkno);
  const freshChain = chainOf(fresh);
  if (freshChain.recs.length < freshChain.count) {
    chainIdx = freshChain.recs.length;
    freshChain.recs.push({ free: 0, total: 0, blkno: 0 });
  } else {
    chainIdx = 0;
    freshChain.recs.forEach((r, i) => {
      if (r.total < freshChain.recs[chainIdx].total) chainIdx = i;
    });
  }
  const rec = freshChain.recs[chainIdx];
  const bitmap = Buffer.alloc(bs - 0x40);
  setBit(bitmap, 0);
  const g: GroupDesc = { blkno, fsGeneration: tx.vol.fsGeneration, generation: fresh.generation, bits, free: bits - 1, chain: chainIdx, nextGroupBlkno: rec.blkno, parentBlkno: allocBlkno, bitmap };
  tx.putGroup(g);
  rec.blkno = blkno;
  rec.total += bits;
  rec.free += bits - 1;
  fresh.id1b += bits;
  fresh.id1a += 1;
  fresh.clusters += chain.cpg;
  fresh.size = fresh.clusters * tx.vol.geo.clusterSize;
  tx.putInode(fresh);
}

/** Allocates one metadata block from a suballocator, growing it when full. */
export async function allocMetaBlock(tx: Transaction, allocBlkno: number, slot: number): Promise<MetaBlock> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const ino = await tx.getInode(allocBlkno);
    const chain = chainOf(ino);
    for (let ci = 0; ci < chain.recs.length; ci++) {
      if (chain.recs[ci].free === 0) continue;
      let gb = chain.recs[ci].blkno;
      for (let hops = 0; gb !== 0 && hops < 1 << 20; hops++) {
        const g = await tx.getGroup(gb);
        if (g.parentBlkno !== allocBlkno) throw new FsError('EIO', `group ${gb} belongs to ${g.parentBlkno}, found in allocator ${allocBlkno}`);
        if (g.free > 0) {
          const run = findFreeRun(g.bitmap, g.bits, 1, 1, 1);
          if (!run) throw new FsError('EIO', `group ${gb} claims ${g.free} free bits but has none`);
          setBit(g.bitmap, run.start);
          await updateCounts(tx, allocBlkno, g, 1);
          return { blkno: gb + run.start, suballoc: { slot, bit: run.start, groupBlkno: gb } };
        }
        gb = g.nextGroupBlkno;
      }
    }
    if (attempt === 0) await growSuballocator(tx, allocBlkno);
  }
  throw new FsError('ENOSPC', `suballocator ${allocBlkno} could not grow`);
}

/** Frees a metadata block back to the suballocator group named by its suballoc triple. */
export async function freeMetaBlock(tx: Transaction, blkno: number, s: Suballoc): Promise<void> {
  // The allocator first: on a cluster mount its lock covers the group, which must not be
  // read before that lock is held (another node may have changed it since we last did).
  const parent = await tx.groupParent(s.groupBlkno);
  await tx.getInode(parent);
  const g = await tx.getGroup(s.groupBlkno);
  if (g.parentBlkno !== parent) throw new FsError('EIO', `group ${s.groupBlkno} changed its allocator from ${parent} to ${g.parentBlkno}`);
  if (s.groupBlkno + s.bit !== blkno || s.bit === 0 || s.bit >= g.bits) throw new FsError('EIO', `block ${blkno} has a bad suballoc record (group ${s.groupBlkno} bit ${s.bit})`);
  if (!testBit(g.bitmap, s.bit)) throw new FsError('EIO', `freeing block ${blkno} that is already free`);
  clearBit(g.bitmap, s.bit);
  await updateCounts(tx, g.parentBlkno, g, -1);
  tx.discard(blkno);
}
