// The liveness rules of o2hb for one peer's heartbeat slot, as a pure state machine: feed it
// one sample per heartbeat pass and it says when the peer comes up or goes down. It holds no
// timers and does no I/O, so tests drive it sample by sample (test/o2hb/slots.test.ts) and
// the worker thread (o2hb-worker.ts) runs the very same code on real disk reads.
//
// Rules (reference/ocfs2.md §4.1, our own wording in dlm/PROTOCOL.md §5):
// - a sample whose seq differs from the last one is a change; anything else is a miss;
// - a slot comes up after LIVE_THRESHOLD changes; misses reset that count only once the
//   slot has been still for the whole dead threshold (it was never really coming up);
// - a live slot goes down after deadThreshold consecutive misses;
// - a block that fails its checks (signature, CRC, block number, volume, node number) is a
//   miss: it never keeps a node alive, and it never crashes the loop;
// - a new hb generation on a live slot is a restart: down now, then up again after the
//   usual changes; generation 0 is the mark of a clean stop: down now;
// - a peer that advertises another dead time gets one warning per generation.
import { SIG } from '../../fs/format/constants';
import { verifyBlock } from '../../fs/format/header';
import { decodeHeartbeat } from '../../fs/format/heartbeat';

/** Changes a slot must show before it counts as live (OCFS2's O2HB_LIVE_THRESHOLD). */
export const LIVE_THRESHOLD = 2;

export type HbSample =
  | { kind: 'ok'; seq: number; hbGeneration: number; deadMs: number }
  | { kind: 'bad'; why: string };

export type DownReason = 'timeout' | 'clean' | 'generation';

export type SlotEvent =
  | { type: 'up'; node: number; hbGeneration: number }
  | { type: 'down'; node: number; reason: DownReason }
  | { type: 'log'; line: string };

/** Checks one block read from slot `node` and turns it into a sample; never throws. */
export function sampleOf(buf: Buffer, blkno: number, fsGeneration: number, node: number): HbSample {
  try {
    verifyBlock(buf, blkno, SIG.heartbeat, fsGeneration);
  } catch (err) {
    return { kind: 'bad', why: (err as Error).message };
  }
  const hb = decodeHeartbeat(buf);
  if (hb.nodeNum !== node) return { kind: 'bad', why: `block ${blkno} claims node ${hb.nodeNum}` };
  return { kind: 'ok', seq: hb.seq, hbGeneration: hb.hbGeneration, deadMs: hb.deadMs };
}

export class SlotTracker {
  readonly node: number;
  private readonly deadThreshold: number;
  private readonly ourDeadMs: number;
  private liveNow = false;
  private lastSeq = 0;
  private lastGeneration = 0;
  private changedSamples = 0;
  private equalSamples = 0;
  private badStreak = false;
  private warnedDeadMsGeneration = 0;

  constructor(node: number, deadThreshold: number, ourDeadMs: number) {
    if (!Number.isInteger(deadThreshold) || deadThreshold < 2) throw new RangeError(`deadThreshold must be an integer >= 2: ${deadThreshold}`);
    this.node = node;
    this.deadThreshold = deadThreshold;
    this.ourDeadMs = ourDeadMs;
  }

  get live(): boolean {
    return this.liveNow;
  }

  /** Feeds one pass's sample; returns what happened, in order. */
  sample(s: HbSample): SlotEvent[] {
    const events: SlotEvent[] = [];
    if (s.kind === 'bad') {
      // Log the start of a bad stretch only: a corrupt slot of a dead node would otherwise
      // log every pass forever.
      if (!this.badStreak) events.push({ type: 'log', line: `node ${this.node}: unreadable heartbeat block (counted as a miss): ${s.why}` });
      this.badStreak = true;
      this.miss(events);
      return events;
    }
    if (this.badStreak) events.push({ type: 'log', line: `node ${this.node}: heartbeat block is valid again` });
    this.badStreak = false;

    if (s.hbGeneration === 0) {
      // Never started (mkfs wrote it so) or stopped cleanly: nothing to wait for.
      if (this.liveNow) this.goDown(events, 'clean');
      this.reset(s.seq, 0, 0);
      return events;
    }
    if (s.hbGeneration !== this.lastGeneration) {
      // A writer we have not seen before: a restart if the slot was live.
      if (this.liveNow) this.goDown(events, 'generation');
      // Its first block counts as a change, as a slot's first block after mkfs does.
      this.reset(s.seq, s.hbGeneration, s.seq !== 0 ? 1 : 0);
    } else if (s.seq !== this.lastSeq) {
      this.lastSeq = s.seq;
      this.changedSamples++;
      this.equalSamples = 0;
    } else {
      this.miss(events);
    }

    if (s.deadMs !== this.ourDeadMs && this.warnedDeadMsGeneration !== s.hbGeneration) {
      this.warnedDeadMsGeneration = s.hbGeneration;
      events.push({ type: 'log', line: `warning: node ${this.node} advertises a dead time of ${s.deadMs} ms but this node uses ${this.ourDeadMs} ms; nodes must agree` });
    }
    if (!this.liveNow && this.changedSamples >= LIVE_THRESHOLD) {
      this.liveNow = true;
      this.equalSamples = 0;
      events.push({ type: 'up', node: this.node, hbGeneration: this.lastGeneration });
    }
    return events;
  }

  private miss(events: SlotEvent[]): void {
    this.equalSamples++;
    if (this.equalSamples < this.deadThreshold) return;
    if (this.liveNow) this.goDown(events, 'timeout');
    // Still for the whole dead time: whatever changes it showed before are history.
    this.changedSamples = 0;
    this.equalSamples = 0;
  }

  private goDown(events: SlotEvent[], reason: DownReason): void {
    this.liveNow = false;
    this.changedSamples = 0;
    this.equalSamples = 0;
    events.push({ type: 'down', node: this.node, reason });
  }

  private reset(seq: number, generation: number, changed: number): void {
    this.lastSeq = seq;
    this.lastGeneration = generation;
    this.changedSamples = changed;
    this.equalSamples = 0;
  }
}
