// o2net: three nodes in this process on 127.0.0.1/2/3 form the mesh, exchange requests,
// keep per-peer FIFO order, survive dropped sockets, and refuse mismatched peers.
import t, { Test } from 'tap';
import { TransportError } from '../../dlm/o2cb/transport';
import { O2NetRemoteError } from '../../dlm/o2cb/o2net';
import { Quorum } from '../../dlm/o2cb/quorum';
import { FAST, KEY, hasLog, meshUp, sleep, startCluster, waitFor } from './helpers';

process.on('unhandledRejection', (e) => {
  throw e;
});

const ECHO = 1;

function code(e: unknown): string {
  return e instanceof TransportError ? e.code : `not a TransportError: ${String(e)}`;
}

async function rejectsCode(t: Test, p: Promise<unknown>, want: string, msg = `rejects with ${want}`): Promise<void> {
  const got = await p.then(
    () => 'resolved',
    (e: unknown) => code(e),
  );
  t.equal(got, want, msg);
}

t.test('mesh forms; requests flow both ways; heartbeatDown reports down', async (t) => {
  const { members } = await startCluster(t, { count: 3 });
  for (const m of members) m.net.register(ECHO, (from, p) => Buffer.concat([Buffer.from(`${m.net.thisNode}<-${from}:`), p]));
  await meshUp(members);
  for (const m of members) {
    t.same([...m.net.connectedNodes()].sort(), [0, 1, 2].filter((n) => n !== m.net.thisNode), `node ${m.net.thisNode} connected to the others`);
    t.same(m.ups.sort(), [0, 1, 2].filter((n) => n !== m.net.thisNode), 'onNodeUp once per peer');
  }
  for (const a of members) {
    for (const b of members) {
      if (a === b) continue;
      const r = await a.net.request(b.net.thisNode, ECHO, Buffer.from('x'));
      t.equal(r.toString(), `${b.net.thisNode}<-${a.net.thisNode}:x`);
    }
  }
  // Only the higher node dials: node 0 accepted both, node 2 dialled both.
  t.ok(hasLog(members[0], /accepted a connection from node 1/));
  t.ok(hasLog(members[2], /connected to node 0/));
  const st = members[1].net.stats();
  const p0 = st.peers.find((p) => p.node === 0);
  t.ok(p0 && p0.msgsSent >= 1 && p0.bytesSent > 0 && p0.bytesReceived > 0 && p0.connects === 1, 'stats count traffic');

  members[0].net.heartbeatDown(2);
  t.same(members[0].downs, [2], 'heartbeatDown -> onNodeDown');
  t.notOk(members[0].net.liveNodes().has(2));
  await rejectsCode(t, members[0].net.request(2, ECHO, Buffer.from('y')), 'EHOSTDOWN');
  // Node 2 keeps dialling node 0 but node 0 refuses it: no heartbeat.
  await sleep(300);
  t.notOk(members[0].net.connectedNodes().has(2), 'a node not heartbeating is not accepted');
  t.ok(hasLog(members[0], /refusing a connection from 127\.0\.0\.3.*not heartbeating/));
  members[0].net.heartbeatUp(2);
  await waitFor('node 2 back', () => members[0].net.liveNodes().has(2));
  t.same(members[0].ups.filter((n) => n === 2).length, 2, 'up again after the heartbeat returns');
});

t.test('errors: no handler, handler throws, bad arguments, timeout', async (t) => {
  const { members } = await startCluster(t, { count: 2 });
  const [a, b] = members;
  b.net.register(2, () => {
    throw Object.assign(new Error('boom'), { code: 'EAGAIN' });
  });
  b.net.register(3, async () => {
    await sleep(500);
    return Buffer.from('late');
  });
  b.net.register(4, () => Buffer.alloc((1 << 20) + 1));
  await meshUp(members);
  await rejectsCode(t, a.net.request(1, 77, Buffer.alloc(0)), 'ENOPROTOOPT');
  const err = await a.net.request(1, 2, Buffer.alloc(0)).catch((e: unknown) => e);
  t.ok(err instanceof O2NetRemoteError, 'a throwing handler gives an O2NetRemoteError');
  t.equal((err as O2NetRemoteError).code, 'EAGAIN');
  t.equal((err as O2NetRemoteError).remoteMessage, 'boom');
  const ov = await a.net.request(1, 4, Buffer.alloc(0)).catch((e: unknown) => e);
  t.equal((ov as O2NetRemoteError).code, 'EOVERFLOW', 'an oversized reply is refused at the replier');
  await rejectsCode(t, a.net.request(1, 3, Buffer.alloc(0), 100), 'ETIMEDOUT');
  await t.rejects(a.net.request(0, 1, Buffer.alloc(0)), RangeError, 'no messages to self');
  await t.rejects(a.net.request(1, 1, Buffer.alloc((1 << 20) + 1)), RangeError, 'payload limit');
  await t.rejects(a.net.request(1, 0, Buffer.alloc(0)), RangeError, 'message type 0 is invalid');
  t.throws(() => b.net.register(2, () => Buffer.alloc(0)), /already registered/);
  // The late reply to the timed-out request is ignored and the link still works.
  await sleep(600);
  t.equal((await a.net.request(1, 3, Buffer.alloc(0))).toString(), 'late');
  t.equal(a.net.stats().peers[0].requestsInFlight, 0, 'no leaked in-flight slots');
});

