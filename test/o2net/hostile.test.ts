// o2net against misbehaving peers: garbage, oversized and truncated frames, sockets that
// never finish the handshake, strangers, and an authenticated peer that goes silent or
// sends an oversized frame. Each may close only its own connection; the mesh keeps working.
import t, { Test } from 'tap';
import { encodeFrame, encodeHeader } from '../../dlm/o2cb/o2net-frame';
import { FAST, Member, closed, fakeNodeHandshake, hasLog, meshUp, rawConnect, sleep, startCluster, waitFor } from './helpers';

process.on('unhandledRejection', (e) => {
  throw e;
});

const ECHO = 1;

async function meshStillWorks(t: Test, members: Member[]): Promise<void> {
  for (const a of members) {
    for (const b of members) {
      if (a === b) continue;
      const r = await a.net.request(b.net.thisNode, ECHO, Buffer.from('ping'));
      t.equal(r.toString(), 'ping', `${a.net.thisNode} -> ${b.net.thisNode} still works`);
    }
  }
  for (const m of members) {
    for (const p of m.net.stats().peers) {
      if (p.node < members.length) t.equal(p.connects, 1, `node ${m.net.thisNode}: its link to node ${p.node} was never dropped`);
    }
  }
}

async function cluster(t: Test, opts: { handshakeTimeoutMs?: number; tableSize?: number; timeouts?: typeof FAST } = {}) {
  const c = await startCluster(t, {
    count: 3,
    tableSize: opts.tableSize,
    timeouts: opts.timeouts,
    perNode: () => (opts.handshakeTimeoutMs ? { handshakeTimeoutMs: opts.handshakeTimeoutMs } : {}),
  });
  for (const m of c.members) m.net.register(ECHO, (_f, p) => p);
  await meshUp(c.members);
  return c;
}

t.test('garbage, oversized and truncated frames before the handshake close only that socket', async (t) => {
  const { members, nodes } = await cluster(t);
  const n0 = members[0];
  // From node 2's address, so the acceptor lets the socket in and has to parse it.
  const cases: Array<[string, Buffer, RegExp]> = [
    ['garbage', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /protocol error: bad magic 0x4745/],
    [
      'oversized hello',
      encodeHeader({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, payloadLength: 1 << 20, status: 0 }),
      /hello frame of 1048576 bytes exceeds the 1024-byte limit/,
    ],
    ['message before the handshake', encodeFrame({ kind: 'message', sysStatus: 0, msgType: 1, msgNum: 1, status: 0, payload: Buffer.from('x') }), /expected a hello frame, got message/],
    ['undecodable hello', encodeFrame({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, status: 0, payload: Buffer.from([0xff, 0xff, 0xff]) }), /undecodable o2net.Hello/],
    ['nonzero reserved word', Buffer.concat([encodeHeader({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, payloadLength: 0, status: 0 }).subarray(0, 20), Buffer.from([0, 0, 0, 1])]), /reserved header word/],
  ];
  for (const [what, bytes, logRe] of cases) {
    const s = await rawConnect(t, nodes[2].ip, nodes[0]);
    s.write(bytes);
    await closed(s);
    t.pass(`${what}: node 0 closed the socket`);
    await waitFor(`the log line for ${what}`, () => hasLog(n0, logRe), 2000).then(
      () => t.pass(`${what}: logged`),
      () => t.fail(`${what}: no log line matching ${logRe}; logs: ${n0.logs.slice(-5).join(' | ')}`),
    );
  }
  // Truncated: half a header, then the sender hangs up.
  const s = await rawConnect(t, nodes[2].ip, nodes[0]);
  s.end(encodeHeader({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, payloadLength: 10, status: 0 }).subarray(0, 10));
  await closed(s);
  await waitFor('truncation log', () => hasLog(n0, /mid-frame \(10 bytes of an incomplete frame\)/));
  t.pass('truncated frame logged');
  await meshStillWorks(t, members);
});

