// Quorum: decides whether this node must fence itself after losing network connections to
// nodes that are still heartbeating on the disk. Ported in behaviour from OCFS2's
// cluster/quorum.c (reference/ocfs2.md §4.3):
//   - counts of heartbeating and connected nodes, both including this node;
//   - odd n heartbeating: this node needs a majority, (n+1)/2, connected;
//   - even n: it needs n/2, and at exactly n/2 its half must hold the lowest heartbeating
//     node number (so of two equal halves the one with the lowest node survives);
//   - a node alone never fences on the network;
//   - nodes in transition (heartbeating without a connection, or connected without a
//     heartbeat) hold the decision off; a lost connection to a heartbeating node holds it
//     for quorumDelayMs, long enough for the heartbeat to declare that node dead, and only
//     then, once no holds remain, is a decision made.
// Pure logic: no sockets and no disk; timers are injectable so tests can drive time.
import { EventEmitter } from 'node:events';

export interface QuorumTimers {
  set(fn: () => void, delayMs: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: QuorumTimers = {
  set: (fn, delayMs) => {
    const t = setTimeout(fn, delayMs);
    t.unref(); // a pending quorum decision must not keep a stopping process alive
    return t;
  },
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface QuorumOptions {
  thisNode: number;
  /**
   * Delay between losing a connection to a heartbeating node and deciding. OCFS2 uses
   * (dead threshold + 2) × heartbeat interval: the heartbeat gets its full dead time plus
   * slack to declare the node dead first. Give either this or the two heartbeat values.
   */
  quorumDelayMs?: number;
  heartbeatDeadThreshold?: number;
  heartbeatIntervalMs?: number;
  log?: (line: string) => void;
  timers?: QuorumTimers;
}

export interface QuorumCounts {
  heartbeating: number;
  connected: number;
  lowestHeartbeating: number | null;
  lowestReachable: boolean;
}

export interface QuorumVerdict extends QuorumCounts {
  fence: boolean;
  /** Why this node fences, or why it may continue. */
  reason: string;
}

export const MAX_NODES = 255;

export function defaultQuorumDelayMs(deadThreshold: number, intervalMs: number): number {
  return (deadThreshold + 2) * intervalMs;
}

/**
 * The decision itself, given the current sets (both must contain thisNode to count it;
 * the class below always does). Exported for exhaustive testing.
 */
export function decideQuorum(thisNode: number, heartbeating: ReadonlySet<number>, connected: ReadonlySet<number>): QuorumVerdict {
  const hb = [...heartbeating].sort((a, b) => a - b);
  // Only connections to heartbeating nodes count: a node whose heartbeat is gone is dead
  // to the cluster even if a socket lingers.
  const conn = hb.filter((n) => connected.has(n));
  const lowest = hb.length > 0 ? hb[0] : null;
  const counts: QuorumCounts = {
    heartbeating: hb.length,
    connected: conn.length,
    lowestHeartbeating: lowest,
    lowestReachable: lowest !== null && connected.has(lowest),
  };
  if (!heartbeating.has(thisNode)) return { ...counts, fence: false, reason: 'this node is not heartbeating; no decision' };
  if (hb.length === 1) return { ...counts, fence: false, reason: 'this node is alone; it never fences on the network' };
  const n = hb.length;
  const c = conn.length;
  if (n % 2 === 1) {
    const need = (n + 1) / 2;
    if (c < need) {
      return { ...counts, fence: true, reason: `connected to only ${c} of ${n} heartbeating nodes; ${need} are needed for quorum` };
    }
    return { ...counts, fence: false, reason: `connected to ${c} of ${n} heartbeating nodes; ${need} needed` };
  }
  const half = n / 2;
  if (c < half) {
    return { ...counts, fence: true, reason: `connected to only ${c} of ${n} heartbeating nodes; ${half} are needed for quorum` };
  }
  if (c === half && !counts.lowestReachable) {
    return {
      ...counts,
      fence: true,
      reason: `connected to half (${c} of ${n}) of the heartbeating nodes, but not to the lowest node ${lowest}`,
    };
  }
  return { ...counts, fence: false, reason: `connected to ${c} of ${n} heartbeating nodes${c === half ? `, including the lowest node ${lowest}` : ''}` };
}

export interface QuorumEvents {
  fence: [reason: string];
  decision: [verdict: QuorumVerdict];
}

/**
 * Driven by the heartbeat (heartbeatUp/Down) and by o2net (connUp/connErr). Emits 'fence'
 * at most once: after that this node must stop all I/O and exit. Emits 'decision' for
 * every decision made (for logs and tests).
 */
export class Quorum extends EventEmitter<QuorumEvents> {
  readonly thisNode: number;
  readonly quorumDelayMs: number;
  private readonly heartbeating = new Set<number>();
  private readonly connected = new Set<number>();
  private readonly holds = new Set<number>();
  /** A decision is owed once the holds drain (set when a still-up delay expires). */
  private pending = false;
  private readonly stillUpTimers = new Map<number, unknown>();
  private fenced = false;
  private closed = false;
  private readonly log: (line: string) => void;
  private readonly timers: QuorumTimers;

  constructor(opts: QuorumOptions) {
    super();
    assertNode(opts.thisNode);
    this.thisNode = opts.thisNode;
    if (opts.quorumDelayMs !== undefined) {
      this.quorumDelayMs = opts.quorumDelayMs;
    } else if (opts.heartbeatDeadThreshold !== undefined && opts.heartbeatIntervalMs !== undefined) {
      this.quorumDelayMs = defaultQuorumDelayMs(opts.heartbeatDeadThreshold, opts.heartbeatIntervalMs);
    } else {
      throw new TypeError('quorum: give quorumDelayMs, or heartbeatDeadThreshold and heartbeatIntervalMs');
    }
    if (!Number.isFinite(this.quorumDelayMs) || this.quorumDelayMs < 0) throw new RangeError(`bad quorumDelayMs ${this.quorumDelayMs}`);
    this.log = opts.log ?? (() => undefined);
    this.timers = opts.timers ?? realTimers;
    // This node runs, so it heartbeats (the daemon starts o2hb before us) and it is
    // trivially connected to itself. OCFS2 gets the same from its own hb_up and conn_up.
    this.heartbeating.add(this.thisNode);
    this.connected.add(this.thisNode);
  }

  /** The heartbeat saw `node` come alive. */
  heartbeatUp(node: number): void {
    assertNode(node);
    if (node === this.thisNode || this.closed) return;
    if (this.heartbeating.has(node)) {
      this.log(`quorum: heartbeat up for node ${node}, which was already heartbeating`);
      return;
    }
    this.heartbeating.add(node);
    // Until we also have a connection the node is in transition.
    if (this.connected.has(node)) this.clearHold(node);
    else this.setHold(node);
  }

  /** The heartbeat declared `node` dead: this ends whatever transition it was in. */
  heartbeatDown(node: number): void {
    assertNode(node);
    if (node === this.thisNode || this.closed) return;
    if (!this.heartbeating.delete(node)) {
      this.log(`quorum: heartbeat down for node ${node}, which was not heartbeating`);
      return;
    }
    this.cancelStillUp(node);
    this.clearHold(node);
  }

  /** o2net finished a handshake with `node`. */
  connUp(node: number): void {
    assertNode(node);
    if (node === this.thisNode || this.closed) return;
    this.connected.add(node);
    this.cancelStillUp(node);
    // Connected without a heartbeat is a transition too (until hb_up or hb_down).
    if (this.heartbeating.has(node)) this.clearHold(node);
    else this.setHold(node);
  }

  /**
   * o2net lost its connection to `node`, or gave up connecting to it. If the node still
   * heartbeats, hold decisions and start the still-up delay: either the heartbeat declares
   * it dead meanwhile (no decision needed) or we decide without it.
   */
  connErr(node: number): void {
    assertNode(node);
    if (node === this.thisNode || this.closed) return;
    this.connected.delete(node);
    if (!this.heartbeating.has(node)) return;
    this.setHold(node);
    if (!this.stillUpTimers.has(node)) {
      this.stillUpTimers.set(
        node,
        this.timers.set(() => this.stillUp(node), this.quorumDelayMs),
      );
    }
  }

  /** Stops timers; no more decisions. */
  close(): void {
    this.closed = true;
    for (const h of this.stillUpTimers.values()) this.timers.clear(h);
    this.stillUpTimers.clear();
  }

  hasFenced(): boolean {
    return this.fenced;
  }

  state(): { heartbeating: number[]; connected: number[]; holds: number[]; pending: boolean; quorumDelayMs: number } {
    const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
    return {
      heartbeating: sorted(this.heartbeating),
      connected: sorted(this.connected),
      holds: sorted(this.holds),
      pending: this.pending,
      quorumDelayMs: this.quorumDelayMs,
    };
  }

  // The still-up delay expired with the node heartbeating and unconnected: it is not dead,
  // we just cannot reach it. A decision is now owed.
  private stillUp(node: number): void {
    this.stillUpTimers.delete(node);
    if (this.closed) return;
    this.log(`quorum: node ${node} is still heartbeating ${this.quorumDelayMs} ms after its connection was lost`);
    this.pending = true;
    this.clearHold(node);
    // clearHold decides only if this node's hold was the last one; with no hold left at all
    // (e.g. the node was already released) decide here so the owed decision is not lost.
    if (this.holds.size === 0 && this.pending) this.decide();
  }

  private setHold(node: number): void {
    assert(this.holds.size < MAX_NODES, 'more holds than nodes');
    this.holds.add(node);
  }

  private clearHold(node: number): void {
    if (!this.holds.delete(node)) return;
    if (this.holds.size === 0 && this.pending) this.decide();
  }

  private cancelStillUp(node: number): void {
    const h = this.stillUpTimers.get(node);
    if (h !== undefined) {
      this.timers.clear(h);
      this.stillUpTimers.delete(node);
    }
  }

  private decide(): void {
    this.pending = false;
    if (this.fenced || this.closed) return;
    const v = decideQuorum(this.thisNode, this.heartbeating, this.connected);
    this.log(
      `quorum: heartbeating ${v.heartbeating}, connected ${v.connected}, lowest ${v.lowestHeartbeating} ` +
        `(${v.lowestReachable ? '' : 'un'}reachable): ${v.fence ? 'FENCE' : 'continue'}: ${v.reason}`,
    );
    this.emit('decision', v);
    if (v.fence) {
      this.fenced = true;
      this.emit('fence', `node ${this.thisNode} lost quorum: ${v.reason}`);
    }
  }
}

function assertNode(node: number): void {
  if (!Number.isInteger(node) || node < 0 || node >= MAX_NODES) throw new RangeError(`bad node number ${node}`);
}

function assert(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(`quorum: assertion failed: ${what}`);
}
