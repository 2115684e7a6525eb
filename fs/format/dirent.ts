// Directory entries and directory leaf blocks.
//
// Entry (packed, no padding), 18 + name_len bytes:
//   ino u64, cookie u64, name_len u8, file_type u8 (constants.FT), name bytes
// The cookie is the entry's readdir offset: hashCookie(name) made unique in its directory.
// Entries are kept sorted by cookie, so readdir resumes from any offset and offsets stay
// stable while the directory changes. "." and ".." are not stored: they are offsets 1 and 2,
// and ".." comes from the directory inode's parent_blkno.
//
// Small directories keep their entries as the inode's inline data. Larger ones are
// "indexed": the inode's extent tree maps a 32-bit hash (the record's cpos) to the leaf
// block holding every entry whose major hash is >= cpos and < the next record's cpos.
//
// Leaf block (O2DIRLF1):
//   0x00 header + suballoc triple
//   0x30 owner_blkno u64 (the directory)
//   0x38 count u16, used_bytes u16, reserved u32
//   0x40 entries (sorted by cookie)
import { CorruptionError } from '../errors';
import { MAX_NAME_BYTES, SIG } from './constants';
import { Suballoc, readOwnedHeader, readU64, sealBlock, writeOwnedHeader, writeU64 } from './header';

export const DIRENT_HEADER_BYTES = 18;
export const DIR_LEAF_ENTRIES_OFFSET = 0x40;
/** Cookies of "." and ".."; entry cookies start above them. */
export const COOKIE_DOT = 1;
export const COOKIE_DOTDOT = 2;
export const COOKIE_FIRST = 3;
/** Bits of the cookie below the 32-bit major hash. */
export const COOKIE_MINOR_BITS = 20;

export interface Dirent {
  ino: number;
  cookie: number;
  fileType: number;
  name: Buffer;
}

export interface DirLeaf {
  blkno: number;
  fsGeneration: number;
  suballoc: Suballoc;
  ownerBlkno: number;
  entries: Dirent[];
}

export function direntBytes(nameLen: number): number {
  return DIRENT_HEADER_BYTES + nameLen;
}

export function leafCapacityBytes(bs: number): number {
  return bs - DIR_LEAF_ENTRIES_OFFSET;
}

export function majorOfCookie(cookie: number): number {
  return Math.floor(cookie / 2 ** COOKIE_MINOR_BITS);
}

export function encodeDirents(entries: Dirent[], buf: Buffer, off: number, limit: number): number {
  if (limit > buf.length) throw new RangeError(`directory entry area ends at ${limit}, past the ${buf.length}-byte buffer`);
  let p = off;
  for (const e of entries) {
    const name = e.name;
    const need = direntBytes(name.length);
    if (p + need > limit) throw new RangeError('directory entries overflow their area');
    if (name.length === 0 || name.length > MAX_NAME_BYTES || !(e.fileType >= 0 && e.fileType <= 0xff)) throw new RangeError(`directory entry of ${name.length} bytes, type ${e.fileType}`);
    writeU64(buf, p, e.ino);
    writeU64(buf, p + 8, e.cookie);
    // Byte stores (in bounds: checked above): names are short, and Buffer.copy and
    // writeUInt8 cost more in their own checks than in the copy.
    buf[p + 16] = name.length;
    buf[p + 17] = e.fileType;
    for (let i = 0; i < name.length; i++) buf[p + 18 + i] = name[i];
    p += need;
  }
  return p - off;
}

/**
 * Names are views into `buf`, not copies (copying them was the largest cost of a lookup in a
 * big directory): the caller passes a private image it will not modify, which is what
 * Transaction.read and Volume.readMeta return.
 */
export function decodeDirents(buf: Buffer, off: number, count: number, usedBytes: number, blkno: number): Dirent[] {
  const out: Dirent[] = [];
  const end = off + usedBytes;
  if (end > buf.length) throw new CorruptionError(blkno, `directory entries run past the block (${usedBytes} bytes)`);
  let p = off;
  let lastCookie = 0;
  for (let i = 0; i < count; i++) {
    if (p + DIRENT_HEADER_BYTES > end) throw new CorruptionError(blkno, `directory entry ${i} truncated`);
    const nameLen = buf.readUInt8(p + 16);
    if (nameLen === 0 || p + direntBytes(nameLen) > end) throw new CorruptionError(blkno, `directory entry ${i} has bad name length ${nameLen}`);
    const e: Dirent = { ino: readU64(buf, p), cookie: readU64(buf, p + 8), fileType: buf.readUInt8(p + 17), name: buf.subarray(p + 18, p + 18 + nameLen) };
    if (e.cookie < COOKIE_FIRST || e.cookie <= lastCookie) throw new CorruptionError(blkno, `directory entry ${i} cookie ${e.cookie} out of order`);
    lastCookie = e.cookie;
    out.push(e);
    p += direntBytes(nameLen);
  }
  if (p !== end) throw new CorruptionError(blkno, `directory entries use ${p - off} bytes, header says ${usedBytes}`);
  return out;
}