t.test('per-peer FIFO; a slow handler for one peer does not stall another', async (t) => {
  const { members } = await startCluster(t, { count: 3 });
  const [n0, n1, n2] = members;
  const order: string[] = [];
  let running = 0;
  let maxRunning = 0;
  n0.net.register(ECHO, async (from, p) => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    await sleep(Math.floor(Math.random() * 3));
    order.push(`${from}:${p.readUInt32BE(0)}`);
    running--;
    return p;
  });
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  n0.net.register(9, async () => {
    await gate;
    return Buffer.from('released');
  });
  await meshUp(members);
  const slow = n2.net.request(0, 9, Buffer.alloc(0), 10_000);
  const reqs: Array<Promise<Buffer>> = [];
  for (let i = 0; i < 200; i++) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(i, 0);
    reqs.push(n1.net.request(0, ECHO, b));
  }
  await Promise.all(reqs);
  const from1 = order.filter((s) => s.startsWith('1:')).map((s) => Number(s.slice(2)));
  t.same(from1, [...Array(200).keys()], 'node 1 messages handled in send order');
  t.equal(maxRunning, 1, 'one handler at a time for one peer');
  release();
  t.equal((await slow).toString(), 'released', 'the slow request from node 2 completes after');
});

t.test('10k concurrent requests: every reply matches its request', async (t) => {
  const { members } = await startCluster(t, { count: 3 });
  for (const m of members) m.net.register(ECHO, (from, p) => Buffer.concat([p, Buffer.from([from])]));
  await meshUp(members);
  const N = 10_000;
  const started = Date.now();
  const jobs: Array<Promise<void>> = [];
  for (let i = 0; i < N; i++) {
    const src = members[i % 3];
    const dst = (src.net.thisNode + 1 + (i % 2)) % 3;
    const p = Buffer.from(`req-${i}`);
    jobs.push(
      src.net.request(dst, ECHO, p).then((r) => {
        if (!r.equals(Buffer.concat([p, Buffer.from([src.net.thisNode])]))) throw new Error(`reply mismatch for ${i}`);
      }),
    );
  }
  await Promise.all(jobs);
  t.pass(`${N} requests matched in ${Date.now() - started} ms`);
  for (const m of members) for (const p of m.net.stats().peers) t.equal(p.requestsInFlight, 0);
});

t.test('more requests than in-flight slots wait instead of failing', async (t) => {
  const { members } = await startCluster(t, { count: 2 });
  members[1].net.register(ECHO, async (_f, p) => {
    await new Promise((r) => setImmediate(r));
    return p;
  });
  await meshUp(members);
  const N = 9000; // above MAX_IN_FLIGHT_REQUESTS (4096)
  const rs = await Promise.all([...Array(N).keys()].map((i) => members[0].net.request(1, ECHO, Buffer.from(String(i)))));
  t.ok(rs.every((r, i) => r.toString() === String(i)));
  t.equal(members[1].logs.filter((l) => /unanswered/.test(l)).length, 0, 'the receiver never saw a flood');
});

t.test('a dropped socket fails pending requests with EHOSTDOWN and the dialer reconnects', async (t) => {
  const { members } = await startCluster(t, { count: 3 });
  const [n0, n1] = members;
  let release: () => void = () => undefined;
  n0.net.register(9, () => new Promise<Buffer>((r) => (release = () => r(Buffer.from('x')))));
  n0.net.register(ECHO, (_f, p) => p);
  await meshUp(members);
  const pending = n1.net.request(0, 9, Buffer.alloc(0), 10_000);
  await waitFor('the handler to start', () => n0.net.stats().peers.find((p) => p.node === 1)?.msgsReceived === 1);
  n1.net.disconnect(0);
  await rejectsCode(t, pending, 'EHOSTDOWN', 'pending request fails with EHOSTDOWN');
  release();
  t.same(n1.downs, [], 'a dropped connection is not a death');
  t.ok(n1.net.liveNodes().has(0), 'still a member');
  await waitFor('reconnection', () => n1.net.connectedNodes().has(0) && n0.net.connectedNodes().has(1));
  t.equal((await n1.net.request(0, ECHO, Buffer.from('again'))).toString(), 'again');
  t.equal(n1.net.stats().peers.find((p) => p.node === 0)?.reconnects, 1);
  t.equal(n1.ups.filter((x) => x === 0).length, 1, 'no second onNodeUp for a reconnection');

  // The acceptor side dropping the socket: the dialer notices and redials.
  n0.net.disconnect(1);
  await waitFor('reconnection after the acceptor dropped it', () => n1.net.stats().peers.find((p) => p.node === 0)?.reconnects === 2);
  t.equal((await n1.net.request(0, ECHO, Buffer.from('3'))).toString(), '3');
});

