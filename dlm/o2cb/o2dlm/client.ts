// The requesting side of locking: what lock() and unlock() do on the node that owns the
// lksb. Each request runs on its resource's chain (one client operation per resource at a
// time, in issue order): wait for recovery, find the master, send CREATE_LOCK /
// CONVERT_LOCK / UNLOCK_LOCK (or call the server directly when this node masters it), and
// retry on RECOVERING, MIGRATING, NOTMASTER or a lost connection. Grants arrive as ASTs.
//
// Callback contract (the same as stackglue's o2cb wrapper; exactly one per request):
//   lock/convert  -> onGrant(lksb) with lksb.status OK, EAGAIN (NOQUEUE not grantable at
//                    once) or ENOTCONN (the domain went away / gave up);
//   unlock        -> onUnlock(lksb, OK) (or ENOTCONN);
//   cancel        -> if the pending lock/convert was still queued: onUnlock(lksb, ECANCEL),
//                    which also completes that request (no onGrant for it), and the lock is
//                    back in its previous state (a cancelled new lock no longer exists);
//                    if the grant won the race: onGrant for the request first, then
//                    onUnlock(lksb, EBUSY) for the cancel. A cancel with nothing pending
//                    gets onUnlock(lksb, EBUSY).
// Callbacks never run inside lock()/unlock(); they run from a microtask queue, in order.
import { LKF, LOCK_STATUS, LVB_BYTES, Lksb, LockMode } from '../../../stackglue/types';
import type { Core } from './core';
import { isTransportError } from './core';
import type { LockRecord } from './messages';
import { MSG } from './messages';
import type { Mastery } from './mastery';
import { MODE_EX, MODE_IV, MODE_NL, MODE_PR, fromWire, modesCompatible, toWire } from './modes';
import type { AstOut, LocalLock, PendingRequest, Resource } from './resource';
import type { Server } from './server';
import { DEFAULTS, DLM_STATUS, DlmError, NAME_BYTES_MAX, OWNER_UNKNOWN, QUEUE } from './status';

/** What this node tells a recovery master about its locks on one resource. */
export interface RecoveryReport {
  records: LockRecord[];
  /** A value block this node can vouch for (it holds PR/EX and got the value at its grant). */
  lvb: Buffer | null;
  /** The voucher holds PR (preferred: its copy is exactly the resource's). */
  lvbFromPr: boolean;
}

export class Client {
  private readonly locks = new Map<number, LocalLock>();
  private cbq: Array<() => void> = [];
  private cbScheduled = false;
  server!: Server;
  mastery!: Mastery;

  constructor(private readonly core: Core) {}

  get lockCount(): number {
    return this.locks.size;
  }

