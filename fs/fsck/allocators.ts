// fsck's allocator passes. First (before the inode walk) the allocator structures are
// read and the clusters they occupy claimed: the reserved area, global-bitmap group
// descriptors, backup superblocks and every suballocator group. Last (after the walk)
// each bitmap is compared with what the walk found in use and, when they differ, rebuilt
// from it together with every free count that summarises it.
import { groupBitmapCapacityBits, countSetBits, decodeGroup, setBit, testBit, GroupDesc } from '../format/group';
import { chainCapacity, Inode } from '../format/inode';
import { SIG } from '../format/constants';
import { sealBlock } from '../format/header';
import { backupSuperOffsets } from '../volume';
import type { FsckState } from './state';
import { readTolerant } from './walk';

export interface SubGroup {
  g: GroupDesc;
  /** The descriptor was garbage and is rebuilt from scratch. */
  rebuilt: boolean;
}

export interface SubAllocator {
  ino: Inode;
  name: string;
  slot: number;
  groups: SubGroup[];
}

export function globalCpg(bs: number): number {
  return Math.min(groupBitmapCapacityBits(bs), 0xffff);
}

export function globalGroupCount(st: FsckState): number {
  return Math.ceil(st.vol.geo.totalClusters / globalCpg(st.vol.geo.blockSize));
}

function globalGroupBlkno(st: FsckState, g: number): number {
  return g === 0 ? st.vol.sb.firstGroupBlkno : g * globalCpg(st.vol.geo.blockSize) * st.vol.geo.blocksPerCluster;
}

/** Claims the fixed structures: reserved clusters, global group descriptors, backups. */
export function claimFixedAreas(st: FsckState): void {
  const { blocksPerCluster: bpc, blockSize: bs } = st.vol.geo;
  const cpg = globalCpg(bs);
  st.claimClusters(0, Math.floor(st.vol.sb.firstGroupBlkno / bpc) + 1, 'reserved area');
  for (let g = 1; g < globalGroupCount(st); g++) st.claimClusters(g * cpg, 1, `global bitmap group ${g}`);
  for (const off of backupSuperOffsets(st.vol.geo.totalBlocks, bs)) st.claimClusters(Math.floor(off / st.vol.geo.clusterSize), 1, 'backup superblock');
}

/** Walks a suballocator's chains; claims each group's clusters. */
export async function readSubAllocator(st: FsckState, ino: Inode, name: string, slot: number): Promise<SubAllocator> {
  const sa: SubAllocator = { ino, name, slot, groups: [] };
  if (ino.body.kind !== 'chain') {
    st.report.problem(`${name}: allocator inode ${ino.blkno} has no chain list`, false);
    return sa;
  }
  const chain = ino.body.chain;
  const bpc = st.vol.geo.blocksPerCluster;
  const expectBits = chain.cpg * chain.bpc;
  if (chain.bpc !== bpc || expectBits > groupBitmapCapacityBits(st.vol.geo.blockSize) || chain.cpg < 1) {
    st.report.problem(`${name}: chain geometry cpg=${chain.cpg} bpc=${chain.bpc} is invalid`, false);
    return sa;
  }
  const seen = new Set<number>();
  for (let ci = 0; ci < chain.recs.length; ci++) {
    let gb = chain.recs[ci].blkno;
    let prev: SubGroup | null = null;
    for (let hops = 0; gb !== 0; hops++) {
      if (seen.has(gb) || hops > 1 << 20) {
        st.report.problem(`${name}: chain ${ci} loops at group ${gb}; cut`, true);
        if (prev) prev.g.nextGroupBlkno = 0;
        else chain.recs[ci].blkno = 0;
        break;
      }
      seen.add(gb);
      const buf = await readTolerant(st, gb, SIG.group, `${name} group`);
      let g: GroupDesc | null = null;
      if (buf) {
        try {
          g = decodeGroup(buf);
        } catch (e) {
          st.report.problem(`${name} group ${gb}: ${(e as Error).message}`, true);
        }
      }
      let rebuilt = false;
      if (g && (g.parentBlkno !== ino.blkno || g.bits !== expectBits)) {
        st.report.problem(`${name} group ${gb}: parent ${g.parentBlkno} / ${g.bits} bits do not match the allocator; rebuilt`, true);
        g = null;
      }
      if (!g) {
        rebuilt = true;
        g = { blkno: gb, fsGeneration: st.vol.fsGeneration, generation: ino.generation, bits: expectBits, free: 0, chain: ci, nextGroupBlkno: 0, parentBlkno: ino.blkno, bitmap: Buffer.alloc(st.vol.geo.blockSize - 0x40) };
      }
      if (g.chain !== ci) {
        st.report.problem(`${name} group ${gb}: says chain ${g.chain}, found on chain ${ci}`, true);
        g.chain = ci;
      }
      if (gb % bpc !== 0 || !st.claimBlocks(gb, chain.cpg * bpc, `${name} group ${gb}`)) {
        if (prev) prev.g.nextGroupBlkno = 0;
        else chain.recs[ci].blkno = 0;
        break;
      }
      const sg = { g, rebuilt };
      sa.groups.push(sg);
      prev = sg;
      gb = g.nextGroupBlkno;
    }
  }
  return sa;
}

