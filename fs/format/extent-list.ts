// Extent list codec: the node of an extent tree, found at id2 of an inode (the root) and at
// 0x40 of an extent block. The same tree indexes file data (cpos = logical cluster) and
// indexed directories (cpos = first hash of a leaf's range).
//
//   list header (16 bytes): tree_depth u16 (0 = leaf), count u16 (capacity),
//                           next_free_rec u16, reserved u16, reserved u64
//   record (16 bytes):      cpos u32, clusters u16, reserved u8, flags u8 (EXTENT_FL), blkno u64
//   In interior nodes (depth > 0) clusters and flags are zero and blkno is the child block.
import { CorruptionError } from '../errors';
import { readU64, writeU64 } from './header';

export const EXTENT_LIST_HEADER_BYTES = 16;
export const EXTENT_REC_BYTES = 16;

export interface ExtentRec {
  cpos: number;
  clusters: number;
  flags: number;
  blkno: number;
}

export interface ExtentList {
  depth: number;
  /** Capacity in records. */
  count: number;
  records: ExtentRec[];
}

export function extentListCapacity(areaBytes: number): number {
  return Math.floor((areaBytes - EXTENT_LIST_HEADER_BYTES) / EXTENT_REC_BYTES);
}

export function encodeExtentList(buf: Buffer, off: number, list: ExtentList): void {
  if (list.records.length > list.count) throw new RangeError(`extent list overflow: ${list.records.length} > ${list.count}`);
  buf.writeUInt16LE(list.depth, off);
  buf.writeUInt16LE(list.count, off + 2);
  buf.writeUInt16LE(list.records.length, off + 4);
  buf.fill(0, off + 6, off + EXTENT_LIST_HEADER_BYTES);
  let p = off + EXTENT_LIST_HEADER_BYTES;
  for (const r of list.records) {
    buf.writeUInt32LE(r.cpos >>> 0, p);
    buf.writeUInt16LE(r.clusters, p + 4);
    buf.writeUInt8(0, p + 6);
    buf.writeUInt8(r.flags, p + 7);
    writeU64(buf, p + 8, r.blkno);
    p += EXTENT_REC_BYTES;
  }
  buf.fill(0, p, off + EXTENT_LIST_HEADER_BYTES + list.count * EXTENT_REC_BYTES);
}

/** A copy the caller may change without touching `list` (what decoding its encoding gives). */
export function cloneExtentList(list: ExtentList): ExtentList {
  return { depth: list.depth, count: list.count, records: list.records.map((r) => ({ cpos: r.cpos, clusters: r.clusters, flags: r.flags, blkno: r.blkno })) };
}

/** Decodes a list stored in `areaBytes` bytes at `off`; rejects impossible headers. */
export function decodeExtentList(buf: Buffer, off: number, areaBytes: number, blkno: number): ExtentList {
  const depth = buf.readUInt16LE(off);
  const count = buf.readUInt16LE(off + 2);
  const used = buf.readUInt16LE(off + 4);
  if (count !== extentListCapacity(areaBytes)) throw new CorruptionError(blkno, `extent list capacity ${count}, expected ${extentListCapacity(areaBytes)}`);
  if (used > count) throw new CorruptionError(blkno, `extent list uses ${used} of ${count} records`);
  if (depth > 8) throw new CorruptionError(blkno, `extent tree depth ${depth} is impossible`);
  const records: ExtentRec[] = [];
  let p = off + EXTENT_LIST_HEADER_BYTES;
  for (let i = 0; i < used; i++, p += EXTENT_REC_BYTES) {
    records.push({ cpos: buf.readUInt32LE(p), clusters: buf.readUInt16LE(p + 4), flags: buf.readUInt8(p + 7), blkno: readU64(buf, p + 8) });
  }
  return { depth, count, records };
}
