// Test harness for o2dlm on the simulated network: a cluster of DlmDomains, a lock handle
// that turns callbacks into awaitable events, and a checker of the lock manager's global
// promises (no two incompatible locks believed held at once; exactly one callback per
// request). Every failure of those promises is recorded, and tests assert none happened.
import type { Test } from 'tap';
import { DlmDomain } from '../../dlm/o2cb/o2dlm/domain';
import { LOCK_STATUS, Lksb, LockMode, StackCallbacks, compatible, newLksb } from '../../stackglue/types';
import { SimNet, SimNetOptions } from './simnet';

export type LockEvent =
  | { kind: 'grant'; status: number; mode: LockMode }
  | { kind: 'unlock'; status: number };

/** The promises the lock manager makes, checked as the callbacks come in. */
export class Checker {
  readonly violations: string[] = [];
  private readonly holders = new Map<string, Set<TLock>>();

  hold(l: TLock): void {
    let s = this.holders.get(l.name);
    if (!s) {
      s = new Set();
      this.holders.set(l.name, s);
    }
    s.add(l);
    for (const o of s) {
      if (o !== l && !compatible(o.believed, l.believed)) {
        this.violations.push(`${l.name}: ${l.id} believes ${l.believed} while ${o.id} believes ${o.believed}`);
      }
    }
  }

  release(l: TLock): void {
    if (l.believed === 'NL') this.holders.get(l.name)?.delete(l);
  }

  forget(l: TLock): void {
    this.holders.get(l.name)?.delete(l);
  }
}

let lockIds = 0;

/** One lksb on one node, with its outstanding requests tracked. */
export class TLock {
  readonly lksb: Lksb;
  readonly id: string;
  /** The mode the caller may rely on: from a successful grant until it asks to go lower. */
  believed: LockMode = 'NL';
  readonly basts: LockMode[] = [];
  readonly events: LockEvent[] = [];
  /** Requests issued and not yet called back: 'lock' | 'unlock' | 'cancel'. */
  readonly outstanding: string[] = [];
  attached = false;
  private waiters: Array<() => void> = [];
  onBast: ((level: LockMode) => void) | null = null;

  constructor(readonly node: TNode, readonly name: string) {
    this.lksb = newLksb(this);
    this.id = `n${node.num}#${++lockIds}`;
  }

  private checker(): Checker {
    return this.node.cluster.checker;
  }

  private v(msg: string): void {
    this.checker().violations.push(`${this.id} ${this.name}: ${msg}`);
  }

  /** Issues a lock or convert; resolves when it is called back. */
  lock(mode: LockMode, flags = 0): Promise<LockEvent> {
    this.issueLock(mode, flags);
    return this.next();
  }

  issueLock(mode: LockMode, flags = 0): void {
    if (this.outstanding.length > 0) this.v(`lock while ${this.outstanding} outstanding`);
    const convert = this.attached ? 0x2 : 0;
    if (convert && MODE_RANK[mode] < MODE_RANK[this.believed]) {
      // Going down: stop relying on the higher mode from the moment we ask.
      this.believed = mode;
      this.checker().release(this);
    }
    this.outstanding.push('lock');
    this.node.dom.lock(this.lksb, mode, flags | convert, this.name);
    this.attached = true;
  }

  unlock(flags = 0): Promise<LockEvent> {
    this.issueUnlock(flags);
    return this.next();
  }

  issueUnlock(flags = 0): void {
    if (this.outstanding.length > 0) this.v(`unlock while ${this.outstanding} outstanding`);
    this.believed = 'NL';
    this.checker().release(this);
    this.outstanding.push('unlock');
    this.node.dom.unlock(this.lksb, flags);
  }

  issueCancel(): void {
    this.outstanding.push('cancel');
    this.node.dom.unlock(this.lksb, 0x4);
  }

