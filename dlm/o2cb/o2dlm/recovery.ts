// Recovery after a member dies (reference §3.7). Every node: drop the dead node's locks
// on the resources it masters (zeroing the LVB if it held EX), mark the resources the dead
// node mastered RECOVERING, and hold new lock traffic. The recovery master, the lowest
// live member (deterministic; if it dies the next lowest starts over with both dead nodes),
// then runs one round:
//   BEGIN_RECO(dead)  -> every survivor learns the dead set (and reports its own backlog);
//   LOCK_REQUEST      -> every survivor sends MIG_LOCKRES(RECOVERY) for each resource a
//                        dead node mastered (its own locks, and a value block it can vouch
//                        for), then RECO_DATA_DONE;
//   rebuild           -> the recovery master masters all those resources, queues rebuilt;
//   FINALIZE_RECO 1   -> survivors point those resources at the new master;
//   FINALIZE_RECO 2   -> survivors end recovery: lock traffic and the shuffle resume, and
//                        onEviction(dead) fires.
// A round fails as a whole (a survivor died or timed out) and is retried with a new
// generation; messages of an older generation are refused as STALE.
import type { Core } from './core';
import { isTransportError } from './core';
import type { Client, RecoveryReport } from './client';
import type { Mastery } from './mastery';
import type { MigLockres, Reco, Reply } from './messages';
import { MSG } from './messages';
import { Queues } from './resource';
import type { Server } from './server';
import { DLM_STATUS, DlmError, MIG_FLAG, OWNER_UNKNOWN } from './status';
import { LVB_BYTES } from '../../../stackglue/types';

const LOOP_ITERATIONS_MAX = 10000;

interface Collection {
  gen: number;
  dead: Set<number>;
  expect: Set<number>;
  done: Set<number>;
  reports: Map<string, Array<{ node: number; report: RecoveryReport }>>;
}

export class Recovery {
  private running = false;
  private genCounter = 0;
  private collect: Collection | null = null;
  /** The recovery round this node follows (set by BEGIN_RECO). */
  private following: { master: number; gen: number } | null = null;

  constructor(
    private readonly core: Core,
    private readonly server: Server,
    private readonly client: Client,
    private readonly mastery: Mastery,
    private readonly onEviction: (node: number) => void,
  ) {}

  /** The heartbeat (or a BEGIN_RECO) says `n` is dead. */
  nodeDown(n: number): void {
    const core = this.core;
    if (n === core.thisNode) return;
    if (core.joining?.node === n) core.joining = null;
    if (!core.members.has(n)) {
      this.mastery.nodeGone(n);
      return;
    }
    core.log(`node ${n} died; recovery needed`);
    core.members.delete(n);
    core.leavingNodes.delete(n);
    core.recoveryMap.add(n);
    try {
      core.opts.onNodeDown?.(n);
    } catch (e) {
      core.log(`onNodeDown(${n}) threw: ${(e as Error).message}`);
    }
    for (const res of core.resources.values()) {
      if (res.owner === core.thisNode) {
        // The dead node's locks go now; the shuffle waits until recovery ends.
        if (res.q.removeNode(n)) res.q.lvb.fill(0);
        res.refmap.delete(n);
      } else if (res.owner === n) {
        res.recovering = true;
      }
      if (res.migratingTo === n) res.migratingTo = null;
    }
    this.mastery.nodeGone(n);
    core.changed.notify();
    void this.loop();
  }

  private recoveryMasterNow(): number {
    return Math.min(this.core.thisNode, ...this.core.liveMembers());
  }

