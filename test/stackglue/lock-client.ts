// A promise-based test client over one ClusterConnection, for the lock-manager conformance
// suite (conformance.ts). It turns the callback contract of stackglue/types.ts into awaited
// results and polices that contract on every request, so each case checks it for free:
//
//   - exactly one completion per request: lock/convert -> onGrant (status OK / EAGAIN /
//     ENOTCONN); unlock -> onUnlock(status); cancel -> either onUnlock(ECANCEL), which
//     also completes the cancelled lock/convert (no onGrant for it), or, when the grant won
//     the race, onGrant for the request first and then onUnlock(EBUSY) for the cancel;
//   - no callback runs inside lock()/unlock() (they return once the request is queued);
//   - no completion arrives for an lksb with nothing in flight (a duplicate or a stray).
//
// Breaches are collected in `recorder.violations` (shared by every client of a case, with
// a total order of events across nodes) and asserted by the suite when the case ends.
// Every wait is bounded: a request that gets no completion within its timeout rejects.
import { performance } from 'node:perf_hooks';
import {
  ClusterConnection, LKF, LOCK_STATUS, Lksb, LockMode, StackCallbacks, newLksb,
} from '../../stackglue/types';

export type EventKind = 'grant' | 'bast' | 'unlock' | 'recovery';

export interface LockEvent {
  /** Position in the case's total order of callbacks (all nodes). */
  seq: number;
  atMs: number;
  node: number;
  kind: EventKind;
  /** The lksb's label ('' for recovery events). */
  label: string;
  /** onGrant: lksb.status; onUnlock: the status argument. */
  status?: number;
  /** onBlocking: the level asked for; recovery: unused. */
  level?: LockMode;
  /** lksb.granted when the callback ran. */
  granted?: LockMode;
  /** onRecovery: the dead node. */
  deadNode?: number;
}

/** The events and contract breaches of one case, shared by every client in it. */
export class Recorder {
  readonly events: LockEvent[] = [];
  readonly violations: string[] = [];
  private nextSeq = 0;

  record(e: Omit<LockEvent, 'seq' | 'atMs'>): LockEvent {
    const full: LockEvent = { ...e, seq: this.nextSeq++, atMs: performance.now() };
    this.events.push(full);
    return full;
  }

  violation(what: string): void {
    this.violations.push(what);
  }
}

/** The outcome of a lock/convert request. */
export interface LockResult {
  status: number;
  granted: LockMode;
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  what: string;
}

interface LksbState {
  label: string;
  name: string | null;
  /** The lock exists at the stack (granted at least once and not unlocked/cancelled away). */
  exists: boolean;
  request: ({ kind: 'lock'; mode: LockMode } & Waiter<LockResult>) | ({ kind: 'unlock' } & Waiter<number>) | null;
  cancel: Waiter<number> | null;
  /** Blocking callbacks not yet taken by nextBast. */
  basts: LockMode[];
  bastHistory: LockMode[];
  bastWaiters: Array<Waiter<LockMode>>;
}

/** Resolves to `promise`, or rejects after `timeoutMs` with `what` in the message. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Lets queued microtasks and immediates run (callbacks the stack already scheduled). */
export function ticks(n = 3): Promise<void> {
  let p = Promise.resolve();
  for (let i = 0; i < n; i++) p = p.then(() => new Promise<void>((r) => setImmediate(r)));
  return p;
}

/** Polls `pred` every `everyMs` until it holds; rejects after `timeoutMs`. */
export async function until(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string, everyMs = 20): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (performance.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(everyMs);
  }
}

export class LockClient {
  private conn: ClusterConnection | null = null;
  private readonly states = new Map<Lksb, LksbState>();
  /** Set while this client is inside conn.lock()/unlock(): a callback then is a breach. */
  private inCall = false;
  /** The node was killed or fenced: its requests will never complete, and that is fine. */
  private dead = false;
  readonly recoveries: number[] = [];
  requestsIssued = 0;
  requestsCompleted = 0;

