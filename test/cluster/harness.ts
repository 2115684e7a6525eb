// The multi-node harness every cluster test uses (DESIGN.md §7). A ClusterWorld is N nodes,
// each a network namespace holding one end of a veth pair, joined by a bridge that lives in
// a namespace of its own (the "world"); the shared storage is one sparse file.
//
//   host ns (the test, tap)       world ns o2w-PID-TAG          node ns o2nI-PID-TAG
//   no address, no link    -->    br-TAG  <-- vI-TAG  ======  eI-TAG 10.213.Y.(I+1)/24
//
// Why this shape: the host namespace never holds an address on the test network and never
// routes to it, so nothing a node sends can leave the machine, and a node has no route out
// (its only routes are lo and its /24). Each veth is created from inside the world namespace
// with its peer placed straight into the node namespace, so no link ever appears in the host
// namespace, not even for a moment. The test itself stays in the host namespace (it only
// starts processes in the nodes), which keeps tap, the shared disk and FUSE mounts ordinary.
//
// Processes run under `nsenter --net` (see process.ts: pid is the command's, mounts stay
// visible). Partitions are iptables DROP rules inside the node namespaces, in two chains of
// our own (O2FS-IN from INPUT, O2FS-OUT from OUTPUT), rewritten atomically by iptables-restore.
//
// Cleanup is by pid and by the names the harness made, never by process name: destroy()
// stops every process whose network namespace is one of ours (so also daemons a node forked),
// deletes the namespaces (which frees the veths, the bridge and the rules) and the tmp dir.
// It also runs synchronously from process 'exit' and on SIGINT/SIGTERM; a test killed with
// SIGKILL is cleaned by sweepStaleWorlds(), which every ClusterWorld.create() runs first.
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CmdResult, NETNS_DIR, TMP_PREFIX, WorldRecord, deleteNetns, mustSync, netnsPids, nodeNsName,
  procStartTime, readRecords, removeRecord, removeWorldTmpDir, runSync, signalPid,
  sweepStaleWorlds, waitSync, worldNsName, writeRecord,
} from './netns';
import { ManagedProcess, SpawnOptions, nodeEnv, within } from './process';

export { sweepStaleWorlds } from './netns';
export type { CmdResult, SweepOptions } from './netns';
export { ManagedProcess, nodeEnv } from './process';
export type { ExitStatus, SpawnOptions, StreamName, WaitLineOptions } from './process';
export { ping, probe, startEchoServer, tcpEcho } from './probe';
export type { EchoServer, ProbeResult } from './probe';

export interface NodeNs {
  /** Index in world.nodes, 0-based. */
  num: number;
  /** "node0", "node1", ...: for messages and log file names. */
  name: string;
  /** The network namespace, usable with `ip netns exec` / `ip -n` when debugging. */
  ns: string;
  ip: string;
  /** The node's interface on the test network (its other interface is lo). */
  dev: string;
}

export interface WorldOptions {
  nodes: number;
  /** Size of the sparse shared-storage file; 256 MiB if not given. */
  sharedDiskBytes?: number;
  /** Parent of the world's own tmp dir (which destroy() removes); os.tmpdir() if not given. */
  tmpDir?: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export type ExecResult = CmdResult;

export type NodeRef = number | NodeNs;

const NODES_MAX = 64; // interface names eNN-TAG must fit IFNAMSIZ; far more than any test needs
const SHARED_DISK_BYTES_DEFAULT = 256 << 20;
const SUBNET_PREFIX = '10.213'; // node i of a world is 10.213.Y.(i+1), Y unique among live worlds
const EXEC_TIMEOUT_MS = 30_000;
const LINK_UP_TIMEOUT_MS = 5_000;
const TERM_GRACE_MS = 3_000; // destroy(): SIGTERM, then SIGKILL after this
const KILL_WAIT_MS = 10_000; // a SIGKILLed process that lingers longer is stuck in the kernel
const EXIT_PATH_TERM_GRACE_MS = 500; // the exit path blocks the process: keep it short
const IN_CHAIN = 'O2FS-IN';
const OUT_CHAIN = 'O2FS-OUT';

/** O2FS_KEEP_WORLD=1: destroy() stops processes but leaves namespaces, rules and files. */
export function keepWorlds(): boolean {
  return process.env.O2FS_KEEP_WORLD === '1';
}

export class ClusterWorld {
  readonly nodes: NodeNs[];
  /** The world namespace, holding the bridge. */
  readonly ns: string;
  readonly tag: string;
  /** e.g. 10.213.42.0/24 */
  readonly subnet: string;
  readonly bridge: string;
  readonly tmpDir: string;
  /** One sparse file: the storage every node shares. */
  readonly sharedDisk: string;
  private readonly procs: ManagedProcess[] = [];
  private spawnSeq = 0;
  private groupOf: Map<number, number> | null = null;
  private readonly isolated = new Set<number>();
  private readonly rulesApplied = new Map<number, string>(); // node -> last restore text
  private destroying: Promise<void> | null = null;
  private destroyed = false;
  private readonly record: WorldRecord;