  /** Requests not yet completed (leave waits for zero). */
  get pendingCount(): number {
    let n = 0;
    for (const ll of this.locks.values()) if (ll.pending || ll.cancel) n++;
    return n;
  }

  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void {
    const core = this.core;
    if (core.state !== 'joined') throw new DlmError('ENOTCONN', `lock ${name}: domain is ${core.state}`);
    const nameBytes = Buffer.byteLength(name);
    if (nameBytes === 0 || nameBytes > NAME_BYTES_MAX) throw new DlmError('EINVAL', `lock name of ${nameBytes} bytes`);
    if (flags & LKF.CANCEL) throw new DlmError('EINVAL', 'CANCEL is an unlock flag');
    const wmode = toWire(mode);
    const pending = (kind: PendingRequest['kind']): PendingRequest => ({
      kind, mode: wmode, flags, phase: 'waiting', fix: null, cancelRequested: false, lvb: Buffer.from(lksb.lvb),
    });
    let ll: LocalLock | undefined;
    if (flags & LKF.CONVERT) {
      ll = lksb.lockId === undefined ? undefined : this.locks.get(lksb.lockId);
      if (!ll || ll.lksb !== lksb) throw new DlmError('EINVAL', `convert of ${name}: no lock on this lksb`);
      if (ll.res.name !== name) throw new DlmError('EINVAL', `convert of ${name}: the lksb locks ${ll.res.name}`);
      if (ll.pending || ll.cancel) throw new DlmError('EINVAL', `convert of ${name}: a request is already in flight`);
      ll.pending = pending('convert');
    } else {
      if (lksb.lockId !== undefined && this.locks.get(lksb.lockId)?.lksb === lksb) {
        throw new DlmError('EINVAL', `lock ${name}: the lksb already holds a lock (use CONVERT)`);
      }
      const res = core.resource(name);
      // LKF.LOCAL: a name nobody else can know yet, so this node masters it without asking.
      if (flags & LKF.LOCAL && res.owner === OWNER_UNKNOWN && res.mastering === null) {
        res.owner = core.thisNode;
        res.q.lvb.fill(0);
      }
      const seq = core.newSeq();
      lksb.lockId = seq;
      ll = { seq, lksb, res, granted: MODE_IV, pending: pending('create'), cancel: null, lvbSeen: false };
      res.local.set(seq, ll);
      this.locks.set(seq, ll);
    }
    const target = ll;
    this.enqueue(target.res, () => this.runRequest(target));
  }

  unlock(lksb: Lksb, flags: number): void {
    const core = this.core;
    if (!core.active) throw new DlmError('ENOTCONN', `unlock: domain is ${core.state}`);
    const ll = lksb.lockId === undefined ? undefined : this.locks.get(lksb.lockId);
    if (!ll || ll.lksb !== lksb) throw new DlmError('EINVAL', 'unlock: no lock on this lksb');
    if (flags & LKF.CANCEL) {
      const p = ll.pending;
      if (ll.cancel || p?.cancelRequested) throw new DlmError('EINVAL', `cancel of ${ll.res.name}: already cancelling`);
      if (!p || p.kind === 'unlock') {
        // Nothing queued to cancel: the grant (or unlock) already won.
        this.callback(() => core.opts.callbacks.onUnlock(lksb, LOCK_STATUS.EBUSY));
        return;
      }
      if (p.phase === 'waiting') {
        // Not at the master yet: the request's own loop drops it before sending.
        p.cancelRequested = true;
        return;
      }
      ll.cancel = { phase: 'sent' };
      this.enqueue(ll.res, () => this.runCancel(ll));
      return;
    }
    if (ll.pending || ll.cancel) throw new DlmError('EINVAL', `unlock of ${ll.res.name}: a request is in flight (cancel it first)`);
    ll.pending = { kind: 'unlock', mode: MODE_NL, flags, phase: 'waiting', fix: null, cancelRequested: false, lvb: Buffer.from(lksb.lvb) };
    this.enqueue(ll.res, () => this.runRequest(ll));
  }

  /** Runs `op` on the resource's chain, after every client operation queued before it. */
  enqueue(res: Resource, op: () => Promise<void>): void {
    res.busy += 1;
    res.chain = res.chain
      .then(op)
      .catch((e: unknown) => this.core.log(`client operation on ${res.name} failed: ${(e as Error).stack ?? String(e)}`))
      .finally(() => {
        res.busy -= 1;
        res.idleSinceMs = this.core.nowMs();
      });
  }

  private callback(fn: () => void): void {
    this.cbq.push(fn);
    if (this.cbScheduled) return;
    this.cbScheduled = true;
    queueMicrotask(() => {
      this.cbScheduled = false;
      const q = this.cbq;
      this.cbq = [];
      for (const f of q) {
        try {
          f();
        } catch (e) {
          this.core.log(`callback threw: ${(e as Error).stack ?? String(e)}`);
        }
      }
    });
  }

  private dropLock(ll: LocalLock): void {
    ll.res.local.delete(ll.seq);
    this.locks.delete(ll.seq);
    if (ll.lksb.lockId === ll.seq) ll.lksb.lockId = undefined;
    ll.res.idleSinceMs = this.core.nowMs();
  }

