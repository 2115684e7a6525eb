// An in-memory o2cb transport for N nodes, driven by a seeded schedule and a virtual
// clock, so that a run of the lock manager is a pure function of its seed.
//   - Every message (request or reply) from a to b travels on the a->b channel with a
//     random delay but never overtakes an earlier one (per-pair FIFO, as over TCP).
//   - The receiving node runs the handlers for one peer one at a time, in arrival order.
//   - kill(n): n stops sending and receiving; requests to or from it fail with EHOSTDOWN
//     at once; after downDelayMs (virtual) the survivors get onNodeDown(n).
//   - partition(a, b): links between the groups drop (requests fail with EHOSTDOWN, the
//     nodes drop out of each other's liveNodes), without any death being declared.
//   - The clock (net.clock) is virtual: timers fire in order of their virtual due time,
//     interleaved with deliveries; when nothing else is due, time jumps to the next timer.
// Events are run one per macrotask (setImmediate), so promise chains settle in between.
import type { Clock } from '../../dlm/o2cb/o2dlm/core';
import { Prng } from '../../fs/prng';
import { MembershipEvents, MessageHandler, Transport, TransportError } from '../../dlm/o2cb/transport';

/** Floats in [0, 1) from the project's seeded PRNG (mulberry32): good enough to shuffle a schedule. */
export function prng(seed: number): () => number {
  const r = new Prng(seed);
  return () => r.float();
}

export interface SimNetOptions {
  /** Node numbers (or a count: nodes 0..n-1). */
  nodes: number[] | number;
  seed: number;
  /** Largest random delivery delay, virtual ms (each message takes 1..1+delayMaxMs). */
  delayMaxMs?: number;
  /** Virtual ms from kill() to onNodeDown on the survivors. */
  downDelayMs?: number;
  /** Bound on events run before the network declares the run out of control. */
  eventsMax?: number;
}

interface Event {
  atMs: number;
  seq: number;
  run: () => void;
  cancelled: boolean;
}

