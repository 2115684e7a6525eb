// Volume creation. mkfs lays down the superblock, the global bitmap and the global inode
// allocator by hand (the bootstrap), then builds everything else with the same library
// calls a mount uses, so whatever mkfs writes, fsck checks with the same rules.
import { randomBytes, randomInt } from 'node:crypto';
import type { BlockDevice } from '../blockdev/types';
import { AllocContext, allocClusterRuns, suballocGroupClusters } from './alloc';
import { dirInsert, initEmptyDir } from './dir';
import { FsError } from './errors';
import {
  BLOCK_SIZES, FEATURE_COMPAT, FEATURE_INCOMPAT, FEATURE_RO_COMPAT, FORMAT_MAJOR, FORMAT_MINOR, FT, GLOBAL_SLOT,
  INODE_FL, LOCK_PROTO_MAJOR, LOCK_PROTO_MINOR, LOST_AND_FOUND, MAX_CLUSTER_SIZE, MAX_LEAF_CLUSTERS, MAX_NODES,
  MAX_SLOTS, MIN_CLUSTER_SIZE, MIN_JOURNAL_BYTES, PER_SLOT_FILES, PerSlotFile, S_IFDIR, S_IFREG,
  SUPERBLOCK_BLKNO, SYSFILE, StackLabel, slotFileName, sysFileId,
} from './format/constants';
import { GroupDesc, encodeGroup, groupBitmapCapacityBits, setBit } from './format/group';
import { encodeHeartbeat } from './format/heartbeat';
import { Inode, chainCapacity, truncateLogCapacity } from './format/inode';
import { encodeJournalSuper } from './format/journal-super';
import { encodeSlotMapBlock, slotsPerBlock } from './format/slot-map';
import { Superblock, encodeSuperblock } from './format/superblock';
import { newInode } from './inode-alloc';
import { Transaction } from './transaction';
import { Volume, backupSuperOffsets } from './volume';