  private constructor(nodes: number, subnetOctet: number, tmpParent: string) {
    this.tag = randomBytes(3).toString('hex');
    this.ns = worldNsName(process.pid, this.tag);
    this.subnet = `${SUBNET_PREFIX}.${subnetOctet}.0/24`;
    this.bridge = `br-${this.tag}`;
    this.nodes = Array.from({ length: nodes }, (_, num) => ({
      num,
      name: `node${num}`,
      ns: nodeNsName(num, process.pid, this.tag),
      ip: `${SUBNET_PREFIX}.${subnetOctet}.${num + 1}`,
      dev: `e${num}-${this.tag}`,
    }));
    this.tmpDir = mkdtempSync(path.join(tmpParent, `${TMP_PREFIX}${this.tag}-`));
    this.sharedDisk = path.join(this.tmpDir, 'shared.img');
    this.record = {
      world: this.ns,
      pid: process.pid,
      startTime: procStartTime(process.pid),
      tmpDir: this.tmpDir,
      subnetOctet,
      namespaces: [this.ns, ...this.nodes.map((n) => n.ns)],
      keep: false,
      createdAt: new Date().toISOString(),
    };
  }

  static async create(opts: WorldOptions): Promise<ClusterWorld> {
    if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > NODES_MAX) {
      throw new RangeError(`nodes must be an integer in 1..${NODES_MAX}, got ${opts.nodes}`);
    }
    const sharedDiskBytes = opts.sharedDiskBytes ?? SHARED_DISK_BYTES_DEFAULT;
    if (!Number.isSafeInteger(sharedDiskBytes) || sharedDiskBytes < 0) {
      throw new RangeError(`sharedDiskBytes must be a non-negative integer, got ${sharedDiskBytes}`);
    }
    try {
      sweepStaleWorlds();
    } catch (e) {
      // A failed sweep leaves someone else's leftovers; it must not fail this test.
      process.stderr.write(`cluster harness: sweep of stale worlds failed: ${(e as Error).message}\n`);
    }
    const used = new Set(readRecords().map((r) => r.subnetOctet));
    const free = Array.from({ length: 256 }, (_, y) => y).filter((y) => !used.has(y));
    if (free.length === 0) throw new Error('no free 10.213.Y.0/24 subnet: 256 live worlds?');
    // Two processes creating at the same moment may still pick the same Y: harmless, since
    // every world is its own isolated network; uniqueness only makes logs unambiguous.
    const octet = free[Math.floor(Math.random() * free.length)];
    const world = new ClusterWorld(opts.nodes, octet, opts.tmpDir ?? os.tmpdir());
    // Recorded and registered before any namespace exists, so a failure or a crash part-way
    // through is still cleaned up (by the exit path or the sweeper).
    writeRecord(world.record);
    register(world);
    try {
      const fd = openSync(world.sharedDisk, 'wx');
      try {
        ftruncateSync(fd, sharedDiskBytes); // sparse: costs no space until written
      } finally {
        closeSync(fd);
      }
      world.build();
      await waitFor(() => world.linksUp(), LINK_UP_TIMEOUT_MS, `links of ${world.ns} up`);
    } catch (e) {
      world.destroySync();
      throw e;
    }
    return world;
  }

