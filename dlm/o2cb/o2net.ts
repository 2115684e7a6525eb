// o2net: the TCP mesh of the o2cb stack (reference/ocfs2.md §4.2), behind the Transport
// seam that o2dlm uses. One socket per node pair; the higher-numbered node dials, the lower
// accepts, and only while the heartbeat says the peer is alive. Membership comes from the
// heartbeat, never from sockets: a dropped connection raises a quorum hold and is redialled,
// and only heartbeatDown() makes a node 'down'. Wire format and handshake: dlm/PROTOCOL.md §6.
import * as net from 'node:net';
import { MembershipEvents, MessageHandler, Transport, TransportError } from './transport';
import { FRAME_HEADER_BYTES, Frame, FrameError, FrameKind, FrameReader, SYS_STATUS, encodeHeader } from './o2net-frame';
import {
  HANDSHAKE_MAX_PAYLOAD_BYTES,
  HandshakeDecodeError,
  Hello,
  O2NET_PROTOCOL_VERSION,
  computeProof,
  decodeAuth,
  decodeHandlerError,
  decodeHello,
  decodeRefuse,
  encodeAuth,
  encodeHandlerError,
  encodeHello,
  encodeRefuse,
  helloMismatch,
  newNonce,
  proofMatches,
} from './o2net-handshake';

export interface O2NetNode {
  num: number;
  name: string;
  ip: string;
  port: number;
}

export interface O2NetTimeouts {
  keepaliveDelayMs: number;
  idleTimeoutMs: number;
  reconnectDelayMs: number;
  /** The heartbeat's dead time; not used here, but checked equal at handshake. */
  heartbeatDeadMs: number;
}

/** What o2net tells quorum (dlm/o2cb/quorum.ts's Quorum fits). */
export interface QuorumSink {
  heartbeatUp(node: number): void;
  heartbeatDown(node: number): void;
  connUp(node: number): void;
  connErr(node: number): void;
}

export interface O2NetOptions {
  thisNode: number;
  nodes: O2NetNode[];
  clusterName: string;
  /** Shared secret; every node of the cluster must hold the same bytes. Never sent. */
  clusterKey: Buffer;
  timeouts: O2NetTimeouts;
  /** Largest message or reply payload; must match on all nodes. Default 1 MiB. */
  maxPayloadBytes?: number;
  /** A connection that has not finished the handshake by then is dropped. Default idleTimeoutMs. */
  handshakeTimeoutMs?: number;
  /** Deadline for request() when the caller gives none. Default 120 s. */
  requestTimeoutMs?: number;
  quorum?: QuorumSink;
  log?: (line: string) => void;
}

/** The remote handler threw (code = its error's string `code`, or ''), or its reply overflowed (code 'EOVERFLOW'). */
export class O2NetRemoteError extends Error {
  constructor(
    readonly node: number,
    readonly msgType: number,
    readonly code: string,
    readonly remoteMessage: string,
  ) {
    super(`node ${node}: handler for message type ${msgType} failed${code ? ` (${code})` : ''}: ${remoteMessage}`);
    this.name = 'O2NetRemoteError';
  }
}

export interface O2NetPeerStats {
  node: number;
  name: string;
  heartbeating: boolean;
  connected: boolean;
  up: boolean;
  bytesSent: number;
  bytesReceived: number;
  msgsSent: number;
  msgsReceived: number;
  keepalivesSent: number;
  keepalivesReceived: number;
  dialAttempts: number;
  connects: number;
  reconnects: number;
  disconnects: number;
  requestsInFlight: number;
  handlerQueueLength: number;
}

export interface O2NetStats {
  thisNode: number;
  clusterName: string;
  listening: boolean;
  peers: O2NetPeerStats[];
}

export const DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20;
const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;
/**
 * Requests in flight to one peer, by count and by bytes. The sender waits for a slot
 * beyond these; the receiver treats a peer that exceeds them as broken and drops the
 * connection. Equal on both sides, so a correct sender never trips the receiver.
 */
export const MAX_IN_FLIGHT_REQUESTS = 4096;
export const MAX_IN_FLIGHT_BYTES = 64 << 20;
/** Requests waiting for an in-flight slot, per peer. */
const MAX_WAITING_REQUESTS = 1 << 20;
const MAX_NODE_NUM = 254;
/** A repeated accept-side refusal is logged at most this often per address. */
const LOG_REPEAT_MS = 10_000;

type Phase = 'hello' | 'auth' | 'up' | 'closed';
type Role = 'dialer' | 'acceptor';

interface PendingRequest {
  msgType: number;
  bytes: number;
  resolve(reply: Buffer): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

interface SlotWaiter {
  bytes: number;
  go(): void;
}

let connIds = 0;

class Conn {
  readonly id = ++connIds;
  phase: Phase = 'hello';
  readonly reader = new FrameReader(HANDSHAKE_MAX_PAYLOAD_BYTES);
  readonly myNonce = newNonce();
  peerNonce: Buffer | null = null;
  readonly pending = new Map<number, PendingRequest>();
  private nextMsgNum = 1;
  idleTimer: NodeJS.Timeout | null = null;
  keepaliveTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly socket: net.Socket,
    readonly role: Role,
    public peerNode: number | null, // known up front when dialling; from the Hello when accepting
    readonly remote: string,
  ) {}

