// Dropping unused resources (reference §3.2, §3.5 "Deref"): a resource that has had no
// locks and no client activity for the purge interval is purged. A non-master first tells
// the master (DEREF_LOCKRES) so the master's refmap forgets it; a master drops its copy
// once its refmap is empty too. The sweep runs on a timer, a few times per interval.
import type { Client } from './client';
import type { Core } from './core';
import { isTransportError } from './core';
import { MSG } from './messages';
import type { Resource } from './resource';
import { DLM_STATUS, OWNER_UNKNOWN } from './status';

/** Bound on derefs started by one sweep (the rest wait for the next one). */
const DEREFS_PER_SWEEP_MAX = 100;

export class Purger {
  private timer: unknown = null;

  constructor(private readonly core: Core, private readonly client: Client) {}

  start(): void {
    if (this.timer !== null) return;
    const periodMs = Math.max(10, Math.floor(this.core.tun.purgeIntervalMs / 4));
    const tick = (): void => {
      this.timer = this.core.clock.setTimer(tick, periodMs);
      this.sweep();
    };
    this.timer = this.core.clock.setTimer(tick, periodMs);
  }

  stop(): void {
    if (this.timer !== null) this.core.clock.clearTimer(this.timer);
    this.timer = null;
  }

  sweep(): void {
    const core = this.core;
    if (core.state !== 'joined' || core.recovering) return;
    const nowMs = core.nowMs();
    let derefs = 0;
    for (const res of [...core.resources.values()]) {
      if (!res.isIdle(core.thisNode) || res.migratingTo !== null || res.recovering) {
        res.idleSinceMs = nowMs;
        continue;
      }
      if (nowMs - res.idleSinceMs < core.tun.purgeIntervalMs) continue;
      if (res.owner === core.thisNode) {
        if (res.refmap.size === 0) this.drop(res);
      } else if (res.owner === OWNER_UNKNOWN || !core.members.has(res.owner)) {
        this.drop(res);
      } else if (derefs < DEREFS_PER_SWEEP_MAX) {
        derefs += 1;
        res.idleSinceMs = nowMs; // not again until this deref is done and another interval passed
        this.client.enqueue(res, () => this.deref(res));
      }
    }
  }

  private drop(res: Resource): void {
    if (this.core.resources.get(res.name) === res) this.core.resources.delete(res.name);
  }

  private async deref(res: Resource): Promise<void> {
    const core = this.core;
    // Re-check on the chain: a lock request may have come in since the sweep.
    if (res.local.size > 0 || res.mastering !== null || res.owner === core.thisNode || res.owner === OWNER_UNKNOWN) return;
    if (core.recovering || res.recovering || res.migratingTo !== null) return;
    const owner = res.owner;
    let status: number;
    try {
      status = (await core.request(owner, MSG.DEREF_LOCKRES, { name: res.name })).status;
    } catch (e) {
      if (!isTransportError(e)) throw e;
      return; // try again next sweep
    }
    if (status !== DLM_STATUS.NORMAL && status !== DLM_STATUS.NOTMASTER && status !== DLM_STATUS.NOT_IN_DOMAIN) return;
    if (res.busy > 1 || res.local.size > 0) {
      // Someone queued a request meanwhile: our reference is gone, so find the master again.
      if (res.owner === owner) res.owner = OWNER_UNKNOWN;
      return;
    }
    this.drop(res);
  }

  /** leave(): dereference everything this node holds a copy of (no locks remain). */
  async derefAll(): Promise<void> {
    const core = this.core;
    await Promise.all([...core.resources.values()].map(async (res) => {
      if (res.owner !== core.thisNode && res.owner !== OWNER_UNKNOWN && core.members.has(res.owner)) {
        try {
          await core.request(res.owner, MSG.DEREF_LOCKRES, { name: res.name });
        } catch (e) {
          if (!isTransportError(e)) throw e;
        }
      }
      if (res.owner !== core.thisNode) this.drop(res);
    }));
  }
}