  private async runRequest(ll: LocalLock): Promise<void> {
    const core = this.core;
    const res = ll.res;
    for (let attempt = 0; ; attempt++) {
      const p = ll.pending;
      if (!p) return;
      if (attempt >= DEFAULTS.requestAttemptsMax || !core.active) {
        this.fail(ll, `gave up after ${attempt} attempts (domain ${core.state})`);
        return;
      }
      if (p.phase === 'waiting' && p.cancelRequested) return this.finishCancelled(ll);
      try {
        await core.waitRecovery();
      } catch (e) {
        this.fail(ll, (e as Error).message);
        return;
      }
      if (ll.pending !== p) return;
      if (p.fix === 'complete') return this.finishByRecovery(ll, p);
      if (p.fix === 'resend') {
        p.fix = null;
        p.phase = 'waiting';
      }
      if (p.phase === 'waiting' && p.cancelRequested) return this.finishCancelled(ll);
      try {
        await this.mastery.ensureMaster(res);
      } catch (e) {
        core.log(`mastery of ${res.name}: ${(e as Error).message}`);
        await core.sleep(core.tun.retryDelayMs);
        continue;
      }
      if (ll.pending !== p) return;
      if (p.cancelRequested) return this.finishCancelled(ll);
      if (core.recovering) continue;
      if (res.migratingTo !== null || res.recovering) {
        await core.sleep(core.tun.retryDelayMs);
        continue;
      }
      const owner = res.owner;
      if (owner === OWNER_UNKNOWN) continue;
      p.phase = 'sent';
      let status: number;
      if (owner === core.thisNode) {
        status = this.serve(ll, p, owner).status ?? DLM_STATUS.ERROR;
      } else {
        try {
          const r = await core.request(owner, this.msgType(p), this.body(ll, p));
          status = r.status;
        } catch (e) {
          if (!isTransportError(e)) throw e;
          core.log(`request on ${res.name} to ${owner}: ${e.code}`);
          try {
            await core.waitNodeSettled(owner);
          } catch (e2) {
            this.fail(ll, (e2 as Error).message);
            return;
          }
          // The master died: its recovery decides (p.fix). Otherwise it is back: resend,
          // the master treats a duplicate as a no-op.
          if (ll.pending === p && p.fix === null && core.members.has(owner) && !core.recoveryMap.has(owner)) p.phase = 'waiting';
          continue;
        }
      }
      if (ll.pending !== p) return; // the AST overtook the reply
      switch (status) {
        case DLM_STATUS.NORMAL:
          if (p.kind === 'unlock') this.finishUnlock(ll);
          else p.phase = 'acked';
          return;
        case DLM_STATUS.NOTQUEUED:
          return this.finish(ll, p, LOCK_STATUS.EAGAIN);
        case DLM_STATUS.RECOVERING:
        case DLM_STATUS.MIGRATING:
          p.phase = 'waiting';
          await core.sleep(core.tun.retryDelayMs);
          continue;
        case DLM_STATUS.NOTMASTER:
        case DLM_STATUS.NOT_IN_DOMAIN:
          p.phase = 'waiting';
          if (res.owner === owner) res.owner = OWNER_UNKNOWN;
          continue;
        case DLM_STATUS.IVLOCKID:
          if (p.kind === 'unlock') return this.finishUnlock(ll);
          this.fail(ll, `master ${owner} does not know lock ${core.thisNode}:${ll.seq}`);
          return;
        default:
          this.fail(ll, `master ${owner} answered status ${status}`);
          return;
      }
    }
  }

  private msgType(p: PendingRequest): typeof MSG.CREATE_LOCK | typeof MSG.CONVERT_LOCK | typeof MSG.UNLOCK_LOCK {
    return p.kind === 'create' ? MSG.CREATE_LOCK : p.kind === 'convert' ? MSG.CONVERT_LOCK : MSG.UNLOCK_LOCK;
  }

