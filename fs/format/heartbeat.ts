// Heartbeat block codec: the heartbeat system file has one block per node number
// (MAX_NODES blocks, contiguous). Node n writes only block n.
//   0x00 header (O2HBEAT1; blkno = the block's own number)
//   0x20 seq u64 (0 = never written; increases with every write)
//   0x28 node_num u8, reserved u8, reserved u16
//   0x2C dead_ms u32 (the writer's dead threshold, advertised so mismatches are noticed)
//   0x30 hb_generation u64 (random per heartbeat start: a restart is visible)
//   0x38 time_ms u64 (writer's wall clock)
import { SIG } from './constants';
import { readU64, sealBlock, writeHeader, writeU64 } from './header';

export interface HeartbeatBlock {
  blkno: number;
  fsGeneration: number;
  seq: number;
  nodeNum: number;
  deadMs: number;
  hbGeneration: number;
  timeMs: number;
}

export function encodeHeartbeat(hb: HeartbeatBlock, bs: number): Buffer {
  const buf = Buffer.alloc(bs);
  writeHeader(buf, { signature: SIG.heartbeat, fsGeneration: hb.fsGeneration, blkno: hb.blkno, generation: 0 });
  writeU64(buf, 0x20, hb.seq);
  buf.writeUInt8(hb.nodeNum, 0x28);
  buf.writeUInt32LE(hb.deadMs >>> 0, 0x2c);
  writeU64(buf, 0x30, hb.hbGeneration);
  writeU64(buf, 0x38, hb.timeMs);
  return sealBlock(buf);
}

export function decodeHeartbeat(buf: Buffer): HeartbeatBlock {
  return {
    blkno: readU64(buf, 0x10),
    fsGeneration: buf.readUInt32LE(0x0c),
    seq: readU64(buf, 0x20),
    nodeNum: buf.readUInt8(0x28),
    deadMs: buf.readUInt32LE(0x2c),
    hbGeneration: readU64(buf, 0x30),
    timeMs: readU64(buf, 0x38),
  };
}