  private build(): void {
    const w = this.ns;
    mustSync('ip', ['netns', 'add', w]);
    noIpv6(w);
    mustSync('ip', ['-n', w, 'link', 'set', 'lo', 'up']);
    // No STP and no forwarding delay: ports forward as soon as they are up.
    mustSync('ip', ['-n', w, 'link', 'add', this.bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    mustSync('ip', ['-n', w, 'link', 'set', this.bridge, 'up']);
    for (const n of this.nodes) {
      const port = `v${n.num}-${this.tag}`;
      mustSync('ip', ['netns', 'add', n.ns]);
      noIpv6(n.ns);
      mustSync('ip', ['-n', n.ns, 'link', 'set', 'lo', 'up']);
      mustSync('ip', ['-n', w, 'link', 'add', port, 'type', 'veth', 'peer', 'name', n.dev, 'netns', n.ns]);
      mustSync('ip', ['-n', w, 'link', 'set', port, 'master', this.bridge]);
      mustSync('ip', ['-n', w, 'link', 'set', port, 'up']);
      mustSync('ip', ['-n', n.ns, 'addr', 'add', `${n.ip}/24`, 'dev', n.dev]);
      mustSync('ip', ['-n', n.ns, 'link', 'set', n.dev, 'up']);
    }
  }

  private linksUp(): boolean {
    return this.nodes.every((n) => /state UP/.test(runSync('ip', ['-n', n.ns, 'link', 'show', n.dev]).stdout));
  }

  node(ref: NodeRef): NodeNs {
    const num = typeof ref === 'number' ? ref : ref.num;
    const n = this.nodes[num];
    if (!n || (typeof ref !== 'number' && ref.ns !== n.ns)) throw new RangeError(`no node ${num} in ${this.ns}`);
    return n;
  }

  /** Runs a command inside the node's network namespace and waits for it (blocks the loop). */
  exec(ref: NodeRef, cmd: string, args: string[] = [], opts: ExecOptions = {}): ExecResult {
    this.assertLive();
    const n = this.node(ref);
    return spawnSyncIn(n.ns, cmd, args, opts);
  }

  /** As exec(), without blocking: the process is tracked, logged and killed on destroy. */
  async run(ref: NodeRef, cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    const p = this.spawn(ref, cmd, args, { env: opts.env, cwd: opts.cwd, stdin: opts.input === undefined ? 'ignore' : 'pipe' });
    if (opts.input !== undefined) p.child.stdin?.end(opts.input);
    const timeoutMs = opts.timeoutMs ?? EXEC_TIMEOUT_MS;
    const finished = await within(p.exited, timeoutMs);
    const timedOut = finished === null;
    if (timedOut) p.kill('SIGKILL');
    const status = finished ?? await within(p.exited, KILL_WAIT_MS);
    if (!status) throw new Error(`${p.label} (pid ${p.pid}) survived SIGKILL for ${KILL_WAIT_MS} ms`);
    // 'exit' can precede the last output; outputEnded waits for it (bounded, in case a
    // grandchild holds the pipes).
    await p.outputEnded;
    return { status: status.code, signal: status.signal, stdout: p.stdout(), stderr: p.stderr(), timedOut };
  }

  /** Starts a process in the node's namespace; output goes to tmpDir/<node>-<seq>-<label>.{out,err}. */
  spawn(ref: NodeRef, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ManagedProcess {
    this.assertLive();
    const n = this.node(ref);
    const label = opts.label ?? path.basename(cmd);
    const base = path.join(this.tmpDir, `${n.name}-${++this.spawnSeq}-${label.replace(/[^\w.-]/g, '_')}`);
    const p = new ManagedProcess(n.num, n.ns, cmd, args, `${n.name}/${label}`, `${base}.out`, `${base}.err`, opts);
    this.procs.push(p);
    return p;
  }

  /** Processes started with spawn()/run(), optionally only those of one node. */
  processes(ref?: NodeRef): ManagedProcess[] {
    if (ref === undefined) return [...this.procs];
    const num = this.node(ref).num;
    return this.procs.filter((p) => p.node === num);
  }

  /**
   * Sends `signal` to every process in the node: those spawned here (their process groups)
   * and any other process in its network namespace (daemons they started). For SIGKILL,
   * resolves once they are all gone (bounded): the node has crashed.
   */
  async kill(ref: NodeRef, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.node(ref);
    this.signalNode(n, signal);
    if (signal !== 'SIGKILL') return;
    await waitFor(() => this.pidsOf(n).length === 0, KILL_WAIT_MS, `processes of ${n.name} to die after SIGKILL`);
    await Promise.all(this.processes(n).map((p) => within(p.exited, KILL_WAIT_MS)));
  }

  /**
   * Replaces the partition state: traffic between nodes in different groups is dropped, in
   * both directions, every protocol. A node listed in no group is alone in its own.
   * Existing connections across the cut stall (DROP, not REJECT), as in a real partition.
   */
  partition(groups: number[][]): void {
    this.assertLive();
    const groupOf = new Map<number, number>();
    groups.forEach((g, i) => {
      for (const num of g) {
        this.node(num);
        if (groupOf.has(num)) throw new Error(`node ${num} is in two groups: ${JSON.stringify(groups)}`);
        groupOf.set(num, i);
      }
    });
    let lone = groups.length;
    for (const n of this.nodes) if (!groupOf.has(n.num)) groupOf.set(n.num, lone++);
    this.groupOf = groupOf;
    this.applyRules();
  }

  /** Drops all of the node's traffic on the test network (its loopback still works). */
  isolate(ref: NodeRef): void {
    this.assertLive();
    this.isolated.add(this.node(ref).num);
    this.applyRules();
  }

  /** Removes every partition and isolation. */
  heal(): void {
    this.assertLive();
    this.groupOf = null;
    this.isolated.clear();
    this.applyRules();
  }

  private applyRules(): void {
    for (const n of this.nodes) {
      const rules: string[] = [];
      if (this.isolated.has(n.num)) {
        rules.push(`-A ${IN_CHAIN} -i ${n.dev} -j DROP`, `-A ${OUT_CHAIN} -o ${n.dev} -j DROP`);
      } else if (this.groupOf) {
        for (const peer of this.nodes) {
          if (this.groupOf.get(peer.num) === this.groupOf.get(n.num)) continue;
          rules.push(`-A ${IN_CHAIN} -s ${peer.ip}/32 -j DROP`, `-A ${OUT_CHAIN} -d ${peer.ip}/32 -j DROP`);
        }
      }
      const body = rules.join('\n');
      const last = this.rulesApplied.get(n.num);
      if (last === body || (last === undefined && body === '')) continue;
      // Our chains are hooked in once; afterwards each change flushes and refills them in one
      // iptables-restore transaction, so a node never sees half a partition.
      const hook = last === undefined ? [`-A INPUT -j ${IN_CHAIN}`, `-A OUTPUT -j ${OUT_CHAIN}`] : [];
      const text = ['*filter', `:${IN_CHAIN} - [0:0]`, `:${OUT_CHAIN} - [0:0]`, ...hook,
        `-F ${IN_CHAIN}`, `-F ${OUT_CHAIN}`, ...rules, 'COMMIT', ''].join('\n');
      mustSync('nsenter', [`--net=${NETNS_DIR}/${n.ns}`, '--', 'iptables-restore', '--noflush'], { input: text });
      this.rulesApplied.set(n.num, body);
    }
  }

  /** The iptables rules in our chains of a node, as `iptables -S` prints them. */
  rules(ref: NodeRef): string[] {
    const n = this.node(ref);
    const out: string[] = [];
    for (const chain of [IN_CHAIN, OUT_CHAIN]) {
      const r = spawnSyncIn(n.ns, 'iptables', ['-S', chain]);
      if (r.status === 0) out.push(...r.stdout.split('\n').filter((l) => l.startsWith('-A ')));
    }
    return out;
  }

  /**
   * Stops every process (SIGTERM, SIGKILL after a bound), then deletes the namespaces (and
   * with them veths, bridge and rules), the tmp dir and the record. Idempotent. Under
   * O2FS_KEEP_WORLD=1 only the processes are stopped; the rest is left for inspection.
   */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      this.signalAll('SIGTERM');
      await waitFor(() => this.remainingPids().length === 0, TERM_GRACE_MS, 'processes to exit').catch(() => undefined);
      this.signalAll('SIGKILL');
      await waitFor(() => this.remainingPids().length === 0, KILL_WAIT_MS, 'processes to die').catch(() => undefined);
      // Dead is not yet reaped: let every child's exit be seen, so exitStatus is set after destroy.
      await Promise.all(this.procs.map((p) => within(p.exited, p.running ? 0 : KILL_WAIT_MS)));
      this.teardown();
    })();
    return this.destroying;
  }