  private async loop(): Promise<void> {
    const core = this.core;
    if (this.running) return;
    this.running = true;
    try {
      for (let i = 0; i < LOOP_ITERATIONS_MAX && core.recovering && core.active; i++) {
        if (this.recoveryMasterNow() === core.thisNode) {
          try {
            await this.runAsMaster();
          } catch (e) {
            core.log(`recovery round failed: ${(e as Error).message}; retrying`);
            await core.sleep(core.tun.retryDelayMs * 5);
          }
        } else {
          // The recovery master drives; wake on its FINALIZE or on any death.
          await core.changed.wait(core.tun.recoveryTimeoutMs);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async runAsMaster(): Promise<void> {
    const core = this.core;
    this.genCounter += 1;
    const gen = ((this.genCounter & 0xffffff) * 256 + core.thisNode) >>> 0;
    const dead = new Set(core.recoveryMap);
    const nodes = core.liveMembers();
    this.following = { master: core.thisNode, gen };
    core.log(`recovery master for ${[...dead]} (gen ${gen}), survivors ${nodes}`);
    const body = (extra: object): object => ({ recoMaster: core.thisNode, gen, sender: core.thisNode, ...extra });
    // BEGIN_RECO: everyone learns the dead set; their backlog of dead nodes joins this round.
    await Promise.all(nodes.map(async (n) => {
      const r = await core.request(n, MSG.BEGIN_RECO, body({ dead: [...dead] }));
      if (r.status !== DLM_STATUS.NORMAL) throw new DlmError('EBUSY', `BEGIN_RECO refused by ${n}: ${r.status} ${r.error}`);
      for (const d of r.dead) if (d !== core.thisNode && !core.members.has(d)) dead.add(d);
    }));
    const c: Collection = { gen, dead, expect: new Set(nodes), done: new Set(), reports: new Map() };
    this.collect = c;
    try {
      for (const res of core.resources.values()) {
        if (dead.has(res.owner)) this.addReport(c, res.name, core.thisNode, this.client.reportRecovery(res));
      }
      await Promise.all(nodes.map(async (n) => {
        const r = await core.request(n, MSG.LOCK_REQUEST, body({ dead: [...dead] }));
        if (r.status !== DLM_STATUS.NORMAL) throw new DlmError('EBUSY', `LOCK_REQUEST refused by ${n}: ${r.status}`);
      }));
      const deadlineMs = core.nowMs() + core.tun.recoveryTimeoutMs;
      while ([...c.expect].some((n) => !c.done.has(n))) {
        if ([...c.expect].some((n) => !core.members.has(n))) throw new DlmError('ENOTCONN', 'a survivor died during recovery');
        if (core.nowMs() > deadlineMs) throw new DlmError('ETIMEDOUT', 'survivors did not send their locks in time');
        await core.changed.wait(Math.max(1, deadlineMs - core.nowMs()));
      }
      this.rebuild(c);
    } finally {
      this.collect = null;
    }
    for (const stage of [1, 2]) {
      await Promise.all(nodes.map(async (n) => {
        if (!core.members.has(n)) return;
        const r = await core.request(n, MSG.FINALIZE_RECO, body({ dead: [...dead], stage }));
        if (r.status !== DLM_STATUS.NORMAL) core.log(`FINALIZE_RECO ${stage} to ${n}: ${r.status}`);
      }));
    }
    this.finish(dead);
  }

  private addReport(c: Collection, name: string, node: number, report: RecoveryReport): void {
    let list = c.reports.get(name);
    if (!list) {
      list = [];
      c.reports.set(name, list);
    }
    list.push({ node, report });
  }

  /** The recovery master takes over every reported resource. */
  private rebuild(c: Collection): void {
    const core = this.core;
    for (const res of core.resources.values()) {
      // Resources of the dead nobody reported (not even us) are nobody's business now.
      if (c.dead.has(res.owner) && !c.reports.has(res.name)) res.owner = OWNER_UNKNOWN;
    }
    for (const [name, list] of c.reports) {
      const q = new Queues();
      let lvb: Buffer | null = null;
      let fromPr = false;
      for (const { report } of list) {
        q.load(report.records);
        if (report.lvb && (lvb === null || (!fromPr && report.lvbFromPr))) {
          lvb = report.lvb;
          fromPr = report.lvbFromPr;
        }
      }
      q.checkInvariant(name);
      // No survivor can vouch for the value (the dead node may have held EX): zero it.
      if (lvb) lvb.copy(q.lvb);
      const res = core.resource(name);
      res.q = q;
      res.owner = core.thisNode;
      res.recovering = false;
      res.migratingTo = null;
      res.refmap.clear();
      for (const { node } of list) if (node !== core.thisNode) res.refmap.add(node);
      core.log(`recovered ${name}: ${q.lockCount} locks, lvb ${lvb ? 'kept' : 'zeroed'}`);
    }
  }

  /** End of a round on this node: resume, and tell the filesystem. */
  private finish(dead: Set<number>): void {
    const core = this.core;
    const evicted: number[] = [];
    for (const d of dead) {
      if (core.recoveryMap.delete(d)) evicted.push(d);
    }
    this.following = null;
    if (!core.recovering) {
      this.client.afterRecovery();
      this.server.kickAll();
    }
    core.changed.notify();
    for (const d of evicted) {
      core.log(`recovery of node ${d} finished`);
      try {
        this.onEviction(d);
      } catch (e) {
        core.log(`onEviction(${d}) threw: ${(e as Error).message}`);
      }
    }
  }

  onBeginReco(from: number, m: Reco): Partial<Reply> {
    const core = this.core;
    if (m.recoMaster !== from || m.sender !== from) return { status: DLM_STATUS.BADARGS, error: 'recovery master must send its own BEGIN_RECO' };
    for (const d of m.dead) {
      if (d === core.thisNode) return { status: DLM_STATUS.BADARGS, error: 'this node is not dead' };
    }
    for (const d of m.dead) if (core.members.has(d)) this.nodeDown(d);
    this.following = { master: from, gen: m.gen };
    return { status: DLM_STATUS.NORMAL, dead: [...core.recoveryMap] };
  }

  onLockRequest(from: number, m: Reco): Partial<Reply> {
    const core = this.core;
    if (!this.following || this.following.master !== from || this.following.gen !== m.gen) {
      return { status: DLM_STATUS.STALE, error: 'no BEGIN_RECO for this generation' };
    }
    const dead = new Set(m.dead);
    // Snapshot now (client traffic is held, the dead cannot send ASTs), send afterwards.
    const reports: Array<{ name: string; report: RecoveryReport }> = [];
    for (const res of core.resources.values()) {
      if (dead.has(res.owner)) reports.push({ name: res.name, report: this.client.reportRecovery(res) });
    }
    void (async () => {
      try {
        for (const { name, report } of reports) {
          const r = await core.request(from, MSG.MIG_LOCKRES, {
            name, flags: MIG_FLAG.RECOVERY, sender: core.thisNode, lvb: report.lvb ?? Buffer.alloc(0),
            lvbVouched: report.lvb !== null, locks: report.records, refmap: [], gen: m.gen,
          });
          if (r.status !== DLM_STATUS.NORMAL) throw new DlmError('EBUSY', `MIG_LOCKRES ${name}: status ${r.status}`);
        }
        await core.request(from, MSG.RECO_DATA_DONE, { recoMaster: from, dead: m.dead, gen: m.gen, sender: core.thisNode });
      } catch (e) {
        if (!isTransportError(e) && !(e instanceof DlmError)) core.log(`recovery data to ${from}: ${(e as Error).stack}`);
        else core.log(`recovery data to ${from}: ${(e as Error).message}`);
      }
    })();
    return { status: DLM_STATUS.NORMAL };
  }

  /** MIG_LOCKRES with the RECOVERY flag: one survivor's locks on one resource. */
  onRecoveryData(from: number, m: MigLockres): Partial<Reply> {
    const c = this.collect;
    if (!c || c.gen !== m.gen || !c.expect.has(from)) return { status: DLM_STATUS.STALE };
    if (m.sender !== from || m.locks.some((l) => l.node !== from)) return { status: DLM_STATUS.BADARGS, error: 'a survivor reports only its own locks' };
    if (m.lvb.length !== 0 && m.lvb.length !== LVB_BYTES) return { status: DLM_STATUS.BADARGS };
    if (c.done.has(from)) return { status: DLM_STATUS.BADARGS, error: 'data after RECO_DATA_DONE' };
    this.addReport(c, m.name, from, {
      records: m.locks, lvb: m.lvbVouched && m.lvb.length === LVB_BYTES ? m.lvb : null, lvbFromPr: false,
    });
    return { status: DLM_STATUS.NORMAL };
  }

  onRecoDataDone(from: number, m: Reco): Partial<Reply> {
    const c = this.collect;
    if (!c || c.gen !== m.gen || !c.expect.has(from) || m.sender !== from) return { status: DLM_STATUS.STALE };
    c.done.add(from);
    this.core.changed.notify();
    return { status: DLM_STATUS.NORMAL };
  }

  onFinalize(from: number, m: Reco): Partial<Reply> {
    const core = this.core;
    if (!this.following || this.following.master !== from || this.following.gen !== m.gen) return { status: DLM_STATUS.STALE };
    const dead = new Set(m.dead);
    if (m.stage === 1) {
      for (const res of core.resources.values()) {
        if (dead.has(res.owner)) {
          res.owner = from;
          res.recovering = false;
        }
      }
      return { status: DLM_STATUS.NORMAL };
    }
    if (m.stage !== 2) return { status: DLM_STATUS.BADARGS };
    this.finish(dead);
    return { status: DLM_STATUS.NORMAL };
  }

  /** For dump(): the state of recovery on this node. */
  describe(): object {
    return { recoveryMap: [...this.core.recoveryMap], following: this.following, collecting: this.collect?.gen ?? null };
  }
}