  constructor(
    readonly node: number,
    private readonly recorder: Recorder,
    /** Bound on one request's completion unless the caller passes its own. */
    readonly opTimeoutMs: number,
  ) {}

  readonly callbacks: StackCallbacks = {
    onGrant: (lksb) => this.onGrant(lksb),
    onBlocking: (lksb, level) => this.onBlocking(lksb, level),
    onUnlock: (lksb, status) => this.onUnlock(lksb, status),
  };

  readonly onRecovery = (deadNode: number): void => {
    if (this.dead) return;
    this.recoveries.push(deadNode);
    this.recorder.record({ node: this.node, kind: 'recovery', label: '', deadNode });
  };

  attach(conn: ClusterConnection): void {
    this.conn = conn;
  }

  get connection(): ClusterConnection {
    if (this.conn === null) throw new Error(`node ${this.node}: not connected`);
    return this.conn;
  }

  get connected(): boolean {
    return this.conn !== null && !this.dead;
  }

  /** A fresh lksb this client tracks; `label` names it in events and messages. */
  newLksb(label: string): Lksb {
    const lksb = newLksb(label);
    this.states.set(lksb, { label, name: null, exists: false, request: null, cancel: null, basts: [], bastHistory: [], bastWaiters: [] });
    return lksb;
  }

  /**
   * lock() (a new lock, or a convert with LKF.CONVERT); resolves with the outcome when the
   * completion arrives: {status OK|EAGAIN|ENOTCONN, granted}, or status ECANCEL when a
   * cancel won. Rejects if the stack throws or nothing arrives within `timeoutMs`.
   */
  lockP(lksb: Lksb, mode: LockMode, flags: number, name: string, timeoutMs = this.opTimeoutMs): Promise<LockResult> {
    const s = this.state(lksb);
    if (s.request !== null) throw new Error(`test bug: ${s.label} already has a request in flight`);
    const what = `node ${this.node} ${s.label}: ${flags & LKF.CONVERT ? 'convert' : 'lock'} ${name} ${mode}`;
    const p = new Promise<LockResult>((resolve, reject) => {
      s.request = { kind: 'lock', mode, what, resolve, reject, timer: this.timer(s, what, timeoutMs) };
    });
    s.name = name;
    this.requestsIssued++;
    this.call(s, 'request', () => this.connection.lock(lksb, mode, flags, name));
    return quiet(p);
  }

  /** unlock(); resolves with the onUnlock status. */
  unlockP(lksb: Lksb, flags = 0, timeoutMs = this.opTimeoutMs): Promise<number> {
    if (flags & LKF.CANCEL) throw new Error('test bug: use cancelP');
    const s = this.state(lksb);
    if (s.request !== null) throw new Error(`test bug: ${s.label} already has a request in flight`);
    const what = `node ${this.node} ${s.label}: unlock ${s.name ?? '?'}`;
    const p = new Promise<number>((resolve, reject) => {
      s.request = { kind: 'unlock', what, resolve, reject, timer: this.timer(s, what, timeoutMs) };
    });
    this.requestsIssued++;
    this.call(s, 'request', () => this.connection.unlock(lksb, flags));
    return quiet(p);
  }

  /** unlock(CANCEL); resolves with ECANCEL (the request was cancelled) or EBUSY (too late). */
  cancelP(lksb: Lksb, timeoutMs = this.opTimeoutMs): Promise<number> {
    const s = this.state(lksb);
    if (s.cancel !== null) throw new Error(`test bug: ${s.label} already has a cancel in flight`);
    if (s.request?.kind === 'unlock') throw new Error(`test bug: ${s.label}: cancel of an unlock`);
    const what = `node ${this.node} ${s.label}: cancel on ${s.name ?? '?'}`;
    const p = new Promise<number>((resolve, reject) => {
      s.cancel = { what, resolve, reject, timer: this.timer(s, what, timeoutMs) };
    });
    this.requestsIssued++;
    this.call(s, 'cancel', () => this.connection.unlock(lksb, LKF.CANCEL));
    return quiet(p);
  }

