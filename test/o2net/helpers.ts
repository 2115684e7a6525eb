// Shared setup for the o2net tests: an in-process cluster of O2Net instances on
// 127.0.0.(n+1), distinct random ports, captured logs, and a raw-socket "fake node" that
// can speak the handshake and then misbehave.
import * as net from 'node:net';
import type { Test } from 'tap';
import { O2Net, O2NetNode, O2NetOptions, O2NetTimeouts } from '../../dlm/o2cb/o2net';
import { Frame, FrameReader, encodeFrame } from '../../dlm/o2cb/o2net-frame';
import {
  HANDSHAKE_MAX_PAYLOAD_BYTES,
  O2NET_PROTOCOL_VERSION,
  computeProof,
  decodeAuth,
  decodeHello,
  encodeAuth,
  encodeHello,
  newNonce,
  proofMatches,
} from '../../dlm/o2cb/o2net-handshake';

export const CLUSTER = 'testclu';
export const KEY = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
export const FAST: O2NetTimeouts = { keepaliveDelayMs: 300, idleTimeoutMs: 2000, reconnectDelayMs: 100, heartbeatDeadMs: 3000 };

/** A random base port so parallel test files (and other engineers' tests) do not collide. */
export function randomBasePort(): number {
  return 20000 + Math.floor(Math.random() * 400) * 100;
}

export function nodeTable(count: number, basePort: number): O2NetNode[] {
  const nodes: O2NetNode[] = [];
  for (let n = 0; n < count; n++) nodes.push({ num: n, name: `n${n}`, ip: `127.0.0.${n + 1}`, port: basePort + n });
  return nodes;
}

export interface Member {
  net: O2Net;
  logs: string[];
  ups: number[];
  downs: number[];
}

export interface ClusterOpts {
  count: number; // nodes with a real O2Net
  tableSize?: number; // nodes in the table (extra ones are played by fakes)
  timeouts?: O2NetTimeouts;
  perNode?: (num: number) => Partial<O2NetOptions>;
  heartbeat?: boolean; // call heartbeatUp for every pair (default true)
  echoLogs?: boolean;
}

/** Starts `count` nodes; everything is stopped at teardown. */
export async function startCluster(t: Test, o: ClusterOpts): Promise<{ members: Member[]; nodes: O2NetNode[] }> {
  const tableSize = o.tableSize ?? o.count;
  let lastErr: unknown;
  // A random port can be taken by another process; try a few bases.
  for (let attempt = 0; attempt < 5; attempt++) {
    const nodes = nodeTable(tableSize, randomBasePort());
    const members: Member[] = [];
    try {
      for (let n = 0; n < o.count; n++) {
        const logs: string[] = [];
        const m: Member = {
          logs,
          ups: [],
          downs: [],
          net: new O2Net({
            thisNode: n,
            nodes,
            clusterName: CLUSTER,
            clusterKey: KEY,
            timeouts: o.timeouts ?? FAST,
            log: (line) => {
              logs.push(line);
              if (o.echoLogs) console.error(`[n${n}] ${line}`);
            },
            ...(o.perNode?.(n) ?? {}),
          }),
        };
        m.net.subscribe({ onNodeUp: (x) => m.ups.push(x), onNodeDown: (x) => m.downs.push(x) });
        members.push(m);
        await m.net.start();
      }
    } catch (e) {
      lastErr = e;
      await Promise.all(members.map((m) => m.net.stop()));
      if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
      throw e;
    }
    t.teardown(() => Promise.all(members.map((m) => m.net.stop())));
    if (o.heartbeat !== false) {
      for (const m of members) for (const other of members) if (m !== other) m.net.heartbeatUp(other.net.thisNode);
    }
    return { members, nodes };
  }
  throw lastErr;
}

export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until every member is connected to every other member. */
export async function meshUp(members: Member[], timeoutMs = 5000): Promise<void> {
  await waitFor(
    'the full mesh',
    () => members.every((m) => members.every((o) => o === m || m.net.liveNodes().has(o.net.thisNode))),
    timeoutMs,
  );
}

export function hasLog(m: Member, re: RegExp): boolean {
  return m.logs.some((l) => re.test(l));
}

/** A raw socket from `fromIp` to `to`, closed at teardown. */
export async function rawConnect(t: Test, fromIp: string, to: O2NetNode): Promise<net.Socket> {
  const s = net.connect({ host: to.ip, port: to.port, localAddress: fromIp });
  s.on('error', () => undefined); // resets are expected here
  t.teardown(() => {
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', reject);
  });
  return s;
}

export function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.once('close', () => resolve());
  });
}

/** Frames read from a raw socket. */
export class RawReader {
  readonly frames: Frame[] = [];
  private readonly reader = new FrameReader(HANDSHAKE_MAX_PAYLOAD_BYTES);
  private closed = false;
  constructor(s: net.Socket) {
    s.on('close', () => (this.closed = true));
    s.on('data', (c: Buffer) => {
      this.reader.push(c);
      for (let f = this.reader.next(); f; f = this.reader.next()) this.frames.push(f);
    });
  }
  setMax(bytes: number): void {
    this.reader.maxPayloadBytes = bytes;
  }
  async take(kind: Frame['kind'], timeoutMs = 3000): Promise<Frame> {
    await waitFor(`a ${kind} frame`, () => this.closed || this.frames.some((f) => f.kind === kind), timeoutMs);
    const i = this.frames.findIndex((f) => f.kind === kind);
    if (i < 0) throw new Error(`socket closed before a ${kind} frame arrived`);
    return this.frames.splice(i, 1)[0];
  }
}

/**
 * Plays node `fake` (which must be in the target's table, above it, and heartbeating there)
 * through a correct handshake, and returns the socket ready for frames.
 */
export async function fakeNodeHandshake(
  t: Test,
  fake: O2NetNode,
  target: O2NetNode,
  opts: { timeouts?: O2NetTimeouts; key?: Buffer; maxPayloadBytes?: number } = {},
): Promise<{ socket: net.Socket; reader: RawReader }> {
  const socket = await rawConnect(t, fake.ip, target);
  const reader = new RawReader(socket);
  const tmo = opts.timeouts ?? FAST;
  const myNonce = newNonce();
  const hello = {
    protocolVersion: O2NET_PROTOCOL_VERSION,
    clusterName: CLUSTER,
    node: fake.num,
    heartbeatDeadMs: tmo.heartbeatDeadMs,
    idleTimeoutMs: tmo.idleTimeoutMs,
    keepaliveDelayMs: tmo.keepaliveDelayMs,
    reconnectDelayMs: tmo.reconnectDelayMs,
    maxPayloadBytes: opts.maxPayloadBytes ?? 1 << 20,
    nonce: myNonce,
  };
  socket.write(encodeFrame({ kind: 'hello', sysStatus: 0, msgType: 0, msgNum: 0, status: 0, payload: encodeHello(hello) }));
  const theirHello = decodeHello((await reader.take('hello')).payload);
  const theirProof = decodeAuth((await reader.take('auth')).payload);
  const key = opts.key ?? KEY;
  const expect = computeProof(key, CLUSTER, target.num, fake.num, myNonce, theirHello.nonce);
  if (!proofMatches(expect, theirProof)) throw new Error('the real node failed to prove the key to the fake');
  const mine = computeProof(key, CLUSTER, fake.num, target.num, myNonce, theirHello.nonce);
  socket.write(encodeFrame({ kind: 'auth', sysStatus: 0, msgType: 0, msgNum: 0, status: 0, payload: encodeAuth(mine) }));
  reader.setMax(1 << 20);
  return { socket, reader };
}
