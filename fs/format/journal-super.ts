// Journal superblock codec: the first block of every slot's journal (one contiguous
// extent of the journal:NNNN system file). The record formats that follow it (descriptor,
// revoke, commit) belong to the journal itself (fs/journal.ts, a later issue).
//   0x00 header (O2JRNLSB)
//   0x20 total_blocks u32 (including this one), first_log_block u32 (1)
//   0x28 sequence u64 (id of the next transaction to write)
//   0x30 start u32 (log block of the oldest live transaction; 0 = journal empty)
//   0x34 flags u32 (reserved)
//   0x38 start_sequence u64 (id of the transaction at start)
import { CorruptionError } from '../errors';
import { SIG } from './constants';
import { readU64, sealBlock, writeHeader, writeU64 } from './header';

export interface JournalSuper {
  blkno: number;
  fsGeneration: number;
  totalBlocks: number;
  firstLogBlock: number;
  sequence: number;
  start: number;
  startSequence: number;
}

export function encodeJournalSuper(js: JournalSuper, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.journalSuper, fsGeneration: js.fsGeneration, blkno: js.blkno, generation: 0 });
  buf.writeUInt32LE(js.totalBlocks, 0x20);
  buf.writeUInt32LE(js.firstLogBlock, 0x24);
  writeU64(buf, 0x28, js.sequence);
  buf.writeUInt32LE(js.start, 0x30);
  writeU64(buf, 0x38, js.startSequence);
  return sealBlock(buf);
}

export function decodeJournalSuper(buf: Buffer): JournalSuper {
  const js: JournalSuper = {
    blkno: readU64(buf, 0x10),
    fsGeneration: buf.readUInt32LE(0x0c),
    totalBlocks: buf.readUInt32LE(0x20),
    firstLogBlock: buf.readUInt32LE(0x24),
    sequence: readU64(buf, 0x28),
    start: buf.readUInt32LE(0x30),
    startSequence: readU64(buf, 0x38),
  };
  if (js.firstLogBlock !== 1 || js.totalBlocks < 2 || js.start >= js.totalBlocks || js.sequence === 0) {
    throw new CorruptionError(js.blkno, `journal superblock geometry is invalid (blocks ${js.totalBlocks}, start ${js.start}, sequence ${js.sequence})`);
  }
  return js;
}