/** Finds the group of `allocators` holding a block. */
function groupOf(allocators: SubAllocator[], blkno: number): { sa: SubAllocator; sg: SubGroup } | null {
  for (const sa of allocators) for (const sg of sa.groups) if (blkno > sg.g.blkno && blkno < sg.g.blkno + sg.g.bits) return { sa, sg };
  return null;
}

/** Compares every suballocator bitmap with the referenced blocks and rebuilds them. */
export async function rebuildSubAllocators(st: FsckState, allocators: SubAllocator[]): Promise<void> {
  const expected = new Map<number, Buffer>();
  for (const sa of allocators) for (const sg of sa.groups) {
    const bm = Buffer.alloc(st.vol.geo.blockSize - 0x40);
    setBit(bm, 0);
    expected.set(sg.g.blkno, bm);
  }
  for (const [blkno, triple] of st.metaRefs) {
    const where = groupOf(allocators, blkno);
    if (!where) {
      st.report.problem(`metadata block ${blkno} lies in no allocator group`, false);
      continue;
    }
    const bit = blkno - where.sg.g.blkno;
    setBit(expected.get(where.sg.g.blkno)!, bit);
    if (triple.groupBlkno !== where.sg.g.blkno || triple.bit !== bit || triple.slot !== where.sa.slot) {
      if (st.report.problem(`block ${blkno}: allocation record says group ${triple.groupBlkno} bit ${triple.bit} slot ${triple.slot}, it is group ${where.sg.g.blkno} bit ${bit} slot ${where.sa.slot}`, true) || !st.repair) {
        const raw = await st.tx.read(blkno, rawSignatureOf(await st.vol.dev.read(blkno * st.vol.geo.blockSize, st.vol.geo.blockSize)));
        raw.writeUInt16LE(where.sa.slot, 0x20);
        raw.writeUInt32LE(bit, 0x24);
        raw.writeBigUInt64LE(BigInt(where.sg.g.blkno), 0x28);
        st.tx.put(blkno, sealBlock(raw));
      }
    }
  }
  for (const sa of allocators) {
    let used = 0;
    let total = 0;
    const chain = sa.ino.body.kind === 'chain' ? sa.ino.body.chain : null;
    if (!chain) continue;
    for (const r of chain.recs) {
      r.free = 0;
      r.total = 0;
    }
    for (const sg of sa.groups) {
      const bm = expected.get(sg.g.blkno)!;
      const setNow = countSetBits(bm, sg.g.bits);
      let differs = sg.rebuilt;
      for (let b = 0; b < sg.g.bits && !differs; b++) if (testBit(bm, b) !== testBit(sg.g.bitmap, b)) differs = true;
      if (differs && !sg.rebuilt) {
        let leaked = 0;
        let missing = 0;
        for (let b = 0; b < sg.g.bits; b++) {
          const want = testBit(bm, b);
          const have = testBit(sg.g.bitmap, b);
          if (have && !want) leaked++;
          if (want && !have) missing++;
        }
        st.report.problem(`${sa.name} group ${sg.g.blkno}: ${missing} blocks in use but marked free, ${leaked} marked in use but unused`, true);
      }
      if (differs || sg.g.free !== sg.g.bits - setNow) {
        if (!differs) st.report.problem(`${sa.name} group ${sg.g.blkno}: free count ${sg.g.free}, expected ${sg.g.bits - setNow}`, true);
        sg.g.bitmap = bm;
        sg.g.free = sg.g.bits - setNow;
        st.tx.putGroup(sg.g);
      } else if (sg.g.nextGroupBlkno !== (await currentNext(st, sg.g.blkno))) {
        st.tx.putGroup(sg.g);
      }
      const rec = chain.recs[sg.g.chain];
      rec.total += sg.g.bits;
      rec.free += sg.g.free;
      used += setNow;
      total += sg.g.bits;
    }
    const clusters = sa.groups.length * chain.cpg;
    const before = await st.tx.getInode(sa.ino.blkno).catch(() => null);
    const beforeRecs = before && before.body.kind === 'chain' ? JSON.stringify(before.body.chain.recs) : '';
    if (sa.ino.id1a !== used || sa.ino.id1b !== total || sa.ino.clusters !== clusters || beforeRecs !== JSON.stringify(chain.recs)) {
      st.report.problem(`${sa.name}: summary counts (used ${sa.ino.id1a}/${sa.ino.id1b}) do not match its groups (used ${used}/${total})`, true);
      sa.ino.id1a = used;
      sa.ino.id1b = total;
      sa.ino.clusters = clusters;
      sa.ino.size = clusters * st.vol.geo.clusterSize;
      st.tx.putInode(sa.ino);
    }
  }
}

