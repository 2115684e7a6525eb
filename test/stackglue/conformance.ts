// The lock-manager conformance suite (STYLE.md §2, abstract-level style; DESIGN.md §2):
// every stackglue plugin (`local`, `o2cb`, `user`) runs the same cases against itself by
// passing a factory that builds a cluster of N nodes. What a plugin cannot do is declared in
// `supports`, and those cases are skipped by name with the reason, never silently.
//
//   await runConformance(t, {
//     name: 'o2cb',
//     supports: { multiNode: true, conflicts: true, kill: true, partition: true, killDuringRecovery: true, maxNodes: 4 },
//     create: async (nodes) => ({ nodes, connect, kill, partition, heal, isFenced, failoverBoundMs, close }),
//   }, { lvbTortureIterations: 10_000 });
//
// The factory contract (ClusterUnderTest):
//   - connect(node, opts, callbacks, onRecovery) joins lock space opts.group on that node and
//     resolves with a ClusterConnection; callbacks are called with the very Lksb objects the
//     suite passed to lock()/unlock() (a factory that proxies to another process keeps the
//     caller's objects and updates their fields before calling back). A node may connect
//     again after a refused connect (protocol case).
//   - every case calls create() for a fresh cluster and close() when done; close() must
//     tear down whatever is left (dead, fenced or partitioned nodes included).
//   - kill(node) SIGKILLs the node: its connections die without a word. partition(groups)
//     cuts the network between the groups (heartbeat storage stays shared); heal() undoes it.
//   - failoverBoundMs: how long after a death (or a partition) survivors may have to wait
//     for recovery to finish; the suite allows failoverBoundMs + opTimeoutMs per grant.
//
// Cases and cluster sizes ("spread" = min(3, maxNodes) when multiNode, else 1; contention
// cases put the contenders on different nodes round-robin, or all on one node):
//   protocol (1 node; 2 nodes: {1,0}+{1,2} -> 1.0, major 2 refused)  [multiNode]
//   compatibility matrix with NOQUEUE, new locks and converts (1 node; 2 nodes)
//                                            incompatible pairs need [conflicts]
//   LVB rules (spread); trylock free/compatible (spread); trylock held [conflicts]
//   convert-before-new ordering, FIFO, BAST levels, BAST coalescing, cancel of a blocked
//   request [conflicts]; cancel-versus-grant race (spread; uncontended without conflicts)
//   lvb_torture (spread: writer on node 0, a PR reader on each other node)
//   exactly one completion under concurrent load (spread)
//   node killed holding EX (min(3, maxNodes)) [kill]; second death during recovery
//   (4 nodes if maxNodes >= 4, else 3) [killDuringRecovery]; 2|1 partition (3) [partition]
//
// What each case checks is written at the case. The lock-client wrapper (lock-client.ts)
// also polices the callback contract on every request in every case: exactly one
// completion per request, no callback inside lock()/unlock(), nothing stray. A case ends
// by asserting no breaches, nothing left in flight, and no onRecovery unless it killed.
import type {} from 'tap';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  ClusterConnection, ConnectOptions, LKF, LOCK_STATUS, LVB_BYTES, Lksb, LockMode, ProtocolVersion, StackCallbacks, compatible,
} from '../../stackglue/types';
import { LockClient, LockResult, Recorder, quiet, sleepMs, ticks, until, within } from './lock-client';

export interface ClusterUnderTest {
  /** Node indexes 0..nodes-1. */
  readonly nodes: number;
  connect(
    node: number,
    opts: Omit<ConnectOptions, 'callbacks' | 'onRecovery'>,
    callbacks: StackCallbacks,
    onRecovery: (nodeNum: number) => void,
  ): Promise<ClusterConnection>;
  /** SIGKILL the node (its connections die). Required when supports.kill. */
  kill?(node: number): Promise<void>;
  /** Cut the network between groups of nodes. Required when supports.partition. */
  partition?(groups: number[][]): Promise<void>;
  heal?(): Promise<void>;
  /** The node fenced itself (its process exited). Required when supports.partition. */
  isFenced?(node: number): Promise<boolean>;
  /** Dead time + recovery: how long after a kill or partition survivors may wait. */
  readonly failoverBoundMs: number;
  /** Bound on one uncontended request's completion. Default 5000. */
  readonly opTimeoutMs?: number;
  /** Bound on connect() (a domain join). Default 4 × opTimeoutMs. */
  readonly connectTimeoutMs?: number;
  /**
   * How long a queued request takes to reach the lock master's queues, used where the
   * suite must order requests from different nodes and has nothing to observe. Default 100.
   */
  readonly settleMs?: number;
  /** The node indexes' cluster node numbers as onRecovery reports them. Default: index. */
  nodeNumber?(node: number): number;
  close(): Promise<void>;
}

export interface Supports {
  /** More than one node can join one lock space. */
  multiNode: boolean;
  /** Incompatible requests wait (or fail with NOQUEUE); false for a stack that grants all. */
  conflicts: boolean;
  /** kill() is available and survivors recover. */
  kill: boolean;
  /** partition()/heal()/isFenced() are available and the minority fences itself. */
  partition: boolean;
  /** A second death during recovery is survived. */
  killDuringRecovery: boolean;
  /** The largest cluster create() can build. */
  maxNodes: number;
}

export interface SuiteFactory {
  name: string;
  supports: Supports;
  create(nodes: number): Promise<ClusterUnderTest>;
}

export interface ConformanceOptions {
  /** Writer iterations of lvb_torture. Default 1000. */
  lvbTortureIterations?: number;
  /** Iterations of the cancel-versus-grant race. Default 100. */
  cancelRaceIterations?: number;
}

const PROTO: ProtocolVersion = { major: 1, minor: 0 };
const MODES: readonly LockMode[] = ['NL', 'PR', 'EX'];
const DEFAULT_OP_TIMEOUT_MS = 5000;
const DEFAULT_SETTLE_MS = 100;
const COALESCE_WAITERS = 5;
/** o2dlm coalesces BASTs per level: 5 waiters may cost a holder one BAST per level, no more. */
const COALESCE_BASTS_MAX = 2;
const FAILURES_REPORTED_MAX = 5;

/** 64 recognisable bytes, never all zero (seed ≥ 1). */
export function lvbPattern(seed: number): Buffer {
  const b = Buffer.alloc(LVB_BYTES);
  for (let i = 0; i < LVB_BYTES; i++) b[i] = (seed * 37 + i * 11 + 1) & 0xff;
  return b;
}