  /** The next blocking callback for `lksb` (one already received and not taken counts). */
  nextBast(lksb: Lksb, timeoutMs = this.opTimeoutMs): Promise<LockMode> {
    const s = this.state(lksb);
    const had = s.basts.shift();
    if (had !== undefined) return Promise.resolve(had);
    const what = `node ${this.node} ${s.label}: a blocking callback`;
    return quiet(new Promise<LockMode>((resolve, reject) => {
      const w: Waiter<LockMode> = {
        what, resolve, reject,
        timer: setTimeout(() => {
          s.bastWaiters.splice(s.bastWaiters.indexOf(w), 1);
          reject(new Error(`timed out after ${timeoutMs} ms: ${what}`));
        }, timeoutMs),
      };
      s.bastWaiters.push(w);
    }));
  }

  /** Every blocking callback `lksb` got, oldest first (whether or not nextBast took it). */
  bastsOf(lksb: Lksb): LockMode[] {
    return [...this.state(lksb).bastHistory];
  }

  /** Forget blocking callbacks not yet taken by nextBast. */
  clearBasts(lksb: Lksb): void {
    this.state(lksb).basts.length = 0;
  }

  pending(lksb: Lksb): boolean {
    const s = this.state(lksb);
    return s.request !== null || s.cancel !== null;
  }

  /** Lksbs whose lock still exists at the stack and that have nothing in flight. */
  heldLksbs(): Lksb[] {
    return [...this.states.entries()].filter(([, s]) => s.exists && s.request === null && s.cancel === null).map(([l]) => l);
  }

  /** Labels of requests still waiting for a completion. */
  inFlight(): string[] {
    const out: string[] = [];
    for (const s of this.states.values()) {
      if (s.request) out.push(s.request.what);
      if (s.cancel) out.push(s.cancel.what);
    }
    return out;
  }

  /**
   * The node died (killed or fenced): drop what it had in flight without calling it a
   * breach, and ignore anything it still says.
   */
  markDead(): void {
    this.dead = true;
    for (const s of this.states.values()) {
      for (const w of [s.request, s.cancel, ...s.bastWaiters]) {
        if (w) {
          clearTimeout(w.timer);
          w.reject(new Error(`node ${this.node} died: ${w.what}`));
        }
      }
      s.request = null;
      s.cancel = null;
      s.bastWaiters = [];
      s.exists = false;
    }
  }

  // --- callbacks -------------------------------------------------------------------------

  private onGrant(lksb: Lksb): void {
    if (this.dead) return;
    const s = this.known(lksb, 'onGrant');
    if (!s) return;
    this.recorder.record({ node: this.node, kind: 'grant', label: s.label, status: lksb.status, granted: lksb.granted });
    if (this.inCall) this.recorder.violation(`node ${this.node} ${s.label}: onGrant ran inside lock()/unlock()`);
    const r = s.request;
    if (r === null || r.kind !== 'lock') {
      this.recorder.violation(`node ${this.node} ${s.label}: onGrant (status ${lksb.status}) with no lock request in flight (duplicate or stray)`);
      return;
    }
    s.request = null;
    clearTimeout(r.timer);
    this.requestsCompleted++;
    if (lksb.status === LOCK_STATUS.OK) {
      s.exists = true;
      if (lksb.granted !== r.mode) this.recorder.violation(`node ${this.node} ${s.label}: granted ${lksb.granted}, asked ${r.mode}`);
    }
    r.resolve({ status: lksb.status, granted: lksb.granted });
  }