t.test('keepalive holds an idle connection; stop() fails pending requests', async (t) => {
  const tmo = { keepaliveDelayMs: 100, idleTimeoutMs: 500, reconnectDelayMs: 100, heartbeatDeadMs: 3000 };
  const { members } = await startCluster(t, { count: 2, timeouts: tmo });
  members[0].net.register(9, () => new Promise<Buffer>(() => undefined));
  await meshUp(members);
  await sleep(1500); // three idle timeouts of silence from the application
  for (const m of members) {
    const p = m.net.stats().peers[0];
    t.equal(p.connects, 1, `node ${m.net.thisNode}: never reconnected`);
    t.equal(p.disconnects, 0);
    t.ok(p.keepalivesSent >= 3, `node ${m.net.thisNode}: sent keepalives (${p.keepalivesSent})`);
  }
  const pending = members[1].net.request(0, 9, Buffer.alloc(0), 10_000);
  await sleep(50);
  await members[1].net.stop();
  await rejectsCode(t, pending, 'EHOSTDOWN');
});

t.test('handshake refuses mismatched timeouts, cluster names, and a wrong key', async (t) => {
  const { members } = await startCluster(t, {
    count: 3,
    perNode: (n) =>
      n === 2
        ? { timeouts: { ...FAST, idleTimeoutMs: 10_000 } }
        : n === 1
          ? { clusterKey: Buffer.from(KEY.map((b) => b ^ 1)) }
          : {},
  });
  await sleep(800);
  const [n0, n1, n2] = members;
  t.same([...n0.net.connectedNodes()], [], 'node 0 connected to nobody');
  t.ok(hasLog(n0, /node 2 uses a network idle timeout of 10000 ms but we use 2000 ms/), 'timeout mismatch logged with both values');
  t.ok(hasLog(n2, /refused the connection: node 2 uses a network idle timeout of 10000 ms but we use 2000 ms/), 'the dialer logs the reason too');
  t.ok(hasLog(n1, /node 0 at .* failed to prove it holds the cluster key/), 'the wrong-key node refuses node 0');
  t.ok(hasLog(n0, /refused the connection: authentication failed/), 'node 0 logs the refusal');
  t.notOk(n1.net.connectedNodes().has(0));
  t.same(n0.ups, []);
  // Node 2 (bad timeout) and node 1 (bad key) cannot talk either.
  t.same([...n2.net.connectedNodes()], []);
});

t.test('a different cluster name is refused', async (t) => {
  const { members } = await startCluster(t, { count: 2, perNode: (n) => (n === 1 ? { clusterName: 'other' } : {}) });
  await sleep(500);
  t.same([...members[0].net.connectedNodes()], []);
  t.ok(hasLog(members[0], /node 1 is in cluster "other" but we are in cluster "testclu"/));
});

t.test('o2net drives quorum: a lost peer that keeps heartbeating makes the higher node fence', async (t) => {
  const quorums: Quorum[] = [];
  const fences: Array<{ node: number; reason: string }> = [];
  const { members } = await startCluster(t, {
    count: 2,
    perNode: (n) => {
      const q = new Quorum({ thisNode: n, quorumDelayMs: 400 });
      q.on('fence', (reason) => fences.push({ node: n, reason }));
      quorums[n] = q;
      return { quorum: q };
    },
  });
  t.teardown(() => quorums.forEach((q) => q.close()));
  await meshUp(members);
  t.same(quorums[1].state().connected, [0, 1]);
  t.same(quorums[1].state().holds, []);
  // Node 0's network goes away while both still heartbeat (nobody calls heartbeatDown).
  await members[0].net.stop();
  await waitFor('node 1 to lose the connection', () => !members[1].net.connectedNodes().has(0));
  t.same(quorums[1].state().holds, [0], 'the lost connection holds the decision');
  t.same(fences, [], 'no decision inside the quorum delay');
  await waitFor('the quorum decision', () => fences.length > 0, 3000);
  t.equal(fences[0].node, 1);
  t.match(fences[0].reason, /not to the lowest node 0/);

  // With the heartbeat declaring the node dead inside the delay, nobody fences.
  const q2: Quorum[] = [];
  const fences2: number[] = [];
  const c2 = await startCluster(t, {
    count: 2,
    perNode: (n) => {
      const q = new Quorum({ thisNode: n, quorumDelayMs: 400 });
      q.on('fence', () => fences2.push(n));
      q2[n] = q;
      return { quorum: q };
    },
  });
  t.teardown(() => q2.forEach((q) => q.close()));
  await meshUp(c2.members);
  await c2.members[0].net.stop();
  await waitFor('lost', () => !c2.members[1].net.connectedNodes().has(0));
  c2.members[1].net.heartbeatDown(0);
  await sleep(700);
  t.same(fences2, [], 'a dead node is not a quorum loss');
  t.same(c2.members[1].downs, [0]);
});
