// Inode codec. An inode is one metadata block; its number is its block number.
//
//   0x00 header (O2INODE1; generation = inode generation) + suballoc triple (header.ts)
//   0x30 mode u32, 0x34 uid u32, 0x38 gid u32, 0x3C links u32
//   0x40 size u64
//   0x48 clusters u32 (data clusters allocated)
//   0x4C flags u32 (INODE_FL)
//   0x50 dyn_features u16 (DYN), 0x52 xattr_inline_bytes u16, 0x54 attr u32 (chattr flags)
//   0x58 atime_sec i64, 0x60 ctime_sec i64, 0x68 mtime_sec i64, 0x70 dtime_sec i64
//   0x78 atime_nsec u32, 0x7C ctime_nsec u32, 0x80 mtime_nsec u32, 0x84 dtime_nsec u32
//   0x88 rdev u64
//   0x90 xattr_blkno u64 (external xattr block, 0 = none)
//   0x98 orphaned_slot u16, reserved u16
//   0x9C system_file_id u32 (system files: kind << 16 | slot, see sysFileId; else 0)
//   0xA0 id1 (16 bytes): journal {flags u32, recovery_generation u32, reserved u64}
//                        chain allocator {used u32, total u32, reserved u64}
//   0xB0 parent_blkno u64 (directories: the ".." inode), reserved u64
//   0xC0 id2 up to (block size - xattr_inline_bytes): one of
//        extent list (extent-list.ts), the default
//        inline data {len u16, reserved 6 bytes, bytes} when DYN.inlineData
//        chain list when INODE_FL.chain      {cpg u16, bpc u16, count u16, next_free u16, reserved u64,
//                                             recs {free u32, total u32, first_group_blkno u64}}
//        local alloc when INODE_FL.localAlloc {window_first_cluster u32, window_bits u32,
//                                             bitmap_bytes u32, reserved u32, bitmap}
//        truncate log when INODE_FL.dealloc   {count u16, used u16, reserved 12 bytes,
//                                             recs {start_cluster u32, clusters u32}}
//   tail: xattr_inline_bytes of inline xattrs when DYN.inlineXattr (xattr.ts)
import { CorruptionError } from '../errors';
import { DYN, INODE_FL, SIG } from './constants';
import { ExtentList, cloneExtentList, decodeExtentList, encodeExtentList, extentListCapacity } from './extent-list';
import { Suballoc, readI64, readSuballoc, readU64, sealBlock, writeHeader, writeI64, writeSuballoc, writeU64 } from './header';

export const ID2_OFFSET = 0xc0;
const INLINE_HEADER_BYTES = 8;
const CHAIN_HEADER_BYTES = 16;
const CHAIN_REC_BYTES = 16;
const LA_HEADER_BYTES = 16;
const TL_HEADER_BYTES = 16;
const TL_REC_BYTES = 8;

export interface Timespec {
  sec: number;
  nsec: number;
}

export interface ChainRec {
  free: number;
  total: number;
  blkno: number;
}

export interface ChainList {
  /** Clusters per group. */
  cpg: number;
  /** Bits per cluster: 1 for the global bitmap, blocks-per-cluster for suballocators. */
  bpc: number;
  count: number;
  recs: ChainRec[];
}

export interface LocalAlloc {
  windowFirstCluster: number;
  windowBits: number;
  bitmap: Buffer;
}

export interface TruncateRec {
  startCluster: number;
  clusters: number;
}

export type InodeBody =
  | { kind: 'extents'; list: ExtentList }
  | { kind: 'inline'; data: Buffer }
  | { kind: 'chain'; chain: ChainList }
  | { kind: 'localAlloc'; la: LocalAlloc }
  | { kind: 'truncateLog'; count: number; recs: TruncateRec[] };

export interface Inode {
  blkno: number;
  fsGeneration: number;
  generation: number;
  suballoc: Suballoc;
  mode: number;
  uid: number;
  gid: number;
  links: number;
  size: number;
  clusters: number;
  flags: number;
  dyn: number;
  xattrInlineBytes: number;
  attr: number;
  atime: Timespec;
  ctime: Timespec;
  mtime: Timespec;
  dtime: Timespec;
  rdev: number;
  xattrBlkno: number;
  orphanedSlot: number;
  /** Which system file this is (constants.sysFileId), 0 for ordinary inodes. */
  sysFileId: number;
  /** Journal inodes: flags and recovery generation; chain allocators: used and total bits. */
  id1a: number;
  id1b: number;
  parentBlkno: number;
  body: InodeBody;
  /** Raw inline xattr area (xattrInlineBytes long) when DYN.inlineXattr, else empty. */
  inlineXattr: Buffer;
}

