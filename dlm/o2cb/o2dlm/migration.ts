// Handing resources over at a clean leave (reference §3.5, "Migration"). For each
// resource this node masters: pick a member holding locks on it (else one in its refmap),
// freeze it (requests get MIGRATING), MIGRATE_REQUEST to the other members, ship the whole
// state in MIG_LOCKRES(MIGRATION) to the target, which masters it and sends
// ASSERT_MASTER(FINISH_MIGRATION) to everyone before answering. A resource nobody else
// references is simply dropped. If the hand-over fails, this node re-asserts itself
// (which unfreezes the others) and tries another target.
import type { Core } from './core';
import { isTransportError } from './core';
import type { Mastery } from './mastery';
import type { MigLockres, MigrateRequest, Reply } from './messages';
import { MSG } from './messages';
import { Queues, Resource } from './resource';
import type { Server } from './server';
import { ASSERT_FLAG, DLM_STATUS, MIG_FLAG, OWNER_UNKNOWN } from './status';
import { LVB_BYTES } from '../../../stackglue/types';

const ROUNDS_MAX = 10;
const TARGETS_MAX = 3;

export class Migration {
  constructor(private readonly core: Core, private readonly server: Server, private readonly mastery: Mastery) {}

  /** Migrates (or drops) every resource this node masters. */
  async migrateAll(): Promise<void> {
    const core = this.core;
    // More can arrive while we work (a member may still have asked us to master a name).
    for (let round = 0; round < ROUNDS_MAX; round++) {
      const owned = [...core.resources.values()].filter((r) => r.owner === core.thisNode);
      if (owned.length === 0) return;
      for (const res of owned) await this.migrateOne(res);
    }
    core.log(`leave: still mastering ${[...core.resources.values()].filter((r) => r.owner === core.thisNode).length} resources after ${ROUNDS_MAX} rounds; dropping them`);
  }

  private candidates(res: Resource, tried: Set<number>): number[] {
    const core = this.core;
    const live = new Set(core.liveMembers());
    const ok = (n: number): boolean => n !== core.thisNode && live.has(n) && !core.leavingNodes.has(n) && !tried.has(n);
    const holders = [...new Set(res.q.all().map((l) => l.node))].filter(ok).sort((a, b) => a - b);
    const refs = [...res.refmap].filter(ok).sort((a, b) => a - b);
    return [...holders, ...refs.filter((n) => !holders.includes(n))];
  }

  private async migrateOne(res: Resource): Promise<void> {
    const core = this.core;
    const tried = new Set<number>();
    for (let t = 0; t < TARGETS_MAX; t++) {
      if (res.owner !== core.thisNode) return;
      await this.drainAsts(res);
      const target = this.candidates(res, tried)[0];
      if (target === undefined) {
        if (res.q.lockCount > 0) core.log(`leave: ${res.name} has ${res.q.lockCount} locks but no member to take it; dropping`);
        core.resources.delete(res.name);
        return;
      }
      tried.add(target);
      res.migratingTo = target;
      let ok = false;
      try {
        const others = core.liveMembers().filter((n) => n !== target);
        await Promise.all(others.map(async (n) => {
          try {
            await core.request(n, MSG.MIGRATE_REQUEST, { name: res.name, from: core.thisNode, to: target });
          } catch (e) {
            if (!isTransportError(e)) throw e;
          }
        }));
        await this.drainAsts(res);
        const r = await core.request(target, MSG.MIG_LOCKRES, {
          name: res.name, flags: MIG_FLAG.MIGRATION, sender: core.thisNode, lvb: res.q.lvb, lvbVouched: true,
          locks: res.q.records(), refmap: [...res.refmap].filter((n) => n !== target), gen: 0,
        });
        ok = r.status === DLM_STATUS.NORMAL;
        if (!ok) core.log(`migration of ${res.name} to ${target}: status ${r.status} ${r.error}`);
      } catch (e) {
        if (!isTransportError(e)) throw e;
        core.log(`migration of ${res.name} to ${target}: ${e.code}`);
      }
      if (ok) {
        core.resources.delete(res.name);
        core.log(`migrated ${res.name} to ${target}`);
        return;
      }
      // Take it back: re-asserting unfreezes everyone who saw MIGRATE_REQUEST.
      res.owner = core.thisNode;
      res.migratingTo = null;
      await this.mastery.broadcastAssert(res, ASSERT_FLAG.FINISH_MIGRATION);
      this.server.kick(res);
    }
    core.log(`leave: could not migrate ${res.name}; dropping it`);
    core.resources.delete(res.name);
  }

  /** Outstanding ASTs go out from the old master before the state moves. */
  private async drainAsts(res: Resource): Promise<void> {
    this.server.flush();
    const deadlineMs = this.core.nowMs() + this.core.tun.requestTimeoutMs;
    while (res.astsInFlight > 0 && this.core.nowMs() < deadlineMs) await this.core.changed.wait(this.core.tun.retryDelayMs);
  }

  onMigrateRequest(from: number, m: MigrateRequest): Partial<Reply> {
    const core = this.core;
    if (m.from !== from || m.to === from) return { status: DLM_STATUS.BADARGS };
    const res = core.resources.get(m.name);
    if (res && res.owner === from) res.migratingTo = m.to;
    return { status: DLM_STATUS.NORMAL };
  }

  /** MIG_LOCKRES(MIGRATION) at the target: take the resource over. */
  async onMigrated(from: number, m: MigLockres): Promise<Partial<Reply>> {
    const core = this.core;
    if (core.state !== 'joined') return { status: DLM_STATUS.ERROR, error: `this node is ${core.state}` };
    if (m.sender !== from || m.lvb.length !== LVB_BYTES) return { status: DLM_STATUS.BADARGS };
    const existing = core.resources.get(m.name);
    if (existing && existing.owner !== from && existing.owner !== OWNER_UNKNOWN) {
      return { status: DLM_STATUS.ERROR, error: `${m.name} is mastered by ${existing.owner}` };
    }
    for (const l of m.locks) {
      if (l.node !== core.thisNode && !core.members.has(l.node)) return { status: DLM_STATUS.BADARGS, error: `lock of non-member ${l.node}` };
      if (l.node === core.thisNode && !existing?.local.has(l.seq)) return { status: DLM_STATUS.BADARGS, error: `lock ${l.node}:${l.seq} unknown here` };
    }
    // Build aside first: a bad record must change nothing.
    const q = new Queues();
    try {
      q.load(m.locks);
      q.checkInvariant(m.name);
    } catch (e) {
      return { status: DLM_STATUS.BADARGS, error: (e as Error).message };
    }
    m.lvb.copy(q.lvb);
    const res = core.resource(m.name);
    res.q = q;
    res.owner = core.thisNode;
    res.migratingTo = null;
    res.recovering = false;
    res.refmap.clear();
    for (const n of m.refmap) if (n !== core.thisNode && core.members.has(n)) res.refmap.add(n);
    for (const l of m.locks) if (l.node !== core.thisNode) res.refmap.add(l.node);
    await this.mastery.broadcastAssert(res, ASSERT_FLAG.FINISH_MIGRATION);
    this.server.kick(res);
    return { status: DLM_STATUS.NORMAL };
  }
}