/**
 * lvb_torture's value block: a big-endian counter plus 56 bytes derived from it. Counter 0
 * is the all-zero block a new resource starts with.
 */
export function counterLvb(value: bigint): Buffer {
  const b = Buffer.alloc(LVB_BYTES);
  if (value === 0n) return b;
  b.writeBigUInt64BE(value, 0);
  for (let i = 8; i < LVB_BYTES; i++) b[i] = Number((value * 131n + BigInt(i)) & 0xffn);
  return b;
}

/** The counter in `lvb`, and whether the rest of the block matches it (not torn). */
export function readCounterLvb(lvb: Buffer): { value: bigint; intact: boolean } {
  const value = lvb.readBigUInt64BE(0);
  return { value, intact: counterLvb(value).equals(lvb) };
}

function isZero(b: Buffer): boolean {
  return b.every((x) => x === 0);
}

/**
 * One case's cluster and clients. Lock spaces are fresh per case (a random group), so a
 * factory may pool daemons between cases if it wants.
 */
class Session {
  readonly recorder = new Recorder();
  readonly clients: LockClient[];
  readonly group = randomBytes(16).toString('hex').toUpperCase();
  readonly opMs: number;
  readonly settleMs: number;
  readonly connectMs: number;
  readonly dead = new Set<number>();
  /** The case checked onRecovery itself (it killed or partitioned). */
  recoveriesChecked = false;

  constructor(readonly cluster: ClusterUnderTest) {
    this.opMs = cluster.opTimeoutMs ?? DEFAULT_OP_TIMEOUT_MS;
    this.settleMs = cluster.settleMs ?? DEFAULT_SETTLE_MS;
    this.connectMs = cluster.connectTimeoutMs ?? 4 * this.opMs;
    this.clients = Array.from({ length: cluster.nodes }, (_, i) => new LockClient(i, this.recorder, this.opMs));
  }

  /** Client for the i-th participant, spread round-robin over the nodes. */
  at(i: number): LockClient {
    return this.clients[i % this.clients.length];
  }

  nodeNumber(node: number): number {
    return this.cluster.nodeNumber?.(node) ?? node;
  }

  async connect(node: number, proto: ProtocolVersion = PROTO): Promise<ClusterConnection> {
    const c = this.clients[node];
    const conn = await within(
      this.cluster.connect(node, { clusterName: 'conformance', group: this.group, proto }, c.callbacks, c.onRecovery),
      this.connectMs, `node ${node} connect`,
    );
    c.attach(conn);
    return conn;
  }

  async connectAll(): Promise<void> {
    // One at a time: joins are serialised by the stacks anyway, and the order is the
    // node order (the lowest node joins first), which keeps mastery predictable.
    for (let n = 0; n < this.clients.length; n++) await this.connect(n);
  }

  async kill(node: number): Promise<void> {
    const kill = this.cluster.kill;
    if (!kill) throw new Error('test bug: kill without the capability');
    this.dead.add(node);
    this.clients[node].markDead();
    await within(kill.call(this.cluster, node), this.connectMs, `kill node ${node}`);
  }

  survivors(): number[] {
    return this.clients.map((c) => c.node).filter((n) => !this.dead.has(n));
  }

  /** Waits until every survivor got onRecovery for each of `deadNodes`, then checks: once each. */
  async expectRecoveries(t: tap.Test, deadNodes: number[], boundMs: number): Promise<void> {
    this.recoveriesChecked = true;
    const want = deadNodes.map((n) => this.nodeNumber(n)).sort((a, b) => a - b);
    const live = this.survivors();
    await until(
      () => live.every((n) => want.every((d) => this.clients[n].recoveries.includes(d))),
      boundMs, `onRecovery(${want.join(', ')}) on nodes ${live.join(', ')}`,
    ).catch((e: Error) => t.fail(e.message));
    // Late duplicates would arrive soon after the first: give them the time to.
    await sleepMs(this.settleMs);
    for (const n of live) {
      t.same([...this.clients[n].recoveries].sort((a, b) => a - b), want, `node ${n}: onRecovery exactly once for each of ${want.join(', ')}`);
    }
  }

  /** Asserts the case left the contract intact, then releases and tears down (bounded). */
  async finish(t: tap.Test): Promise<void> {
    await ticks();
    await sleepMs(this.settleMs); // duplicates and strays show up after the last completion
    t.same(this.recorder.violations, [], 'callback contract held (exactly one completion per request, none inside a call, no strays)');
    for (const c of this.clients) {
      if (!c.connected) continue;
      t.same(c.inFlight(), [], `node ${c.node}: no request left without a completion`);
      if (!this.recoveriesChecked) t.same(c.recoveries, [], `node ${c.node}: no onRecovery without a death`);
    }
    for (const c of this.clients) {
      if (!c.connected) continue;
      for (const l of c.heldLksbs()) {
        await c.unlockP(l).catch((e: Error) => t.comment(`cleanup unlock: ${e.message}`));
      }
      await within(c.connection.disconnect(), this.connectMs, `node ${c.node} disconnect`)
        .catch((e: Error) => t.fail(`node ${c.node} disconnect: ${e.message}`));
    }
    await within(this.cluster.close(), this.connectMs * 2, 'cluster close').catch((e: Error) => t.fail(e.message));
  }
}

/** Asserts a lock result is a grant at `mode` and that the lksb says so. */
function expectGranted(t: tap.Test, r: LockResult, lksb: Lksb, mode: LockMode, what: string): void {
  t.equal(r.status, LOCK_STATUS.OK, `${what}: status OK`);
  t.equal(lksb.granted, mode, `${what}: granted ${mode}`);
}

/** lockP that must be granted: fails the case at once otherwise (later steps depend on it). */
async function lockOk(c: LockClient, lksb: Lksb, mode: LockMode, flags: number, name: string, timeoutMs?: number): Promise<void> {
  const r = await c.lockP(lksb, mode, flags, name, timeoutMs);
  if (r.status !== LOCK_STATUS.OK || lksb.granted !== mode) {
    throw new Error(`node ${c.node} ${String(lksb.owner)}: ${name} ${mode} not granted (status ${r.status}, granted ${lksb.granted})`);
  }
}

async function unlockOk(c: LockClient, lksb: Lksb, flags = 0): Promise<void> {
  const s = await c.unlockP(lksb, flags);
  if (s !== LOCK_STATUS.OK) throw new Error(`node ${c.node} ${String(lksb.owner)}: unlock status ${s}`);
}