/** Bytes available at id2 for an inode that reserves `xattrInlineBytes` at its tail. */
export function id2Bytes(bs: number, xattrInlineBytes: number): number {
  return bs - ID2_OFFSET - xattrInlineBytes;
}

export function inlineDataCapacity(bs: number, xattrInlineBytes: number): number {
  return id2Bytes(bs, xattrInlineBytes) - INLINE_HEADER_BYTES;
}

export function inodeExtentCapacity(bs: number, xattrInlineBytes: number): number {
  return extentListCapacity(id2Bytes(bs, xattrInlineBytes));
}

export function chainCapacity(bs: number): number {
  return Math.floor((bs - ID2_OFFSET - CHAIN_HEADER_BYTES) / CHAIN_REC_BYTES);
}

export function localAllocCapacityBits(bs: number): number {
  return (bs - ID2_OFFSET - LA_HEADER_BYTES) * 8;
}

export function truncateLogCapacity(bs: number): number {
  return Math.floor((bs - ID2_OFFSET - TL_HEADER_BYTES) / TL_REC_BYTES);
}

export function encodeInode(ino: Inode, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.inode, fsGeneration: ino.fsGeneration, blkno: ino.blkno, generation: ino.generation });
  writeSuballoc(buf, ino.suballoc);
  buf.writeUInt32LE(ino.mode >>> 0, 0x30);
  buf.writeUInt32LE(ino.uid >>> 0, 0x34);
  buf.writeUInt32LE(ino.gid >>> 0, 0x38);
  buf.writeUInt32LE(ino.links >>> 0, 0x3c);
  writeU64(buf, 0x40, ino.size);
  buf.writeUInt32LE(ino.clusters >>> 0, 0x48);
  buf.writeUInt32LE(ino.flags >>> 0, 0x4c);
  buf.writeUInt16LE(ino.dyn, 0x50);
  buf.writeUInt16LE(ino.xattrInlineBytes, 0x52);
  buf.writeUInt32LE(ino.attr >>> 0, 0x54);
  const times: Array<[Timespec, number, number]> = [[ino.atime, 0x58, 0x78], [ino.ctime, 0x60, 0x7c], [ino.mtime, 0x68, 0x80], [ino.dtime, 0x70, 0x84]];
  for (const [t, secOff, nsecOff] of times) {
    writeI64(buf, secOff, t.sec);
    buf.writeUInt32LE(t.nsec >>> 0, nsecOff);
  }
  writeU64(buf, 0x88, ino.rdev);
  writeU64(buf, 0x90, ino.xattrBlkno);
  buf.writeUInt16LE(ino.orphanedSlot, 0x98);
  buf.writeUInt32LE(ino.sysFileId >>> 0, 0x9c);
  buf.writeUInt32LE(ino.id1a >>> 0, 0xa0);
  buf.writeUInt32LE(ino.id1b >>> 0, 0xa4);
  writeU64(buf, 0xb0, ino.parentBlkno);
  const area = id2Bytes(bs, ino.xattrInlineBytes);
  encodeBody(buf, ino.body, area, bs);
  if (ino.dyn & DYN.inlineXattr) {
    if (ino.inlineXattr.length !== ino.xattrInlineBytes) throw new RangeError('inline xattr area size mismatch');
    ino.inlineXattr.copy(buf, bs - ino.xattrInlineBytes);
  }
  return sealBlock(buf);
}

function encodeBody(buf: Buffer, body: InodeBody, area: number, bs: number): void {
  const o = ID2_OFFSET;
  switch (body.kind) {
    case 'extents':
      encodeExtentList(buf, o, body.list);
      return;
    case 'inline':
      if (body.data.length > area - INLINE_HEADER_BYTES) throw new RangeError(`inline data of ${body.data.length} bytes does not fit`);
      buf.writeUInt16LE(body.data.length, o);
      body.data.copy(buf, o + INLINE_HEADER_BYTES);
      return;
    case 'chain': {
      const c = body.chain;
      if (c.recs.length > c.count || c.count !== chainCapacity(bs)) throw new RangeError('chain list overflow');
      buf.writeUInt16LE(c.cpg, o);
      buf.writeUInt16LE(c.bpc, o + 2);
      buf.writeUInt16LE(c.count, o + 4);
      buf.writeUInt16LE(c.recs.length, o + 6);
      let p = o + CHAIN_HEADER_BYTES;
      for (const r of c.recs) {
        buf.writeUInt32LE(r.free >>> 0, p);
        buf.writeUInt32LE(r.total >>> 0, p + 4);
        writeU64(buf, p + 8, r.blkno);
        p += CHAIN_REC_BYTES;
      }
      return;
    }
    case 'localAlloc': {
      const la = body.la;
      if (la.bitmap.length > bs - o - LA_HEADER_BYTES || la.windowBits > la.bitmap.length * 8) throw new RangeError('local alloc bitmap too large');
      buf.writeUInt32LE(la.windowFirstCluster >>> 0, o);
      buf.writeUInt32LE(la.windowBits >>> 0, o + 4);
      buf.writeUInt32LE(la.bitmap.length, o + 8);
      la.bitmap.copy(buf, o + LA_HEADER_BYTES);
      return;
    }
    case 'truncateLog': {
      if (body.recs.length > body.count || body.count !== truncateLogCapacity(bs)) throw new RangeError('truncate log overflow');
      buf.writeUInt16LE(body.count, o);
      buf.writeUInt16LE(body.recs.length, o + 2);
      let p = o + TL_HEADER_BYTES;
      for (const r of body.recs) {
        buf.writeUInt32LE(r.startCluster >>> 0, p);
        buf.writeUInt32LE(r.clusters >>> 0, p + 4);
        p += TL_REC_BYTES;
      }
      return;
    }
  }
}