  private body(ll: LocalLock, p: PendingRequest): object {
    const base = { name: ll.res.name, seq: ll.seq, flags: p.flags };
    if (p.kind === 'create') return { ...base, mode: p.mode };
    const put = p.flags & LKF.VALBLK && ll.granted === MODE_EX && p.mode !== MODE_EX;
    if (p.kind === 'convert') return { ...base, mode: p.mode, lvb: put ? p.lvb : Buffer.alloc(0) };
    return { ...base, lvb: put ? p.lvb : Buffer.alloc(0) };
  }

  /** This node masters the resource: call the server directly. */
  private serve(ll: LocalLock, p: PendingRequest, self: number): { status?: number } {
    const b = this.body(ll, p) as { name: string; seq: number; flags: number; mode: number; lvb: Buffer };
    if (p.kind === 'create') return this.server.handleCreate(self, b);
    if (p.kind === 'convert') return this.server.handleConvert(self, b);
    return this.server.handleUnlock(self, b);
  }

  private async runCancel(ll: LocalLock): Promise<void> {
    const core = this.core;
    const res = ll.res;
    for (let attempt = 0; ; attempt++) {
      const p = ll.pending;
      if (!ll.cancel) return;
      if (!p) {
        // The request finished (its callback is queued) before the cancel got anywhere.
        ll.cancel = null;
        this.callback(() => core.opts.callbacks.onUnlock(ll.lksb, LOCK_STATUS.EBUSY));
        return;
      }
      if (p.fix === 'cancelled') return this.finishCancelled(ll);
      if (p.phase === 'waiting') {
        // The request is not queued anywhere (it is being resent): drop it.
        return this.finishCancelled(ll);
      }
      if (attempt >= DEFAULTS.requestAttemptsMax || !core.active) {
        ll.cancel = null;
        this.fail(ll, 'cancel gave up');
        return;
      }
      try {
        await core.waitRecovery();
      } catch (e) {
        ll.cancel = null;
        this.fail(ll, (e as Error).message);
        return;
      }
      if (ll.pending !== p) continue;
      // Recovery may have settled it while we waited.
      if ((p.fix as PendingRequest['fix']) === 'cancelled') return this.finishCancelled(ll);
      const owner = res.owner;
      if (owner === OWNER_UNKNOWN || res.migratingTo !== null || res.recovering) {
        await core.sleep(core.tun.retryDelayMs);
        continue;
      }
      let status: number;
      const body = { name: res.name, seq: ll.seq, flags: LKF.CANCEL, lvb: Buffer.alloc(0) };
      if (owner === core.thisNode) {
        status = this.server.handleUnlock(owner, body).status ?? DLM_STATUS.ERROR;
      } else {
        try {
          status = (await core.request(owner, MSG.UNLOCK_LOCK, body)).status;
        } catch (e) {
          if (!isTransportError(e)) throw e;
          try {
            await core.waitNodeSettled(owner);
          } catch (e2) {
            ll.cancel = null;
            this.fail(ll, (e2 as Error).message);
            return;
          }
          continue;
        }
      }
      if (!ll.cancel) return;
      switch (status) {
        case DLM_STATUS.CANCELLED:
        case DLM_STATUS.IVLOCKID:
          if (ll.pending) return this.finishCancelled(ll);
          ll.cancel = null;
          this.callback(() => core.opts.callbacks.onUnlock(ll.lksb, LOCK_STATUS.EBUSY));
          return;
        case DLM_STATUS.CANCELGRANT:
          if (ll.pending) {
            ll.cancel = { phase: 'grant-coming' };
          } else {
            ll.cancel = null;
            this.callback(() => core.opts.callbacks.onUnlock(ll.lksb, LOCK_STATUS.EBUSY));
          }
          return;
        case DLM_STATUS.RECOVERING:
        case DLM_STATUS.MIGRATING:
          await core.sleep(core.tun.retryDelayMs);
          continue;
        case DLM_STATUS.NOTMASTER:
          if (res.owner === owner) res.owner = OWNER_UNKNOWN;
          await this.mastery.ensureMaster(res).catch(() => undefined);
          continue;
        default:
          core.log(`cancel on ${res.name}: status ${status}`);
          await core.sleep(core.tun.retryDelayMs);
          continue;
      }
    }
  }