/** A binary min-heap of events by (atMs, seq). */
class EventHeap {
  private a: Event[] = [];
  get size(): number {
    return this.a.length;
  }
  private less(x: Event, y: Event): boolean {
    return x.atMs < y.atMs || (x.atMs === y.atMs && x.seq < y.seq);
  }
  push(e: Event): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): Event | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop() as Event;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l], a[m])) m = l;
        if (r < a.length && this.less(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
  clear(): void {
    this.a = [];
  }
}

interface Pending {
  from: number;
  to: number;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  timer: Event | null;
}

interface Inbound {
  id: number;
  type: number;
  payload: Buffer;
}

export class SimNet {
  readonly rng: () => number;
  readonly nodes: number[];
  readonly clock: Clock;
  /** Messages delivered (requests and replies). */
  delivered = 0;
  private nowMs = 0;
  private seq = 0;
  private readonly heap = new EventHeap();
  private pumping = false;
  private closed = false;
  private eventsRun = 0;
  private readonly eventsMax: number;
  private readonly delayMaxMs: number;
  private readonly downDelayMs: number;
  private readonly transports = new Map<number, SimTransport>();
  private readonly dead = new Set<number>();
  private readonly cut = new Set<string>();
  private readonly lastAtMs = new Map<string, number>();
  private readonly pending = new Map<number, Pending>();
  private readonly inbox = new Map<string, Inbound[]>();
  private readonly busy = new Set<string>();
  private nextId = 0;
  /** Called for every delivered request (tests use it to drop or watch traffic). */
  onDeliver: ((from: number, to: number, type: number) => void) | null = null;

  constructor(opts: SimNetOptions) {
    this.rng = prng(opts.seed);
    this.nodes = typeof opts.nodes === 'number' ? Array.from({ length: opts.nodes }, (_, i) => i) : [...opts.nodes];
    this.delayMaxMs = opts.delayMaxMs ?? 3;
    this.downDelayMs = opts.downDelayMs ?? 5;
    this.eventsMax = opts.eventsMax ?? 5_000_000;
    for (const n of this.nodes) this.transports.set(n, new SimTransport(this, n));
    this.clock = {
      nowMs: () => this.nowMs,
      setTimer: (fn, ms) => this.at(this.nowMs + Math.max(0, ms), fn),
      clearTimer: (h) => {
        (h as Event).cancelled = true;
      },
    };
  }

  get now(): number {
    return this.nowMs;
  }

  transport(n: number): SimTransport {
    const t = this.transports.get(n);
    if (!t) throw new Error(`simnet: no node ${n}`);
    return t;
  }

  isDead(n: number): boolean {
    return this.dead.has(n);
  }

  linked(a: number, b: number): boolean {
    return !this.dead.has(a) && !this.dead.has(b) && !this.cut.has(`${a}-${b}`);
  }

  /** Virtual sleep for test code. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.at(this.nowMs + ms, resolve));
  }

  private at(atMs: number, run: () => void): Event {
    const e: Event = { atMs, seq: this.seq++, run, cancelled: false };
    this.heap.push(e);
    this.schedulePump();
    return e;
  }

  private schedulePump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    setImmediate(() => this.pumpOne());
  }

  private pumpOne(): void {
    this.pumping = false;
    if (this.closed) return;
    let e = this.heap.pop();
    while (e && e.cancelled) e = this.heap.pop();
    if (!e) return;
    if (++this.eventsRun > this.eventsMax) throw new Error(`simnet: more than ${this.eventsMax} events; the run is out of control`);
    this.nowMs = Math.max(this.nowMs, e.atMs);
    e.run();
    if (this.heap.size > 0) this.schedulePump();
  }

  /** Queues `run` on the a->b channel: random delay, never before an earlier message. */
  private onChannel(a: number, b: number, run: () => void): void {
    const key = `${a}-${b}`;
    const atMs = Math.max(this.nowMs + 1 + Math.floor(this.rng() * (this.delayMaxMs + 1)), this.lastAtMs.get(key) ?? 0);
    this.lastAtMs.set(key, atMs);
    this.at(atMs, run);
  }

  request(from: number, to: number, type: number, payload: Buffer, timeoutMs?: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.closed || !this.linked(from, to)) {
        queueMicrotask(() => reject(new TransportError('EHOSTDOWN', to, 'not connected')));
        return;
      }
      const id = ++this.nextId;
      const p: Pending = { from, to, resolve, reject, timer: null };
      if (timeoutMs !== undefined) {
        p.timer = this.at(this.nowMs + timeoutMs, () => {
          if (!this.pending.delete(id)) return;
          reject(new TransportError('ETIMEDOUT', to, `no reply to message ${type} in ${timeoutMs} ms`));
        });
      }
      this.pending.set(id, p);
      const copy = Buffer.from(payload);
      this.onChannel(from, to, () => {
        if (!this.linked(from, to) || !this.pending.has(id)) return;
        this.delivered += 1;
        this.onDeliver?.(from, to, type);
        const key = `${from}-${to}`;
        let q = this.inbox.get(key);
        if (!q) {
          q = [];
          this.inbox.set(key, q);
        }
        q.push({ id, type, payload: copy });
        this.runInbox(from, to);
      });
    });
  }

  /** Runs the next handler of `to` for messages from `from`, one at a time. */
  private runInbox(from: number, to: number): void {
    const key = `${from}-${to}`;
    if (this.busy.has(key)) return;
    const m = this.inbox.get(key)?.shift();
    if (!m) return;
    this.busy.add(key);
    const handler = this.transport(to).handler(m.type);
    const result: Promise<Buffer> = handler
      ? Promise.resolve().then(() => handler(from, m.payload))
      : Promise.reject(new TransportError('ENOPROTOOPT', to, `no handler for message ${m.type}`));
    result.then(
      (reply) => this.reply(m.id, to, from, { reply: Buffer.from(reply) }),
      (err: unknown) => this.reply(m.id, to, from, {
        err: err instanceof TransportError ? err : new TransportError('EHOSTDOWN', to, `handler failed: ${(err as Error).message}`),
      }),
    ).finally(() => {
      this.busy.delete(key);
      this.runInbox(from, to);
    });
  }

  private reply(id: number, responder: number, requester: number, r: { reply?: Buffer; err?: Error }): void {
    if (!this.linked(responder, requester)) return;
    this.onChannel(responder, requester, () => {
      const p = this.pending.get(id);
      if (!p || !this.linked(responder, requester)) return;
      this.pending.delete(id);
      if (p.timer) p.timer.cancelled = true;
      this.delivered += 1;
      if (r.err) p.reject(r.err);
      else p.resolve(r.reply as Buffer);
    });
  }

  private failPending(match: (p: Pending) => boolean, why: string): void {
    for (const [id, p] of [...this.pending]) {
      if (!match(p)) continue;
      this.pending.delete(id);
      if (p.timer) p.timer.cancelled = true;
      p.reject(new TransportError('EHOSTDOWN', p.to, why));
    }
  }

  /** Node `n` dies: silence now, onNodeDown on the survivors after downDelayMs. */
  kill(n: number): void {
    if (this.dead.has(n)) return;
    this.dead.add(n);
    this.failPending((p) => p.from === n || p.to === n, `node ${n} died`);
    for (const key of [...this.inbox.keys()]) {
      const [a, b] = key.split('-').map(Number);
      if (a === n || b === n) this.inbox.delete(key);
    }
    this.at(this.nowMs + this.downDelayMs, () => {
      for (const t of this.transports.values()) {
        if (!this.dead.has(t.thisNode)) t.emitDown(n);
      }
    });
  }

  /** Cuts every link between the two groups (no death is declared). */
  partition(a: number[], b: number[]): void {
    for (const x of a) {
      for (const y of b) {
        this.cut.add(`${x}-${y}`);
        this.cut.add(`${y}-${x}`);
      }
    }
    const cutPair = (p: Pending): boolean => this.cut.has(`${p.from}-${p.to}`);
    this.failPending(cutPair, 'partitioned');
  }

  heal(): void {
    this.cut.clear();
  }

  /** Stops the pump and fails everything in flight (test teardown). */
  close(): void {
    this.closed = true;
    this.failPending(() => true, 'network closed');
    this.heap.clear();
  }
}

