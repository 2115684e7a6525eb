// The master's side of locking: CREATE_LOCK, CONVERT_LOCK and UNLOCK_LOCK against the
// resource's queues, the shuffle after every change, and the outbox of ASTs and BASTs.
// Queue changes happen synchronously inside the handler; messages leave afterwards from
// the outbox (o2dlm's dlm_thread / dlm_flush_asts), so a reply usually precedes its AST,
// and the client copes with either order.
import { LKF, LVB_BYTES } from '../../../stackglue/types';
import type { Core } from './core';
import { isTransportError } from './core';
import { MSG, Reply } from './messages';
import { MODE_EX, MODE_IV } from './modes';
import { AST_KIND, DLM_STATUS } from './status';
import type { AstOut, Lock, Resource } from './resource';

export type LocalAstSink = (res: Resource, out: AstOut) => void;

const ASTS_RETRY_MAX = 5;

export class Server {
  private outbox: Array<{ res: Resource; out: AstOut }> = [];
  private flushScheduled = false;

  constructor(private readonly core: Core, private readonly deliverLocal: LocalAstSink) {}

  /** Runs the shuffle on a resource this node masters, unless recovery or migration holds it. */
  kick(res: Resource): void {
    const core = this.core;
    if (core.recovering || res.owner !== core.thisNode || res.migratingTo !== null) return;
    this.send(res, res.q.shuffle());
    res.q.checkInvariant(res.name);
  }

  kickAll(): void {
    for (const res of this.core.resources.values()) this.kick(res);
  }