t.test('a socket that never finishes the handshake is dropped; strangers are refused', async (t) => {
  const { members, nodes } = await cluster(t, { handshakeTimeoutMs: 300 });
  const silent = await rawConnect(t, nodes[1].ip, nodes[0]);
  const t0 = Date.now();
  await closed(silent);
  const tookMs = Date.now() - t0;
  t.ok(tookMs >= 250 && tookMs < 2000, `silent socket dropped after ${tookMs} ms`);
  t.ok(hasLog(members[0], /handshake not finished within 300 ms/));

  // A trickle of bytes does not extend the handshake bound.
  const trickle = await rawConnect(t, nodes[1].ip, nodes[0]);
  const header = encodeHeader({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, payloadLength: 100, status: 0 });
  let i = 0;
  const iv = setInterval(() => {
    if (i < header.length) trickle.write(header.subarray(i, ++i));
  }, 50);
  t.teardown(() => clearInterval(iv));
  const t1 = Date.now();
  await closed(trickle);
  clearInterval(iv);
  t.ok(Date.now() - t1 < 1000, 'trickling socket dropped at the bound');

  // An address that is in no node entry, and a lower node's address (lower nodes never dial).
  const stranger = await rawConnect(t, '127.0.0.77', nodes[1]);
  await closed(stranger);
  t.ok(hasLog(members[1], /refusing a connection from 127\.0\.0\.77:\d+: no higher-numbered node/));
  const lower = await rawConnect(t, nodes[0].ip, nodes[1]);
  await closed(lower);
  t.ok(hasLog(members[1], /refusing a connection from 127\.0\.0\.1:\d+: no higher-numbered node/));
  await meshStillWorks(t, members);
});

t.test('an impostor claiming another node number from a peer address is refused', async (t) => {
  const { members, nodes } = await cluster(t, { tableSize: 4 });
  members[0].net.heartbeatUp(3);
  // From node 3's address, claiming to be node 2.
  const wrongNum = { ...nodes[2], ip: nodes[3].ip };
  await t.rejects(fakeNodeHandshake(t, wrongNum, nodes[0]), /socket closed/);
  t.ok(hasLog(members[0], /claims to be node 2/));
  await meshStillWorks(t, members);
});

t.test('after the handshake: an oversized frame closes that connection only', async (t) => {
  const { members, nodes } = await cluster(t, { tableSize: 4 });
  const n0 = members[0];
  n0.net.heartbeatUp(3);
  const { socket, reader } = await fakeNodeHandshake(t, nodes[3], nodes[0]);
  await waitFor('node 0 sees the fake node 3 up', () => n0.net.liveNodes().has(3));
  // The fake answers one request properly, proving it is a working peer.
  const req = n0.net.request(3, ECHO, Buffer.from('hi'));
  const m = await reader.take('message');
  socket.write(encodeFrame({ kind: 'status', sysStatus: 0, msgType: m.msgType, msgNum: m.msgNum, status: 0, payload: Buffer.from('fake') }));
  t.equal((await req).toString(), 'fake');
  // And a request from the fake is answered by node 0's handler.
  socket.write(encodeFrame({ kind: 'message', sysStatus: 0, msgType: ECHO, msgNum: 7, status: 0, payload: Buffer.from('echo me') }));
  const st = await reader.take('status');
  t.equal(st.msgNum, 7);
  t.equal(st.payload.toString(), 'echo me');

  const pending = n0.net.request(3, ECHO, Buffer.from('never answered')).catch((e: { code?: string }) => e);
  socket.write(encodeHeader({ kind: 'message', sysStatus: 0, msgType: ECHO, msgNum: 8, payloadLength: (1 << 20) + 1, status: 0 }));
  await closed(socket);
  const err = await pending;
  t.equal((err as { code?: string }).code, 'EHOSTDOWN', 'the pending request to the fake fails');
  t.ok(hasLog(n0, /no longer connected to node 3 \(n3\): protocol error: message frame of 1048577 bytes exceeds the 1048576-byte limit/));
  t.same(n0.downs, [], 'still no death without the heartbeat');
  await meshStillWorks(t, members);
});

