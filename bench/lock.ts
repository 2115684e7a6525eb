// Lock throughput and failover on the o2cb stack: three nodes, each in its own network
// namespace running the real o2cbd, the shared disk a file (test/cluster harness); this
// process is every node's client through the stackglue o2cb plugin, and takes its locks
// through dlmglue, as a mount does.
//
//   node dist/bench/lock.js        (as root, after scripts/setup.sh; about a minute)
//
// Prints median and p99 per operation:
//   cached     EX lock + release of a level dlmglue already holds: no message at all
//   uncached   first EX on a new name: mastery + grant through the node's daemon
//   local      first EX on a new name mastered here without asking (LKF.LOCAL, as a new
//              inode's locks): one round trip to the node's daemon
//   ping-pong  two nodes alternately take EX on one name: BAST, downconvert, grant
//   failover   kill -9 of the node holding EX until another node is granted it, with the
//              cluster's default timeouts (o2nm: 500 ms x 12 heartbeat, 5 s idle)
// Env: BENCH_CACHED (100000), BENCH_UNCACHED (2000) (also local), BENCH_PINGPONG (500), BENCH_FAILOVERS (3).
import { DlmGlue, LockRes } from '../fs/dlmglue';
import { DEFAULT_TIMEOUTS } from '../dlm/o2cb/o2nm';
import { O2cbCluster } from '../test/cluster/o2cb-cluster';
import type { ClusterConnection } from '../stackglue/types';

const PROTO = { major: 1, minor: 0 };
const N_CACHED = Number(process.env.BENCH_CACHED ?? 100_000);
const N_UNCACHED = Number(process.env.BENCH_UNCACHED ?? 2_000);
const N_PINGPONG = Number(process.env.BENCH_PINGPONG ?? 500);
const N_FAILOVERS = Number(process.env.BENCH_FAILOVERS ?? 3);

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function report(label: string, samplesMs: number[], wallMs: number): void {
  const s = [...samplesMs].sort((a, b) => a - b);
  if (s.length === 0) {
    console.log(`${label.padEnd(10)} not run`);
    return;
  }
  const fmt = (ms: number): string => (ms < 1 ? `${(ms * 1000).toFixed(1)} us` : `${ms.toFixed(2)} ms`);
  console.log(`${label.padEnd(10)} n=${String(s.length).padStart(6)}  median ${fmt(quantile(s, 0.5)).padStart(10)}  p99 ${fmt(quantile(s, 0.99)).padStart(10)}  ${((s.length / wallMs) * 1000).toFixed(0).padStart(8)} ops/s`);
}

async function timed(n: number, fn: (i: number) => Promise<void>): Promise<{ samples: number[]; wallMs: number }> {
  const samples: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn(i);
    samples.push(performance.now() - s);
  }
  return { samples, wallMs: performance.now() - t0 };
}

interface Node {
  glue: DlmGlue;
  conn: ClusterConnection;
  recovered: number[];
}

async function join(c: O2cbCluster, i: number, group: string): Promise<Node> {
  const glue = new DlmGlue();
  const recovered: number[] = [];
  const conn = await c.connect(i, { group, proto: PROTO }, glue.callbacks, (n) => recovered.push(n));
  glue.attach(conn);
  return { glue, conn, recovered };
}

async function main(): Promise<void> {
  const t = DEFAULT_TIMEOUTS;
  const c = await O2cbCluster.create({
    nodes: 3, heartbeatIntervalMs: t.heartbeatIntervalMs, heartbeatDeadThreshold: t.heartbeatDeadThreshold,
    idleTimeoutMs: t.idleTimeoutMs, keepaliveDelayMs: t.keepaliveDelayMs, reconnectDelayMs: t.reconnectDelayMs,
  });
  try {
    const group = c.group();
    const nodes = await Promise.all([0, 1, 2].map((i) => join(c, i, group)));
    console.log(`o2cb lock bench: 3 nodes in namespaces, heartbeat ${t.heartbeatIntervalMs} ms x ${t.heartbeatDeadThreshold}, idle ${t.idleTimeoutMs} ms`);

    const cachedRes = nodes[0].glue.resource('Mbench-cached');
    (await nodes[0].glue.lock(cachedRes, 'EX')).release();
    const cached = await timed(N_CACHED, async () => (await nodes[0].glue.lock(cachedRes, 'EX')).release());
    report('cached', cached.samples, cached.wallMs);

    const uncached = await timed(N_UNCACHED, async (i) => (await nodes[0].glue.lock(nodes[0].glue.resource(`Mbench-new-${i}`), 'EX')).release());
    report('uncached', uncached.samples, uncached.wallMs);

    const local = await timed(N_UNCACHED, async (i) => (await nodes[0].glue.lock(nodes[0].glue.resource(`Mbench-local-${i}`), 'EX', { local: true })).release());
    report('local', local.samples, local.wallMs);

    const pp: LockRes[] = [nodes[0].glue.resource('Mbench-pingpong'), nodes[1].glue.resource('Mbench-pingpong')];
    const pingpong = await timed(N_PINGPONG, async (i) => (await nodes[i % 2].glue.lock(pp[i % 2], 'EX')).release());
    report('ping-pong', pingpong.samples.slice(1), pingpong.wallMs);

    const failovers: number[] = [];
    for (let k = 0; k < N_FAILOVERS; k++) {
      const name = `Mbench-failover-${k}`;
      const victim = nodes[2];
      (await victim.glue.lock(victim.glue.resource(name), 'EX')).release(); // held (cached) at EX
      const killedAt = performance.now();
      await c.kill(2);
      (await nodes[0].glue.lock(nodes[0].glue.resource(name), 'EX')).release();
      failovers.push(performance.now() - killedAt);
      // Node 2 comes back for the next round (a reboot: new daemon, new join).
      await c.start(2);
      nodes[2] = await join(c, 2, group);
    }
    report('failover', failovers, failovers.reduce((a, b) => a + b, 0));
    console.log(`failover bound: dead time ${t.heartbeatIntervalMs * t.heartbeatDeadThreshold} ms + recovery`);
    for (const n of nodes) await n.conn.disconnect();
  } finally {
    await c.close();
  }
}

void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