  private send(res: Resource, outs: AstOut[]): void {
    for (const out of outs) this.outbox.push({ res, out });
    if (this.outbox.length > 0 && !this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends everything queued so far (also used by migration before it ships a resource). */
  flush(): void {
    this.flushScheduled = false;
    const batch = this.outbox;
    this.outbox = [];
    for (const { res, out } of batch) {
      if (out.node === this.core.thisNode) this.deliverLocal(res, out);
      else void this.sendProxyAst(res, out);
    }
  }

  private async sendProxyAst(res: Resource, out: AstOut): Promise<void> {
    const core = this.core;
    res.astsInFlight += 1;
    try {
      for (let attempt = 0; attempt < ASTS_RETRY_MAX; attempt++) {
        try {
          const r = await core.request(out.node, MSG.PROXY_AST, {
            name: res.name, seq: out.seq, kind: out.kind === 'ast' ? AST_KIND.AST : AST_KIND.BAST, mode: out.mode, lvb: out.lvb ?? Buffer.alloc(0),
          });
          if (r.status !== DLM_STATUS.NORMAL) core.log(`PROXY_AST ${out.kind} ${res.name} to ${out.node}:${out.seq}: status ${r.status} ${r.error}`);
          return;
        } catch (e) {
          if (!isTransportError(e)) throw e;
          // A dead node's locks go away in recovery; a connection blip is worth a retry.
          if (!core.members.has(out.node) || !core.active) return;
          core.log(`PROXY_AST to ${out.node} failed (${e.code}); retrying`);
          await core.sleep(core.tun.retryDelayMs * 5);
        }
      }
      core.log(`PROXY_AST ${out.kind} ${res.name} to ${out.node}:${out.seq} given up`);
    } catch (e) {
      core.log(`PROXY_AST ${res.name}: ${(e as Error).message}`);
    } finally {
      res.astsInFlight -= 1;
      if (res.astsInFlight === 0) core.changed.notify();
    }
  }

  /** Why this node cannot serve a lock operation on `name` now, or the resource. */
  private mastered(name: string): Resource | Partial<Reply> {
    const res = this.core.resources.get(name);
    if (!res || res.owner !== this.core.thisNode) {
      return { status: res?.recovering ? DLM_STATUS.RECOVERING : DLM_STATUS.NOTMASTER };
    }
    if (res.migratingTo !== null) return { status: DLM_STATUS.MIGRATING };
    return res;
  }

  handleCreate(from: number, m: { name: string; seq: number; mode: number; flags: number }): Partial<Reply> {
    const res = this.mastered(m.name);
    if (!('q' in res)) return res;
    const existing = res.q.find(from, m.seq);
    if (existing) {
      // A resend after a lost connection: the first copy is already queued.
      if (existing.queue === 'granted' && existing.lock.granted === m.mode) this.send(res, [{ kind: 'ast', node: from, seq: m.seq, mode: m.mode }]);
      return { status: DLM_STATUS.NORMAL };
    }
    if (from !== this.core.thisNode) res.refmap.add(from);
    const lock: Lock = { node: from, seq: m.seq, granted: MODE_IV, requested: m.mode, getLvb: (m.flags & LKF.VALBLK) !== 0, highestBlocked: MODE_IV };
    if (!this.core.recovering && res.q.canGrantNew(m.mode)) {
      this.send(res, [res.q.grant(lock, m.mode, null)]);
      return { status: DLM_STATUS.NORMAL };
    }
    if (m.flags & LKF.NOQUEUE) {
      if (this.core.recovering) return { status: DLM_STATUS.RECOVERING };
      if (m.flags & LKF.NOQUEUEBAST) this.send(res, res.q.nudge(null, m.mode));
      return { status: DLM_STATUS.NOTQUEUED };
    }
    res.q.blocked.push(lock);
    this.kick(res);
    return { status: DLM_STATUS.NORMAL };
  }

  handleConvert(from: number, m: { name: string; seq: number; mode: number; flags: number; lvb: Buffer }): Partial<Reply> {
    const res = this.mastered(m.name);
    if (!('q' in res)) return res;
    const found = res.q.find(from, m.seq);
    if (!found) return { status: DLM_STATUS.IVLOCKID, error: `no lock ${from}:${m.seq}` };
    const lock = found.lock;
    if (found.queue !== 'granted') {
      // A resend of a convert already queued is harmless; anything else is a caller bug.
      if (found.queue === 'converting' && lock.requested === m.mode) return { status: DLM_STATUS.NORMAL };
      return { status: DLM_STATUS.BADARGS, error: 'convert while a request is pending' };
    }
    if (m.mode <= lock.granted) {
      // Down-converts (and same-mode converts) never wait.
      if (m.flags & LKF.VALBLK && lock.granted === MODE_EX && m.mode !== MODE_EX && m.lvb.length === LVB_BYTES) m.lvb.copy(res.q.lvb);
      if (m.mode !== lock.granted) {
        lock.granted = m.mode;
        lock.highestBlocked = MODE_IV;
      }
      this.send(res, [{ kind: 'ast', node: from, seq: m.seq, mode: m.mode }]);
      this.kick(res);
      return { status: DLM_STATUS.NORMAL };
    }
    lock.getLvb = (m.flags & LKF.VALBLK) !== 0;
    if (!this.core.recovering && res.q.canConvertNow(lock, m.mode)) {
      this.send(res, [res.q.grant(lock, m.mode, 'granted')]);
      return { status: DLM_STATUS.NORMAL };
    }
    if (m.flags & LKF.NOQUEUE) {
      lock.getLvb = false;
      if (this.core.recovering) return { status: DLM_STATUS.RECOVERING };
      if (m.flags & LKF.NOQUEUEBAST) this.send(res, res.q.nudge(lock, m.mode));
      return { status: DLM_STATUS.NOTQUEUED };
    }
    res.q.granted.splice(res.q.granted.indexOf(lock), 1);
    lock.requested = m.mode;
    res.q.converting.push(lock);
    this.kick(res);
    return { status: DLM_STATUS.NORMAL };
  }

  handleUnlock(from: number, m: { name: string; seq: number; flags: number; lvb: Buffer }): Partial<Reply> {
    const res = this.mastered(m.name);
    if (!('q' in res)) return res;
    const found = res.q.find(from, m.seq);
    if (!found) return { status: DLM_STATUS.IVLOCKID, error: `no lock ${from}:${m.seq}` };
    const lock = found.lock;
    if (m.flags & LKF.CANCEL) {
      if (found.queue === 'granted') return { status: DLM_STATUS.CANCELGRANT };
      if (found.queue === 'blocked') {
        res.q.remove(lock);
      } else {
        // Back to where it was before the convert.
        res.q.converting.splice(res.q.converting.indexOf(lock), 1);
        lock.requested = MODE_IV;
        lock.getLvb = false;
        res.q.granted.push(lock);
      }
      this.kick(res);
      return { status: DLM_STATUS.CANCELLED };
    }
    if (found.queue !== 'granted') return { status: DLM_STATUS.BADARGS, error: 'unlock while a request is pending' };
    if (m.flags & LKF.VALBLK && lock.granted === MODE_EX && m.lvb.length === LVB_BYTES) m.lvb.copy(res.q.lvb);
    res.q.remove(lock);
    this.kick(res);
    return { status: DLM_STATUS.NORMAL };
  }

  /** DEREF_LOCKRES: `from` dropped its copy. */
  handleDeref(from: number, name: string): Partial<Reply> {
    const res = this.core.resources.get(name);
    if (!res) return { status: DLM_STATUS.NORMAL };
    if (res.owner !== this.core.thisNode) return { status: res.recovering ? DLM_STATUS.RECOVERING : DLM_STATUS.NOTMASTER };
    if (res.migratingTo !== null) return { status: DLM_STATUS.MIGRATING };
    if (res.q.all().some((l) => l.node === from)) return { status: DLM_STATUS.BADARGS, error: 'deref while holding locks' };
    res.refmap.delete(from);
    res.idleSinceMs = this.core.nowMs();
    return { status: DLM_STATUS.NORMAL };
  }
}