  /** The next callback (already received or future). */
  async next(): Promise<LockEvent> {
    for (let i = 0; i < 1_000_000; i++) {
      const e = this.events.shift();
      if (e) return e;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    throw new Error('unreachable');
  }

  private push(e: LockEvent): void {
    const key = `${e.kind} ${e.status}`;
    const stats = this.node.cluster.stats;
    stats.set(key, (stats.get(key) ?? 0) + 1);
    this.events.push(e);
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  onGrant(): void {
    const i = this.outstanding.indexOf('lock');
    if (i < 0) this.v(`onGrant with no lock request outstanding (${this.outstanding})`);
    else this.outstanding.splice(i, 1);
    const st = this.lksb.status;
    if (st === LOCK_STATUS.OK) {
      this.believed = this.lksb.granted;
      if (this.believed !== 'NL') this.checker().hold(this);
    } else if (this.lksb.lockId === undefined) {
      this.attached = false;
    }
    this.push({ kind: 'grant', status: st, mode: this.lksb.granted });
  }

  onUnlock(status: number): void {
    if (status === LOCK_STATUS.ECANCEL) {
      const c = this.outstanding.indexOf('cancel');
      const l = this.outstanding.indexOf('lock');
      if (c < 0 || l < 0) this.v(`ECANCEL without cancel and lock outstanding (${this.outstanding})`);
      this.outstanding.splice(0, this.outstanding.length, ...this.outstanding.filter((x) => x !== 'cancel' && x !== 'lock'));
      if (this.lksb.lockId === undefined) this.attached = false;
    } else if (status === LOCK_STATUS.EBUSY) {
      const c = this.outstanding.indexOf('cancel');
      if (c < 0) this.v('EBUSY without a cancel outstanding');
      else this.outstanding.splice(c, 1);
      if (this.outstanding.includes('lock')) this.v('EBUSY before the grant it lost to');
    } else {
      const u = this.outstanding.indexOf('unlock');
      if (u < 0) this.v(`onUnlock(${status}) with no unlock outstanding (${this.outstanding})`);
      else this.outstanding.splice(u, 1);
      if (status === LOCK_STATUS.OK) {
        this.attached = false;
        this.checker().forget(this);
      }
    }
    this.push({ kind: 'unlock', status });
  }
}

const MODE_RANK: Record<LockMode, number> = { NL: 0, PR: 1, EX: 2 };

export class TNode {
  dom: DlmDomain;
  readonly evictions: number[] = [];
  /** Grants and node-down events in the order this node's callbacks saw them. */
  readonly timeline: string[] = [];
  readonly logs: string[] = [];

  constructor(readonly cluster: Cluster, readonly num: number, opts: { fsMinor?: number; fsMajor?: number }) {
    const callbacks: StackCallbacks = {
      onGrant: (lksb) => {
        this.timeline.push(`grant ${(lksb.owner as TLock).name}`);
        (lksb.owner as TLock).onGrant();
      },
      onBlocking: (lksb, level) => {
        const l = lksb.owner as TLock;
        l.basts.push(level);
        cluster.stats.set('bast', (cluster.stats.get('bast') ?? 0) + 1);
        l.onBast?.(level);
      },
      onUnlock: (lksb, status) => (lksb.owner as TLock).onUnlock(status),
    };
    this.dom = new DlmDomain(cluster.net.transport(num), {
      name: cluster.domain,
      proto: { major: opts.fsMajor ?? 1, minor: opts.fsMinor ?? 0 },
      callbacks,
      onEviction: (n) => this.evictions.push(n),
      onNodeDown: (n) => this.timeline.push(`down ${n}`),
      log: (line) => {
        this.logs.push(`[${cluster.net.now}] ${line}`);
        if (process.env.O2DLM_TRACE) console.error(`[${cluster.net.now}] ${line}`);
      },
      clock: cluster.net.clock,
      purgeIntervalMs: cluster.purgeIntervalMs,
    });
  }

  lock(name: string): TLock {
    return new TLock(this, name);
  }
}

export interface ClusterOptions extends Partial<SimNetOptions> {
  seed: number;
  nodes?: number | number[];
  purgeIntervalMs?: number;
  /** Join all nodes (default true). */
  join?: boolean;
}

export class Cluster {
  readonly net: SimNet;
  readonly nodes = new Map<number, TNode>();
  readonly checker = new Checker();
  /** Callbacks seen, by kind and status (to show what a random run exercised). */
  readonly stats = new Map<string, number>();
  readonly domain = '0123456789ABCDEF0123456789ABCDEF';
  readonly purgeIntervalMs: number;

  constructor(opts: ClusterOptions) {
    this.net = new SimNet({ ...opts, nodes: opts.nodes ?? 3, seed: opts.seed });
    this.purgeIntervalMs = opts.purgeIntervalMs ?? 8000;
  }

  add(num: number, opts: { fsMinor?: number; fsMajor?: number } = {}): TNode {
    const n = new TNode(this, num, opts);
    this.nodes.set(num, n);
    return n;
  }

  node(num: number): TNode {
    const n = this.nodes.get(num);
    if (!n) throw new Error(`no node ${num}`);
    return n;
  }

  /** Joins the nodes one after the other. */
  async joinAll(): Promise<void> {
    for (const n of this.nodes.values()) await n.dom.join();
  }

  /** Virtual-time wait until `cond` holds; throws after `limitMs` virtual ms. */
  async until(cond: () => boolean, limitMs = 60000, what = 'condition'): Promise<void> {
    const end = this.net.now + limitMs;
    while (!cond()) {
      if (this.net.now > end) throw new Error(`timed out waiting for ${what}`);
      await this.net.sleep(5);
    }
  }

  /** Every log line that reports a broken assertion. */
  assertionLogs(): string[] {
    return [...this.nodes.values()].flatMap((n) => n.logs.filter((l) => /assertion/i.test(l)));
  }

  close(): void {
    for (const n of this.nodes.values()) n.dom.abandon();
    this.net.close();
  }

  static async start(t: Test, opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    t.teardown(() => c.close());
    const nums = c.net.nodes;
    for (const n of nums) c.add(n);
    if (opts.join ?? true) await c.joinAll();
    return c;
  }
}

/** Fails the test with the checker's and the nodes' assertion reports, if any. */
export function checkClean(t: Test, c: Cluster): void {
  t.same(c.checker.violations, [], 'no lock-manager promise broken');
  t.same(c.assertionLogs(), [], 'no assertion reported in the logs');
}
