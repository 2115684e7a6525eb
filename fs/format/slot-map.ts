// Slot map codec: which node occupies which slot. The slot_map system file holds
// ceil(max_slots / records_per_block) blocks, each:
//   0x00 header (O2SLOTMP)
//   0x20 first_slot u16, count u16, reserved u32
//   0x28 records, 8 bytes each: flags u8 (1 = in use), reserved u8, node_num u16,
//        mount_generation u32 (random per mount: tells a remount from a stale entry)
import { CorruptionError } from '../errors';
import { MAX_NODES, SIG } from './constants';
import { readU64, sealBlock, writeHeader } from './header';

const RECORDS_OFFSET = 0x28;
const RECORD_BYTES = 8;

export interface SlotRecord {
  inUse: boolean;
  nodeNum: number;
  mountGeneration: number;
}

export function slotsPerBlock(bs: number): number {
  return Math.floor((bs - RECORDS_OFFSET) / RECORD_BYTES);
}

export function encodeSlotMapBlock(recs: SlotRecord[], firstSlot: number, blkno: number, fsGeneration: number, bs: number): Buffer {
  if (recs.length > slotsPerBlock(bs)) throw new RangeError('too many slot records for one block');
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.slotMap, fsGeneration, blkno, generation: 0 });
  buf.writeUInt16LE(firstSlot, 0x20);
  buf.writeUInt16LE(recs.length, 0x22);
  let p = RECORDS_OFFSET;
  for (const r of recs) {
    buf.writeUInt8(r.inUse ? 1 : 0, p);
    buf.writeUInt16LE(r.nodeNum, p + 2);
    buf.writeUInt32LE(r.mountGeneration >>> 0, p + 4);
    p += RECORD_BYTES;
  }
  return sealBlock(buf);
}

export function decodeSlotMapBlock(buf: Buffer): { firstSlot: number; recs: SlotRecord[] } {
  const blkno = readU64(buf, 0x10);
  const firstSlot = buf.readUInt16LE(0x20);
  const count = buf.readUInt16LE(0x22);
  if (count > slotsPerBlock(buf.length)) throw new CorruptionError(blkno, `slot map block claims ${count} records`);
  const recs: SlotRecord[] = [];
  let p = RECORDS_OFFSET;
  for (let i = 0; i < count; i++, p += RECORD_BYTES) {
    const flags = buf.readUInt8(p);
    const nodeNum = buf.readUInt16LE(p + 2);
    if (flags > 1 || (flags === 1 && nodeNum >= MAX_NODES)) throw new CorruptionError(blkno, `slot ${firstSlot + i} record is invalid`);
    recs.push({ inUse: flags === 1, nodeNum, mountGeneration: buf.readUInt32LE(p + 4) });
  }
  return { firstSlot, recs };
}