/** Inline directory data: count u16, used u16, reserved u32, then entries. */
export function encodeInlineDir(entries: Dirent[], capacityBytes: number): Buffer {
  const used = entries.reduce((n, e) => n + direntBytes(e.name.length), 0);
  if (8 + used > capacityBytes) throw new RangeError('inline directory overflow');
  const buf = Buffer.alloc(8 + used);
  buf.writeUInt16LE(entries.length, 0);
  buf.writeUInt16LE(used, 2);
  encodeDirents(entries, buf, 8, buf.length);
  return buf;
}

export function decodeInlineDir(data: Buffer, blkno: number): Dirent[] {
  if (data.length === 0) return [];
  if (data.length < 8) throw new CorruptionError(blkno, 'inline directory header truncated');
  const count = data.readUInt16LE(0);
  const used = data.readUInt16LE(2);
  if (8 + used !== data.length) throw new CorruptionError(blkno, `inline directory uses ${used} bytes of ${data.length - 8}`);
  return decodeDirents(data, 8, count, used, blkno);
}

export function inlineDirBytes(entries: Dirent[]): number {
  return 8 + entries.reduce((n, e) => n + direntBytes(e.name.length), 0);
}

export function encodeDirLeaf(leaf: DirLeaf, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeOwnedHeader(buf, SIG.dirLeaf, leaf);
  const used = encodeDirents(leaf.entries, buf, DIR_LEAF_ENTRIES_OFFSET, bs);
  buf.writeUInt16LE(leaf.entries.length, 0x38);
  buf.writeUInt16LE(used, 0x3a);
  return sealBlock(buf);
}

export function decodeDirLeaf(buf: Buffer): DirLeaf {
  const owned = readOwnedHeader(buf);
  const blkno = owned.blkno;
  return {
    ...owned,
    entries: decodeDirents(buf, DIR_LEAF_ENTRIES_OFFSET, buf.readUInt16LE(0x38), buf.readUInt16LE(0x3a), blkno),
  };
}

/**
 * `leaf` (equal to what `image` decodes to) with every name a view into `image`, where
 * encodeDirLeaf put it: a leaf whose names are views of older images would keep those
 * alive. Cheaper than a decode: nothing is parsed or checked again. Entries already viewing
 * the right bytes are kept; the others are replaced (Dirents are never changed in place).
 */
export function viewDirLeafOverImage(leaf: DirLeaf, image: Buffer): DirLeaf {
  let p = image.byteOffset + DIR_LEAF_ENTRIES_OFFSET;
  const entries = leaf.entries;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const at = p + DIRENT_HEADER_BYTES;
    if (e.name.buffer !== image.buffer || e.name.byteOffset !== at) {
      const name = image.subarray(at - image.byteOffset, at - image.byteOffset + e.name.length);
      entries[i] = { ino: e.ino, cookie: e.cookie, fileType: e.fileType, name };
    }
    p = at + e.name.length;
  }
  return leaf;
}

/**
 * A copy with its own entries array, equal to decodeDirLeaf(encodeDirLeaf(leaf)). The Dirent
 * objects and their names are shared: they are never changed in place, only replaced.
 */
export function cloneDirLeaf(leaf: DirLeaf): DirLeaf {
  return { ...leaf, suballoc: { ...leaf.suballoc }, entries: leaf.entries.slice() };
}

export function checkName(name: Buffer): void {
  if (name.length === 0 || name.length > MAX_NAME_BYTES) throw new RangeError('bad name length');
}

/** MurmurHash3 x86 32-bit; seeded with the volume's dir_hash_seed so names hash per volume. */
export function murmur3(data: Buffer, seed: number): number {
  let h = seed >>> 0;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  const nblocks = data.length >> 2;
  for (let i = 0; i < nblocks; i++) {
    let k = data.readUInt32LE(i * 4);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  const tail = nblocks * 4;
  const rem = data.length & 3;
  if (rem > 0) {
    if (rem === 3) k ^= data[tail + 2] << 16;
    if (rem >= 2) k ^= data[tail + 1] << 8;
    k ^= data[tail];
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= data.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit major hash of a name: the key of the directory index. */
export function nameMajorHash(name: Buffer, seed: number): number {
  return murmur3(name, seed);
}

/**
 * The preferred cookie of a name: major hash in the high bits, 20 bits of a second hash
 * below. Insertion probes upward within the same major hash when the cookie is taken.
 */
export function nameCookie(name: Buffer, seed: number): number {
  const major = nameMajorHash(name, seed);
  const minor = murmur3(name, (seed ^ 0x9747b28c) >>> 0) & ((1 << COOKIE_MINOR_BITS) - 1);
  return Math.max(COOKIE_FIRST, major * 2 ** COOKIE_MINOR_BITS + minor);
}