/**
 * A deep copy the caller may change freely: equal to decodeInode(encodeInode(ino)), without
 * the encode, the checksum and the decode (Transaction hands these out).
 */
export function cloneInode(ino: Inode): Inode {
  // Every field spelled out: a spread of this many fields cost more than the decode it saves.
  return {
    blkno: ino.blkno,
    fsGeneration: ino.fsGeneration,
    generation: ino.generation,
    suballoc: { slot: ino.suballoc.slot, bit: ino.suballoc.bit, groupBlkno: ino.suballoc.groupBlkno },
    mode: ino.mode,
    uid: ino.uid,
    gid: ino.gid,
    links: ino.links,
    size: ino.size,
    clusters: ino.clusters,
    flags: ino.flags,
    dyn: ino.dyn,
    xattrInlineBytes: ino.xattrInlineBytes,
    attr: ino.attr,
    atime: { sec: ino.atime.sec, nsec: ino.atime.nsec },
    ctime: { sec: ino.ctime.sec, nsec: ino.ctime.nsec },
    mtime: { sec: ino.mtime.sec, nsec: ino.mtime.nsec },
    dtime: { sec: ino.dtime.sec, nsec: ino.dtime.nsec },
    rdev: ino.rdev,
    xattrBlkno: ino.xattrBlkno,
    orphanedSlot: ino.orphanedSlot,
    sysFileId: ino.sysFileId,
    id1a: ino.id1a,
    id1b: ino.id1b,
    parentBlkno: ino.parentBlkno,
    body: cloneBody(ino.body),
    inlineXattr: Buffer.from(ino.inlineXattr),
  };
}

function cloneBody(body: InodeBody): InodeBody {
  switch (body.kind) {
    case 'extents':
      return { kind: 'extents', list: cloneExtentList(body.list) };
    case 'inline':
      return { kind: 'inline', data: Buffer.from(body.data) };
    case 'chain':
      return { kind: 'chain', chain: { ...body.chain, recs: body.chain.recs.map((r) => ({ ...r })) } };
    case 'localAlloc':
      return { kind: 'localAlloc', la: { ...body.la, bitmap: Buffer.from(body.la.bitmap) } };
    case 'truncateLog':
      return { kind: 'truncateLog', count: body.count, recs: body.recs.map((r) => ({ ...r })) };
  }
}

/**
 * Points the byte fields of `ino` (its inline xattr area, inline data, local alloc bitmap)
 * at the same bytes of `image`, its own encoding: for a copy kept beside the image for as long
 * as the image lives, which then costs no memory of its own. Copies of small buffers come
 * from Node's shared 8 KiB pools, and one long-lived copy keeps a whole pool alive.
 */
export function viewInodeOverImage(ino: Inode, image: Buffer): Inode {
  const bs = image.length;
  const o = ID2_OFFSET;
  if (ino.dyn & DYN.inlineXattr) ino.inlineXattr = image.subarray(bs - ino.xattrInlineBytes, bs);
  const body = ino.body;
  if (body.kind === 'inline') ino.body = { kind: 'inline', data: image.subarray(o + INLINE_HEADER_BYTES, o + INLINE_HEADER_BYTES + body.data.length) };
  else if (body.kind === 'localAlloc') ino.body = { kind: 'localAlloc', la: { ...body.la, bitmap: image.subarray(o + LA_HEADER_BYTES, o + LA_HEADER_BYTES + body.la.bitmap.length) } };
  return ino;
}

/** Does an inode block image (header checked) hold a live inode (not one freed since)? */
export function inodeImageIsValid(buf: Buffer): boolean {
  return (buf.readUInt32LE(0x4c) & INODE_FL.valid) !== 0;
}