  allocMsgNum(): number {
    for (let i = 0; i <= MAX_IN_FLIGHT_REQUESTS; i++) {
      const n = this.nextMsgNum;
      this.nextMsgNum = n >= 0xffffffff ? 1 : n + 1;
      if (!this.pending.has(n)) return n;
    }
    throw new Error(`o2net: no free message number with ${this.pending.size} requests pending`);
  }
}

interface InboxItem {
  conn: Conn;
  frame: Frame;
}

class Peer {
  heartbeating = false;
  /** The established connection, if any. */
  conn: Conn | null = null;
  /** A dial in progress (TCP connect or handshake), dialer side only. */
  dialing: Conn | null = null;
  dialTimer: NodeJS.Timeout | null = null;
  lastDialAtMs = -Infinity;
  lastDialError = '';
  connectExpiredTimer: NodeJS.Timeout | null = null;
  /** onNodeUp delivered and no onNodeDown since. */
  reportedUp = false;
  everConnected = false;

  // Per-peer handler FIFO (across reconnects, so handlers never overlap for one peer).
  readonly inbox: InboxItem[] = [];
  inboxHead = 0;
  inboxBytes = 0;
  pumping = false;

  // Requests in flight to this peer, and those waiting for a slot.
  inFlightCount = 0;
  inFlightBytes = 0;
  readonly waiters: SlotWaiter[] = [];

  readonly stats = {
    bytesSent: 0,
    bytesReceived: 0,
    msgsSent: 0,
    msgsReceived: 0,
    keepalivesSent: 0,
    keepalivesReceived: 0,
    dialAttempts: 0,
    connects: 0,
    reconnects: 0,
    disconnects: 0,
  };

  constructor(readonly info: O2NetNode) {}

  inboxLength(): number {
    return this.inbox.length - this.inboxHead;
  }
}

export class O2Net implements Transport {
  readonly thisNode: number;
  readonly clusterName: string;
  readonly maxPayloadBytes: number;
  private readonly me: O2NetNode;
  private readonly peers = new Map<number, Peer>();
  private readonly key: Buffer;
  private readonly timeouts: O2NetTimeouts;
  private readonly handshakeTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly quorum: QuorumSink | null;
  private readonly log: (line: string) => void;
  private readonly handlers = new Map<number, MessageHandler>();
  private readonly subscribers = new Set<MembershipEvents>();
  private readonly conns = new Set<Conn>();
  private server: net.Server | null = null;
  /** When each rate-limited log key last printed (refused dialers retry every reconnect delay). */
  private readonly lastLogAtMs = new Map<string, number>();
  private started = false;
  private stopped = false;

  constructor(opts: O2NetOptions) {
    const { thisNode, nodes, timeouts } = opts;
    if (!Number.isInteger(thisNode) || thisNode < 0 || thisNode > MAX_NODE_NUM) throw new RangeError(`bad thisNode ${thisNode}`);
    const seen = new Set<number>();
    for (const n of nodes) {
      if (!Number.isInteger(n.num) || n.num < 0 || n.num > MAX_NODE_NUM) throw new RangeError(`bad node number ${n.num}`);
      if (seen.has(n.num)) throw new RangeError(`node ${n.num} listed twice`);
      if (net.isIPv4(n.ip) === false) throw new RangeError(`node ${n.num}: ${n.ip} is not an IPv4 address`);
      if (!Number.isInteger(n.port) || n.port <= 0 || n.port > 65535) throw new RangeError(`node ${n.num}: bad port ${n.port}`);
      seen.add(n.num);
    }
    const me = nodes.find((n) => n.num === thisNode);
    if (!me) throw new RangeError(`this node ${thisNode} is not in the node table`);
    for (const [k, v] of Object.entries(timeouts)) {
      if (!Number.isInteger(v) || v <= 0) throw new RangeError(`timeout ${k} must be a positive integer of ms, not ${v}`);
    }
    if (timeouts.keepaliveDelayMs >= timeouts.idleTimeoutMs) {
      // Otherwise a healthy but quiet link would hit the idle timeout before it ever probes.
      throw new RangeError(`keepaliveDelayMs (${timeouts.keepaliveDelayMs}) must be below idleTimeoutMs (${timeouts.idleTimeoutMs})`);
    }
    if (opts.clusterKey.length < 16) throw new RangeError(`the cluster key must be at least 16 bytes, not ${opts.clusterKey.length}`);
    this.thisNode = thisNode;
    this.me = me;
    this.clusterName = opts.clusterName;
    this.key = Buffer.from(opts.clusterKey);
    this.timeouts = { ...timeouts };
    this.maxPayloadBytes = opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    if (!Number.isInteger(this.maxPayloadBytes) || this.maxPayloadBytes < 1 || this.maxPayloadBytes > 0xffffffff) {
      throw new RangeError(`bad maxPayloadBytes ${this.maxPayloadBytes}`);
    }
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? timeouts.idleTimeoutMs;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.quorum = opts.quorum ?? null;
    this.log = opts.log ?? ((line) => process.stderr.write(`o2net: node ${thisNode}: ${line}\n`));
    for (const n of nodes) if (n.num !== thisNode) this.peers.set(n.num, new Peer({ ...n }));
  }

