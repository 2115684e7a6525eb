// An o2cb cluster on the harness: N nodes in their network namespaces, each running the real
// o2cbd (started as `o2cb register-cluster` would), one shared disk formatted by mkfs.o2fs
// for the o2cb stack, and one cluster.conf made with the real `o2cb` tool. Tests (in the
// host namespace) reach node i's daemon through its unix socket, as node i's mount would:
// `connect(i, ...)` runs the stackglue o2cb plugin against that node.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { o2cbStack } from '../../stackglue/o2cb/index';
import type { ClusterConnection, ConnectOptions, StackCallbacks } from '../../stackglue/types';
import { ClusterWorld, ManagedProcess, nodeEnv, waitFor } from './harness';

const DIST = path.resolve(__dirname, '../..');
export const O2CB_TOOL = path.join(DIST, 'tools/o2cb.js');
export const O2CBD = path.join(DIST, 'dlm/o2cb/o2cbd.js');
export const MKFS = path.join(DIST, 'tools/mkfs.js');
export const CLUSTER_NAME = 'o2test';

export interface O2cbClusterOptions {
  nodes: number;
  /** Heartbeat interval and dead threshold (defaults: fast, for tests: 200 ms x 10 = 2 s). */
  heartbeatIntervalMs?: number;
  heartbeatDeadThreshold?: number;
  idleTimeoutMs?: number;
  keepaliveDelayMs?: number;
  reconnectDelayMs?: number;
  diskBytes?: number;
  /** Extra mkfs.o2fs arguments (slots, block size). */
  mkfsArgs?: string[];
}

export class O2cbCluster {
  readonly daemons: Array<ManagedProcess | null>;
  readonly configDir: string;

  private constructor(readonly world: ClusterWorld, readonly opts: Required<Omit<O2cbClusterOptions, 'mkfsArgs'>>) {
    this.configDir = path.join(world.tmpDir, 'etc-o2fs');
    this.daemons = world.nodes.map(() => null);
  }

  static async create(o: O2cbClusterOptions): Promise<O2cbCluster> {
    const opts = {
      nodes: o.nodes,
      heartbeatIntervalMs: o.heartbeatIntervalMs ?? 200,
      heartbeatDeadThreshold: o.heartbeatDeadThreshold ?? 10,
      idleTimeoutMs: o.idleTimeoutMs ?? 1500,
      keepaliveDelayMs: o.keepaliveDelayMs ?? 500,
      reconnectDelayMs: o.reconnectDelayMs ?? 300,
      diskBytes: o.diskBytes ?? 512 * 1024 * 1024,
    };
    const world = await ClusterWorld.create({ nodes: o.nodes, sharedDiskBytes: opts.diskBytes });
    const c = new O2cbCluster(world, opts);
    try {
      c.configure();
      const mk = world.exec(0, process.execPath, [MKFS, '-q', '-F', '-N', String(Math.max(4, o.nodes)), '--cluster-stack', 'o2cb', '--cluster-name', CLUSTER_NAME, ...(o.mkfsArgs ?? []), world.sharedDisk], { env: nodeEnv() });
      if (mk.status !== 0) throw new Error(`mkfs.o2fs failed: ${mk.stderr}`);
      await Promise.all(world.nodes.map((_, i) => c.start(i)));
    } catch (e) {
      await world.destroy();
      throw e;
    }
    return c;
  }

  runDir(node: number): string {
    return path.join(this.world.tmpDir, `run-node${node}`);
  }