export class SimTransport implements Transport {
  private readonly handlers = new Map<number, MessageHandler>();
  private readonly subs = new Set<MembershipEvents>();

  constructor(private readonly net: SimNet, readonly thisNode: number) {}

  connectedNodes(): ReadonlySet<number> {
    return this.liveNodes();
  }

  liveNodes(): ReadonlySet<number> {
    const live = new Set<number>();
    if (this.net.isDead(this.thisNode)) return live;
    for (const n of this.net.nodes) if (n !== this.thisNode && this.net.linked(this.thisNode, n)) live.add(n);
    return live;
  }

  register(type: number, handler: MessageHandler): void {
    if (this.handlers.has(type)) throw new Error(`simnet: node ${this.thisNode} already has a handler for ${type}`);
    this.handlers.set(type, handler);
  }

  handler(type: number): MessageHandler | undefined {
    return this.handlers.get(type);
  }

  request(node: number, type: number, payload: Buffer, timeoutMs?: number): Promise<Buffer> {
    return this.net.request(this.thisNode, node, type, payload, timeoutMs);
  }

  subscribe(events: MembershipEvents): () => void {
    this.subs.add(events);
    return () => this.subs.delete(events);
  }

  emitDown(n: number): void {
    for (const s of [...this.subs]) s.onNodeDown(n);
  }
}
