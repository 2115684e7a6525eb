// One lock resource as a node sees it: the master's three queues and the shuffle that
// grants from them (reference §3.2), plus the node-local bookkeeping (owner, refmap, this
// node's own locks). The queue logic is pure: it changes state and returns the ASTs and
// BASTs to send, so the caller decides how and when messages go out.
import { LVB_BYTES, Lksb } from '../../../stackglue/types';
import { MODE_EX, MODE_IV, MODE_NL, modesCompatible } from './modes';
import { OWNER_UNKNOWN, QUEUE } from './status';
import type { LockRecord } from './messages';

/** A lock as the master keeps it. */
export interface Lock {
  node: number;
  seq: number;
  /** Mode held; IV while on the blocked queue. */
  granted: number;
  /** Mode wanted; IV while on the granted queue. */
  requested: number;
  /** The pending request asked for the value block (get on grant). */
  getLvb: boolean;
  /** Highest level a BAST has told this lock about since its mode last changed. */
  highestBlocked: number;
}

export type QueueName = 'granted' | 'converting' | 'blocked';

/** A message the master owes a lock's node. */
export interface AstOut {
  kind: 'ast' | 'bast';
  node: number;
  seq: number;
  /** AST: the mode now granted; BAST: the level someone is waiting for. */
  mode: number;
  /** AST with get: the resource's value block. */
  lvb?: Buffer;
}

export class Queues {
  granted: Lock[] = [];
  converting: Lock[] = [];
  blocked: Lock[] = [];
  /** The resource's value block: zero for a new resource, and zeroed when lost. */
  lvb: Buffer = Buffer.alloc(LVB_BYTES);

  find(node: number, seq: number): { lock: Lock; queue: QueueName } | null {
    for (const queue of ['granted', 'converting', 'blocked'] as const) {
      const lock = this[queue].find((l) => l.node === node && l.seq === seq);
      if (lock) return { lock, queue };
    }
    return null;
  }

  get lockCount(): number {
    return this.granted.length + this.converting.length + this.blocked.length;
  }

  /** Every lock, in queue order. */
  all(): Lock[] {
    return [...this.granted, ...this.converting, ...this.blocked];
  }

  remove(lock: Lock): void {
    for (const queue of ['granted', 'converting', 'blocked'] as const) {
      const i = this[queue].indexOf(lock);
      if (i >= 0) {
        this[queue].splice(i, 1);
        return;
      }
    }
    throw new Error(`assertion: lock ${lock.node}:${lock.seq} is on no queue`);
  }

  /** Is `mode` compatible with what every lock other than `except` holds? */
  private fitsHeld(mode: number, except: Lock | null): boolean {
    for (const l of this.granted) if (l !== except && !modesCompatible(l.granted, mode)) return false;
    for (const l of this.converting) if (l !== except && !modesCompatible(l.granted, mode)) return false;
    return true;
  }

  /** A new lock may be granted at once: nobody queued ahead of it, nothing in its way. */
  canGrantNew(mode: number): boolean {
    if (this.blocked.length > 0) return false;
    return this.fitsHeld(mode, null) && this.converting.every((c) => modesCompatible(c.requested, mode));
  }

  /** An up-convert may be granted at once: no earlier convert waits, nothing holds against it. */
  canConvertNow(lock: Lock, mode: number): boolean {
    return this.converting.length === 0 && this.fitsHeld(mode, lock);
  }

  /** Moves `lock` to granted at `mode` and returns its AST. */
  grant(lock: Lock, mode: number, fromQueue: QueueName | null): AstOut {
    if (fromQueue !== null) {
      const q = this[fromQueue];
      const i = q.indexOf(lock);
      if (i < 0) throw new Error(`assertion: lock ${lock.node}:${lock.seq} not on ${fromQueue}`);
      q.splice(i, 1);
    }
    const up = mode > (lock.granted === MODE_IV ? MODE_NL - 1 : lock.granted);
    const get = lock.getLvb && up && mode !== MODE_NL;
    lock.granted = mode;
    lock.requested = MODE_IV;
    lock.getLvb = false;
    lock.highestBlocked = MODE_IV;
    this.granted.push(lock);
    return { kind: 'ast', node: lock.node, seq: lock.seq, mode, lvb: get ? Buffer.from(this.lvb) : undefined };
  }

  /**
   * dlm_thread's shuffle: grant the converting head while it fits, then the blocked head;
   * for a head that does not fit, BAST every holder in its way (once per level).
   */
  shuffle(): AstOut[] {
    const out: AstOut[] = [];
    // Each pass grants one lock or stops; a resource has fewer locks than this bound.
    for (let pass = 0; pass <= this.lockCount + 1; pass++) {
      const conv = this.converting[0];
      if (conv) {
        if (this.fitsHeld(conv.requested, conv)) {
          out.push(this.grant(conv, conv.requested, 'converting'));
          continue;
        }
        this.blockingAsts(conv, out);
      }
      const head = this.blocked[0];
      if (head) {
        if (this.fitsHeld(head.requested, null) && this.converting.every((c) => modesCompatible(c.requested, head.requested))) {
          out.push(this.grant(head, head.requested, 'blocked'));
          continue;
        }
        this.blockingAsts(head, out);
      }
      return out;
    }
    throw new Error('assertion: shuffle did not settle');
  }

