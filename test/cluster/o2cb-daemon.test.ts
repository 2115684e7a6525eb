// o2cbd end to end: three nodes in namespaces, the real daemon on each, the stackglue o2cb
// plugin as the client. The lock-manager semantics are the conformance suite's job
// (test/stackglue/conformance-o2cb.test.ts); this file checks the daemon itself: status,
// a lock handed across nodes, a client that breaks the protocol, a killed node's recovery
// reaching every survivor, and a clean shutdown.
import t from 'tap';
import * as net from 'node:net';
import { LOCK_STATUS, Lksb, StackCallbacks, newLksb } from '../../stackglue/types';
import { socketPath } from '../../dlm/o2cb/o2nm';
import { CLUSTER_NAME, O2CB_TOOL, O2cbCluster } from './o2cb-cluster';
import { ClusterWorld, nodeEnv } from './harness';

const PROTO = { major: 1, minor: 0 };
const STEP_MS = 20_000;

function recorder(): { callbacks: StackCallbacks; events: string[]; next(pred: (e: string) => boolean, what: string): Promise<string> } {
  const events: string[] = [];
  const waiters: Array<() => void> = [];
  const push = (e: string): void => {
    events.push(e);
    for (const w of waiters.splice(0)) w();
  };
  return {
    events,
    callbacks: {
      onGrant: (l) => push(`grant ${(l.owner as string)} ${l.status === 0 ? l.granted : l.status}`),
      onBlocking: (l, level) => push(`bast ${(l.owner as string)} ${level}`),
      onUnlock: (l, s) => push(`unlock ${(l.owner as string)} ${s}`),
    },
    async next(pred, what) {
      const deadline = Date.now() + STEP_MS;
      for (;;) {
        const hit = events.find(pred);
        if (hit) {
          events.splice(events.indexOf(hit), 1);
          return hit;
        }
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; saw ${JSON.stringify(events)}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

async function statusOf(c: O2cbCluster, i: number): Promise<Record<string, unknown>> {
  const sock = net.createConnection(socketPath(c.runDir(i), CLUSTER_NAME));
  let out = '';
  sock.on('data', (d) => { out += d.toString(); });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => sock.write('{"op":"status"}\n'));
    sock.once('close', () => resolve());
    sock.once('error', reject);
  });
  return JSON.parse(out) as Record<string, unknown>;
}

t.test('three o2cbd nodes: join, hand a lock across, survive garbage, recover a killed node', async (t) => {
  const c = await O2cbCluster.create({ nodes: 3 });
  t.teardown(() => c.close());
  const group = c.group();
  const recs = [recorder(), recorder(), recorder()];
  const recovered: number[][] = [[], [], []];
  const conns = await Promise.all([0, 1, 2].map((i) => c.connect(i, { group, proto: PROTO }, recs[i].callbacks, (n) => recovered[i].push(n))));
  t.same(conns.map((x) => x.thisNode), [0, 1, 2], 'each client talks to its own node');
  t.same(conns[0].proto, PROTO);

  const st = await statusOf(c, 0);
  t.equal(st.cluster, CLUSTER_NAME);
  t.same(st.heartbeating, [1, 2], 'node 0 sees the others heartbeating');
  t.same(st.connected, [1, 2], 'and connected');

  // EX on node 0; PR from node 1 blocks it and node 0 gets a BAST; releasing hands it over.
  const a: Lksb = newLksb('a');
  const b: Lksb = newLksb('b');
  conns[0].lock(a, 'EX', 0, 'Mtest-lock');
  t.equal(await recs[0].next((e) => e.startsWith('grant a'), 'EX on node 0'), 'grant a EX');
  a.lvb.write('hello from node 0');
  conns[1].lock(b, 'PR', 0x8 /* VALBLK */, 'Mtest-lock');
  t.equal(await recs[0].next((e) => e.startsWith('bast a'), 'BAST on node 0'), 'bast a PR');
  conns[0].lock(a, 'NL', 0x2 | 0x8 /* CONVERT|VALBLK */, 'Mtest-lock');
  t.equal(await recs[0].next((e) => e.startsWith('grant a'), 'down-convert'), 'grant a NL');
  t.equal(await recs[1].next((e) => e.startsWith('grant b'), 'PR on node 1'), 'grant b PR');
  t.equal(b.lvb.toString('latin1', 0, 17), 'hello from node 0', 'the LVB written under EX reaches the next holder');

  // A client speaking garbage loses its connection; the daemon and the others carry on.
  const bad = net.createConnection(socketPath(c.runDir(2), CLUSTER_NAME));
  await new Promise<void>((resolve) => {
    bad.once('connect', () => bad.write(Buffer.from([0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])));
    bad.once('close', () => resolve());
    bad.on('error', () => undefined);
  });
  t.ok(c.daemons[2]?.running, 'node 2 survived a garbage client');
  const huge = net.createConnection(socketPath(c.runDir(2), CLUSTER_NAME));
  await new Promise<void>((resolve) => {
    huge.once('connect', () => huge.write(Buffer.from([0x7f, 0xff, 0xff, 0xff])));
    huge.once('close', () => resolve());
    huge.on('error', () => undefined);
  });
  t.ok(c.daemons[2]?.running, 'and an oversized frame');

  // Node 2 takes EX on a second lock and is killed: the others recover it and get the lock.
  const x2 = newLksb('x2');
  conns[2].lock(x2, 'EX', 0x8, 'Mkilled-lock');
  t.equal(await recs[2].next((e) => e.startsWith('grant x2'), 'EX on node 2'), 'grant x2 EX');
  x2.lvb.write('written by the node that dies');
  const killedAt = Date.now();
  await c.kill(2);
  const x0 = newLksb('x0');
  conns[0].lock(x0, 'EX', 0x8, 'Mkilled-lock');
  t.equal(await recs[0].next((e) => e.startsWith('grant x0'), 'EX on node 0 after recovery'), 'grant x0 EX');
  const failoverMs = Date.now() - killedAt;
  t.ok(failoverMs < c.deadMs + 10_000, `failover in ${failoverMs} ms (dead time ${c.deadMs} ms)`);
  t.ok(x0.lvb.equals(Buffer.alloc(64)), 'the LVB the dead EX holder may have been changing is zeroed');
  t.same(recovered[0], [2], 'node 0 was told to recover node 2');
  await new Promise((r) => setTimeout(r, 500));
  t.same(recovered[1], [2], 'node 1 too');

  // Clean disconnect, then clean daemon stops.
  conns[0].unlock(x0, 0);
  t.match(await recs[0].next((e) => e.startsWith('unlock x0'), 'unlock'), `unlock x0 ${LOCK_STATUS.OK}`);
  await conns[0].disconnect();
  await conns[1].disconnect();
  for (const i of [0, 1]) {
    const code = await c.daemons[i]!.stop(15_000);
    t.equal(code.code, 0, `node ${i} stops cleanly on SIGTERM`);
  }
});

t.test('o2cb register-cluster / cluster-status / unregister-cluster drive the real o2cbd', async (t) => {
  const w = await ClusterWorld.create({ nodes: 1 });
  t.teardown(() => w.destroy());
  const conf = `${w.tmpDir}/etc`;
  const run = `${w.tmpDir}/run`;
  const o2cb = (args: string[]): { status: number | null; out: string; err: string } => {
    const r = w.exec(0, process.execPath, [O2CB_TOOL, ...args, '--config-dir', conf, '--run-dir', run], { env: nodeEnv(), timeoutMs: 60_000 });
    return { status: r.status, out: r.stdout, err: r.stderr };
  };
  t.equal(o2cb(['add-cluster', 'solo']).status, 0);
  t.equal(o2cb(['add-node', 'solo', 'node0', '--ip', w.nodes[0].ip]).status, 0);
  t.equal(o2cb(['cluster-status', 'solo', '--node', 'node0']).status, 3, 'not running yet: exit 3');
  const reg = o2cb(['register-cluster', 'solo', '--node', 'node0']);
  t.equal(reg.status, 0, `register-cluster: ${reg.err}`);
  const st = o2cb(['cluster-status', 'solo', '--node', 'node0', '--json']);
  t.equal(st.status, 0, st.err);
  t.match(st.out, /"cluster":\s*"solo"/, 'the daemon answers for its cluster');
  t.equal(o2cb(['register-cluster', 'solo', '--node', 'node0']).status !== 0, true, 'a second register is refused while it runs');
  const unreg = o2cb(['unregister-cluster', 'solo']);
  t.equal(unreg.status, 0, `unregister-cluster: ${unreg.err}`);
  t.equal(o2cb(['cluster-status', 'solo', '--node', 'node0']).status, 3, 'stopped');
});