/** Decodes an inode block whose header was already verified (header.verifyBlock). */
export function decodeInode(buf: Buffer): Inode {
  const bs = buf.length;
  const blkno = readU64(buf, 0x10);
  const flags = buf.readUInt32LE(0x4c);
  const dyn = buf.readUInt16LE(0x50);
  const xattrInlineBytes = buf.readUInt16LE(0x52);
  if (xattrInlineBytes >= bs - ID2_OFFSET - 64) throw new CorruptionError(blkno, `inline xattr area ${xattrInlineBytes} too large`);
  const area = id2Bytes(bs, xattrInlineBytes);
  const ts = (secOff: number, nsecOff: number): Timespec => ({ sec: readI64(buf, secOff), nsec: buf.readUInt32LE(nsecOff) });
  return {
    blkno,
    fsGeneration: buf.readUInt32LE(0x0c),
    generation: buf.readUInt32LE(0x18),
    suballoc: readSuballoc(buf),
    mode: buf.readUInt32LE(0x30),
    uid: buf.readUInt32LE(0x34),
    gid: buf.readUInt32LE(0x38),
    links: buf.readUInt32LE(0x3c),
    size: readU64(buf, 0x40),
    clusters: buf.readUInt32LE(0x48),
    flags,
    dyn,
    xattrInlineBytes,
    attr: buf.readUInt32LE(0x54),
    atime: ts(0x58, 0x78),
    ctime: ts(0x60, 0x7c),
    mtime: ts(0x68, 0x80),
    dtime: ts(0x70, 0x84),
    rdev: readU64(buf, 0x88),
    xattrBlkno: readU64(buf, 0x90),
    orphanedSlot: buf.readUInt16LE(0x98),
    sysFileId: buf.readUInt32LE(0x9c),
    id1a: buf.readUInt32LE(0xa0),
    id1b: buf.readUInt32LE(0xa4),
    parentBlkno: readU64(buf, 0xb0),
    body: decodeBody(buf, flags, dyn, area, blkno),
    inlineXattr: dyn & DYN.inlineXattr ? Buffer.from(buf.subarray(bs - xattrInlineBytes)) : Buffer.alloc(0),
  };
}

function decodeBody(buf: Buffer, flags: number, dyn: number, area: number, blkno: number): InodeBody {
  const o = ID2_OFFSET;
  const bs = buf.length;
  if (flags & INODE_FL.chain) {
    const count = buf.readUInt16LE(o + 4);
    const used = buf.readUInt16LE(o + 6);
    if (count !== chainCapacity(bs) || used > count) throw new CorruptionError(blkno, `chain list uses ${used} of ${count}`);
    const recs: ChainRec[] = [];
    let p = o + CHAIN_HEADER_BYTES;
    for (let i = 0; i < used; i++, p += CHAIN_REC_BYTES) recs.push({ free: buf.readUInt32LE(p), total: buf.readUInt32LE(p + 4), blkno: readU64(buf, p + 8) });
    return { kind: 'chain', chain: { cpg: buf.readUInt16LE(o), bpc: buf.readUInt16LE(o + 2), count, recs } };
  }
  if (flags & INODE_FL.localAlloc) {
    const bytes = buf.readUInt32LE(o + 8);
    const windowBits = buf.readUInt32LE(o + 4);
    if (bytes > bs - o - LA_HEADER_BYTES || windowBits > bytes * 8) throw new CorruptionError(blkno, `local alloc window of ${windowBits} bits in ${bytes} bytes`);
    return { kind: 'localAlloc', la: { windowFirstCluster: buf.readUInt32LE(o), windowBits, bitmap: Buffer.from(buf.subarray(o + LA_HEADER_BYTES, o + LA_HEADER_BYTES + bytes)) } };
  }
  if (flags & INODE_FL.dealloc) {
    const count = buf.readUInt16LE(o);
    const used = buf.readUInt16LE(o + 2);
    if (count !== truncateLogCapacity(bs) || used > count) throw new CorruptionError(blkno, `truncate log uses ${used} of ${count}`);
    const recs: TruncateRec[] = [];
    let p = o + TL_HEADER_BYTES;
    for (let i = 0; i < used; i++, p += TL_REC_BYTES) recs.push({ startCluster: buf.readUInt32LE(p), clusters: buf.readUInt32LE(p + 4) });
    return { kind: 'truncateLog', count, recs };
  }
  if (dyn & DYN.inlineData) {
    const len = buf.readUInt16LE(o);
    if (len > area - INLINE_HEADER_BYTES) throw new CorruptionError(blkno, `inline data length ${len} exceeds ${area - INLINE_HEADER_BYTES}`);
    return { kind: 'inline', data: Buffer.from(buf.subarray(o + INLINE_HEADER_BYTES, o + INLINE_HEADER_BYTES + len)) };
  }
  return { kind: 'extents', list: decodeExtentList(buf, o, area, blkno) };
}