  /** An AST or BAST for one of this node's locks (from PROXY_AST or this node's own server). */
  onAst(name: string, seq: number, kind: 'ast' | 'bast', mode: number, lvb: Buffer | undefined): number {
    const core = this.core;
    const ll = this.locks.get(seq);
    if (!ll || ll.res.name !== name) {
      core.log(`${kind} for unknown lock ${name}:${seq}`);
      return DLM_STATUS.IVLOCKID;
    }
    if (kind === 'bast') {
      if (ll.granted !== MODE_IV && !modesCompatible(ll.granted, mode) && ll.pending?.kind !== 'unlock') {
        const level = fromWire(mode);
        this.callback(() => core.opts.callbacks.onBlocking(ll.lksb, level));
      }
      return DLM_STATUS.NORMAL;
    }
    const p = ll.pending;
    if (!p || p.kind === 'unlock' || p.mode !== mode) {
      core.log(`stale AST ${name}:${seq} mode ${mode}`);
      return DLM_STATUS.NORMAL;
    }
    const up = mode > ll.granted;
    if (up) {
      if (lvb && lvb.length === LVB_BYTES) {
        lvb.copy(ll.lksb.lvb);
        ll.lvbSeen = mode >= MODE_PR;
      } else {
        ll.lvbSeen = false;
      }
    } else if (mode !== ll.granted) {
      ll.lvbSeen = mode === MODE_PR && (p.flags & LKF.VALBLK) !== 0;
    }
    ll.granted = mode;
    this.finish(ll, p, LOCK_STATUS.OK);
    return DLM_STATUS.NORMAL;
  }

  /** Completes a lock/convert request with `status` (onGrant), then a cancel that lost. */
  private finish(ll: LocalLock, p: PendingRequest, status: number): void {
    if (ll.pending !== p) throw new Error('assertion: completing a request that is not pending');
    ll.pending = null;
    const lksb = ll.lksb;
    const cb = this.core.opts.callbacks;
    const created = ll.granted !== MODE_IV;
    if (!created) this.dropLock(ll);
    const granted = created ? fromWire(ll.granted) : lksb.granted;
    const lostCancel = ll.cancel?.phase === 'grant-coming';
    if (lostCancel) ll.cancel = null;
    this.callback(() => {
      lksb.status = status;
      lksb.granted = granted;
      lksb.lvbValid = true;
      cb.onGrant(lksb);
    });
    if (lostCancel) this.callback(() => cb.onUnlock(lksb, LOCK_STATUS.EBUSY));
  }

  private finishUnlock(ll: LocalLock): void {
    const lksb = ll.lksb;
    ll.pending = null;
    this.dropLock(ll);
    this.callback(() => {
      lksb.status = LOCK_STATUS.OK;
      lksb.granted = 'NL';
      this.core.opts.callbacks.onUnlock(lksb, LOCK_STATUS.OK);
    });
  }

  private finishCancelled(ll: LocalLock): void {
    const p = ll.pending;
    if (!p) throw new Error('assertion: cancelling with nothing pending');
    ll.pending = null;
    ll.cancel = null;
    if (ll.granted === MODE_IV) this.dropLock(ll);
    const lksb = ll.lksb;
    this.callback(() => {
      lksb.status = LOCK_STATUS.ECANCEL;
      this.core.opts.callbacks.onUnlock(lksb, LOCK_STATUS.ECANCEL);
    });
  }