  private o2cb(args: string[]): string {
    const r = this.world.exec(0, process.execPath, [O2CB_TOOL, ...args, '--config-dir', this.configDir], { env: nodeEnv() });
    if (r.status !== 0) throw new Error(`o2cb ${args.join(' ')}: ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  /** cluster.conf through the real tool: the cluster, its nodes, fast timeouts for tests. */
  private configure(): void {
    mkdirSync(this.configDir, { recursive: true });
    this.o2cb(['add-cluster', CLUSTER_NAME]);
    for (const n of this.world.nodes) this.o2cb(['add-node', CLUSTER_NAME, n.name, '--ip', n.ip, '--number', String(n.num)]);
    const o = this.opts;
    this.o2cb(['set-timeouts', CLUSTER_NAME, '--heartbeat-interval-ms', String(o.heartbeatIntervalMs), '--heartbeat-threshold', String(o.heartbeatDeadThreshold),
      '--idle-timeout-ms', String(o.idleTimeoutMs), '--keepalive-delay-ms', String(o.keepaliveDelayMs), '--reconnect-delay-ms', String(o.reconnectDelayMs)]);
  }

  /** Starts node i's o2cbd in its namespace and waits for "ready". */
  async start(i: number): Promise<void> {
    const runDir = this.runDir(i);
    mkdirSync(runDir, { recursive: true });
    const name = this.world.nodes[i].name;
    const d = this.world.spawn(i, process.execPath, [O2CBD, '--config-dir', this.configDir, '--run-dir', runDir, '--cluster', CLUSTER_NAME, '--node', name], { env: nodeEnv(), label: `o2cbd-${name}` });
    this.daemons[i] = d;
    try {
      await d.waitForLine(/^ready$/, 20_000, { stream: 'stdout' });
    } catch (e) {
      throw new Error(`o2cbd on ${name} did not start: ${(e as Error).message}\n${d.stderr()}`);
    }
  }

  /** The stackglue o2cb plugin of node i, joined to the shared disk's lock space. */
  connect(i: number, o: Omit<ConnectOptions, 'callbacks' | 'onRecovery' | 'device' | 'runDir' | 'clusterName'> & { onFenced?: (r: string) => void },
    callbacks: StackCallbacks, onRecovery: (n: number) => void): Promise<ClusterConnection> {
    return o2cbStack.connect({ ...o, clusterName: CLUSTER_NAME, callbacks, onRecovery, device: this.world.sharedDisk, runDir: this.runDir(i) });
  }

  /** The volume UUID of the shared disk, as stackglue names the lock space. */
  group(): string {
    const r = this.world.exec(0, process.execPath, [path.join(DIST, 'tools/debugfs.js'), this.world.sharedDisk, '-R', 'stats', '--json'], { env: nodeEnv() });
    if (r.status !== 0) throw new Error(`debugfs: ${r.stderr}`);
    const uuid = String((JSON.parse(r.stdout) as { result?: { uuid?: string } }).result?.uuid ?? "");
    if (!/^[0-9a-fA-F-]{32,36}$/.test(uuid)) throw new Error(`no uuid in debugfs stats: ${r.stdout.slice(0, 200)}`);
    return uuid.replace(/-/g, '').toUpperCase();
  }

  /** Dead time + slack: how long after a kill the others may take to see it. */
  get deadMs(): number {
    return this.opts.heartbeatIntervalMs * this.opts.heartbeatDeadThreshold;
  }

  async kill(i: number): Promise<void> {
    await this.world.kill(i, 'SIGKILL');
    this.daemons[i] = null;
  }

  /** The node fenced itself: its daemon exited with status 1. */
  async isFenced(i: number): Promise<boolean> {
    const d = this.daemons[i];
    return !!d && !d.running && d.exitStatus?.code === 1;
  }

  async waitExited(i: number, timeoutMs: number): Promise<void> {
    const d = this.daemons[i];
    if (!d) return;
    await waitFor(() => !d.running, timeoutMs, `o2cbd on node ${i} to exit`);
  }

  /** Clean stop of every daemon (SIGTERM), then the world. */
  async close(): Promise<void> {
    await Promise.all(this.daemons.map(async (d) => {
      if (d?.running) await d.stop(10_000).catch(() => undefined);
    }));
    await this.world.destroy();
  }
}
