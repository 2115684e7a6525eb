// fsck's handling of the system directory and system files. Every system inode says what
// it is (system_file_id), and mkfs puts the first three inodes of the global inode
// allocator's first group right before... (FORMAT.md "Bootstrap invariants"): the group
// descriptor at system_dir - 3, the global bitmap inode at system_dir - 2, the global inode
// allocator inode at system_dir - 1. So when the system directory or an allocator inode is
// destroyed, fsck can still find, rebuild and relink everything.
import { randomInt } from 'node:crypto';
import { allocClusters, suballocGroupClusters } from '../alloc';
import { encodeInlineDir } from '../format/dirent';
import {
  DYN, GLOBAL_SLOT, INODE_FL, MAX_LEAF_CLUSTERS, MAX_NODES, NO_SLOT, PER_SLOT_FILES, PerSlotFile, S_IFDIR, S_IFREG, SYSFILE,
  slotFileName, sysFileId, sysFileNameOfId, SYSFILE_KINDS,
} from '../format/constants';
import { encodeHeartbeat } from '../format/heartbeat';
import { Inode, chainCapacity, truncateLogCapacity } from '../format/inode';
import { encodeJournalSuper } from '../format/journal-super';
import { encodeSlotMapBlock, slotsPerBlock } from '../format/slot-map';
import { emptyExtentBody, nowTimespec } from '../inode-alloc';
import type { SubAllocator } from './allocators';
import type { FsckState } from './state';

export type SysKind = (typeof SYSFILE_KINDS)[number];

/** The kind and slot named by a system file name, e.g. "journal:0003" -> journal, 3. */
export function parseSysName(name: string): { kind: SysKind; slot: number } | null {
  const m = /^([a-z_]+)(?::(\d{4}))?$/.exec(name);
  if (!m) return null;
  const kind = m[1] as SysKind;
  if (!SYSFILE_KINDS.includes(kind)) return null;
  const perSlot = (PER_SLOT_FILES as readonly string[]).includes(kind);
  if (perSlot !== (m[2] !== undefined)) return null;
  return { kind, slot: perSlot ? Number(m[2]) : NO_SLOT };
}

export function expectedSystemFiles(maxSlots: number): string[] {
  const out: string[] = [SYSFILE.globalBitmap, SYSFILE.globalInodeAlloc, SYSFILE.slotMap, SYSFILE.heartbeat];
  for (let s = 0; s < maxSlots; s++) for (const k of PER_SLOT_FILES) out.push(slotFileName(k, s));
  return out;
}

/** Files whose contents are one contiguous run of clusters, recreated with fresh space. */
export function needsClusters(kind: SysKind): boolean {
  return kind === SYSFILE.journal || kind === SYSFILE.heartbeat || kind === SYSFILE.slotMap;
}

/**
 * Builds a fresh, empty inode of the given system kind at `blkno` (whose allocator bit is
 * already set) and registers it with fsck's state. Contents come later: allocators are
 * rebuilt by the allocator pass, contiguous files get space in fillSystemFile.
 */