export interface MkfsOptions {
  blockSize?: number;
  clusterSize?: number;
  slots?: number;
  label?: string;
  journalBytes?: number;
  stack?: StackLabel;
  clusterName?: string;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface MkfsPlan {
  blockSize: number;
  clusterSize: number;
  totalClusters: number;
  slots: number;
  journalBytes: number;
  groups: number;
}

const MIB = 1 << 20;
const GIB = 2 ** 30;

export function defaultSlots(sizeBytes: number): number {
  if (sizeBytes < 2 * GIB) return 2;
  if (sizeBytes < 10 * GIB) return 4;
  if (sizeBytes < 1024 * GIB) return 8;
  return 16;
}

export function defaultJournalBytes(sizeBytes: number): number {
  if (sizeBytes < 128 * MIB) return 4 * MIB;
  if (sizeBytes < GIB) return 16 * MIB;
  return Math.min(256 * MIB, Math.max(64 * MIB, Math.floor(sizeBytes / 160 / MIB) * MIB));
}

export function defaultClusterSize(sizeBytes: number): number {
  // 4 KiB clusters address 16 TiB; bigger volumes need bigger clusters (32-bit counts).
  let cs = MIN_CLUSTER_SIZE;
  while (sizeBytes / cs > 0xffffffff && cs < MAX_CLUSTER_SIZE) cs *= 2;
  return cs;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Validates options against the device and works out the geometry; throws FsError. */
export function planMkfs(sizeBytes: number, o: MkfsOptions): MkfsPlan {
  const blockSize = o.blockSize ?? 4096;
  if (!(BLOCK_SIZES as readonly number[]).includes(blockSize)) throw new FsError('EINVAL', `block size ${blockSize} is not one of ${BLOCK_SIZES.join(', ')}`);
  const clusterSize = o.clusterSize ?? defaultClusterSize(sizeBytes);
  if (!isPow2(clusterSize) || clusterSize < MIN_CLUSTER_SIZE || clusterSize > MAX_CLUSTER_SIZE) throw new FsError('EINVAL', `cluster size ${clusterSize} must be a power of two from 4K to 1M`);
  if (clusterSize < blockSize) throw new FsError('EINVAL', `cluster size ${clusterSize} is smaller than the block size ${blockSize}`);
  const slots = o.slots ?? defaultSlots(sizeBytes);
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new FsError('EINVAL', `slot count ${slots} must be 1..${MAX_SLOTS}`);
  let journalBytes = o.journalBytes ?? defaultJournalBytes(sizeBytes);
  if (journalBytes < MIN_JOURNAL_BYTES) throw new FsError('EINVAL', `journal size ${journalBytes} is below the minimum of ${MIN_JOURNAL_BYTES} bytes`);
  journalBytes = Math.ceil(journalBytes / clusterSize) * clusterSize;
  const totalClusters = Math.floor(sizeBytes / clusterSize);
  if (totalClusters > 0xffffffff) throw new FsError('EINVAL', `${sizeBytes} bytes need more than 2^32 clusters of ${clusterSize}; use a larger cluster size`);
  // Reserved area, inode allocator groups, heartbeat and slot map, plus the journals.
  const overhead = 16 * MIB + 2 * MAX_NODES * blockSize + 4 * clusterSize + slots * (journalBytes + 2 * clusterSize);
  if (totalClusters * clusterSize < overhead + 8 * MIB) {
    throw new FsError('ENOSPC', `device too small: ${sizeBytes} bytes; ${slots} slots with ${journalBytes / MIB} MiB journals need at least ${Math.ceil((overhead + 8 * MIB) / MIB)} MiB`);
  }
  if (slots * journalBytes > (totalClusters * clusterSize) / 2) throw new FsError('ENOSPC', `journals (${slots} x ${journalBytes / MIB} MiB) would take more than half the volume`);
  const cpg = Math.min(groupBitmapCapacityBits(blockSize), 0xffff);
  return { blockSize, clusterSize, totalClusters, slots, journalBytes, groups: Math.ceil(totalClusters / cpg) };
}

function xattrInlineBytesFor(bs: number): number {
  return bs >= 4096 ? 256 : bs >= 2048 ? 128 : bs >= 1024 ? 64 : 0;
}

export async function mkfs(dev: BlockDevice, o: MkfsOptions = {}): Promise<Superblock> {
  const plan = planMkfs(dev.sizeBytes, o);
  const progress = o.onProgress ?? (() => undefined);
  const { blockSize: bs, clusterSize: cs, totalClusters, slots } = plan;
  const bpc = cs / bs;
  const stack = o.stack ?? 'local';
  if (stack !== 'local' && !o.clusterName) throw new FsError('EINVAL', `--cluster-name is required with the ${stack} stack`);
  if (o.clusterName && !/^[A-Za-z0-9_-]{1,16}$/.test(o.clusterName)) throw new FsError('EINVAL', 'cluster name must be 1-16 characters [A-Za-z0-9_-]');
  const label = o.label ?? '';
  if (Buffer.byteLength(label) > 64) throw new FsError('EINVAL', 'label is longer than 64 bytes');
  const now = Math.floor(Date.now() / 1000);
  const totalBlocks = totalClusters * bpc;
  const sb: Superblock = {
    fsGeneration: randomInt(1, 0xffffffff),
    revMajor: FORMAT_MAJOR,
    revMinor: FORMAT_MINOR,
    blockSizeBits: Math.log2(bs),
    clusterSizeBits: Math.log2(cs),
    totalBlocks,
    totalClusters,
    maxSlots: slots,
    featureCompat: FEATURE_COMPAT.backupSuper,
    featureIncompat: FEATURE_INCOMPAT.sparse | FEATURE_INCOMPAT.inlineData | FEATURE_INCOMPAT.xattr | FEATURE_INCOMPAT.indexedDirs | FEATURE_INCOMPAT.clusterInfo,
    featureRoCompat: FEATURE_RO_COMPAT.unwritten,
    state: 0,
    rootBlkno: 0,
    systemDirBlkno: 0,
    firstGroupBlkno: SUPERBLOCK_BLKNO + 1,
    uuid: randomBytes(16),
    label,
    stack,
    clusterName: o.clusterName ?? '',
    lockProtoMajor: LOCK_PROTO_MAJOR,
    lockProtoMinor: LOCK_PROTO_MINOR,
    errorsPolicy: 'remount-ro',
    dirHashSeed: randomInt(0, 0xffffffff),
    mkfsTimeSec: now,
    lastMountTimeSec: 0,
    lastCheckTimeSec: now,
    mountCount: 0,
    xattrInlineBytes: xattrInlineBytesFor(bs),
    backupCount: 0,
  };

  // Wipe old superblocks first: an interrupted mkfs must not leave an old volume's
  // superblock pointing at half-new metadata.
  const backups = backupSuperOffsets(totalBlocks, bs);
  const zeros = Buffer.alloc(Math.max(4 * bs, dev.sectorSize));
  await dev.write(0, zeros.subarray(0, Math.ceil((4 * bs) / dev.sectorSize) * dev.sectorSize));
  for (const off of backups) await dev.write(off, Buffer.alloc(Math.max(bs, dev.sectorSize)));
  sb.backupCount = backups.length;

  const vol = new Volume(dev, sb, false);
  const tx = new Transaction(vol);
  const sys = new Map<string, number>();

  // 1. Global bitmap groups, with the reserved area, group descriptors and backups in use.
  const cpg = Math.min(groupBitmapCapacityBits(bs), 0xffff);
  const nchains = Math.min(chainCapacity(bs), plan.groups);
  const groups: GroupDesc[] = [];
  for (let g = 0; g < plan.groups; g++) {
    const bits = Math.min(cpg, totalClusters - g * cpg);
    groups.push({ blkno: g === 0 ? sb.firstGroupBlkno : g * cpg * bpc, fsGeneration: sb.fsGeneration, generation: 0, bits, free: bits, chain: g % nchains, nextGroupBlkno: 0, parentBlkno: 0, bitmap: Buffer.alloc(bs - 0x40) });
  }
  const markUsed = (cluster: number): void => {
    const g = groups[Math.floor(cluster / cpg)];
    const bit = cluster % cpg;
    if ((g.bitmap[bit >> 3] & (1 << (bit & 7))) === 0) {
      setBit(g.bitmap, bit);
      g.free -= 1;
    }
  };
  for (let c = 0; c <= Math.floor(sb.firstGroupBlkno / bpc); c++) markUsed(c);
  for (let g = 1; g < plan.groups; g++) markUsed(g * cpg);
  for (const off of backups) markUsed(Math.floor(off / cs));

  // 2. Global inode allocator: its first group taken by hand from the first free clusters.
  const subCpg = suballocGroupClusters(bs, cs);
  let giaFirstCluster = 0;
  for (let c = 0, run = 0; c < totalClusters; c++) {
    const g = groups[Math.floor(c / cpg)];
    const bit = c % cpg;
    run = g.bitmap[bit >> 3] & (1 << (bit & 7)) ? 0 : run + 1;
    if (run === subCpg) {
      giaFirstCluster = c - subCpg + 1;
      break;
    }
  }
  if (giaFirstCluster === 0) throw new FsError('ENOSPC', 'no room for the inode allocator');
  for (let c = giaFirstCluster; c < giaFirstCluster + subCpg; c++) markUsed(c);
  const giaGroupBlkno = giaFirstCluster * bpc;
  const giaBits = subCpg * bpc;
  const giaBitmap = Buffer.alloc(bs - 0x40);
  for (let b = 0; b < 3; b++) setBit(giaBitmap, b);
  const bitmapInoBlkno = giaGroupBlkno + 1;
  const giaInoBlkno = giaGroupBlkno + 2;

  // Chain links and chain records of the global bitmap.
  const recs = Array.from({ length: nchains }, () => ({ free: 0, total: 0, blkno: 0 }));
  for (let g = plan.groups - 1; g >= 0; g--) {
    const grp = groups[g];
    grp.parentBlkno = bitmapInoBlkno;
    const rec = recs[grp.chain];
    grp.nextGroupBlkno = rec.blkno;
    rec.blkno = grp.blkno;
    rec.total += grp.bits;
    rec.free += grp.free;
  }
  const usedClusters = groups.reduce((n, g) => n + (g.bits - g.free), 0);
  const t = { sec: now, nsec: 0 };
  const sysInode = (blkno: number, bit: number, flags: number, body: Inode['body']): Inode => ({
    blkno, fsGeneration: sb.fsGeneration, generation: randomInt(1, 0xffffffff), suballoc: { slot: GLOBAL_SLOT, bit, groupBlkno: giaGroupBlkno },
    mode: S_IFREG | 0o644, uid: 0, gid: 0, links: 1, size: 0, clusters: 0, flags: INODE_FL.valid | INODE_FL.system | flags, dyn: 0, xattrInlineBytes: 0,
    attr: 0, atime: t, ctime: t, mtime: t, dtime: { sec: 0, nsec: 0 }, rdev: 0, xattrBlkno: 0, orphanedSlot: GLOBAL_SLOT, sysFileId: 0, id1a: 0, id1b: 0, parentBlkno: 0, body, inlineXattr: Buffer.alloc(0),
  });
  const bitmapIno = sysInode(bitmapInoBlkno, 1, INODE_FL.bitmap | INODE_FL.chain, { kind: 'chain', chain: { cpg, bpc: 1, count: chainCapacity(bs), recs } });
  bitmapIno.sysFileId = sysFileId(SYSFILE.globalBitmap);
  bitmapIno.id1a = usedClusters;
  bitmapIno.id1b = totalClusters;
  bitmapIno.clusters = totalClusters;
  bitmapIno.size = totalClusters * cs;
  const giaIno = sysInode(giaInoBlkno, 2, INODE_FL.chain, { kind: 'chain', chain: { cpg: subCpg, bpc, count: chainCapacity(bs), recs: [{ free: giaBits - 3, total: giaBits, blkno: giaGroupBlkno }] } });
  giaIno.sysFileId = sysFileId(SYSFILE.globalInodeAlloc);
  giaIno.id1a = 3;
  giaIno.id1b = giaBits;
  giaIno.clusters = subCpg;
  giaIno.size = subCpg * cs;
  // Bitmap groups go straight to disk (a large volume has more than a transaction holds);
  // nothing points at them until the superblock is written last.
  for (let i = 0; i < groups.length; i += 1024) {
    const batch = new Map<number, Buffer>();
    for (const g of groups.slice(i, i + 1024)) batch.set(g.blkno, encodeGroup(g, bs));
    await vol.writeMeta(batch);
    progress('bitmap', Math.min(groups.length, i + 1024), groups.length);
  }
  tx.putGroup({ blkno: giaGroupBlkno, fsGeneration: sb.fsGeneration, generation: giaIno.generation, bits: giaBits, free: giaBits - 3, chain: 0, nextGroupBlkno: 0, parentBlkno: giaInoBlkno, bitmap: giaBitmap });
  tx.putInode(bitmapIno);
  tx.putInode(giaIno);
  sys.set(SYSFILE.globalBitmap, bitmapInoBlkno);
  sys.set(SYSFILE.globalInodeAlloc, giaInoBlkno);
  vol.setSystemInodes(sys);

  // 3. Everything else through the library.
  const ctx: AllocContext = { slot: GLOBAL_SLOT, inodeAllocBlkno: giaInoBlkno, extentAllocBlkno: giaInoBlkno };
  const mkDir = async (parent: number | null, mode: number, system: boolean, id = 0): Promise<Inode> => {
    const d = await newInode(tx, giaInoBlkno, GLOBAL_SLOT, { mode: S_IFDIR | mode, uid: 0, gid: 0, flags: system ? INODE_FL.system : 0, inlineXattr: !system, time: t, sysFileId: id });
    initEmptyDir(d);
    d.links = 2;
    d.parentBlkno = parent ?? d.blkno;
    tx.putInode(d);
    return d;
  };
  const sysDir = await mkDir(null, 0o755, true, sysFileId('systemDir'));
  sb.systemDirBlkno = sysDir.blkno;
  const link = async (name: string, ino: Inode): Promise<void> => {
    sys.set(name, ino.blkno);
    await dirInsert(tx, ctx, sysDir, Buffer.from(name), ino.blkno, (ino.mode & 0o170000) === S_IFDIR ? FT.dir : FT.reg);
  };
  await link(SYSFILE.globalBitmap, bitmapIno);
  await link(SYSFILE.globalInodeAlloc, giaIno);

  const root = await mkDir(null, 0o755, false);
  sb.rootBlkno = root.blkno;
  const lf = await mkDir(root.blkno, 0o700, false);
  await dirInsert(tx, ctx, root, Buffer.from(LOST_AND_FOUND), lf.blkno, FT.dir);
  root.links += 1;
  tx.putInode(root);

  // A system file whose data is mapped by a flat extent list in the inode: one run for
  // small files (slot map, heartbeat), a few for journals larger than a bitmap group.
  const preallocatedFile = async (name: string, flags: number, bytes: number, id: number): Promise<{ ino: Inode; firstBlock: number }> => {
    const ino = await newInode(tx, giaInoBlkno, GLOBAL_SLOT, { mode: S_IFREG | 0o644, uid: 0, gid: 0, flags: INODE_FL.system | flags, time: t, sysFileId: id });
    const clusters = Math.ceil(bytes / cs);
    const runs = await allocClusterRuns(tx, clusters, giaFirstCluster);
    if (ino.body.kind !== 'extents') throw new Error('assertion: new inode without extent list');
    let cpos = 0;
    for (const run of runs) {
      for (let c = 0; c < run.clusters; c += MAX_LEAF_CLUSTERS) {
        ino.body.list.records.push({ cpos: cpos + c, clusters: Math.min(MAX_LEAF_CLUSTERS, run.clusters - c), flags: 0, blkno: (run.startCluster + c) * bpc });
      }
      cpos += run.clusters;
    }
    if (ino.body.list.records.length > ino.body.list.count) throw new FsError('ENOSPC', `${name} is too fragmented for one extent list`);
    ino.clusters = clusters;
    ino.size = bytes;
    tx.putInode(ino);
    await link(name, ino);
    return { ino, firstBlock: runs[0].startCluster * bpc };
  };

  const smBlocks = Math.ceil(slots / slotsPerBlock(bs));
  const sm = await preallocatedFile(SYSFILE.slotMap, INODE_FL.slotMap, smBlocks * bs, sysFileId(SYSFILE.slotMap));
  for (let i = 0; i < smBlocks; i++) {
    const first = i * slotsPerBlock(bs);
    const n = Math.min(slotsPerBlock(bs), slots - first);
    tx.put(sm.firstBlock + i, encodeSlotMapBlock(Array.from({ length: n }, () => ({ inUse: false, nodeNum: 0, mountGeneration: 0 })), first, sm.firstBlock + i, sb.fsGeneration, bs));
  }
  const hb = await preallocatedFile(SYSFILE.heartbeat, INODE_FL.heartbeat, MAX_NODES * bs, sysFileId(SYSFILE.heartbeat));
  for (let n = 0; n < MAX_NODES; n++) {
    tx.put(hb.firstBlock + n, encodeHeartbeat({ blkno: hb.firstBlock + n, fsGeneration: sb.fsGeneration, seq: 0, nodeNum: n, deadMs: 0, hbGeneration: 0, timeMs: 0 }, bs));
  }
  progress('system files', 0, slots);

  for (let slot = 0; slot < slots; slot++) {
    for (const kind of PER_SLOT_FILES) await makeSlotFile(kind, slot);
    progress('system files', slot + 1, slots);
  }

  async function makeSlotFile(kind: PerSlotFile, slot: number): Promise<void> {
    const name = slotFileName(kind, slot);
    switch (kind) {
      case SYSFILE.inodeAlloc:
      case SYSFILE.extentAlloc: {
        const ino = await newInode(tx, giaInoBlkno, GLOBAL_SLOT, { mode: S_IFREG | 0o644, uid: 0, gid: 0, flags: INODE_FL.system | INODE_FL.chain, time: t, sysFileId: sysFileId(kind, slot) });
        ino.body = { kind: 'chain', chain: { cpg: subCpg, bpc, count: chainCapacity(bs), recs: [] } };
        tx.putInode(ino);
        await link(name, ino);
        return;
      }
      case SYSFILE.localAlloc: {
        const ino = await newInode(tx, giaInoBlkno, GLOBAL_SLOT, { mode: S_IFREG | 0o644, uid: 0, gid: 0, flags: INODE_FL.system | INODE_FL.localAlloc, time: t, sysFileId: sysFileId(kind, slot) });
        ino.body = { kind: 'localAlloc', la: { windowFirstCluster: 0, windowBits: 0, bitmap: Buffer.alloc(0) } };
        tx.putInode(ino);
        await link(name, ino);
        return;
      }
      case SYSFILE.truncateLog: {
        const ino = await newInode(tx, giaInoBlkno, GLOBAL_SLOT, { mode: S_IFREG | 0o644, uid: 0, gid: 0, flags: INODE_FL.system | INODE_FL.dealloc, time: t, sysFileId: sysFileId(kind, slot) });
        ino.body = { kind: 'truncateLog', count: truncateLogCapacity(bs), recs: [] };
        tx.putInode(ino);
        await link(name, ino);
        return;
      }
      case SYSFILE.journal: {
        const j = await preallocatedFile(name, INODE_FL.journal, plan.journalBytes, sysFileId(kind, slot));
        const blocks = plan.journalBytes / bs;
        tx.put(j.firstBlock, encodeJournalSuper({ blkno: j.firstBlock, fsGeneration: sb.fsGeneration, totalBlocks: blocks, firstLogBlock: 1, sequence: 1, start: 0, startSequence: 0 }, bs));
        return;
      }
      case SYSFILE.orphanDir: {
        const d = await mkDir(sysDir.blkno, 0o700, true, sysFileId(kind, slot));
        await link(name, d);
        sysDir.links += 1;
        tx.putInode(sysDir);
        return;
      }
    }
  }

  progress('writing', 0, 1);
  await tx.commit();
  // Backups first, the primary last: a crash before this point leaves no volume at all.
  for (const off of backups) await dev.write(off, encodeSuperblock(sb, off / bs));
  await dev.flush();
  await dev.write(SUPERBLOCK_BLKNO * bs, encodeSuperblock(sb, SUPERBLOCK_BLKNO));
  await dev.flush();
  progress('writing', 1, 1);
  return sb;
}