  /** Blocking ASTs for a request of `mode` that was refused (NOQUEUEBAST): nothing waits. */
  nudge(asker: Lock | null, mode: number): AstOut[] {
    const out: AstOut[] = [];
    this.blockingAsts({ ...(asker ?? { node: -1, seq: -1, granted: MODE_IV, getLvb: false, highestBlocked: MODE_IV }), requested: mode } as Lock, out, asker);
    return out;
  }

  private blockingAsts(waiter: Lock, out: AstOut[], self: Lock | null = waiter): void {
    for (const holder of [...this.granted, ...this.converting]) {
      if (holder === waiter || holder === self || modesCompatible(holder.granted, waiter.requested)) continue;
      // One BAST per level: a holder already told about this level (or a higher one)
      // is not told again until its mode changes.
      if (holder.highestBlocked >= waiter.requested) continue;
      holder.highestBlocked = waiter.requested;
      out.push({ kind: 'bast', node: holder.node, seq: holder.seq, mode: waiter.requested });
    }
  }

  /** Asserts the invariant the whole lock manager exists for. */
  checkInvariant(name: string): void {
    const held = [...this.granted, ...this.converting];
    for (let i = 0; i < held.length; i++) {
      for (let j = i + 1; j < held.length; j++) {
        if (!modesCompatible(held[i].granted, held[j].granted)) {
          throw new Error(`assertion: ${name}: ${held[i].node}:${held[i].seq} holds ${held[i].granted} against ${held[j].node}:${held[j].seq} ${held[j].granted}`);
        }
      }
    }
  }

  records(): LockRecord[] {
    const rec = (l: Lock, queue: number): LockRecord => ({
      node: l.node, seq: l.seq, queue, granted: l.granted, requested: l.requested, getLvb: l.getLvb, highestBlocked: l.highestBlocked,
    });
    return [
      ...this.granted.map((l) => rec(l, QUEUE.GRANTED)),
      ...this.converting.map((l) => rec(l, QUEUE.CONVERTING)),
      ...this.blocked.map((l) => rec(l, QUEUE.BLOCKED)),
    ];
  }

  /** Rebuilds the queues from records (migration, recovery); keeps record order within a queue. */
  load(records: readonly LockRecord[]): void {
    for (const r of records) {
      if (this.find(r.node, r.seq)) throw new Error(`assertion: lock ${r.node}:${r.seq} reported twice`);
      const lock: Lock = { node: r.node, seq: r.seq, granted: r.granted, requested: r.requested, getLvb: r.getLvb, highestBlocked: r.highestBlocked };
      if (r.queue === QUEUE.GRANTED) this.granted.push(lock);
      else if (r.queue === QUEUE.CONVERTING) this.converting.push(lock);
      else this.blocked.push(lock);
    }
  }

  /** Drops every lock of `node`; true when one of them held EX (the LVB may be half-written). */
  removeNode(node: number): boolean {
    let heldEx = false;
    for (const queue of ['granted', 'converting', 'blocked'] as const) {
      for (const l of this[queue]) if (l.node === node && l.granted === MODE_EX) heldEx = true;
      this[queue] = this[queue].filter((l) => l.node !== node);
    }
    return heldEx;
  }
}

/** A request this node's client has issued on one of its locks. */
export interface PendingRequest {
  kind: 'create' | 'convert' | 'unlock';
  /** Target mode (NL for unlock). */
  mode: number;
  flags: number;
  /** waiting: not sent; sent: on the wire or its outcome unknown; acked: queued at the master. */
  phase: 'waiting' | 'sent' | 'acked';
  /** Set by recovery when the master died with this request's outcome unknown. */
  fix: 'complete' | 'resend' | 'cancelled' | null;
  /** The caller asked to cancel it before it was sent. */
  cancelRequested: boolean;
  /** The value block sent with it (a put), captured when issued. */
  lvb: Buffer;
}

/** One of this node's own locks (the client side of a lock). */
export interface LocalLock {
  seq: number;
  lksb: Lksb;
  res: Resource;
  /** Mode held; IV until first granted. */
  granted: number;
  pending: PendingRequest | null;
  /** A cancel in progress: sent to the master, or answered CANCELGRANT while the AST is still on its way. */
  cancel: { phase: 'sent' | 'grant-coming' } | null;
  /** lksb.lvb holds the resource's value as of this lock's last get (valid only while PR+). */
  lvbSeen: boolean;
}

export class Resource {
  owner = OWNER_UNKNOWN;
  q = new Queues();
  /** Master only: nodes holding a copy of this resource (they have or may soon have locks). */
  readonly refmap = new Set<number>();
  /** This node's locks on it, by sequence number. */
  readonly local = new Map<number, LocalLock>();
  /** The master died; waits for recovery to name a new one. */
  recovering = false;
  /** Master is handing it over (to this node) ; requests wait until ASSERT_MASTER. */
  migratingTo: number | null = null;
  mastering: Promise<void> | null = null;
  /** Client operations on this resource run one at a time, in issue order. */
  chain: Promise<void> = Promise.resolve();
  /** Operations queued or running on `chain` (purge waits for zero). */
  busy = 0;
  /** PROXY_ASTs sent and not yet answered (migration waits for zero). */
  astsInFlight = 0;
  idleSinceMs: number;

  constructor(readonly name: string, nowMs: number) {
    this.idleSinceMs = nowMs;
  }

  /** Unused: no locks of ours, no client operation, and (as master) no locks of anyone's. */
  isIdle(thisNode: number): boolean {
    if (this.local.size > 0 || this.busy > 0 || this.mastering !== null || this.astsInFlight > 0) return false;
    if (this.owner === thisNode && this.q.lockCount > 0) return false;
    return true;
  }
}