  // ---- lifecycle ---------------------------------------------------------------------

  /** Listens on this node's address (that address only). */
  async start(): Promise<void> {
    if (this.started || this.stopped) throw new Error('o2net: start() called twice or after stop()');
    const server = net.createServer({ noDelay: true }, (s) => this.onAccept(s));
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: Error) => reject(e);
      server.once('error', onErr);
      server.listen({ host: this.me.ip, port: this.me.port, exclusive: true }, () => {
        server.off('error', onErr);
        resolve();
      });
    });
    server.on('error', (e) => this.log(`listener error: ${e.message}`));
    this.server = server;
    this.started = true;
    this.log(`listening on ${this.me.ip}:${this.me.port}`);
    for (const peer of this.peers.values()) this.scheduleDial(peer);
  }

  /** Closes the listener and every connection; pending requests fail with EHOSTDOWN. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const peer of this.peers.values()) {
      if (peer.dialTimer) clearTimeout(peer.dialTimer);
      if (peer.connectExpiredTimer) clearTimeout(peer.connectExpiredTimer);
      peer.dialTimer = null;
      peer.connectExpiredTimer = null;
    }
    for (const conn of [...this.conns]) this.closeConn(conn, 'o2net is stopping');
    for (const peer of this.peers.values()) this.wakeWaiters(peer); // they fail: no connection
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  // ---- heartbeat-driven membership ---------------------------------------------------

  /** o2hb saw `node` come alive. The higher-numbered node of the pair starts dialling. */
  heartbeatUp(node: number): void {
    if (node === this.thisNode) return; // quorum counts this node implicitly
    const peer = this.peerOrThrow(node);
    if (peer.heartbeating) return;
    peer.heartbeating = true;
    this.quorum?.heartbeatUp(node);
    if (this.stopped) return;
    this.armConnectExpired(peer);
    this.scheduleDial(peer);
  }

  /** o2hb declared `node` dead: disconnect it, fail its requests, and report it down. */
  heartbeatDown(node: number): void {
    if (node === this.thisNode) return;
    const peer = this.peerOrThrow(node);
    if (!peer.heartbeating) return;
    peer.heartbeating = false;
    // Quorum first, so the connection loss below does not raise a hold for a dead node.
    this.quorum?.heartbeatDown(node);
    if (peer.dialTimer) clearTimeout(peer.dialTimer);
    peer.dialTimer = null;
    if (peer.connectExpiredTimer) clearTimeout(peer.connectExpiredTimer);
    peer.connectExpiredTimer = null;
    if (peer.dialing) this.closeConn(peer.dialing, 'its heartbeat stopped');
    if (peer.conn) this.closeConn(peer.conn, 'its heartbeat stopped');
    this.wakeWaiters(peer);
    if (peer.reportedUp) {
      peer.reportedUp = false;
      this.log(`node ${node} (${peer.info.name}) is down`);
      this.emitMembership('down', node);
    }
  }

  // ---- Transport ---------------------------------------------------------------------

  /** Nodes reported up (onNodeUp delivered, no onNodeDown since): the subscribers' view. */
  liveNodes(): ReadonlySet<number> {
    const s = new Set<number>();
    for (const [n, p] of this.peers) if (p.reportedUp) s.add(n);
    return s;
  }

  /** Nodes with an established, authenticated connection right now. */
  connectedNodes(): ReadonlySet<number> {
    const s = new Set<number>();
    for (const [n, p] of this.peers) if (p.conn) s.add(n);
    return s;
  }

  /** Other nodes the heartbeat currently reports alive. */
  heartbeatingNodes(): ReadonlySet<number> {
    const s = new Set<number>();
    for (const [n, p] of this.peers) if (p.heartbeating) s.add(n);
    return s;
  }

  /**
   * Drops the connection to `node` as a network fault would: pending requests fail with
   * EHOSTDOWN, membership is unchanged, and the dialer reconnects. For tests and tooling.
   */
  disconnect(node: number, reason = 'dropped on request'): void {
    const peer = this.peerOrThrow(node);
    if (peer.conn) this.closeConn(peer.conn, reason);
  }

  register(type: number, handler: MessageHandler): void {
    assertMsgType(type);
    if (this.handlers.has(type)) throw new Error(`o2net: a handler for message type ${type} is already registered`);
    this.handlers.set(type, handler);
  }

  unregister(type: number): void {
    this.handlers.delete(type);
  }

  subscribe(events: MembershipEvents): () => void {
    this.subscribers.add(events);
    return () => {
      this.subscribers.delete(events);
    };
  }

  request(node: number, type: number, payload: Buffer, timeoutMs?: number): Promise<Buffer> {
    try {
      assertMsgType(type);
      if (node === this.thisNode) throw new RangeError('o2net: a node cannot send a message to itself');
      if (payload.length > this.maxPayloadBytes) {
        throw new RangeError(`o2net: payload of ${payload.length} bytes exceeds the ${this.maxPayloadBytes}-byte limit`);
      }
      const deadlineMs = timeoutMs ?? this.requestTimeoutMs;
      if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) throw new RangeError(`o2net: bad request timeout ${deadlineMs}`);
    } catch (e) {
      return Promise.reject(e);
    }
    const peer = this.peers.get(node);
    if (!peer || !peer.conn) return Promise.reject(new TransportError('EHOSTDOWN', node, 'not connected'));
    const deadlineMs = timeoutMs ?? this.requestTimeoutMs;

    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let waiter: SlotWaiter | null = null;
      let sent: { conn: Conn; msgNum: number } | null = null;
      const finish = (err: Error | null, reply?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(reply as Buffer);
      };
      // One deadline covers waiting for a slot and the round trip.
      const timer = setTimeout(() => {
        if (waiter) {
          const i = peer.waiters.indexOf(waiter);
          if (i >= 0) peer.waiters.splice(i, 1);
        }
        if (sent && sent.conn.pending.delete(sent.msgNum)) this.releaseSlot(peer, payload.length);
        finish(new TransportError('ETIMEDOUT', node, `no reply to message type ${type} within ${deadlineMs} ms`));
      }, deadlineMs);

      const send = () => {
        waiter = null;
        if (settled) return;
        const conn = peer.conn;
        if (!conn || this.stopped) return finish(new TransportError('EHOSTDOWN', node, 'connection lost'));
        const msgNum = conn.allocMsgNum();
        peer.inFlightCount++;
        peer.inFlightBytes += payload.length;
        conn.pending.set(msgNum, {
          msgType: type,
          bytes: payload.length,
          timer,
          resolve: (reply) => finish(null, reply),
          reject: (err) => finish(err),
        });
        sent = { conn, msgNum };
        this.writeFrame(conn, 'message', { msgType: type, msgNum, sysStatus: SYS_STATUS.ok }, payload);
        peer.stats.msgsSent++;
      };

      if (this.hasSlot(peer, payload.length)) {
        send();
      } else if (peer.waiters.length >= MAX_WAITING_REQUESTS) {
        finish(new TransportError('ETIMEDOUT', node, `${peer.waiters.length} requests already waiting to be sent`));
      } else {
        waiter = { bytes: payload.length, go: send };
        peer.waiters.push(waiter);
      }
    });
  }

  stats(): O2NetStats {
    const peers: O2NetPeerStats[] = [];
    for (const [node, p] of [...this.peers].sort((a, b) => a[0] - b[0])) {
      peers.push({
        node,
        name: p.info.name,
        heartbeating: p.heartbeating,
        connected: p.conn !== null,
        up: p.reportedUp,
        ...p.stats,
        requestsInFlight: p.inFlightCount,
        handlerQueueLength: p.inboxLength(),
      });
    }
    return { thisNode: this.thisNode, clusterName: this.clusterName, listening: this.server !== null, peers };
  }

  // ---- slots -------------------------------------------------------------------------

  private hasSlot(peer: Peer, bytes: number): boolean {
    if (peer.inFlightCount >= MAX_IN_FLIGHT_REQUESTS) return false;
    // One request may always go alone, whatever its size.
    return peer.inFlightCount === 0 || peer.inFlightBytes + bytes <= MAX_IN_FLIGHT_BYTES;
  }

  private releaseSlot(peer: Peer, bytes: number): void {
    peer.inFlightCount--;
    peer.inFlightBytes -= bytes;
    assert(peer.inFlightCount >= 0 && peer.inFlightBytes >= 0, 'in-flight accounting went negative');
    this.wakeWaiters(peer);
  }

  // Starts waiting requests in FIFO order while slots are free; with no connection they
  // run at once and fail with EHOSTDOWN.
  private wakeWaiters(peer: Peer): void {
    while (peer.waiters.length > 0 && (!peer.conn || this.hasSlot(peer, peer.waiters[0].bytes))) {
      const w = peer.waiters.shift() as SlotWaiter;
      w.go();
    }
  }

  // ---- dialling (the higher node dials the lower) ------------------------------------

  private scheduleDial(peer: Peer): void {
    if (!this.started || this.stopped) return;
    if (peer.info.num > this.thisNode) return; // the higher node dials; we accept
    if (!peer.heartbeating || peer.conn || peer.dialing || peer.dialTimer) return;
    const delayMs = Math.max(0, peer.lastDialAtMs + this.timeouts.reconnectDelayMs - Date.now());
    peer.dialTimer = setTimeout(() => {
      peer.dialTimer = null;
      this.dial(peer);
    }, delayMs);
  }

  private dial(peer: Peer): void {
    if (this.stopped || !peer.heartbeating || peer.conn || peer.dialing) return;
    peer.lastDialAtMs = Date.now();
    peer.stats.dialAttempts++;
    const { ip, port, num } = peer.info;
    const socket = net.connect({ host: ip, port, localAddress: this.me.ip, noDelay: true });
    const conn = new Conn(socket, 'dialer', num, `${ip}:${port}`);
    peer.dialing = conn;
    this.setupConn(conn);
    socket.once('connect', () => {
      if (conn.phase === 'closed') return;
      socket.setNoDelay(true);
      this.sendHandshake(conn, 'hello', encodeHello(this.hello(conn)));
    });
  }

  // If no connection comes up within the idle timeout, tell quorum we gave up on it (it
  // then waits out the quorum delay before deciding). OCFS2's connect_expired.
  private armConnectExpired(peer: Peer): void {
    if (peer.connectExpiredTimer || peer.conn || this.stopped) return;
    const afterMs = this.timeouts.idleTimeoutMs + this.timeouts.reconnectDelayMs;
    peer.connectExpiredTimer = setTimeout(() => {
      peer.connectExpiredTimer = null;
      if (this.stopped || peer.conn || !peer.heartbeating) return;
      this.log(`no connection established with node ${peer.info.num} (${peer.info.name}) after ${afterMs} ms; check the network and cluster configuration`);
      this.quorum?.connErr(peer.info.num);
    }, afterMs);
  }

  // ---- accepting ---------------------------------------------------------------------

  private onAccept(socket: net.Socket): void {
    const addr = normalizeAddress(socket.remoteAddress ?? '');
    const remote = `${addr}:${socket.remotePort ?? 0}`;
    if (this.stopped) {
      socket.destroy();
      return;
    }
    const candidates = this.acceptCandidates(addr);
    if (candidates.length === 0) {
      this.logLimited(addr, `refusing a connection from ${remote}: no higher-numbered node in the node table has that address`);
      socket.destroy();
      return;
    }
    if (!candidates.some((p) => p.heartbeating)) {
      this.logLimited(addr, `refusing a connection from ${remote} (node ${candidates.map((p) => p.info.num).join('/')}): not heartbeating`);
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const conn = new Conn(socket, 'acceptor', null, remote);
    this.setupConn(conn);
  }

  private acceptCandidates(addr: string): Peer[] {
    return [...this.peers.values()].filter((p) => p.info.ip === addr && p.info.num > this.thisNode);
  }

  // ---- connections -------------------------------------------------------------------

  private setupConn(conn: Conn): void {
    this.conns.add(conn);
    const { socket } = conn;
    conn.idleTimer = setTimeout(() => {
      this.closeConn(conn, `handshake not finished within ${this.handshakeTimeoutMs} ms`);
    }, this.handshakeTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => this.closeConn(conn, e.code ?? e.message));
    socket.on('close', () => {
      const partial = conn.reader.pendingBytes;
      this.closeConn(conn, partial > 0 ? `peer closed the connection mid-frame (${partial} bytes of an incomplete frame)` : 'peer closed the connection');
    });
  }

  private peerOf(conn: Conn): Peer | null {
    return conn.peerNode === null ? null : (this.peers.get(conn.peerNode) ?? null);
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.phase === 'closed') return;
    const peer = conn.phase === 'up' ? this.peerOf(conn) : null;
    if (peer) peer.stats.bytesReceived += chunk.length;
    // Any bytes at all show the peer is alive: push the idle and keepalive timers back.
    if (conn.phase === 'up') {
      conn.idleTimer?.refresh();
      conn.keepaliveTimer?.refresh();
    }
    conn.reader.push(chunk);
    for (;;) {
      if (isClosed(conn)) return; // a frame handled below may have closed it
      let frame: Frame | null;
      try {
        frame = conn.reader.next();
      } catch (e) {
        if (!(e instanceof FrameError)) throw e;
        this.closeConn(conn, `protocol error: ${e.message}`);
        return;
      }
      if (!frame) return;
      try {
        this.onFrame(conn, frame);
      } catch (e) {
        if (!(e instanceof HandshakeDecodeError) && !(e instanceof FrameError)) throw e;
        this.closeConn(conn, `protocol error: ${e.message}`);
        return;
      }
    }
  }

  private onFrame(conn: Conn, f: Frame): void {
    if (conn.phase !== 'up') {
      this.onHandshakeFrame(conn, f);
      return;
    }
    const peer = this.peerOf(conn);
    assert(peer !== null, 'an established connection has a peer');
    switch (f.kind) {
      case 'message':
        this.onMessage(peer, conn, f);
        return;
      case 'status':
        this.onStatus(peer, conn, f);
        return;
      case 'keepaliveReq':
        peer.stats.keepalivesReceived++;
        this.writeFrame(conn, 'keepaliveResp', { msgType: 0, msgNum: f.msgNum, sysStatus: 0 }, EMPTY);
        return;
      case 'keepaliveResp':
        return;
      default:
        throw new FrameError(`unexpected ${f.kind} frame on an established connection`);
    }
  }

  // ---- handshake ---------------------------------------------------------------------

  private hello(conn: Conn): Hello {
    return {
      protocolVersion: O2NET_PROTOCOL_VERSION,
      clusterName: this.clusterName,
      node: this.thisNode,
      heartbeatDeadMs: this.timeouts.heartbeatDeadMs,
      idleTimeoutMs: this.timeouts.idleTimeoutMs,
      keepaliveDelayMs: this.timeouts.keepaliveDelayMs,
      reconnectDelayMs: this.timeouts.reconnectDelayMs,
      maxPayloadBytes: this.maxPayloadBytes,
      nonce: conn.myNonce,
    };
  }

  private onHandshakeFrame(conn: Conn, f: Frame): void {
    if (f.kind === 'refuse') {
      const who = conn.peerNode === null ? conn.remote : `node ${conn.peerNode}`;
      this.closeConn(conn, `${who} refused the connection: ${decodeRefuse(f.payload)}`);
      return;
    }
    if (conn.phase === 'hello') {
      if (f.kind !== 'hello') throw new FrameError(`expected a hello frame, got ${f.kind}`);
      const theirs = decodeHello(f.payload);
      const ours = this.hello(conn);
      const mismatch = helloMismatch(ours, theirs);
      if (mismatch) return this.refuse(conn, mismatch);
      if (conn.role === 'acceptor') {
        const peer = this.acceptCandidates(normalizeAddress(conn.socket.remoteAddress ?? '')).find((p) => p.info.num === theirs.node);
        if (!peer) return this.refuse(conn, `a connection from ${conn.remote} claims to be node ${theirs.node}, which does not have that address or is not above node ${this.thisNode}`);
        if (!peer.heartbeating) return this.refuse(conn, `node ${theirs.node} connected but is not heartbeating here yet`);
        conn.peerNode = theirs.node;
        conn.peerNonce = theirs.nonce;
        this.sendHandshake(conn, 'hello', encodeHello(ours));
        const proof = computeProof(this.key, this.clusterName, this.thisNode, theirs.node, theirs.nonce, conn.myNonce);
        this.sendHandshake(conn, 'auth', encodeAuth(proof));
      } else {
        if (theirs.node !== conn.peerNode) return this.refuse(conn, `dialled node ${conn.peerNode} at ${conn.remote} but node ${theirs.node} answered`);
        conn.peerNonce = theirs.nonce;
      }
      conn.phase = 'auth';
      return;
    }
    assert(conn.phase === 'auth' && conn.peerNode !== null && conn.peerNonce !== null, 'auth phase state');
    if (f.kind !== 'auth') throw new FrameError(`expected an auth frame, got ${f.kind}`);
    const got = decodeAuth(f.payload);
    const dialerNonce = conn.role === 'dialer' ? conn.myNonce : conn.peerNonce;
    const acceptorNonce = conn.role === 'dialer' ? conn.peerNonce : conn.myNonce;
    const expected = computeProof(this.key, this.clusterName, conn.peerNode, this.thisNode, dialerNonce, acceptorNonce);
    if (!proofMatches(expected, got)) {
      // Say nothing specific to an unauthenticated peer.
      this.log(`node ${conn.peerNode} at ${conn.remote} failed to prove it holds the cluster key; refusing it`);
      return this.refuse(conn, 'authentication failed');
    }
    if (conn.role === 'dialer') {
      // The acceptor proved itself; now we prove ourselves and may start talking (TCP
      // delivers our proof before anything we send after it).
      const proof = computeProof(this.key, this.clusterName, this.thisNode, conn.peerNode, conn.myNonce, conn.peerNonce);
      this.sendHandshake(conn, 'auth', encodeAuth(proof));
    }
    this.established(conn);
  }

  private sendHandshake(conn: Conn, kind: 'hello' | 'auth' | 'refuse', payload: Buffer): void {
    assert(payload.length <= HANDSHAKE_MAX_PAYLOAD_BYTES, 'handshake frame fits the handshake limit');
    this.writeFrame(conn, kind, { msgType: 0, msgNum: 0, sysStatus: 0 }, payload);
  }

  // The reason reaches the log through closeConn (ours) and the Refuse frame (theirs).
  private refuse(conn: Conn, reason: string): void {
    this.sendHandshake(conn, 'refuse', encodeRefuse(reason));
    // end() flushes the refusal; the handshake timer still bounds a peer that never closes.
    conn.socket.end();
    this.closeConn(conn, `handshake refused: ${reason}`, { graceful: true });
  }

  private established(conn: Conn): void {
    const node = conn.peerNode;
    assert(node !== null, 'established connection knows its peer');
    const peer = this.peers.get(node);
    assert(peer !== undefined, 'established peer is in the table');
    if (!peer.heartbeating) {
      this.closeConn(conn, `node ${node}'s heartbeat stopped during the handshake`);
      return;
    }
    if (peer.dialing === conn) peer.dialing = null;
    const old = peer.conn;
    peer.conn = conn;
    conn.phase = 'up';
    if (old) {
      // Only an acceptor sees this: the dialer found its old socket dead before we did.
      // The new connection is in place first, so nothing waiting for a slot fails.
      this.closeConn(old, 'replaced by a newer connection from the same node');
    }
    conn.reader.maxPayloadBytes = this.maxPayloadBytes;
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = setTimeout(() => {
      this.closeConn(conn, `no data from node ${node} for ${this.timeouts.idleTimeoutMs} ms (idle timeout)`);
    }, this.timeouts.idleTimeoutMs);
    conn.keepaliveTimer = setTimeout(() => {
      if (conn.phase !== 'up') return;
      peer.stats.keepalivesSent++;
      this.writeFrame(conn, 'keepaliveReq', { msgType: 0, msgNum: 0, sysStatus: 0 }, EMPTY);
      // Not re-armed here: the peer's reply (or any traffic) refreshes this timer.
    }, this.timeouts.keepaliveDelayMs);
    if (peer.connectExpiredTimer) clearTimeout(peer.connectExpiredTimer);
    peer.connectExpiredTimer = null;
    peer.lastDialError = '';
    if (peer.everConnected) peer.stats.reconnects++;
    peer.everConnected = true;
    peer.stats.connects++;
    this.log(`${conn.role === 'dialer' ? 'connected to' : 'accepted a connection from'} node ${node} (${peer.info.name}) at ${conn.remote}`);
    if (!old) this.quorum?.connUp(node);
    this.wakeWaiters(peer);
    if (!peer.reportedUp) {
      peer.reportedUp = true;
      this.emitMembership('up', node);
    }
  }

  private closeConn(conn: Conn, reason: string, opts: { graceful?: boolean } = {}): void {
    if (conn.phase === 'closed') return;
    const wasUp = conn.phase === 'up';
    conn.phase = 'closed';
    this.conns.delete(conn);
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    if (conn.keepaliveTimer) clearTimeout(conn.keepaliveTimer);
    conn.idleTimer = conn.keepaliveTimer = null;
    if (opts.graceful) {
      // Let the refusal reach the peer, but never wait on it for long.
      setTimeout(() => conn.socket.destroy(), 1000).unref();
    } else {
      conn.socket.destroy();
    }
    const peer = this.peerOf(conn);
    if (peer && peer.dialing === conn) {
      peer.dialing = null;
      if (reason !== peer.lastDialError && !this.stopped) {
        peer.lastDialError = reason;
        this.log(`connecting to node ${peer.info.num} (${peer.info.name}) at ${conn.remote} failed: ${reason}; retrying every ${this.timeouts.reconnectDelayMs} ms`);
      }
      this.scheduleDial(peer);
      return;
    }
    if (!wasUp) {
      if (conn.role === 'acceptor' && !this.stopped) {
        this.logLimited(`${normalizeAddress(conn.socket.remoteAddress ?? '')} ${reason}`, `dropped an unestablished connection from ${conn.remote}: ${reason}`);
      }
      return;
    }
    assert(peer !== null, 'an established connection has a peer');
    this.failPending(conn, reason);
    this.dropInbox(peer, conn);
    if (peer.conn !== conn) {
      this.log(`closed an older connection to node ${peer.info.num}: ${reason}`);
      return; // replaced: the node stays connected
    }
    peer.conn = null;
    peer.stats.disconnects++;
    this.log(`no longer connected to node ${peer.info.num} (${peer.info.name}): ${reason}`);
    this.wakeWaiters(peer);
    if (this.stopped) return;
    // Not a death: hold quorum decisions, keep (re)connecting, wait for the heartbeat.
    this.quorum?.connErr(peer.info.num);
    this.armConnectExpired(peer);
    this.scheduleDial(peer);
  }

  private failPending(conn: Conn, reason: string): void {
    const node = conn.peerNode ?? -1;
    const peer = this.peerOf(conn);
    const pending = [...conn.pending.values()];
    conn.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      if (peer) this.releaseSlot(peer, p.bytes);
      p.reject(new TransportError('EHOSTDOWN', node, `connection lost before the reply: ${reason}`));
    }
  }

  // ---- messages and replies ----------------------------------------------------------

  private onMessage(peer: Peer, conn: Conn, f: Frame): void {
    peer.stats.msgsReceived++;
    if (peer.inboxLength() >= MAX_IN_FLIGHT_REQUESTS || peer.inboxBytes + f.payload.length > MAX_IN_FLIGHT_BYTES + this.maxPayloadBytes) {
      throw new FrameError(`node ${peer.info.num} has more than ${MAX_IN_FLIGHT_REQUESTS} requests or ${MAX_IN_FLIGHT_BYTES} bytes unanswered`);
    }
    peer.inbox.push({ conn, frame: f });
    peer.inboxBytes += f.payload.length;
    this.pump(peer).catch((e: Error) => this.log(`handler queue for node ${peer.info.num} failed: ${e.message}`));
  }

  // Runs this peer's handlers one at a time in arrival order. Other peers have their own
  // pump, so a slow handler here does not hold them up.
  private async pump(peer: Peer): Promise<void> {
    if (peer.pumping) return;
    peer.pumping = true;
    try {
      while (peer.inboxHead < peer.inbox.length) {
        const item = peer.inbox[peer.inboxHead++];
        peer.inboxBytes -= item.frame.payload.length;
        if (peer.inboxHead > 1024 && peer.inboxHead * 2 > peer.inbox.length) {
          peer.inbox.splice(0, peer.inboxHead);
          peer.inboxHead = 0;
        }
        if (item.conn.phase !== 'up') continue; // its sender already got EHOSTDOWN
        await this.runHandler(peer, item.conn, item.frame);
      }
    } finally {
      peer.pumping = false;
    }
  }

  private async runHandler(peer: Peer, conn: Conn, f: Frame): Promise<void> {
    const node = peer.info.num;
    const handler = this.handlers.get(f.msgType);
    let sysStatus: number = SYS_STATUS.ok;
    let reply: Buffer = EMPTY;
    if (!handler) {
      sysStatus = SYS_STATUS.noHandler;
    } else {
      try {
        const r = await handler(node, f.payload);
        if (!Buffer.isBuffer(r)) throw new TypeError(`handler returned ${typeof r}, not a Buffer`);
        if (r.length > this.maxPayloadBytes) {
          this.log(`reply to message type ${f.msgType} from node ${node} is ${r.length} bytes, over the ${this.maxPayloadBytes}-byte limit`);
          sysStatus = SYS_STATUS.overflow;
        } else {
          reply = r;
        }
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        const rawCode = (err as unknown as { code?: unknown }).code;
        const code = typeof rawCode === 'string' ? rawCode : '';
        this.log(`handler for message type ${f.msgType} from node ${node} failed: ${err.message}`);
        sysStatus = SYS_STATUS.handlerError;
        reply = encodeHandlerError(err.message, code);
      }
    }
    if (conn.phase !== 'up') return; // the requester saw EHOSTDOWN; nobody to reply to
    this.writeFrame(conn, 'status', { msgType: f.msgType, msgNum: f.msgNum, sysStatus }, reply);
  }

  private onStatus(peer: Peer, conn: Conn, f: Frame): void {
    const p = conn.pending.get(f.msgNum);
    if (!p) return; // a reply after its request timed out
    if (p.msgType !== f.msgType) {
      throw new FrameError(`reply to message ${f.msgNum} carries type ${f.msgType}, the request had ${p.msgType}`);
    }
    conn.pending.delete(f.msgNum);
    clearTimeout(p.timer);
    this.releaseSlot(peer, p.bytes);
    const node = peer.info.num;
    switch (f.sysStatus) {
      case SYS_STATUS.ok:
        p.resolve(f.payload);
        return;
      case SYS_STATUS.noHandler:
        p.reject(new TransportError('ENOPROTOOPT', node, `no handler for message type ${f.msgType}`));
        return;
      case SYS_STATUS.handlerError: {
        let info = { message: '(undecodable error)', code: '' };
        try {
          info = decodeHandlerError(f.payload);
        } catch {
          // keep the placeholder; the request still fails as a handler error
        }
        p.reject(new O2NetRemoteError(node, f.msgType, info.code, info.message));
        return;
      }
      case SYS_STATUS.overflow:
        p.reject(new O2NetRemoteError(node, f.msgType, 'EOVERFLOW', `reply exceeds ${this.maxPayloadBytes} bytes`));
        return;
      default:
        throw new FrameError(`bad sys_status ${f.sysStatus}`);
    }
  }

  // Drops queued (not yet started) messages of a dead connection.
  private dropInbox(peer: Peer, conn: Conn): void {
    const keep = peer.inbox.slice(peer.inboxHead).filter((i) => i.conn !== conn);
    peer.inbox.length = 0;
    peer.inbox.push(...keep);
    peer.inboxHead = 0;
    peer.inboxBytes = keep.reduce((s, i) => s + i.frame.payload.length, 0);
  }

  private writeFrame(conn: Conn, kind: FrameKind, h: { msgType: number; msgNum: number; sysStatus: number }, payload: Buffer): void {
    if (conn.phase === 'closed' || conn.socket.destroyed) return;
    const header = encodeHeader({ kind, sysStatus: h.sysStatus, msgType: h.msgType, msgNum: h.msgNum, payloadLength: payload.length, status: 0 });
    const { socket } = conn;
    if (payload.length === 0) {
      socket.write(header);
    } else {
      socket.cork();
      socket.write(header);
      socket.write(payload);
      socket.uncork();
    }
    const peer = conn.phase === 'up' ? this.peerOf(conn) : null;
    if (peer) peer.stats.bytesSent += FRAME_HEADER_BYTES + payload.length;
  }

  // ---- helpers -----------------------------------------------------------------------

  private emitMembership(what: 'up' | 'down', node: number): void {
    for (const s of [...this.subscribers]) {
      try {
        if (what === 'up') s.onNodeUp(node);
        else s.onNodeDown(node);
      } catch (e) {
        this.log(`a membership subscriber threw on node ${node} ${what}: ${(e as Error).message}`);
      }
    }
  }

  private logLimited(key: string, line: string): void {
    const now = Date.now();
    const last = this.lastLogAtMs.get(key);
    if (last !== undefined && now - last < LOG_REPEAT_MS) return;
    if (this.lastLogAtMs.size >= 1024) this.lastLogAtMs.clear(); // bounded; worst case a repeat
    this.lastLogAtMs.set(key, now);
    this.log(line);
  }

  private peerOrThrow(node: number): Peer {
    const p = this.peers.get(node);
    if (!p) throw new RangeError(`o2net: node ${node} is not in the node table`);
    return p;
  }
}

const EMPTY = Buffer.alloc(0);

function assertMsgType(type: number): void {
  if (!Number.isInteger(type) || type < 1 || type > 0xffffffff) throw new RangeError(`o2net: bad message type ${type}`);
}

// A function, so TypeScript does not narrow conn.phase across calls that may change it.
function isClosed(conn: Conn): boolean {
  return conn.phase === 'closed';
}

function normalizeAddress(a: string): string {
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

function assert(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Error(`o2net: assertion failed: ${what}`);
}
