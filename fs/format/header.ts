// The 32-byte header that starts every metadata block, and the checksum that seals it.
//
//   0x00 signature      8 bytes ASCII (constants.SIG)
//   0x08 crc32c         u32 over the whole block with this field zero
//   0x0C fs_generation  u32 volume identity (random at mkfs; every block must match)
//   0x10 blkno          u64 the block's own number
//   0x18 generation     u32 object generation (inode generation, group generation, ...)
//   0x1C reserved       u32
//
// Blocks handed out by a suballocator (inodes, extent blocks, directory leaves, xattr
// blocks) continue with the suballoc triple, so the block can be freed back:
//   0x20 suballoc_slot  u16 (GLOBAL_SLOT = the global inode allocator)
//   0x22 reserved       u16
//   0x24 suballoc_bit   u32
//   0x28 suballoc_loc   u64 block number of the group descriptor
import { crc32c } from '@node-rs/crc32';
import { CorruptionError } from '../errors';
import type { Signature } from './constants';

export const HEADER_BYTES = 0x20;
export const SUBALLOC_HEADER_BYTES = 0x30;
const CRC_OFFSET = 0x08;
export const BLKNO_OFFSET = 0x10;
export const GENERATION_OFFSET = 0x18;

export interface BlockHeader {
  signature: Signature;
  fsGeneration: number;
  blkno: number;
  generation: number;
}

export interface Suballoc {
  slot: number;
  bit: number;
  groupBlkno: number;
}

// u64 fields hold values below 2^53 in memory; two 32-bit halves avoid BigInt on the hot path.
// Written byte by byte: Buffer.writeUInt32LE's own checks made this a third of the cost of
// encoding a directory leaf. Byte stores past the end are silently dropped, hence the check.
export function writeU64(buf: Buffer, off: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`u64 field out of range: ${value}`);
  if (!(off >= 0 && off + 8 <= buf.length)) throw new RangeError(`u64 field at ${off} is outside a ${buf.length}-byte buffer`);
  const lo = value % 0x100000000;
  const hi = Math.floor(value / 0x100000000);
  buf[off] = lo;
  buf[off + 1] = lo >>> 8;
  buf[off + 2] = lo >>> 16;
  buf[off + 3] = lo >>> 24;
  buf[off + 4] = hi;
  buf[off + 5] = hi >>> 8;
  buf[off + 6] = hi >>> 16;
  buf[off + 7] = hi >>> 24;
}

export function readU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 0x200000) return Number.MAX_SAFE_INTEGER; // beyond 2^53: caught by range checks
  return hi * 0x100000000 + buf.readUInt32LE(off);
}

export function writeI64(buf: Buffer, off: number, value: number): void {
  buf.writeBigInt64LE(BigInt(Math.trunc(value)), off);
}

export function readI64(buf: Buffer, off: number): number {
  return Number(buf.readBigInt64LE(off));
}

export function writeHeader(buf: Buffer, h: BlockHeader): void {
  buf.write(h.signature, 0, 8, 'latin1');
  buf.writeUInt32LE(0, CRC_OFFSET);
  buf.writeUInt32LE(h.fsGeneration >>> 0, 0x0c);
  writeU64(buf, 0x10, h.blkno);
  buf.writeUInt32LE(h.generation >>> 0, 0x18);
  buf.writeUInt32LE(0, 0x1c);
}

export function readHeader(buf: Buffer): BlockHeader {
  return {
    signature: buf.toString('latin1', 0, 8) as Signature,
    fsGeneration: buf.readUInt32LE(0x0c),
    blkno: readU64(buf, 0x10),
    generation: buf.readUInt32LE(0x18),
  };
}

export function writeSuballoc(buf: Buffer, s: Suballoc): void {
  buf.writeUInt16LE(s.slot, 0x20);
  buf.writeUInt16LE(0, 0x22);
  buf.writeUInt32LE(s.bit >>> 0, 0x24);
  writeU64(buf, 0x28, s.groupBlkno);
}

export function readSuballoc(buf: Buffer): Suballoc {
  return { slot: buf.readUInt16LE(0x20), bit: buf.readUInt32LE(0x24), groupBlkno: readU64(buf, 0x28) };
}

/** Computes the block's CRC32C (with the CRC field taken as zero). */
const ZERO_CRC = Buffer.alloc(4);

/**
 * CRC32C of the block with its checksum field taken as zero. Reads only: a cached image may
 * be on its way to the disk from a threadpool thread at the same moment.
 */
export function blockChecksum(buf: Buffer): number {
  let crc = crc32c(buf.subarray(0, CRC_OFFSET));
  crc = crc32c(ZERO_CRC, crc);
  return crc32c(buf.subarray(CRC_OFFSET + 4), crc) >>> 0;
}

/** Stores the checksum; the last step before a metadata block goes to disk. */
export function sealBlock(buf: Buffer): Buffer {
  buf.writeUInt32LE(0, CRC_OFFSET);
  buf.writeUInt32LE(crc32c(buf) >>> 0, CRC_OFFSET);
  return buf;
}

/**
 * Checks a metadata block read from disk: signature, checksum, own block number and volume
 * identity. Throws CorruptionError naming the first failed check.
 */
export function verifyBlock(buf: Buffer, blkno: number, signature: Signature, fsGeneration: number): BlockHeader {
  const h = readHeader(buf);
  if (h.signature !== signature) {
    throw new CorruptionError(blkno, `bad signature ${JSON.stringify(h.signature.replace(/[^\x20-\x7e]/g, '?'))}, expected ${signature}`);
  }
  const stored = buf.readUInt32LE(CRC_OFFSET);
  const actual = blockChecksum(buf);
  if (stored !== actual) {
    throw new CorruptionError(blkno, `${signature} checksum mismatch (stored ${hex(stored)}, computed ${hex(actual)})`);
  }
  if (h.blkno !== blkno) throw new CorruptionError(blkno, `${signature} claims to be block ${h.blkno}`);
  if (h.fsGeneration !== fsGeneration >>> 0) {
    throw new CorruptionError(blkno, `${signature} belongs to another volume (fs_generation ${hex(h.fsGeneration)}, expected ${hex(fsGeneration)})`);
  }
  return h;
}

function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

/**
 * Blocks a suballocator hands out on behalf of one inode (extent blocks, directory leaves,
 * xattr blocks) share their first 0x38 bytes: header, suballoc triple, owner at 0x30.
 */
export interface OwnedBlock {
  blkno: number;
  fsGeneration: number;
  suballoc: Suballoc;
  ownerBlkno: number;
}

export function writeOwnedHeader(buf: Buffer, signature: Signature, b: OwnedBlock): void {
  writeHeader(buf, { signature, fsGeneration: b.fsGeneration, blkno: b.blkno, generation: 0 });
  writeSuballoc(buf, b.suballoc);
  writeU64(buf, 0x30, b.ownerBlkno);
}

export function readOwnedHeader(buf: Buffer): OwnedBlock {
  return { blkno: readU64(buf, 0x10), fsGeneration: buf.readUInt32LE(0x0c), suballoc: readSuballoc(buf), ownerBlkno: readU64(buf, 0x30) };
}