async function currentNext(st: FsckState, blkno: number): Promise<number> {
  try {
    return (await st.tx.getGroup(blkno)).nextGroupBlkno;
  } catch {
    return -1;
  }
}

function rawSignatureOf(buf: Buffer): typeof SIG[keyof typeof SIG] {
  return buf.toString('latin1', 0, 8) as typeof SIG[keyof typeof SIG];
}

/** Compares the global bitmap with the clusters found in use; rebuilds it if they differ. */
export async function rebuildGlobalBitmap(st: FsckState, bitmapIno: Inode): Promise<void> {
  const { blockSize: bs, totalClusters } = st.vol.geo;
  const cpg = globalCpg(bs);
  const ngroups = globalGroupCount(st);
  const nchains = Math.min(chainCapacity(bs), ngroups);
  let missing = 0;
  let leaked = 0;
  let rewrite = false;
  const groups: GroupDesc[] = [];
  for (let g = 0; g < ngroups; g++) {
    const blkno = globalGroupBlkno(st, g);
    const bits = Math.min(cpg, totalClusters - g * cpg);
    const buf = await readTolerant(st, blkno, SIG.group, `global bitmap group ${g}`);
    let disk: GroupDesc | null = null;
    if (buf) {
      try {
        disk = decodeGroup(buf);
      } catch (e) {
        st.report.problem(`global bitmap group ${g}: ${(e as Error).message}`, true);
      }
    }
    if (disk && (disk.bits !== bits || disk.parentBlkno !== bitmapIno.blkno || disk.chain !== g % nchains)) {
      st.report.problem(`global bitmap group ${g}: geometry (bits ${disk.bits}, parent ${disk.parentBlkno}, chain ${disk.chain}) is wrong; rebuilt`, true);
      disk = null;
    }
    const bm = Buffer.alloc(bs - 0x40);
    for (let b = 0; b < bits; b++) if (st.clusterUsed(g * cpg + b)) setBit(bm, b);
    const free = bits - countSetBits(bm, bits);
    if (!disk) rewrite = true;
    else {
      for (let b = 0; b < bits; b++) {
        const want = testBit(bm, b);
        const have = testBit(disk.bitmap, b);
        if (want && !have) missing++;
        if (have && !want) leaked++;
      }
      if (disk.free !== free) rewrite = true;
    }
    groups.push({ blkno, fsGeneration: st.vol.fsGeneration, generation: disk?.generation ?? 0, bits, free, chain: g % nchains, nextGroupBlkno: 0, parentBlkno: bitmapIno.blkno, bitmap: bm });
  }
  if (missing || leaked) {
    st.report.problem(`global bitmap: ${missing} clusters in use but marked free, ${leaked} marked in use but unused`, true);
    rewrite = true;
  }
  const recs = Array.from({ length: nchains }, () => ({ free: 0, total: 0, blkno: 0 }));
  for (let g = ngroups - 1; g >= 0; g--) {
    const grp = groups[g];
    const rec = recs[grp.chain];
    grp.nextGroupBlkno = rec.blkno;
    rec.blkno = grp.blkno;
    rec.total += grp.bits;
    rec.free += grp.free;
  }
  const used = groups.reduce((n, g) => n + g.bits - g.free, 0);
  const chain = bitmapIno.body.kind === 'chain' ? bitmapIno.body.chain : null;
  const chainOk = chain && chain.cpg === cpg && chain.bpc === 1 && JSON.stringify(chain.recs) === JSON.stringify(recs);
  if (!chainOk || bitmapIno.id1a !== used || bitmapIno.id1b !== totalClusters) {
    st.report.problem(`global bitmap inode: summary (used ${bitmapIno.id1a} of ${bitmapIno.id1b}) does not match its groups (used ${used} of ${totalClusters})`, true);
    rewrite = true;
  }
  if (!rewrite) return;
  for (const g of groups) {
    const disk = await st.tx.getGroup(g.blkno).catch(() => null);
    const same = disk && disk.free === g.free && disk.nextGroupBlkno === g.nextGroupBlkno && disk.chain === g.chain && disk.bits === g.bits && disk.parentBlkno === g.parentBlkno && disk.bitmap.equals(g.bitmap);
    if (!same) st.tx.putGroup(g);
  }
  bitmapIno.body = { kind: 'chain', chain: { cpg, bpc: 1, count: chainCapacity(bs), recs } };
  bitmapIno.id1a = used;
  bitmapIno.id1b = totalClusters;
  bitmapIno.clusters = totalClusters;
  bitmapIno.size = totalClusters * st.vol.geo.clusterSize;
  st.tx.putInode(bitmapIno);
}