t.test('after the handshake: a reply to an unknown type mismatch, and a status for a request never sent', async (t) => {
  const { members, nodes } = await cluster(t, { tableSize: 4 });
  const n0 = members[0];
  n0.net.heartbeatUp(3);
  const { socket, reader } = await fakeNodeHandshake(t, nodes[3], nodes[0]);
  await waitFor('fake up', () => n0.net.connectedNodes().has(3));
  // A stray status for a message number nobody sent is ignored (it may be a late reply).
  socket.write(encodeFrame({ kind: 'status', sysStatus: 0, msgType: 5, msgNum: 12345, status: 0, payload: Buffer.alloc(0) }));
  await sleep(100);
  t.ok(n0.net.connectedNodes().has(3), 'a stray reply does not kill the link');
  // A reply whose type differs from its request's is a protocol error.
  const req = n0.net.request(3, ECHO, Buffer.from('x'));
  const m = await reader.take('message');
  socket.write(encodeFrame({ kind: 'status', sysStatus: 0, msgType: m.msgType + 1, msgNum: m.msgNum, status: 0, payload: Buffer.alloc(0) }));
  const err = await req.catch((e: { code?: string }) => e);
  t.equal((err as { code?: string }).code, 'EHOSTDOWN');
  t.ok(hasLog(n0, /reply to message \d+ carries type 2, the request had 1/));
  await meshStillWorks(t, members);
});

t.test('idle timeout closes a blackholed peer; keepalives are answered', async (t) => {
  const tmo = { keepaliveDelayMs: 100, idleTimeoutMs: 600, reconnectDelayMs: 100, heartbeatDeadMs: 3000 };
  const { members, nodes } = await cluster(t, { tableSize: 4, timeouts: tmo });
  const n0 = members[0];
  n0.net.heartbeatUp(3);
  const { socket, reader } = await fakeNodeHandshake(t, nodes[3], nodes[0], { timeouts: tmo });
  await waitFor('fake up', () => n0.net.connectedNodes().has(3));
  // Node 0 answers our keepalive.
  socket.write(encodeFrame({ kind: 'keepaliveReq', sysStatus: 0, msgType: 0, msgNum: 0, status: 0, payload: Buffer.alloc(0) }));
  await reader.take('keepaliveResp');
  t.pass('keepalive answered');
  // Now the fake goes silent (a blackholed or SIGSTOPped peer): node 0 probes, then gives up.
  const t0 = Date.now();
  await closed(socket);
  const tookMs = Date.now() - t0;
  t.ok(tookMs >= 500 && tookMs < 2000, `closed after ${tookMs} ms of silence`);
  t.ok(reader.frames.some((f) => f.kind === 'keepaliveReq'), 'node 0 sent a keepalive first');
  t.ok(hasLog(n0, /no longer connected to node 3 \(n3\): no data from node 3 for 600 ms \(idle timeout\)/));
  t.ok(n0.net.liveNodes().has(3), 'still a member until the heartbeat says otherwise');
  await meshStillWorks(t, members);
});

t.test('a flood of unanswered requests beyond the in-flight bound closes that link', async (t) => {
  const { members, nodes } = await cluster(t, { tableSize: 4 });
  const n0 = members[0];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  n0.net.register(9, async () => {
    await gate;
    return Buffer.alloc(0);
  });
  t.teardown(() => release());
  n0.net.heartbeatUp(3);
  const { socket } = await fakeNodeHandshake(t, nodes[3], nodes[0]);
  await waitFor('fake up', () => n0.net.connectedNodes().has(3));
  const frames: Buffer[] = [];
  for (let i = 1; i <= 5000; i++) frames.push(encodeFrame({ kind: 'message', sysStatus: 0, msgType: 9, msgNum: i, status: 0, payload: Buffer.alloc(0) }));
  socket.write(Buffer.concat(frames));
  await closed(socket);
  t.ok(hasLog(n0, /has more than 4096 requests/));
  release();
  await meshStillWorks(t, members);
});