  /** Recovery decided the outcome of a down-convert or unlock whose master died. */
  private finishByRecovery(ll: LocalLock, p: PendingRequest): void {
    if (p.kind === 'unlock') return this.finishUnlock(ll);
    if (p.mode !== ll.granted) ll.lvbSeen = p.mode === MODE_PR && (p.flags & LKF.VALBLK) !== 0;
    ll.granted = p.mode;
    this.finish(ll, p, LOCK_STATUS.OK);
  }

  private fail(ll: LocalLock, why: string): void {
    const p = ll.pending;
    this.core.log(`request on ${ll.res.name} failed: ${why}`);
    if (!p) return;
    if (p.kind === 'unlock') {
      ll.pending = null;
      this.callback(() => {
        ll.lksb.status = LOCK_STATUS.ENOTCONN;
        this.core.opts.callbacks.onUnlock(ll.lksb, LOCK_STATUS.ENOTCONN);
      });
      return;
    }
    ll.cancel = null;
    this.finish(ll, p, LOCK_STATUS.ENOTCONN);
  }

  /**
   * This node's locks on a resource whose master died, as the new master should rebuild
   * them. A request whose outcome died with the master is reported as if it had not
   * happened when it asked for more (and is resent afterwards), and as done when it gave
   * something up (a down-convert or unlock always succeeds at once at the master, and
   * the dead master may already have granted what it freed to someone else).
   */
  reportRecovery(res: Resource): RecoveryReport {
    const records: LockRecord[] = [];
    let lvb: Buffer | null = null;
    let lvbFromPr = false;
    for (const ll of res.local.values()) {
      const p = ll.pending;
      let granted = ll.granted;
      let requested = MODE_IV;
      let queue: number = QUEUE.GRANTED;
      let getLvb = false;
      if (p) {
        const down = p.kind === 'unlock' || (p.kind === 'convert' && p.mode <= ll.granted);
        if (ll.cancel?.phase === 'sent') {
          p.fix = 'cancelled';
        } else if (down && p.phase !== 'waiting') {
          p.fix = 'complete';
          granted = p.kind === 'unlock' ? MODE_IV : p.mode;
        } else if (p.phase === 'sent') {
          p.fix = 'resend';
        } else if (p.phase === 'acked') {
          requested = p.mode;
          getLvb = (p.flags & LKF.VALBLK) !== 0;
          queue = p.kind === 'create' ? QUEUE.BLOCKED : QUEUE.CONVERTING;
        }
      }
      if (granted === MODE_IV && queue !== QUEUE.BLOCKED) continue; // not at the master
      records.push({ node: this.core.thisNode, seq: ll.seq, queue, granted, requested, getLvb, highestBlocked: MODE_IV });
      if (granted >= MODE_PR && ll.lvbSeen && granted === ll.granted && (lvb === null || (!lvbFromPr && granted === MODE_PR))) {
        lvb = Buffer.from(ll.lksb.lvb);
        lvbFromPr = granted === MODE_PR;
      }
    }
    return { records, lvb, lvbFromPr };
  }

  /**
   * Recovery finished: settle the requests it decided that no running operation will pick
   * up (a down-convert already acknowledged by the dead master, a cancel in flight).
   */
  afterRecovery(): void {
    for (const ll of [...this.locks.values()]) {
      const p = ll.pending;
      if (!p) continue;
      if (p.fix === 'complete') this.finishByRecovery(ll, p);
      else if (p.fix === 'cancelled') this.finishCancelled(ll);
    }
  }

  /** A local AST from this node's own server. */
  deliverLocal = (res: Resource, out: AstOut): void => {
    this.onAst(res.name, out.seq, out.kind, out.mode, out.lvb);
  };

  /** Fails every request still pending (the domain is going away). */
  abandonAll(): void {
    for (const ll of [...this.locks.values()]) {
      if (ll.pending) this.fail(ll, 'domain shut down');
    }
  }
}
