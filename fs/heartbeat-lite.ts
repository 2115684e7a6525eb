// Liveness of a mount through the heartbeat area, for stacks without o2hb (local mounts):
// a mount rewrites its node's heartbeat block every HEARTBEAT_INTERVAL_MS, so a second
// mount of the same volume can tell a live mount from one that crashed and left its slot
// behind. (The o2cb stack's o2hb does this properly, on a worker thread.)
import { SIG, SYSFILE } from './format/constants';
import { decodeHeartbeat, encodeHeartbeat } from './format/heartbeat';
import { Transaction } from './transaction';
import type { Volume } from './volume';
import { randomInt } from 'node:crypto';

export const HEARTBEAT_INTERVAL_MS = 1000;
/** A heartbeat older than this is dead without further sampling. */
const STALE_MS = 10 * HEARTBEAT_INTERVAL_MS;

async function heartbeatBlock(vol: Volume, nodeNum: number): Promise<number> {
  const tx = new Transaction(vol);
  const ino = await tx.getInode(await vol.systemInode(SYSFILE.heartbeat));
  if (ino.body.kind !== 'extents' || ino.body.list.records.length === 0) throw new Error('heartbeat file has no blocks');
  return ino.body.list.records[0].blkno + nodeNum;
}

async function readBeat(vol: Volume, blkno: number): Promise<{ seq: number; timeMs: number } | null> {
  try {
    const buf = await vol.dev.read(blkno * vol.geo.blockSize, vol.geo.blockSize);
    if (buf.toString('latin1', 0, 8) !== SIG.heartbeat) return null;
    const hb = decodeHeartbeat(buf);
    return { seq: hb.seq, timeMs: hb.timeMs };
  } catch {
    return null;
  }
}

/** True when node `nodeNum` is heartbeating on the volume right now. */
export async function nodeIsAlive(vol: Volume, nodeNum: number): Promise<boolean> {
  const blkno = await heartbeatBlock(vol, nodeNum);
  const first = await readBeat(vol, blkno);
  if (!first || first.seq === 0 || Math.abs(Date.now() - first.timeMs) > STALE_MS) return false;
  await new Promise((r) => setTimeout(r, 2.5 * HEARTBEAT_INTERVAL_MS));
  const second = await readBeat(vol, blkno);
  return !!second && second.seq !== first.seq;
}

export class HeartbeatWriter {
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private readonly generation = randomInt(1, 2 ** 47);

  private constructor(private readonly vol: Volume, private readonly nodeNum: number, private readonly blkno: number) {}

  static async start(vol: Volume, nodeNum: number): Promise<HeartbeatWriter> {
    const w = new HeartbeatWriter(vol, nodeNum, await heartbeatBlock(vol, nodeNum));
    await w.beat();
    w.timer = setInterval(() => void w.beat().catch(() => undefined), HEARTBEAT_INTERVAL_MS);
    w.timer.unref();
    return w;
  }

  private async beat(): Promise<void> {
    this.seq += 1;
    const bs = this.vol.geo.blockSize;
    await this.vol.dev.write(this.blkno * bs, encodeHeartbeat({ blkno: this.blkno, fsGeneration: this.vol.fsGeneration, seq: this.seq, nodeNum: this.nodeNum, deadMs: STALE_MS, hbGeneration: this.generation, timeMs: Date.now() }, bs));
  }

  /** Stops beating and marks the block as never written (a clean exit, not a death). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const bs = this.vol.geo.blockSize;
    await this.vol.dev.write(this.blkno * bs, encodeHeartbeat({ blkno: this.blkno, fsGeneration: this.vol.fsGeneration, seq: 0, nodeNum: this.nodeNum, deadMs: 0, hbGeneration: 0, timeMs: 0 }, bs));
  }
}
