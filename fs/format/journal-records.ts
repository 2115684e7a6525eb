// Journal log records (fs/journal.ts writes them, replay reads them). Each is one block
// with the common header (blkno = the physical block it sits in, fs_generation = the
// volume's), so a stale or misplaced block never passes for a record.
//
// Descriptor (O2JDESC1): the block images that follow it, in order.
//   0x20 sequence u64, 0x28 count u32, 0x2C reserved u32, 0x30 target block numbers u64 x count
// Revoke (O2JREVOK): blocks freed in this transaction; older images of them are not replayed.
//   0x20 sequence u64, 0x28 count u32, 0x2C reserved u32, 0x30 block numbers u64 x count
// Commit (O2JCOMMT): ends a transaction.
//   0x20 sequence u64, 0x28 blocks u32 (descriptor, image and revoke blocks before it),
//   0x2C crc32c u32 over those blocks in log order, 0x30 commit time ms u64
// A transaction is complete only if its commit block has its sequence and a matching
// checksum: a torn transaction (power cut mid-write) is ignored, not replayed.
import { CorruptionError } from '../errors';
import { SIG } from './constants';
import { readHeader, readU64, sealBlock, verifyBlock, writeHeader, writeU64 } from './header';

const LIST_OFFSET = 0x30;

export function blocksPerRecord(bs: number): number {
  return Math.floor((bs - LIST_OFFSET) / 8);
}

export type RecordKind = 'descriptor' | 'revoke' | 'commit';

export interface ListRecord {
  kind: 'descriptor' | 'revoke';
  sequence: number;
  blocks: number[];
}

export interface CommitRecord {
  kind: 'commit';
  sequence: number;
  blockCount: number;
  crc: number;
  timeMs: number;
}

export function encodeListRecord(r: ListRecord, blkno: number, fsGeneration: number, bs: number): Buffer {
  if (r.blocks.length > blocksPerRecord(bs)) throw new RangeError('journal record overflow');
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: r.kind === 'descriptor' ? SIG.journalDescriptor : SIG.journalRevoke, fsGeneration, blkno, generation: 0 });
  writeU64(buf, 0x20, r.sequence);
  buf.writeUInt32LE(r.blocks.length, 0x28);
  r.blocks.forEach((b, i) => writeU64(buf, LIST_OFFSET + 8 * i, b));
  return sealBlock(buf);
}

export function encodeCommit(c: CommitRecord, blkno: number, fsGeneration: number, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.journalCommit, fsGeneration, blkno, generation: 0 });
  writeU64(buf, 0x20, c.sequence);
  buf.writeUInt32LE(c.blockCount, 0x28);
  buf.writeUInt32LE(c.crc >>> 0, 0x2c);
  writeU64(buf, 0x30, c.timeMs);
  return sealBlock(buf);
}

/**
 * Reads a journal record if `buf` is a valid one at `blkno`; null otherwise (end of log,
 * a stale block from an older pass, or damage).
 */
export function decodeRecord(buf: Buffer, blkno: number, fsGeneration: number): ListRecord | CommitRecord | null {
  const sig = readHeader(buf).signature;
  const kind = sig === SIG.journalDescriptor ? 'descriptor' : sig === SIG.journalRevoke ? 'revoke' : sig === SIG.journalCommit ? 'commit' : null;
  if (!kind) return null;
  try {
    verifyBlock(buf, blkno, sig, fsGeneration);
  } catch (e) {
    if (e instanceof CorruptionError) return null;
    throw e;
  }
  const sequence = readU64(buf, 0x20);
  if (kind === 'commit') return { kind, sequence, blockCount: buf.readUInt32LE(0x28), crc: buf.readUInt32LE(0x2c), timeMs: readU64(buf, 0x30) };
  const count = buf.readUInt32LE(0x28);
  if (count > blocksPerRecord(buf.length)) return null;
  const blocks: number[] = [];
  for (let i = 0; i < count; i++) blocks.push(readU64(buf, LIST_OFFSET + 8 * i));
  return { kind, sequence, blocks };
}
