// Who masters a resource (reference §3.5): there is no directory; the first node to use a
// name asks everyone (MASTER_REQUEST) and, if nobody owns it, the lowest-numbered node
// still trying asserts itself (ASSERT_MASTER). A node that answered NO to someone's
// request while it had no interest remembers that (a "block" entry, o2dlm's BLOCK MLE)
// and, if it becomes interested, never asserts over that node: it waits for an assert.
// That rule is what makes two simultaneous first users agree on one master:
//   - if each saw the other's request while trying, both know both, and only the lower asserts;
//   - otherwise one of them answered NO before trying, and so waits for the other.
import type { Core } from './core';
import { Signal, isTransportError } from './core';
import type { AssertMaster, Reply } from './messages';
import { MSG } from './messages';
import { Queues, Resource } from './resource';
import { ASSERT_FLAG, DLM_STATUS, DlmError, MASTER_RESPONSE, OWNER_UNKNOWN } from './status';

const ROUNDS_MAX = 30;

export class Mastery {
  /** name -> nodes we told NO while not interested (node -> when). */
  private readonly blocks = new Map<string, Map<number, number>>();
  /** name -> nodes known to be trying in our current round (our "maybe" map). */
  private readonly trying = new Map<string, Set<number>>();
  /** Notified on every ASSERT_MASTER and membership change. */
  private readonly asserted: Signal;

  constructor(private readonly core: Core) {
    this.asserted = new Signal(core.clock);
  }

  /** Resolves once `res` has a known owner (mastering it here if nobody does). */
  ensureMaster(res: Resource): Promise<void> {
    if (res.owner !== OWNER_UNKNOWN) return Promise.resolve();
    if (!res.mastering) {
      res.mastering = this.master(res).finally(() => {
        res.mastering = null;
      });
    }
    return res.mastering;
  }

  private liveBlockers(name: string): number[] {
    const b = this.blocks.get(name);
    if (!b) return [];
    const now = this.core.nowMs();
    for (const [n, since] of b) {
      // A blocker that never asserted within the mastery timeout has given up or found
      // an existing owner; stop deferring to it.
      if (!this.core.members.has(n) || now - since > this.core.tun.masteryTimeoutMs) b.delete(n);
    }
    if (b.size === 0) this.blocks.delete(name);
    return [...b.keys()];
  }

  private async master(res: Resource): Promise<void> {
    const core = this.core;
    const name = res.name;
    for (let round = 0; round < ROUNDS_MAX; round++) {
      await core.waitRecovery();
      if (res.owner !== OWNER_UNKNOWN) return;
      if (!core.active) throw new DlmError('ENOTCONN', `mastery of ${name}: domain is ${core.state}`);
      const maybe = new Set<number>();
      this.trying.set(name, maybe);
      try {
        // Filled in by the replies below.
        const seen: { yes: number | null; retry: boolean } = { yes: null, retry: false };
        const nodes = core.liveMembers();
        await Promise.all(nodes.map(async (n) => {
          try {
            const r = await core.request(n, MSG.MASTER_REQUEST, { name }, core.tun.masteryTimeoutMs);
            if (r.status === DLM_STATUS.NORMAL) {
              if (r.response === MASTER_RESPONSE.YES) seen.yes = n;
              else if (r.response === MASTER_RESPONSE.MAYBE) maybe.add(n);
            } else if (r.status !== DLM_STATUS.NOT_IN_DOMAIN) {
              seen.retry = true; // RECOVERING, MIGRATING: ask again later
            }
          } catch (e) {
            if (!isTransportError(e)) throw e;
            // An unreachable node might be the owner: never assert past it.
            seen.retry = true;
          }
        }));
        if (res.owner !== OWNER_UNKNOWN) return;
        if (seen.yes !== null) {
          res.owner = seen.yes;
          return;
        }
        if (seen.retry) {
          await core.sleep(core.tun.retryDelayMs * (1 + round));
          continue;
        }
        const contenders = [core.thisNode, ...maybe];
        if (this.liveBlockers(name).length === 0 && Math.min(...contenders) === core.thisNode) {
          res.owner = core.thisNode;
          res.q = new Queues();
          res.refmap.clear();
          await this.broadcastAssert(res, 0);
          return;
        }
        // Someone else asserts: wait for it, or start over when a contender dies or time runs out.
        const deadlineMs = core.nowMs() + core.tun.masteryTimeoutMs;
        while (res.owner === OWNER_UNKNOWN && core.nowMs() < deadlineMs) {
          const others = [...maybe, ...this.liveBlockers(name)];
          if (others.length > 0 && others.every((n) => !core.members.has(n))) break;
          if (core.recovering) break;
          await this.asserted.wait(Math.max(1, deadlineMs - core.nowMs()));
        }
        if (res.owner !== OWNER_UNKNOWN) return;
        core.log(`mastery of ${name}: no assert within ${core.tun.masteryTimeoutMs} ms (round ${round}); starting over`);
        this.blocks.delete(name);
      } finally {
        this.trying.delete(name);
      }
    }
    throw new DlmError('ETIMEDOUT', `mastery of ${name} did not settle in ${ROUNDS_MAX} rounds`);
  }