export async function runConformance(t: tap.Test, factory: SuiteFactory, opts: ConformanceOptions = {}): Promise<void> {
  const sup = factory.supports;
  const lvbIterations = opts.lvbTortureIterations ?? 1000;
  const raceIterations = opts.cancelRaceIterations ?? 100;
  /** Nodes for cases that only need contention: several when the stack has them. */
  const spread = sup.multiNode ? Math.min(3, sup.maxNodes) : 1;
  const noConflicts = sup.conflicts ? null
    : `${factory.name} grants every request at once (supports.conflicts=false): nothing ever waits or conflicts`;
  const noMulti = sup.multiNode ? null : `${factory.name} is single-node (supports.multiNode=false)`;
  const noKill = !sup.multiNode ? noMulti : sup.kill ? null : `${factory.name} cannot kill a node (supports.kill=false)`;
  const noKillDuring = noKill ?? (sup.killDuringRecovery ? null : `supports.killDuringRecovery=false`);
  const noPartition = !sup.multiNode ? noMulti
    : !sup.partition ? `${factory.name} cannot partition (supports.partition=false)`
    : sup.maxNodes < 3 ? `a 2|1 partition needs 3 nodes (supports.maxNodes=${sup.maxNodes})` : null;

  /** Runs `body` on a fresh connected cluster of `nodes`, or skips with the reason. */
  async function clusterCase(name: string, skip: string | null, nodes: number, body: (t: tap.Test, s: Session) => Promise<void>, connect = true): Promise<void> {
    const title = `${factory.name}: ${name}`;
    if (skip !== null) {
      await t.test(title, { skip }, async () => undefined);
      return;
    }
    await t.test(title, async (t) => {
      const cluster = await within(factory.create(nodes), 60_000, `create a ${nodes}-node cluster`);
      t.equal(cluster.nodes, nodes, `the factory built ${nodes} node(s)`);
      const s = new Session(cluster);
      try {
        if (connect) await s.connectAll();
        await body(t, s);
      } finally {
        await s.finish(t);
      }
    });
  }

  // 11. Protocol negotiation ------------------------------------------------------------
  await clusterCase('protocol: a single node runs at the version it asked for', null, 1, async (t, s) => {
    const conn = await s.connect(0, { major: 1, minor: 0 });
    t.same(conn.proto, { major: 1, minor: 0 }, 'connection reports 1.0');
    t.ok(Number.isInteger(conn.thisNode) && conn.thisNode >= 0, `thisNode ${conn.thisNode} is a node number`);
    t.equal(conn.stack.length > 0, true, `stack name '${conn.stack}'`);
  }, false);

  await clusterCase('protocol: {1,0} and {1,2} run at 1.0; major 2 is refused clearly', noMulti, Math.min(2, sup.maxNodes), async (t, s) => {
    const a = await s.connect(0, { major: 1, minor: 0 });
    t.same(a.proto, { major: 1, minor: 0 }, 'first node runs at 1.0');
    let refused: Error | null = null;
    const probe = new LockClient(1, new Recorder(), s.opMs);
    try {
      const c = await within(
        s.cluster.connect(1, { clusterName: 'conformance', group: s.group, proto: { major: 2, minor: 0 } }, probe.callbacks, probe.onRecovery),
        s.connectMs, 'connect with major 2',
      );
      await c.disconnect().catch(() => undefined);
    } catch (e) {
      refused = e as Error;
    }
    t.ok(refused !== null, 'a node speaking major 2 cannot join a 1.x lock space');
    if (refused) t.match(refused.message, /proto|version/i, `the refusal says why: "${refused.message}"`);
    const b = await s.connect(1, { major: 1, minor: 2 });
    t.same(b.proto, { major: 1, minor: 0 }, 'the {1,2} node runs at the lower minor');
    t.same(a.proto, { major: 1, minor: 0 }, 'the first node still runs at 1.0');
    t.not(a.thisNode, b.thisNode, 'distinct node numbers');
    // The two really share the lock space.
    const c0 = s.clients[0];
    const c1 = s.clients[1];
    const x = c0.newLksb('x');
    await lockOk(c0, x, 'EX', 0, 'proto-shared');
    if (sup.conflicts) {
      const y = c1.newLksb('y');
      t.equal((await c1.lockP(y, 'PR', LKF.NOQUEUE, 'proto-shared')).status, LOCK_STATUS.EAGAIN, 'the other node sees the EX');
    }
    await unlockOk(c0, x);
  }, false);

  // 1. Compatibility matrix -------------------------------------------------------------
  const placements: Array<{ label: string; nodes: number }> = [{ label: 'one node', nodes: 1 }];
  if (sup.multiNode) placements.push({ label: 'two nodes', nodes: 2 });
  for (const place of placements) {
    await clusterCase(`compatibility matrix NL/PR/EX with NOQUEUE (${place.label})`, null, place.nodes, async (t, s) => {
      const ca = s.at(0);
      const cb = s.at(1);
      for (const held of MODES) {
        for (const wanted of MODES) {
          const ok = compatible(held, wanted);
          const title = `${held} held, ${wanted} wanted: ${ok ? 'granted' : 'EAGAIN'}`;
          if (!ok && noConflicts !== null) {
            await t.test(title, { skip: noConflicts }, async () => undefined);
            continue;
          }
          await t.test(title, async (t) => {
            const name = `matrix-${held}-${wanted}`;
            const a = ca.newLksb(`A-${held}-${wanted}`);
            await lockOk(ca, a, held, 0, name);
            // A new lock.
            const b = cb.newLksb(`B-${held}-${wanted}`);
            const r = await cb.lockP(b, wanted, LKF.NOQUEUE, name);
            if (ok) {
              expectGranted(t, r, b, wanted, `new ${wanted} against ${held}`);
            } else {
              t.equal(r.status, LOCK_STATUS.EAGAIN, `new ${wanted} against ${held}: EAGAIN`);
              t.equal(b.granted, 'NL', 'the failed new lock left its lksb as it was');
            }
            if (r.status === LOCK_STATUS.OK) await unlockOk(cb, b);
            // A convert from NL (NL against anything is always granted first).
            if (wanted !== 'NL') {
              const cv = cb.newLksb(`C-${held}-${wanted}`);
              await lockOk(cb, cv, 'NL', 0, name);
              const rc = await cb.lockP(cv, wanted, LKF.NOQUEUE | LKF.CONVERT, name);
              if (ok) expectGranted(t, rc, cv, wanted, `convert NL->${wanted} against ${held}`);
              else {
                t.equal(rc.status, LOCK_STATUS.EAGAIN, `convert NL->${wanted} against ${held}: EAGAIN`);
                t.equal(cv.granted, 'NL', 'the failed convert left the lock at NL');
              }
              await unlockOk(cb, cv);
            }
            t.equal(a.granted, held, `the holder still holds ${held}`);
            await unlockOk(ca, a);
          });
        }
      }
    });
  }

  // 2. LVB rules ------------------------------------------------------------------------
  await clusterCase('LVB: zero when new; put on EX down-convert/unlock with VALBLK, got on up-convert; NL ignores VALBLK', null, spread, async (t, s) => {
    let who = 0;
    const mk = (label: string): [LockClient, Lksb] => {
      const c = s.at(who++);
      return [c, c.newLksb(label)];
    };
    const V = LKF.VALBLK;
    const CV = LKF.VALBLK | LKF.CONVERT;

    const [cz, z] = mk('Z');
    z.lvb.fill(0xaa);
    await lockOk(cz, z, 'PR', V, 'lvb-fresh-pr');
    t.ok(isZero(z.lvb), 'a new resource gives a zero LVB (PR)');
    t.equal(z.lvbValid, true, 'and calls it valid');
    const [cz2, z2] = mk('Z2');
    z2.lvb.fill(0xaa);
    await lockOk(cz2, z2, 'EX', V, 'lvb-fresh-ex');
    t.ok(isZero(z2.lvb), 'a new resource gives a zero LVB (EX)');
    await unlockOk(cz, z);
    await unlockOk(cz2, z2);

    const L = 'lvb-rules';
    const [ca, a] = mk('A');
    await lockOk(ca, a, 'EX', V, L);
    t.ok(isZero(a.lvb), 'first EX holder reads zero');
    lvbPattern(1).copy(a.lvb);
    await lockOk(ca, a, 'NL', CV, L);
    const [cb, b] = mk('B');
    await lockOk(cb, b, 'PR', V, L);
    t.ok(b.lvb.equals(lvbPattern(1)), 'EX->NL with VALBLK put the LVB; the next PR holder got it');

    a.lvb.fill(0x55);
    await lockOk(ca, a, 'PR', CV, L);
    t.ok(a.lvb.equals(lvbPattern(1)), 'NL->PR with VALBLK got the LVB');

    await unlockOk(cb, b);
    a.lvb.fill(0x55);
    await lockOk(ca, a, 'EX', CV, L);
    t.ok(a.lvb.equals(lvbPattern(1)), 'PR->EX with VALBLK got the LVB');
    lvbPattern(2).copy(a.lvb);
    await lockOk(ca, a, 'PR', CV, L);
    t.ok(a.lvb.equals(lvbPattern(2)), 'the down-converting holder keeps what it wrote');
    const [cc, c] = mk('C');
    await lockOk(cc, c, 'PR', V, L);
    t.ok(c.lvb.equals(lvbPattern(2)), 'EX->PR with VALBLK put the LVB');

    lvbPattern(3).copy(c.lvb);
    await lockOk(cc, c, 'NL', CV, L);
    t.ok(c.lvb.equals(lvbPattern(3)), 'PR->NL with VALBLK got nothing (VALBLK ignored to NL)');
    const [cd, d] = mk('D');
    await lockOk(cd, d, 'PR', V, L);
    t.ok(d.lvb.equals(lvbPattern(2)), 'a PR holder converting to NL put nothing (only EX puts)');

    await unlockOk(cc, c);
    await unlockOk(cd, d);
    await lockOk(ca, a, 'EX', CV, L);
    t.ok(a.lvb.equals(lvbPattern(2)), 'PR->EX got the LVB again');
    lvbPattern(4).copy(a.lvb);
    await unlockOk(ca, a, V);
    const [ce, e] = mk('E');
    await lockOk(ce, e, 'PR', V, L);
    t.ok(e.lvb.equals(lvbPattern(4)), 'unlock from EX with VALBLK put the LVB');
    await unlockOk(ce, e);

    const [cf, f] = mk('F');
    await lockOk(cf, f, 'EX', V, L);
    lvbPattern(5).copy(f.lvb);
    await unlockOk(cf, f);
    const [cg, g] = mk('G');
    await lockOk(cg, g, 'EX', V, L);
    t.ok(g.lvb.equals(lvbPattern(4)), 'unlock from EX without VALBLK put nothing');
    lvbPattern(6).copy(g.lvb);
    await lockOk(cg, g, 'NL', LKF.CONVERT, L);
    const [ch, h] = mk('H');
    await lockOk(ch, h, 'PR', V, L);
    t.ok(h.lvb.equals(lvbPattern(4)), 'EX->NL without VALBLK put nothing');
    t.equal(h.lvbValid, true, 'the LVB is valid');
    await unlockOk(cg, g);
    await unlockOk(ch, h);
  });

  // 5. Trylock ------------------------------------------------------------------------
  await clusterCase('trylock (NOQUEUE) of a free resource and of a compatible holder is granted', null, spread, async (t, s) => {
    const c0 = s.at(0);
    const c1 = s.at(1);
    const a = c0.newLksb('a');
    expectGranted(t, await c0.lockP(a, 'EX', LKF.NOQUEUE, 'try-free'), a, 'EX', 'EX trylock of a free resource');
    await lockOk(c0, a, 'PR', LKF.NOQUEUE | LKF.CONVERT, 'try-free');
    const b = c1.newLksb('b');
    expectGranted(t, await c1.lockP(b, 'PR', LKF.NOQUEUE, 'try-free'), b, 'PR', 'PR trylock next to a PR holder');
    await unlockOk(c0, a);
    await unlockOk(c1, b);
  });

  await clusterCase('trylock (NOQUEUE) on a held resource: EAGAIN, and every lock stays as it was', noConflicts, spread, async (t, s) => {
    const ch = s.at(0);
    const co = s.at(1);
    const N = 'try-held';
    const h = ch.newLksb('holder');
    await lockOk(ch, h, 'EX', 0, N);
    const b = co.newLksb('b');
    for (const m of ['PR', 'EX'] as const) {
      const r = await co.lockP(b, m, LKF.NOQUEUE, N);
      t.equal(r.status, LOCK_STATUS.EAGAIN, `new ${m} trylock against EX: EAGAIN`);
      t.equal(b.granted, 'NL', 'the lksb is as it was');
    }
    t.equal(h.granted, 'EX', 'the holder still holds EX');
    t.equal(h.status, LOCK_STATUS.OK, "the holder's status is untouched");
    await lockOk(ch, h, 'PR', LKF.CONVERT, N);
    const c = co.newLksb('c');
    await lockOk(co, c, 'PR', 0, N);
    const r = await co.lockP(c, 'EX', LKF.NOQUEUE | LKF.CONVERT, N);
    t.equal(r.status, LOCK_STATUS.EAGAIN, 'PR->EX convert trylock against another PR: EAGAIN');
    t.equal(c.granted, 'PR', 'the failed convert left the lock at PR');
    t.equal(h.granted, 'PR', 'the other PR holder is untouched');
    expectGranted(t, await co.lockP(b, 'PR', LKF.NOQUEUE, N), b, 'PR', 'the lksb of a failed trylock takes a new lock');
    await unlockOk(ch, h);
    await unlockOk(co, b);
    expectGranted(t, await co.lockP(c, 'EX', LKF.NOQUEUE | LKF.CONVERT, N), c, 'EX', 'once alone, the convert trylock succeeds');
    await unlockOk(co, c);
  });

  // 3. Convert ordering -----------------------------------------------------------------
  await clusterCase('ordering: a conversion goes ahead of an earlier new request', noConflicts, spread, async (t, s) => {
    const N = 'order-convert';
    const [ch, cc, cn] = [s.at(0), s.at(1), s.at(2)];
    const h = ch.newLksb('holder');
    const c = cc.newLksb('converter');
    const n = cn.newLksb('newcomer');
    await lockOk(ch, h, 'EX', 0, N);
    await lockOk(cc, c, 'NL', 0, N);
    const np = cn.lockP(n, 'EX', 0, N);
    t.equal(await ch.nextBast(h), 'EX', 'the holder is asked for EX (the new request is queued)');
    const cp = cc.lockP(c, 'EX', LKF.CONVERT, N);
    await sleepMs(s.settleMs); // the convert reaches the master's converting queue
    t.ok(cn.pending(n) && cc.pending(c), 'both wait behind the EX holder');
    await unlockOk(ch, h);
    expectGranted(t, await cp, c, 'EX', 'the conversion is granted first');
    await sleepMs(s.settleMs);
    t.ok(cn.pending(n), 'the earlier new request still waits');
    await unlockOk(cc, c);
    expectGranted(t, await np, n, 'EX', 'then the new request');
    await unlockOk(cn, n);
  });

  await clusterCase('ordering: blocked requests are granted in request order (FIFO)', noConflicts, spread, async (t, s) => {
    const N = 'order-fifo';
    const ch = s.at(0);
    const h = ch.newLksb('holder');
    await lockOk(ch, h, 'EX', 0, N);
    const waiters: Array<{ c: LockClient; l: Lksb; p: Promise<number> }> = [];
    for (let i = 0; i < 3; i++) {
      const c = s.at(i + 1);
      const l = c.newLksb(`w${i}`);
      const p = quiet(c.lockP(l, 'EX', 0, N, s.opMs * 4).then(() => i));
      waiters.push({ c, l, p });
      // Order across nodes is the order of arrival at the master: the first is proven
      // queued by the holder's BAST, later ones are given the time to arrive.
      if (i === 0) await ch.nextBast(h);
      await sleepMs(s.settleMs);
    }
    await unlockOk(ch, h);
    const left = [...waiters];
    for (let expect = 0; expect < 3; expect++) {
      const first = await within(Promise.race(left.map((w) => w.p)), s.opMs, `a grant among ${left.length} waiters`);
      t.equal(first, expect, `waiter ${expect} is granted next`);
      const w = waiters[first];
      t.equal(w.l.granted, 'EX', `waiter ${first} holds EX`);
      left.splice(left.indexOf(w), 1);
      await sleepMs(s.settleMs);
      t.ok(left.every((o) => o.c.pending(o.l)), 'nobody else holds EX meanwhile');
      await unlockOk(w.c, w.l);
    }
  });

  // 4. BAST delivery --------------------------------------------------------------------
  await clusterCase('BAST: holders are asked for the level others wait for; NL and compatible holders are not', noConflicts, spread, async (t, s) => {
    const N = 'bast-levels';
    const [ch, cr, cw] = [s.at(0), s.at(1), s.at(2)];
    const h = ch.newLksb('holder');
    await lockOk(ch, h, 'EX', 0, N);
    const r = cr.newLksb('reader');
    const rp = cr.lockP(r, 'PR', 0, N);
    t.equal(await ch.nextBast(h), 'PR', 'EX holder gets onBlocking(PR) for a PR waiter');
    await lockOk(ch, h, 'PR', LKF.CONVERT, N);
    expectGranted(t, await rp, r, 'PR', 'down-converting to PR lets the reader in');
    const w = cw.newLksb('writer');
    const wp = cw.lockP(w, 'EX', 0, N);
    t.equal(await ch.nextBast(h), 'EX', 'PR holder gets onBlocking(EX) for an EX waiter');
    t.equal(await cr.nextBast(r), 'EX', 'so does the other PR holder');
    await unlockOk(cr, r);
    await unlockOk(ch, h);
    expectGranted(t, await wp, w, 'EX', 'the EX waiter gets it once both left');
    const h2 = ch.newLksb('holder2');
    const h2p = ch.lockP(h2, 'EX', 0, N);
    t.equal(await cw.nextBast(w), 'EX', 'EX holder gets onBlocking(EX) for an EX waiter');
    await unlockOk(cw, w);
    expectGranted(t, await h2p, h2, 'EX', 'waiter granted');
    await unlockOk(ch, h2);

    const nl = ch.newLksb('nl-holder');
    await lockOk(ch, nl, 'NL', 0, 'bast-nl');
    const x = cw.newLksb('ex-taker');
    await lockOk(cw, x, 'EX', 0, 'bast-nl');
    const p1 = cr.newLksb('pr1');
    await lockOk(cr, p1, 'PR', 0, 'bast-pr');
    const p2 = cw.newLksb('pr2');
    await lockOk(cw, p2, 'PR', 0, 'bast-pr');
    await sleepMs(s.settleMs);
    t.same(ch.bastsOf(nl), [], 'an NL holder is never asked to give anything up');
    t.same(cr.bastsOf(p1), [], 'a PR holder is not asked anything for a compatible PR');
    for (const [c, l] of [[ch, nl], [cw, x], [cr, p1], [cw, p2]] as const) await unlockOk(c, l);
  });

  await clusterCase(`BAST: ${COALESCE_WAITERS} waiters cost the holder at most ${COALESCE_BASTS_MAX} BASTs, at the highest level`, noConflicts, spread, async (t, s) => {
    const N = 'bast-coalesce';
    const ch = s.at(0);
    const h = ch.newLksb('holder');
    await lockOk(ch, h, 'EX', 0, N);
    const modes: LockMode[] = ['EX', 'PR', 'EX', 'PR', 'EX'];
    const done: Array<Promise<void>> = [];
    for (let i = 0; i < COALESCE_WAITERS; i++) {
      const c = s.at(i + 1);
      const l = c.newLksb(`w${i}`);
      // Each waiter lets go as soon as it is granted, so all of them get through.
      done.push(quiet(c.lockP(l, modes[i], 0, N, s.opMs * 4).then((r) => {
        if (r.status !== LOCK_STATUS.OK) throw new Error(`w${i}: status ${r.status}`);
        return unlockOk(c, l);
      })));
      if (i === 0) await ch.nextBast(h);
    }
    await sleepMs(2 * s.settleMs);
    const basts = ch.bastsOf(h);
    t.ok(basts.length >= 1 && basts.length <= COALESCE_BASTS_MAX, `holder got ${basts.length} BAST(s) for ${COALESCE_WAITERS} waiters: [${basts.join(', ')}]`);
    t.ok(basts.includes('EX'), 'one of them asks for EX, the highest level blocked');
    t.ok(basts.every((b) => modes.includes(b)), 'only levels somebody asked for');
    await unlockOk(ch, h);
    await within(Promise.all(done), s.opMs * 4, 'every waiter granted and released');
  });

  // 6. Cancel -------------------------------------------------------------------------
  await clusterCase('cancel of a blocked request: onUnlock(ECANCEL), lock back to its prior mode', noConflicts, spread, async (t, s) => {
    const [ch, cb] = [s.at(0), s.at(1)];
    const h = ch.newLksb('holder');
    await lockOk(ch, h, 'EX', 0, 'cancel-new');
    const b = cb.newLksb('new');
    const bp = cb.lockP(b, 'EX', 0, 'cancel-new');
    await ch.nextBast(h);
    t.equal(await cb.cancelP(b), LOCK_STATUS.ECANCEL, 'cancel of a blocked new lock: ECANCEL');
    t.equal((await bp).status, LOCK_STATUS.ECANCEL, 'which completes the request (no grant)');
    t.equal(b.granted, 'NL', 'the lksb holds nothing');
    t.equal(h.granted, 'EX', 'the holder is untouched');
    t.equal((await cb.lockP(b, 'EX', LKF.NOQUEUE, 'cancel-new')).status, LOCK_STATUS.EAGAIN, 'the lksb is free for a new request');
    await unlockOk(ch, h);

    const h2 = ch.newLksb('pr-holder');
    await lockOk(ch, h2, 'PR', 0, 'cancel-convert');
    const c = cb.newLksb('converter');
    await lockOk(cb, c, 'PR', 0, 'cancel-convert');
    const cp = cb.lockP(c, 'EX', LKF.CONVERT, 'cancel-convert');
    t.equal(await ch.nextBast(h2), 'EX', 'the convert is queued (holder asked for EX)');
    t.equal(await cb.cancelP(c), LOCK_STATUS.ECANCEL, 'cancel of a blocked convert: ECANCEL');
    t.equal((await cp).status, LOCK_STATUS.ECANCEL, 'the convert completes cancelled');
    t.equal(c.granted, 'PR', 'the lock is back at PR');
    t.equal(h2.granted, 'PR', 'the other holder is untouched');
    t.equal(await cb.cancelP(c), LOCK_STATUS.EBUSY, 'a cancel with nothing in flight: EBUSY');
    t.equal(c.granted, 'PR', 'and the lock is untouched');
    await unlockOk(cb, c);
    await unlockOk(ch, h2);
  });

  await clusterCase(`cancel racing a grant (${raceIterations} iterations): grant+EBUSY or ECANCEL, never both or neither${sup.conflicts ? '' : ' [uncontended: the grant itself is the race]'}`, null, spread, async (t, s) => {
    const [ch, cb] = [s.at(0), s.at(1)];
    const N = 'cancel-race';
    const h = ch.newLksb('holder');
    const b = cb.newLksb('racer');
    const outcome = { granted: 0, cancelled: 0 };
    const failures: string[] = [];
    for (let i = 0; i < raceIterations; i++) {
      const variant = i % 3;
      let bp: Promise<LockResult>;
      let cp: Promise<number>;
      let up: Promise<number> = Promise.resolve(LOCK_STATUS.OK);
      if (sup.conflicts) {
        await lockOk(ch, h, 'EX', 0, N);
        ch.clearBasts(h);
        bp = cb.lockP(b, 'EX', 0, N);
        await ch.nextBast(h); // the request is queued behind the holder
        if (variant === 0) {
          up = ch.unlockP(h);
          cp = cb.cancelP(b);
        } else if (variant === 1) {
          // The cancel first, the release a little later: over a network either may
          // still reach the master first.
          cp = cb.cancelP(b);
          await sleepMs(i % 4);
          up = ch.unlockP(h);
        } else {
          up = ch.unlockP(h);
          await (i % 2 ? ticks(1) : sleepMs(1));
          cp = cb.cancelP(b);
        }
      } else {
        bp = cb.lockP(b, 'EX', 0, N);
        if (variant === 1) await ticks(1);
        if (variant === 2) await bp;
        cp = cb.cancelP(b);
      }
      const [r, c, u] = await within(Promise.all([bp, cp, up]), s.opMs * 2, `race iteration ${i}`);
      if (u !== LOCK_STATUS.OK) failures.push(`#${i}: holder unlock status ${u}`);
      if (r.status === LOCK_STATUS.OK) {
        outcome.granted++;
        if (c !== LOCK_STATUS.EBUSY) failures.push(`#${i}: granted, but the cancel said ${c} (want EBUSY)`);
        if (b.granted !== 'EX') failures.push(`#${i}: granted, but lksb.granted ${b.granted}`);
        await unlockOk(cb, b);
      } else if (r.status === LOCK_STATUS.ECANCEL) {
        outcome.cancelled++;
        if (c !== LOCK_STATUS.ECANCEL) failures.push(`#${i}: cancelled, but the cancel said ${c}`);
        if (b.granted !== 'NL') failures.push(`#${i}: cancelled, but lksb.granted ${b.granted}`);
        if (!sup.conflicts && variant === 2) failures.push(`#${i}: a cancel after the grant completed cancelled it`);
      } else {
        failures.push(`#${i}: request status ${r.status}`);
      }
      if (failures.length >= FAILURES_REPORTED_MAX) break;
    }
    t.same(failures, [], 'every race ends one way or the other, consistently');
    t.equal(outcome.granted + outcome.cancelled, raceIterations, 'every iteration accounted for');
    t.comment(`cancel race: ${outcome.granted} granted (cancel EBUSY), ${outcome.cancelled} cancelled`);
  });

  // 7. lvb_torture --------------------------------------------------------------------
  await clusterCase(`lvb_torture: one EX writer, PR readers on every other node, ${lvbIterations} increments`, null, spread, async (t, s) => {
    const N = 'lvb-torture';
    const cw = s.at(0);
    const w = cw.newLksb('writer');
    let written = 0n;
    let done = false;
    const failures: string[] = [];
    const writer = async (): Promise<void> => {
      try {
        await lockOk(cw, w, 'NL', 0, N);
        for (let i = 0; i < lvbIterations && failures.length < FAILURES_REPORTED_MAX; i++) {
          await lockOk(cw, w, 'EX', LKF.CONVERT | LKF.VALBLK, N);
          const { value, intact } = readCounterLvb(w.lvb);
          if (value !== written || !intact) failures.push(`writer #${i}: read ${value}${intact ? '' : ' (torn)'}, wrote ${written} last`);
          written += 1n;
          counterLvb(written).copy(w.lvb);
          await lockOk(cw, w, 'NL', LKF.CONVERT | LKF.VALBLK, N);
          if (i % 64 === 63) await ticks(1); // as the readers do: let timers and others run
        }
        await unlockOk(cw, w);
      } finally {
        done = true;
      }
    };
    const readerNodes = s.clients.length > 1 ? s.clients.slice(1) : s.clients;
    const reads: number[] = readerNodes.map(() => 0);
    const reader = async (k: number): Promise<void> => {
      const c = readerNodes[k];
      const r = c.newLksb(`reader${k}`);
      let seen = 0n;
      await lockOk(c, r, 'NL', 0, N);
      while (!done && failures.length < FAILURES_REPORTED_MAX) {
        await lockOk(c, r, 'PR', LKF.CONVERT | LKF.VALBLK, N);
        const { value, intact } = readCounterLvb(r.lvb);
        reads[k]++;
        // The writer bumps `written` before putting, so any value it put is <= written.
        if (!intact) failures.push(`reader ${k}: torn LVB with counter ${value}`);
        else if (value < seen) failures.push(`reader ${k}: counter went back from ${seen} to ${value}`);
        else if (value > written) failures.push(`reader ${k}: counter ${value} was never written (writer at ${written})`);
        seen = value;
        await lockOk(c, r, 'NL', LKF.CONVERT, N);
        // Yield to timers too, so a stack that grants on microtasks cannot starve the writer.
        if (reads[k] % 64 === 0) await ticks(1);
      }
      await unlockOk(c, r);
    };
    const t0 = performance.now();
    await Promise.all([writer(), ...readerNodes.map((_, k) => reader(k))]);
    t.same(failures, [], 'the writer always reads back its last value; readers never see a value go back or a torn block');
    t.equal(written, BigInt(lvbIterations), `the writer did ${lvbIterations} increments`);
    t.ok(reads.reduce((a, b) => a + b, 0) > 0, `readers read ${reads.join('/')} times`);
    const last = s.at(1).newLksb('final');
    await lockOk(s.at(1), last, 'PR', LKF.VALBLK, N);
    t.equal(readCounterLvb(last.lvb).value, BigInt(lvbIterations), 'a final reader sees the last value');
    await unlockOk(s.at(1), last);
    t.comment(`lvb_torture: ${lvbIterations} writes, reads ${reads.join('/')}, ${Math.round(performance.now() - t0)} ms`);
  });

  // 12. Exactly one completion per request, under load -----------------------------------
  await clusterCase('every request gets exactly one completion (concurrent lock/convert/unlock on shared names)', null, spread, async (t, s) => {
    const LKSBS = 24;
    const ROUNDS = 10;
    const names = ['once-0', 'once-1', 'once-2', 'once-3'];
    // NL and PR only: all compatible, so nothing waits on anything and no order is implied.
    await within(Promise.all(Array.from({ length: LKSBS }, async (_, i) => {
      const c = s.at(i);
      const l = c.newLksb(`l${i}`);
      const name = names[i % names.length];
      for (let r = 0; r < ROUNDS; r++) {
        await lockOk(c, l, 'NL', 0, name);
        await lockOk(c, l, 'PR', LKF.CONVERT, name);
        await lockOk(c, l, 'NL', LKF.CONVERT, name);
        await lockOk(c, l, 'PR', LKF.CONVERT | LKF.VALBLK, name);
        await unlockOk(c, l);
      }
    })), s.opMs * 10, 'all rounds');
    for (const c of s.clients) {
      t.equal(c.requestsCompleted, c.requestsIssued, `node ${c.node}: ${c.requestsIssued} requests, as many completions`);
    }
    t.equal(s.clients.reduce((a, c) => a + c.requestsIssued, 0), LKSBS * ROUNDS * 5, 'every request was issued');
  });

  // 8. Node death ---------------------------------------------------------------------
  const deathNodes = Math.min(3, sup.maxNodes);
  await clusterCase('node killed while holding EX: survivors get the lock after recovery, LVB zeroed, onRecovery once', noKill, deathNodes, async (t, s) => {
    const dead = deathNodes - 1;
    const cd = s.clients[dead];
    const c0 = s.clients[0];
    const c1 = s.at(1) === cd ? c0 : s.at(1);
    const V = LKF.VALBLK;
    // LD: mastered by the dead node (it touched it first). LS: mastered by a survivor.
    const s0 = c0.newLksb('survivor-ls');
    await lockOk(c0, s0, 'NL', 0, 'death-ls');
    const held: Lksb[] = [];
    for (const name of ['death-ld', 'death-ls']) {
      const l = cd.newLksb(`dead-${name}`);
      await lockOk(cd, l, 'EX', V, name);
      lvbPattern(7).copy(l.lvb);
      await lockOk(cd, l, 'NL', V | LKF.CONVERT, name); // put a value the survivors must not see
      await lockOk(cd, l, 'EX', V | LKF.CONVERT, name);
      lvbPattern(8).copy(l.lvb); // and a half-done update
      held.push(l);
    }
    const wa = c1.newLksb('waiter-ld');
    const waP = c1.lockP(wa, 'PR', V, 'death-ld', s.cluster.failoverBoundMs + s.opMs * 2);
    const wbP = c0.lockP(s0, 'PR', V | LKF.CONVERT, 'death-ls', s.cluster.failoverBoundMs + s.opMs * 2);
    t.equal(await cd.nextBast(held[0]), 'PR', 'the doomed holder was asked (the waiters are queued)');
    const t0 = performance.now();
    await s.kill(dead);
    for (const [p, l, what] of [[waP, wa, 'lock mastered by the dead node'], [wbP, s0, 'lock mastered by a survivor']] as const) {
      const r = await p;
      expectGranted(t, r, l, 'PR', `${what}: granted after recovery`);
      t.ok(!l.lvbValid || isZero(l.lvb), `${what}: the LVB the dead EX holder may have torn is zeroed (or flagged invalid)`);
    }
    const tookMs = performance.now() - t0;
    t.ok(tookMs <= s.cluster.failoverBoundMs + s.opMs, `granted ${Math.round(tookMs)} ms after the kill (bound ${s.cluster.failoverBoundMs} + ${s.opMs})`);
    await s.expectRecoveries(t, [dead], s.cluster.failoverBoundMs + s.opMs);
    // The lock manager still works for the survivors, LVBs included.
    await unlockOk(c1, wa);
    await unlockOk(c0, s0);
    const x = c0.newLksb('after');
    await lockOk(c0, x, 'EX', V, 'death-ld');
    lvbPattern(9).copy(x.lvb);
    await unlockOk(c0, x, V);
    const y = c1.newLksb('after-reader');
    await lockOk(c1, y, 'PR', V, 'death-ld');
    t.ok(y.lvb.equals(lvbPattern(9)), 'after recovery an EX writer\'s LVB reaches the next reader');
    await unlockOk(c1, y);
  });

  const duringNodes = sup.maxNodes >= 4 ? 4 : 3;
  await clusterCase(`node killed during recovery (${duringNodes} nodes): the survivors still get the locks; onRecovery for both`, noKillDuring, duringNodes, async (t, s) => {
    const a = duringNodes - 1;
    const b = duringNodes - 2;
    const survivors = Array.from({ length: duringNodes - 2 }, (_, i) => i);
    const boundMs = 2 * s.cluster.failoverBoundMs + s.opMs * 2;
    const victims = [a, b].map((n) => {
      const c = s.clients[n];
      const l = c.newLksb(`victim${n}`);
      return { n, c, l, name: `during-${n}` };
    });
    for (const v of victims) await lockOk(v.c, v.l, 'EX', LKF.VALBLK, v.name);
    const waits: Array<{ c: LockClient; l: Lksb; p: Promise<LockResult>; name: string }> = [];
    for (const n of survivors) {
      for (const v of victims) {
        const c = s.clients[n];
        const l = c.newLksb(`s${n}-${v.name}`);
        waits.push({ c, l, name: v.name, p: c.lockP(l, 'PR', LKF.VALBLK, v.name, boundMs) });
      }
    }
    for (const v of victims) await v.c.nextBast(v.l);
    await s.kill(a);
    // Recovery of `a` has begun once a survivor was told: kill `b` right then.
    await until(() => survivors.some((n) => s.clients[n].recoveries.length > 0), s.cluster.failoverBoundMs + s.opMs, `onRecovery(${a})`);
    await s.kill(b);
    for (const w of waits) {
      expectGranted(t, await w.p, w.l, 'PR', `node ${w.c.node}: ${w.name} granted after both recoveries`);
      t.ok(!w.l.lvbValid || isZero(w.l.lvb), `node ${w.c.node}: ${w.name}: LVB zeroed (its EX holder died)`);
    }
    await s.expectRecoveries(t, [a, b], boundMs);
    for (const w of waits) await unlockOk(w.c, w.l);
    const c0 = s.clients[0];
    const x = c0.newLksb('after');
    expectGranted(t, await c0.lockP(x, 'EX', LKF.NOQUEUE, `during-${a}`), x, 'EX', 'the lock is free after recovery');
    await unlockOk(c0, x);
  });

  // 10. Partition ---------------------------------------------------------------------
  await clusterCase('2|1 partition: the minority fences itself, the majority recovers and keeps locking', noPartition, 3, async (t, s) => {
    const cluster = s.cluster;
    const { partition, isFenced } = cluster;
    if (!partition || !isFenced) throw new Error('supports.partition needs partition() and isFenced()');
    const [c0, c1, c2] = s.clients;
    const boundMs = cluster.failoverBoundMs + s.opMs;
    const m = c2.newLksb('minority-holder');
    await lockOk(c2, m, 'EX', LKF.VALBLK, 'part-held');
    const w = c1.newLksb('majority-waiter');
    const wp = c1.lockP(w, 'PR', LKF.VALBLK, 'part-held', boundMs + s.opMs);
    await c2.nextBast(m);
    const t0 = performance.now();
    try {
      await within(partition.call(cluster, [[0, 1], [2]]), s.connectMs, 'partition');
      const r = await wp;
      // The order matters: the minority must be gone before the majority takes its locks.
      const fencedAtGrant = await isFenced.call(cluster, 2);
      expectGranted(t, r, w, 'PR', 'the majority gets the lock the minority held');
      t.ok(fencedAtGrant, 'the minority had fenced itself before its lock was given away');
      t.ok(!w.lvbValid || isZero(w.lvb), 'the LVB of the lost EX holder is zeroed');
      s.dead.add(2);
      c2.markDead();
      await until(() => isFenced.call(cluster, 2), boundMs, 'node 2 fenced');
      t.comment(`fenced and recovered within ${Math.round(performance.now() - t0)} ms`);
      await s.expectRecoveries(t, [2], boundMs);
      for (let i = 0; i < 5; i++) {
        const x = c0.newLksb(`x${i}`);
        await lockOk(c0, x, 'EX', 0, `part-new-${i}`);
        const y = c1.newLksb(`y${i}`);
        const ry = await c1.lockP(y, 'EX', LKF.NOQUEUE, `part-new-${i}`);
        t.equal(ry.status, sup.conflicts ? LOCK_STATUS.EAGAIN : LOCK_STATUS.OK, `the majority locks part-new-${i} against each other`);
        if (ry.status === LOCK_STATUS.OK) await unlockOk(c1, y);
        await unlockOk(c0, x);
      }
      await unlockOk(c1, w);
    } finally {
      if (cluster.heal) await within(cluster.heal(), s.connectMs, 'heal').catch((e: Error) => t.fail(e.message));
    }
  });
}
