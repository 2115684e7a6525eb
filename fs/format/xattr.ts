// Extended attribute storage: an entry list kept either in the inode's inline xattr area
// (the last xattr_inline_bytes of the inode block) or in one external xattr block.
//
// Entry list: count u16, used_bytes u16, reserved u32, then packed entries:
//   flags u8 (XATTR_FL), prefix u8 (XATTR_PREFIXES index), name_len u8, reserved u8,
//   value_len u32, name (without prefix), then either the value (inline) or, with
//   XATTR_FL.external, value_blkno u64: the value occupies ceil(value_len / cluster size)
//   contiguous clusters from the global bitmap starting at that block.
//
// Xattr block (O2XATTR1): header + suballoc triple, 0x30 owner_blkno u64, 0x38 entry list.
import { CorruptionError } from '../errors';
import { SIG } from './constants';
import { Suballoc, readOwnedHeader, readU64, sealBlock, writeOwnedHeader, writeU64 } from './header';

export const XATTR_FL = { external: 0x1 } as const;
export const XATTR_PREFIXES = ['', 'user.', 'trusted.', 'security.', 'system.'] as const;
export const XATTR_LIST_HEADER_BYTES = 8;
const ENTRY_HEADER_BYTES = 8;
const XATTR_BLOCK_LIST_OFFSET = 0x38;
/** Values up to this size are stored inside the entry list; larger ones in clusters. */
export const XATTR_INLINE_VALUE_MAX = 256;
export const XATTR_NAME_MAX = 255;
export const XATTR_VALUE_MAX = 65536;

export interface XattrEntry {
  prefix: number;
  name: Buffer;
  /** The value when stored inline. */
  value: Buffer | null;
  valueLen: number;
  /** First block of the value's clusters when external, else 0. */
  valueBlkno: number;
}

export interface XattrBlock {
  blkno: number;
  fsGeneration: number;
  suballoc: Suballoc;
  ownerBlkno: number;
  entries: XattrEntry[];
}

export function xattrEntryBytes(e: XattrEntry): number {
  return ENTRY_HEADER_BYTES + e.name.length + (e.value ? e.value.length : 8);
}

export function xattrListBytes(entries: XattrEntry[]): number {
  return XATTR_LIST_HEADER_BYTES + entries.reduce((n, e) => n + xattrEntryBytes(e), 0);
}

export function xattrBlockListCapacity(bs: number): number {
  return bs - XATTR_BLOCK_LIST_OFFSET;
}

/** Splits "user.foo" into its prefix index and the rest; null if the namespace is unknown. */
export function splitXattrName(full: string): { prefix: number; name: Buffer } | null {
  for (let i = 1; i < XATTR_PREFIXES.length; i++) {
    const p = XATTR_PREFIXES[i];
    if (full.startsWith(p) && full.length > p.length) return { prefix: i, name: Buffer.from(full.slice(p.length), 'utf8') };
  }
  return null;
}

export function fullXattrName(e: { prefix: number; name: Buffer }): string {
  return (XATTR_PREFIXES[e.prefix] ?? '?') + e.name.toString('utf8');
}

export function encodeXattrList(entries: XattrEntry[], buf: Buffer, off: number, capacity: number): void {
  const need = xattrListBytes(entries);
  if (need > capacity) throw new RangeError(`xattr list of ${need} bytes does not fit in ${capacity}`);
  buf.writeUInt16LE(entries.length, off);
  buf.writeUInt16LE(need - XATTR_LIST_HEADER_BYTES, off + 2);
  buf.writeUInt32LE(0, off + 4);
  let p = off + XATTR_LIST_HEADER_BYTES;
  for (const e of entries) {
    buf.writeUInt8(e.value ? 0 : XATTR_FL.external, p);
    buf.writeUInt8(e.prefix, p + 1);
    buf.writeUInt8(e.name.length, p + 2);
    buf.writeUInt8(0, p + 3);
    buf.writeUInt32LE(e.valueLen, p + 4);
    e.name.copy(buf, p + ENTRY_HEADER_BYTES);
    p += ENTRY_HEADER_BYTES + e.name.length;
    if (e.value) {
      e.value.copy(buf, p);
      p += e.value.length;
    } else {
      writeU64(buf, p, e.valueBlkno);
      p += 8;
    }
  }
  buf.fill(0, p, off + capacity);
}

export function decodeXattrList(buf: Buffer, off: number, capacity: number, blkno: number): XattrEntry[] {
  if (capacity < XATTR_LIST_HEADER_BYTES) return [];
  const count = buf.readUInt16LE(off);
  const used = buf.readUInt16LE(off + 2);
  if (XATTR_LIST_HEADER_BYTES + used > capacity) throw new CorruptionError(blkno, `xattr list claims ${used} bytes in ${capacity}`);
  const end = off + XATTR_LIST_HEADER_BYTES + used;
  const out: XattrEntry[] = [];
  let p = off + XATTR_LIST_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (p + ENTRY_HEADER_BYTES > end) throw new CorruptionError(blkno, `xattr entry ${i} truncated`);
    const flags = buf.readUInt8(p);
    const prefix = buf.readUInt8(p + 1);
    const nameLen = buf.readUInt8(p + 2);
    const valueLen = buf.readUInt32LE(p + 4);
    const external = (flags & XATTR_FL.external) !== 0;
    const size = ENTRY_HEADER_BYTES + nameLen + (external ? 8 : valueLen);
    if (prefix === 0 || prefix >= XATTR_PREFIXES.length || nameLen === 0 || valueLen > XATTR_VALUE_MAX || p + size > end) {
      throw new CorruptionError(blkno, `xattr entry ${i} is malformed`);
    }
    const name = Buffer.from(buf.subarray(p + ENTRY_HEADER_BYTES, p + ENTRY_HEADER_BYTES + nameLen));
    const vo = p + ENTRY_HEADER_BYTES + nameLen;
    out.push(external
      ? { prefix, name, value: null, valueLen, valueBlkno: readU64(buf, vo) }
      : { prefix, name, value: Buffer.from(buf.subarray(vo, vo + valueLen)), valueLen, valueBlkno: 0 });
    p += size;
  }
  if (p !== end) throw new CorruptionError(blkno, `xattr entries use ${p - off - XATTR_LIST_HEADER_BYTES} bytes, header says ${used}`);
  return out;
}

export function encodeXattrBlock(xb: XattrBlock, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeOwnedHeader(buf, SIG.xattrBlock, xb);
  encodeXattrList(xb.entries, buf, XATTR_BLOCK_LIST_OFFSET, xattrBlockListCapacity(bs));
  return sealBlock(buf);
}

export function decodeXattrBlock(buf: Buffer): XattrBlock {
  const owned = readOwnedHeader(buf);
  const blkno = owned.blkno;
  return {
    ...owned,
    entries: decodeXattrList(buf, XATTR_BLOCK_LIST_OFFSET, xattrBlockListCapacity(buf.length), blkno),
  };
}

/** A deep copy (names and values too): equal to decodeXattrBlock(encodeXattrBlock(xb)). */
export function cloneXattrBlock(xb: XattrBlock): XattrBlock {
  return {
    ...xb,
    suballoc: { ...xb.suballoc },
    entries: xb.entries.map((e) => ({ ...e, name: Buffer.from(e.name), value: e.value ? Buffer.from(e.value) : null })),
  };
}