/**
 * Groups that in-use blocks point at (through their suballoc triple) but that no
 * allocator chain reaches any more (the allocator inode was rebuilt, or a chain was cut):
 * their descriptors say which allocator they belong to, so they are put back on a chain.
 */
export async function adoptLostGroups(st: FsckState, allocators: SubAllocator[]): Promise<void> {
  const known = new Set<number>();
  for (const sa of allocators) for (const sg of sa.groups) known.add(sg.g.blkno);
  const candidates = new Set<number>();
  for (const [blkno, triple] of st.metaRefs) {
    if (groupOf(allocators, blkno)) continue;
    if (!known.has(triple.groupBlkno)) candidates.add(triple.groupBlkno);
  }
  for (const gb of candidates) {
    const buf = await readTolerant(st, gb, SIG.group, 'lost allocator group');
    if (!buf) continue;
    let g: GroupDesc;
    try {
      g = decodeGroup(buf);
    } catch {
      continue;
    }
    const sa = allocators.find((a) => a.ino.blkno === g.parentBlkno);
    const chain = sa && sa.ino.body.kind === 'chain' ? sa.ino.body.chain : null;
    if (!sa || !chain || g.bits !== chain.cpg * chain.bpc) continue;
    if (!st.claimBlocks(gb, chain.cpg * st.vol.geo.blocksPerCluster, `${sa.name} group ${gb}`)) continue;
    st.report.problem(`${sa.name}: group ${gb} was not on any chain; relinked`, true);
    if (chain.recs.length < chain.count) {
      g.chain = chain.recs.length;
      g.nextGroupBlkno = 0;
      chain.recs.push({ free: 0, total: 0, blkno: gb });
    } else {
      g.chain = 0;
      g.nextGroupBlkno = chain.recs[0].blkno;
      chain.recs[0].blkno = gb;
    }
    sa.groups.push({ g, rebuilt: true });
    known.add(gb);
  }
}
