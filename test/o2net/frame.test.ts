// o2net framing and handshake codecs: round trips, stream reassembly at every split
// point, rejection of malformed headers, mismatch messages, and proof properties.
import t from 'tap';
import { FRAME_HEADER_BYTES, FrameError, FrameReader, decodeHeader, encodeFrame, encodeHeader } from '../../dlm/o2cb/o2net-frame';
import { Hello, NONCE_BYTES, O2NET_PROTOCOL_VERSION, computeProof, decodeHello, encodeHello, helloMismatch, newNonce, proofMatches } from '../../dlm/o2cb/o2net-handshake';

t.test('header layout and round trip', async (t) => {
  const h = { kind: 'status' as const, sysStatus: 2, msgType: 0xdeadbeef, msgNum: 7, payloadLength: 300, status: -5 };
  const b = encodeHeader(h);
  t.equal(b.length, FRAME_HEADER_BYTES);
  t.equal(b.readUInt16BE(0), 0xfa56, 'magic first, big-endian');
  t.equal(b.readUInt16BE(2), 2, 'sys_status');
  t.equal(b.readUInt32BE(4), 0xdeadbeef, 'msg type');
  t.equal(b.readUInt32BE(8), 7, 'msg num');
  t.equal(b.readUInt32BE(12), 300, 'payload length');
  t.equal(b.readInt32BE(16), -5, 'status');
  t.equal(b.readUInt32BE(20), 0, 'reserved');
  t.same(decodeHeader(b, 1000), h);
  t.throws(() => decodeHeader(b, 299), FrameError, 'over the limit');
  t.throws(() => encodeHeader({ ...h, msgType: -1 }), RangeError);
  t.throws(() => encodeHeader({ ...h, sysStatus: 9 }), RangeError);
  const bad = Buffer.from(b);
  bad.writeUInt16BE(0x1234, 0);
  t.throws(() => decodeHeader(bad, 1000), /bad magic 0x1234/);
  const bad2 = Buffer.from(b);
  bad2.writeUInt16BE(99, 2);
  t.throws(() => decodeHeader(bad2, 1000), /bad sys_status 99/);
});

t.test('the reader reassembles frames split at every byte boundary', async (t) => {
  const frames = [
    encodeFrame({ kind: 'message', sysStatus: 0, msgType: 1, msgNum: 1, status: 0, payload: Buffer.from('hello') }),
    encodeFrame({ kind: 'keepaliveReq', sysStatus: 0, msgType: 0, msgNum: 0, status: 0, payload: Buffer.alloc(0) }),
    encodeFrame({ kind: 'status', sysStatus: 0, msgType: 1, msgNum: 1, status: 0, payload: Buffer.alloc(100, 7) }),
  ];
  const stream = Buffer.concat(frames);
  for (let cut1 = 0; cut1 <= stream.length; cut1 += 3) {
    for (const cut2 of [cut1, Math.min(stream.length, cut1 + 1), Math.min(stream.length, cut1 + 29)]) {
      const r = new FrameReader(1000);
      const got = [];
      for (const part of [stream.subarray(0, cut1), stream.subarray(cut1, cut2), stream.subarray(cut2)]) {
        r.push(part);
        for (let f = r.next(); f; f = r.next()) got.push(f);
      }
      if (got.length !== 3 || got[0].payload.toString() !== 'hello' || got[2].payload.length !== 100 || r.pendingBytes !== 0) {
        t.fail(`split at ${cut1}/${cut2} gave ${got.length} frames`);
        return;
      }
    }
  }
  t.pass('every split reassembles');
  // The length is judged at the header, before any payload arrives.
  const r = new FrameReader(10);
  r.push(encodeHeader({ kind: 'message', sysStatus: 0, msgType: 1, msgNum: 1, payloadLength: 11, status: 0 }));
  t.throws(() => r.next(), /11 bytes exceeds the 10-byte limit/);
});

function hello(over: Partial<Hello> = {}): Hello {
  return {
    protocolVersion: O2NET_PROTOCOL_VERSION,
    clusterName: 'c1',
    node: 2,
    heartbeatDeadMs: 62000,
    idleTimeoutMs: 30000,
    keepaliveDelayMs: 2000,
    reconnectDelayMs: 2000,
    maxPayloadBytes: 1 << 20,
    nonce: newNonce(),
    ...over,
  };
}

t.test('hello round trip and mismatch lines name both values', async (t) => {
  const h = hello();
  t.same(decodeHello(encodeHello(h)), h);
  t.throws(() => decodeHello(encodeHello({ ...h, nonce: Buffer.alloc(3) })), /nonce is 3 bytes/);
  const ours = hello({ node: 0 });
  t.equal(helloMismatch(ours, hello()), null, 'reconnect delay and nonce may differ');
  t.equal(helloMismatch(ours, hello({ reconnectDelayMs: 5000 })), null);
  t.equal(helloMismatch(ours, hello({ idleTimeoutMs: 10000 })), 'node 2 uses a network idle timeout of 10000 ms but we use 30000 ms');
  t.equal(helloMismatch(ours, hello({ keepaliveDelayMs: 5000 })), 'node 2 uses a network keepalive delay of 5000 ms but we use 2000 ms');
  t.equal(helloMismatch(ours, hello({ heartbeatDeadMs: 12000 })), 'node 2 uses a heartbeat dead time of 12000 ms but we use 62000 ms');
  t.equal(helloMismatch(ours, hello({ protocolVersion: 9 })), `node 2 speaks o2net protocol version 9 but we speak ${O2NET_PROTOCOL_VERSION}`);
  t.match(helloMismatch(ours, hello({ clusterName: 'zz' })), /cluster "zz" but we are in cluster "c1"/);
  t.match(helloMismatch(ours, hello({ maxPayloadBytes: 4072 })), /maximum message payload of 4072 bytes but we use 1048576 bytes/);
});

t.test('proofs bind the key, both nonces, the roles and the cluster', async (t) => {
  const key = Buffer.alloc(32, 1);
  const nd = newNonce();
  const na = newNonce();
  t.equal(nd.length, NONCE_BYTES);
  const p = computeProof(key, 'c1', 2, 0, nd, na);
  t.ok(proofMatches(p, computeProof(key, 'c1', 2, 0, nd, na)), 'deterministic');
  t.notOk(proofMatches(p, computeProof(Buffer.alloc(32, 2), 'c1', 2, 0, nd, na)), 'other key');
  t.notOk(proofMatches(p, computeProof(key, 'c1', 0, 2, nd, na)), 'reflected roles');
  t.notOk(proofMatches(p, computeProof(key, 'c1', 2, 0, newNonce(), na)), 'other dialer nonce');
  t.notOk(proofMatches(p, computeProof(key, 'c1', 2, 0, nd, newNonce())), 'other acceptor nonce');
  t.notOk(proofMatches(p, computeProof(key, 'c2', 2, 0, nd, na)), 'other cluster');
  t.notOk(proofMatches(p, p.subarray(0, 16)), 'truncated proof');
});