  private onUnlock(lksb: Lksb, status: number): void {
    if (this.dead) return;
    const s = this.known(lksb, 'onUnlock');
    if (!s) return;
    this.recorder.record({ node: this.node, kind: 'unlock', label: s.label, status, granted: lksb.granted });
    if (this.inCall) this.recorder.violation(`node ${this.node} ${s.label}: onUnlock ran inside lock()/unlock()`);
    const c = s.cancel;
    if (c !== null && (status === LOCK_STATUS.ECANCEL || status === LOCK_STATUS.EBUSY)) {
      s.cancel = null;
      clearTimeout(c.timer);
      this.requestsCompleted++;
      const r = s.request;
      if (status === LOCK_STATUS.ECANCEL) {
        // The cancel won: this one callback also completes the cancelled request.
        if (r === null || r.kind !== 'lock') {
          this.recorder.violation(`node ${this.node} ${s.label}: ECANCEL with no lock request in flight (grant and cancel both?)`);
        } else {
          s.request = null;
          clearTimeout(r.timer);
          this.requestsCompleted++;
          r.resolve({ status: LOCK_STATUS.ECANCEL, granted: lksb.granted });
        }
      } else if (r !== null && r.kind === 'lock') {
        // The contract: when the grant wins, its onGrant comes first, then the EBUSY.
        this.recorder.violation(`node ${this.node} ${s.label}: EBUSY for a cancel while its request is still in flight`);
      }
      c.resolve(status);
      return;
    }
    const r = s.request;
    if (r !== null && r.kind === 'unlock') {
      s.request = null;
      clearTimeout(r.timer);
      this.requestsCompleted++;
      if (status === LOCK_STATUS.OK) s.exists = false;
      r.resolve(status);
      return;
    }
    if (c !== null) {
      // Any other status ends both the cancel and what it cancelled (the stack went away).
      s.cancel = null;
      clearTimeout(c.timer);
      this.requestsCompleted++;
      c.resolve(status);
      return;
    }
    this.recorder.violation(`node ${this.node} ${s.label}: onUnlock(${status}) with no unlock or cancel in flight (duplicate or stray)`);
  }

  private onBlocking(lksb: Lksb, level: LockMode): void {
    if (this.dead) return;
    const s = this.known(lksb, 'onBlocking');
    if (!s) return;
    this.recorder.record({ node: this.node, kind: 'bast', label: s.label, level, granted: lksb.granted });
    if (this.inCall) this.recorder.violation(`node ${this.node} ${s.label}: onBlocking ran inside lock()/unlock()`);
    s.bastHistory.push(level);
    const w = s.bastWaiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve(level);
    } else {
      s.basts.push(level);
    }
  }

  // --- internals -------------------------------------------------------------------------

  private state(lksb: Lksb): LksbState {
    const s = this.states.get(lksb);
    if (!s) throw new Error('test bug: lksb not made by this client');
    return s;
  }

  private known(lksb: Lksb, what: string): LksbState | null {
    const s = this.states.get(lksb);
    if (!s) this.recorder.violation(`node ${this.node}: ${what} for an lksb this connection never used`);
    return s ?? null;
  }

  private timer(s: LksbState, what: string, timeoutMs: number): NodeJS.Timeout {
    return setTimeout(() => {
      // Leave the request marked in flight: a late completion is then not a "stray", and
      // inFlight() names it when the case ends.
      const w = s.request?.what === what ? s.request : s.cancel?.what === what ? s.cancel : null;
      w?.reject(new Error(`no completion within ${timeoutMs} ms: ${what}`));
    }, timeoutMs);
  }

  /** Runs a stack call; a synchronous throw fails the request it was making. */
  private call(s: LksbState, slot: 'request' | 'cancel', fn: () => void): void {
    this.inCall = true;
    try {
      fn();
    } catch (e) {
      this.requestsIssued--;
      const w = s[slot];
      s[slot] = null;
      if (w) {
        clearTimeout(w.timer);
        w.reject(e instanceof Error ? e : new Error(String(e)));
      }
    } finally {
      this.inCall = false;
    }
  }
}

/** Keeps an unawaited rejection (a case that already failed) from crashing the process. */
export function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