  /** destroy() without the event loop: for the exit path and for failures during create(). */
  destroySync(): void {
    if (this.destroyed) return;
    this.signalAll('SIGTERM');
    waitSync(() => this.remainingPids().length === 0, EXIT_PATH_TERM_GRACE_MS);
    this.signalAll('SIGKILL');
    waitSync(() => this.remainingPids().length === 0, KILL_WAIT_MS);
    this.teardown();
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  private teardown(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    unregister(this);
    for (const p of this.procs) p.closeFds();
    const stuck = this.remainingPids();
    if (keepWorlds()) {
      writeRecord({ ...this.record, keep: true });
      process.stderr.write(`cluster harness: O2FS_KEEP_WORLD=1: kept ${this.record.namespaces.join(' ')} and ${this.tmpDir}; ` +
        `remove with: node ${path.join(__dirname, 'harness.js')} sweep --kept\n`);
      return;
    }
    const errors: string[] = [];
    for (const ns of [...this.nodes.map((n) => n.ns), this.ns]) {
      try {
        deleteNetns(ns);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    removeWorldTmpDir(this.tmpDir);
    removeRecord(this.ns);
    if (stuck.length > 0) errors.push(`pids ${stuck.join(',')} survived SIGKILL (stuck in the kernel, e.g. on a hung FUSE mount)`);
    if (errors.length > 0) throw new Error(`destroy ${this.ns}: ${errors.join('; ')}`);
  }

  private pidsOf(n: NodeNs): number[] {
    const pids = new Set(netnsPids(n.ns));
    for (const p of this.processes(n)) if (p.running) pids.add(p.pid);
    return [...pids];
  }

  private remainingPids(): number[] {
    const pids = new Set(netnsPids(this.ns));
    for (const n of this.nodes) for (const pid of this.pidsOf(n)) pids.add(pid);
    return [...pids];
  }

  private signalNode(n: NodeNs, signal: NodeJS.Signals): void {
    for (const p of this.processes(n)) if (p.running) p.kill(signal);
    for (const pid of netnsPids(n.ns)) signalPid(pid, signal);
  }

  private signalAll(signal: NodeJS.Signals): void {
    for (const n of this.nodes) this.signalNode(n, signal);
    for (const pid of netnsPids(this.ns)) signalPid(pid, signal);
  }

  private assertLive(): void {
    if (this.destroying || this.destroyed) throw new Error(`world ${this.ns} is destroyed`);
  }
}

/**
 * Turns IPv6 off in a fresh namespace, before its links exist: partitions are IPv4 rules,
 * and link-local IPv6 between nodes would be a way around them (and chatter on the bridge).
 */
function noIpv6(ns: string): void {
  if (!existsSync('/proc/sys/net/ipv6')) return; // a kernel without IPv6: nothing to turn off
  mustSync('nsenter', [`--net=${NETNS_DIR}/${ns}`, '--', 'sysctl', '-q', '-w',
    'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
}

function spawnSyncIn(ns: string, cmd: string, args: string[], opts: ExecOptions = {}): ExecResult {
  // nsenter --net, as for spawned processes: the command keeps our mount namespace.
  return runSync('nsenter', [`--net=${NETNS_DIR}/${ns}`, '--', cmd, ...args], { timeoutMs: EXEC_TIMEOUT_MS, ...opts, env: opts.env ?? nodeEnv() });
}

/** Polls `cond` every `intervalMs` until it holds; throws after `timeoutMs` naming `what`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string, intervalMs = 50): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() >= deadlineMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(1, deadlineMs - Date.now()))));
  }
}

// ---- Cleanup when the test process ends without destroying its worlds -------------------

const live = new Set<ClusterWorld>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function destroyAllSync(): void {
  for (const w of [...live]) {
    try {
      w.destroySync();
    } catch (e) {
      process.stderr.write(`cluster harness: cleanup of ${w.ns} failed: ${(e as Error).message}\n`);
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  destroyAllSync();
  uninstallHandlers();
  // Die of the same signal, as if we had not caught it (other listeners, if any, run first).
  process.kill(process.pid, signal);
}

let handlersInstalled = false;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  // 'exit' also fires after an uncaught exception or an unhandled rejection.
  process.on('exit', destroyAllSync);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.removeListener('exit', destroyAllSync);
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}

function register(w: ClusterWorld): void {
  live.add(w);
  installHandlers();
}

function unregister(w: ClusterWorld): void {
  live.delete(w);
  // Without live worlds, signals get their default behaviour back.
  if (live.size === 0) uninstallHandlers();
}

/** Worlds this process has created and not yet destroyed. */
export function liveWorlds(): ClusterWorld[] {
  return [...live];
}

// `node dist/test/cluster/harness.js sweep [--kept]`: removes worlds left by dead test runs.
if (require.main === module) {
  const [cmd, ...flags] = process.argv.slice(2);
  if (cmd !== 'sweep' || flags.some((f) => f !== '--kept')) {
    process.stderr.write('usage: node dist/test/cluster/harness.js sweep [--kept]\n' +
      '  Deletes the namespaces, tmp dirs and records of cluster-test worlds whose creating\n' +
      '  process is gone. --kept: also those kept with O2FS_KEEP_WORLD=1.\n');
    process.exit(2);
  }
  const removed = sweepStaleWorlds({ includeKept: flags.includes('--kept') });
  process.stdout.write(removed.length ? `removed ${removed.join(' ')}\n` : 'nothing to remove\n');
}