export function rebuildSystemInode(st: FsckState, blkno: number, kind: SysKind, slot: number, group: { blkno: number; bit: number; slot: number }, parentBlkno: number): Inode {
  const bs = st.vol.geo.blockSize;
  const t = nowTimespec();
  const isDir = kind === 'systemDir' || kind === SYSFILE.orphanDir;
  const ino: Inode = {
    blkno, fsGeneration: st.vol.fsGeneration, generation: randomInt(1, 0xffffffff),
    suballoc: { slot: group.slot, bit: group.bit, groupBlkno: group.blkno },
    mode: isDir ? S_IFDIR | (kind === 'systemDir' ? 0o755 : 0o700) : S_IFREG | 0o644, uid: 0, gid: 0, links: isDir ? 2 : 1, size: 0, clusters: 0,
    flags: INODE_FL.valid | INODE_FL.system, dyn: 0, xattrInlineBytes: 0, attr: 0, atime: t, ctime: t, mtime: t, dtime: { sec: 0, nsec: 0 },
    rdev: 0, xattrBlkno: 0, orphanedSlot: NO_SLOT, sysFileId: sysFileId(kind, slot), id1a: 0, id1b: 0, parentBlkno: isDir ? parentBlkno : 0,
    body: emptyExtentBody(bs, 0), inlineXattr: Buffer.alloc(0),
  };
  switch (kind) {
    case 'systemDir':
    case SYSFILE.orphanDir:
      ino.dyn = DYN.inlineData;
      ino.body = { kind: 'inline', data: encodeInlineDir([], Infinity) };
      ino.size = ino.body.data.length;
      break;
    case SYSFILE.globalBitmap:
      ino.flags |= INODE_FL.bitmap | INODE_FL.chain;
      ino.body = { kind: 'chain', chain: { cpg: 1, bpc: 1, count: chainCapacity(bs), recs: [] } };
      break;
    case SYSFILE.globalInodeAlloc:
    case SYSFILE.inodeAlloc:
    case SYSFILE.extentAlloc:
      ino.flags |= INODE_FL.chain;
      ino.body = { kind: 'chain', chain: { cpg: suballocGroupClusters(bs, st.vol.geo.clusterSize), bpc: st.vol.geo.blocksPerCluster, count: chainCapacity(bs), recs: [] } };
      break;
    case SYSFILE.localAlloc:
      ino.flags |= INODE_FL.localAlloc;
      ino.body = { kind: 'localAlloc', la: { windowFirstCluster: 0, windowBits: 0, bitmap: Buffer.alloc(0) } };
      break;
    case SYSFILE.truncateLog:
      ino.flags |= INODE_FL.dealloc;
      ino.body = { kind: 'truncateLog', count: truncateLogCapacity(bs), recs: [] };
      break;
    case SYSFILE.journal:
      ino.flags |= INODE_FL.journal;
      break;
    case SYSFILE.heartbeat:
      ino.flags |= INODE_FL.heartbeat;
      break;
    case SYSFILE.slotMap:
      ino.flags |= INODE_FL.slotMap;
      break;
  }
  st.tx.putInode(ino);
  st.metaRefs.set(blkno, ino.suballoc);
  st.badBlocks.delete(blkno);
  st.inodes.set(blkno, { ino, refs: 0, subdirs: 0, parent: isDir ? parentBlkno : 0, orphan: false });
  return ino;
}

/** Gives a rebuilt journal, heartbeat or slot map file its space and initial contents. */
export async function fillSystemFile(st: FsckState, ino: Inode, kind: SysKind, journalBytes: number): Promise<void> {
  const { blockSize: bs, clusterSize: cs, blocksPerCluster: bpc } = st.vol.geo;
  const bytes = kind === SYSFILE.journal ? journalBytes : kind === SYSFILE.heartbeat ? MAX_NODES * bs : Math.ceil(st.vol.sb.maxSlots / slotsPerBlock(bs)) * bs;
  const clusters = Math.ceil(bytes / cs);
  const run = await allocClusters(st.tx, clusters, clusters, 0);
  const first = run.startCluster * bpc;
  if (ino.body.kind !== 'extents') throw new Error('assertion: system file without extent list');
  ino.body.list.records = [];
  for (let c = 0; c < clusters; c += MAX_LEAF_CLUSTERS) ino.body.list.records.push({ cpos: c, clusters: Math.min(MAX_LEAF_CLUSTERS, clusters - c), flags: 0, blkno: first + c * bpc });
  ino.clusters = clusters;
  ino.size = bytes;
  st.tx.putInode(ino);
  const fsGen = st.vol.fsGeneration;
  if (kind === SYSFILE.journal) {
    st.tx.put(first, encodeJournalSuper({ blkno: first, fsGeneration: fsGen, totalBlocks: bytes / bs, firstLogBlock: 1, sequence: 1, start: 0, startSequence: 0 }, bs));
  } else if (kind === SYSFILE.heartbeat) {
    for (let n = 0; n < MAX_NODES; n++) st.tx.put(first + n, encodeHeartbeat({ blkno: first + n, fsGeneration: fsGen, seq: 0, nodeNum: n, deadMs: 0, hbGeneration: 0, timeMs: 0 }, bs));
  } else {
    const per = slotsPerBlock(bs);
    for (let i = 0; i * per < st.vol.sb.maxSlots; i++) {
      const n = Math.min(per, st.vol.sb.maxSlots - i * per);
      st.tx.put(first + i, encodeSlotMapBlock(Array.from({ length: n }, () => ({ inUse: false, nodeNum: 0, mountGeneration: 0 })), i * per, first + i, fsGen, bs));
    }
  }
}

/** The allocator group holding `blkno`, as a suballoc triple, or null. */
export function locateInGroups(allocators: SubAllocator[], blkno: number): { blkno: number; bit: number; slot: number } | null {
  for (const sa of allocators) for (const sg of sa.groups) {
    if (blkno > sg.g.blkno && blkno < sg.g.blkno + sg.g.bits) return { blkno: sg.g.blkno, bit: blkno - sg.g.blkno, slot: sa.slot };
  }
  return null;
}

export { GLOBAL_SLOT, sysFileNameOfId };
export type { PerSlotFile };