  /** Tells every member that this node masters `res`; members holding a copy join its refmap. */
  async broadcastAssert(res: Resource, flags: number): Promise<void> {
    const core = this.core;
    await Promise.all(core.liveMembers().map(async (n) => {
      try {
        const r = await core.request(n, MSG.ASSERT_MASTER, { name: res.name, master: core.thisNode, flags });
        if (r.status !== DLM_STATUS.NORMAL) core.log(`ASSERT_MASTER ${res.name} to ${n}: status ${r.status} ${r.error}`);
        else if (r.hasRef && res.owner === core.thisNode) res.refmap.add(n);
      } catch (e) {
        if (!isTransportError(e)) throw e;
        core.log(`ASSERT_MASTER ${res.name} to ${n}: ${e.code}`);
      }
    }));
  }

  onMasterRequest(from: number, name: string): Partial<Reply> {
    const core = this.core;
    if (core.recovering) return { status: DLM_STATUS.RECOVERING };
    const res = core.resources.get(name);
    if (res && res.owner === core.thisNode) {
      if (res.migratingTo !== null) return { status: DLM_STATUS.MIGRATING };
      res.refmap.add(from);
      return { status: DLM_STATUS.NORMAL, response: MASTER_RESPONSE.YES };
    }
    if (res && res.owner !== OWNER_UNKNOWN) return { status: DLM_STATUS.NORMAL, response: MASTER_RESPONSE.NO };
    const maybe = this.trying.get(name);
    if (maybe) {
      maybe.add(from);
      return { status: DLM_STATUS.NORMAL, response: MASTER_RESPONSE.MAYBE };
    }
    let b = this.blocks.get(name);
    if (!b) {
      b = new Map();
      this.blocks.set(name, b);
    }
    b.set(from, core.nowMs());
    return { status: DLM_STATUS.NORMAL, response: MASTER_RESPONSE.NO };
  }

  onAssertMaster(from: number, m: AssertMaster): Partial<Reply> {
    const core = this.core;
    if (m.master !== from) return { status: DLM_STATUS.BADARGS, error: 'a node asserts only itself' };
    const res = core.resources.get(m.name);
    const finishing = (m.flags & ASSERT_FLAG.FINISH_MIGRATION) !== 0;
    if (res && res.owner === core.thisNode && !(finishing && res.migratingTo === from)) {
      core.log(`assertion: node ${from} asserts ${m.name}, which this node masters`);
      return { status: DLM_STATUS.ERROR, error: 'this node masters it' };
    }
    // Another live member masters it, and this is no migration's hand-over: the asserter
    // never got that member's YES. Two masters would grant against each other; refuse
    // and report (o2dlm BUG()s here).
    if (res && !finishing && res.owner !== OWNER_UNKNOWN && res.owner !== from && core.members.has(res.owner)) {
      core.log(`assertion: node ${from} asserts ${m.name}, which node ${res.owner} masters`);
      return { status: DLM_STATUS.ERROR, error: `node ${res.owner} masters it` };
    }
    this.blocks.delete(m.name);
    let hasRef = false;
    if (res) {
      res.owner = from;
      if (finishing) res.migratingTo = null;
      // A leaving node is about to drop its copy: it takes no reference.
      hasRef = core.state === 'joined';
    }
    this.asserted.notify();
    return { status: DLM_STATUS.NORMAL, hasRef };
  }

  onMasterRequery(name: string): Partial<Reply> {
    const res = this.core.resources.get(name);
    return { status: DLM_STATUS.NORMAL, master: res ? res.owner : OWNER_UNKNOWN };
  }

  /** A member died or left: forget what it was trying, and wake rounds waiting on it. */
  nodeGone(n: number): void {
    for (const [name, b] of this.blocks) {
      b.delete(n);
      if (b.size === 0) this.blocks.delete(name);
    }
    this.asserted.notify();
  }
}
