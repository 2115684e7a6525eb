// o2cbd: one node's o2cb cluster services, started by `o2cb register-cluster` (as OCFS2's
// `o2cb online` brings up the kernel stack): o2net (the TCP mesh), quorum, an o2hb
// heartbeat per volume in use, and an o2dlm domain per mounted volume. Mounts (the stackglue
// o2cb plugin) and tools talk to it over <runDir>/<cluster>.sock (o2cbd.proto); one client
// connection = one lock space.
//
//   node dist/dlm/o2cb/o2cbd.js [--config-dir DIR] [--run-dir DIR] [--cluster NAME] [--node NAME]
//
// Prints "ready" on stdout once it listens; pid in <runDir>/<cluster>.pid. SIGTERM/SIGINT:
// clients are told, domains left, heartbeats stopped cleanly, exit 0.
//
// Fencing (reference/ocfs2.md §4.3): when quorum is lost, this node's heartbeat write hangs,
// or a client vanishes without leaving its lock space (its locks would be held forever),
// the daemon tells every client to stop device I/O, stops heartbeating without the
// clean-stop block (so the others see a death and recover us), and exits 1.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { LKF, LOCK_STATUS, Lksb, ProtocolVersion, StackCallbacks, newLksb } from '../../stackglue/types';
import { O2Hb, heartbeatRegionOf } from './o2hb';
import type { HbRegion } from './hb-region';
import { O2Net } from './o2net';
import { ResolvedCluster, heartbeatDeadMs, loadConfig, pidFilePath, socketPath } from './o2nm';
import { ClientMsg, DaemonMsg, FrameReader, MODE_BY_NUM, MODE_NUM, decodeClientMsg, encodeDaemonMsg } from './o2cbd-wire';
import { DlmDomain } from './o2dlm/domain';
import { Quorum } from './quorum';

/** A JSON status request must fit in this (it is one short line). */
const STATUS_LINE_BYTES_MAX = 1024;
/** Clients of one daemon (mounts and tools); a bound, not a tuning knob. */
const CLIENTS_MAX = 64;
/** Bound on a clean shutdown (leaving domains migrates locks over the network). */
const SHUTDOWN_TIMEOUT_MS = 30_000;

interface Region {
  hb: O2Hb;
  users: number;
}

/** The lksb the daemon holds for a client's lock, and where its callbacks go. */
interface LockOwner {
  session: Session;
  lockId: number;
}

export class O2cbDaemon {
  readonly net: O2Net;
  private readonly quorum: Quorum;
  private readonly regions = new Map<string, Region>();
  /** Per node: in how many regions it heartbeats (o2net sees it up while any region does). */
  private readonly liveIn = new Map<number, number>();
  private readonly sessions = new Set<Session>();
  private readonly domains = new Map<string, Session>();
  private server: net.Server | null = null;
  private fenced = false;
  private stopping = false;

  constructor(readonly cfg: ResolvedCluster, readonly log: (line: string) => void) {
    const t = cfg.timeouts;
    this.quorum = new Quorum({ thisNode: cfg.localNode.num, heartbeatDeadThreshold: t.heartbeatDeadThreshold, heartbeatIntervalMs: t.heartbeatIntervalMs, log });
    this.quorum.on('fence', (reason) => this.fence(`quorum lost: ${reason}`));
    this.net = new O2Net({
      thisNode: cfg.localNode.num,
      nodes: cfg.nodes,
      clusterName: cfg.name,
      clusterKey: cfg.clusterKey,
      timeouts: { keepaliveDelayMs: t.keepaliveDelayMs, idleTimeoutMs: t.idleTimeoutMs, reconnectDelayMs: t.reconnectDelayMs, heartbeatDeadMs: heartbeatDeadMs(t) },
      quorum: this.quorum,
      log,
    });
  }

  get socketPath(): string {
    return socketPath(this.cfg.runDir, this.cfg.name);
  }

  async start(): Promise<void> {
    await this.net.start();
    fs.mkdirSync(this.cfg.runDir, { recursive: true });
    // A socket left by a dead daemon (register-cluster checked the pid) is stale.
    fs.rmSync(this.socketPath, { force: true });
    this.server = net.createServer((sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.socketPath, () => resolve());
    });
    fs.chmodSync(this.socketPath, 0o600);
    fs.writeFileSync(pidFilePath(this.cfg.runDir, this.cfg.name), `${process.pid}\n`);
    this.log(`node ${this.cfg.localNode.num} (${this.cfg.localNode.name}) of cluster ${this.cfg.name} up; listening on ${this.cfg.localNode.ip}:${this.cfg.localNode.port} and ${this.socketPath}`);
  }

  private accept(sock: net.Socket): void {
    if (this.sessions.size >= CLIENTS_MAX || this.fenced || this.stopping) {
      sock.destroy();
      return;
    }
    const s = new Session(this, sock);
    this.sessions.add(s);
    sock.once('close', () => {
      this.sessions.delete(s);
      void s.closed();
    });
  }

  status(): object {
    return {
      cluster: this.cfg.name,
      node: { num: this.cfg.localNode.num, name: this.cfg.localNode.name, ip: this.cfg.localNode.ip, port: this.cfg.localNode.port },
      pid: process.pid,
      heartbeating: [...this.net.heartbeatingNodes()].sort((a, b) => a - b),
      connected: [...this.net.connectedNodes()].sort((a, b) => a - b),
      quorum: this.quorum.state(),
      regions: [...this.regions.entries()].map(([uuid, r]) => ({ uuid, device: r.hb.region.devicePath, users: r.users, live: r.hb.liveNodes() })),
      domains: [...this.domains.entries()].map(([group, s]) => ({ group, members: s.domain?.members() ?? [], state: s.domain?.state ?? 'joining' })),
      net: this.net.stats(),
    };
  }

  /** Every lock space's resources and queues (debugging: {"op":"dump"} on the socket). */
  dump(): object {
    return { node: this.cfg.localNode.num, domains: [...this.domains.values()].map((s) => s.domain?.dump() ?? null) };
  }

  /** Claims lock space `group` for one session; false if another client has it. */
  claimDomain(group: string, s: Session): boolean {
    if (this.domains.has(group)) return false;
    this.domains.set(group, s);
    return true;
  }

  releaseDomain(group: string, s: Session): void {
    if (this.domains.get(group) === s) this.domains.delete(group);
  }

  /** Starts (or shares) the heartbeat on a volume's region and waits until it is steady. */
  async useRegion(device: string): Promise<HbRegion> {
    const region = await heartbeatRegionOf(device);
    let r = this.regions.get(region.uuid);
    if (!r) {
      const t = this.cfg.timeouts;
      const hb = await O2Hb.start({
        region, thisNode: this.cfg.localNode.num, nodes: this.cfg.nodes.map((n) => n.num),
        intervalMs: t.heartbeatIntervalMs, deadThreshold: t.heartbeatDeadThreshold, log: this.log,
      });
      hb.on('up', (n) => this.nodeUp(n));
      hb.on('down', (n) => this.nodeDown(n));
      hb.on('fence', (reason) => this.fence(`heartbeat on ${region.devicePath}: ${reason}`));
      r = { hb, users: 0 };
      this.regions.set(region.uuid, r);
    }
    r.users += 1;
    await r.hb.steady();
    return region;
  }

  /**
   * Waits until every node heartbeating on the region is connected on o2net too. A domain
   * join only asks connected nodes, so joining earlier would make a second, separate lock
   * space beside theirs (measured: the join raced the o2net handshake by 0.1 s). A node
   * that heartbeats but cannot be reached in a reconnect cycle refuses the join.
   */
  async awaitConnected(uuid: string): Promise<void> {
    const r = this.regions.get(uuid);
    if (!r) throw new Error(`assertion: no heartbeat on region ${uuid}`);
    const t = this.cfg.timeouts;
    const deadline = Date.now() + t.idleTimeoutMs + 2 * t.reconnectDelayMs + 2 * t.heartbeatIntervalMs;
    for (;;) {
      const live = this.net.liveNodes();
      const missing = r.hb.liveNodes().filter((n) => !live.has(n));
      if (missing.length === 0) return;
      if (Date.now() > deadline) {
        throw Object.assign(new Error(`node(s) ${missing.join(', ')} heartbeat on the volume but cannot be reached on the network; check the interconnect (cluster.conf addresses, firewalls)`), { code: 'ETIMEDOUT' });
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async releaseRegion(uuid: string): Promise<void> {
    const r = this.regions.get(uuid);
    if (!r) return;
    r.users -= 1;
    if (r.users > 0) return;
    this.regions.delete(uuid);
    for (const n of r.hb.liveNodes()) this.nodeDown(n);
    await r.hb.stop();
  }

  private nodeUp(n: number): void {
    const c = (this.liveIn.get(n) ?? 0) + 1;
    this.liveIn.set(n, c);
    if (c === 1) this.net.heartbeatUp(n);
  }

  private nodeDown(n: number): void {
    const c = (this.liveIn.get(n) ?? 0) - 1;
    if (c < 0) return;
    if (c === 0) {
      this.liveIn.delete(n);
      this.net.heartbeatDown(n);
    } else this.liveIn.set(n, c);
  }

  /** Self-fence: clients stop I/O, heartbeats stop as if we crashed, exit 1. */
  fence(reason: string): void {
    if (this.fenced) return;
    this.fenced = true;
    this.log(`FENCING this node: ${reason}`);
    for (const s of this.sessions) s.send({ fenced: { reason } });
    // Stop heartbeating without the clean-stop block: the others must see a death.
    for (const r of this.regions.values()) void r.hb.stop({ clean: false }).catch(() => undefined);
    setTimeout(() => process.exit(1), 50).unref();
  }

  /** Clean shutdown: every client told, domains left, heartbeats stopped cleanly. */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.server?.close();
    await Promise.all([...this.sessions].map((s) => s.leave('the o2cb daemon is stopping')));
    for (const uuid of [...this.regions.keys()]) {
      const r = this.regions.get(uuid)!;
      r.users = 1;
      await this.releaseRegion(uuid);
    }
    await this.net.stop();
    this.quorum.close();
    fs.rmSync(this.socketPath, { force: true });
    fs.rmSync(pidFilePath(this.cfg.runDir, this.cfg.name), { force: true });
  }
}

/** One client connection: a status query, or one lock space used by one mount. */
class Session {
  domain: DlmDomain | null = null;
  private group = '';
  private regionUuid = '';
  private readonly lksbs = new Map<number, Lksb>();
  private readonly reader = new FrameReader();
  private mode: 'new' | 'frames' | 'json' = 'new';
  private leaving: Promise<void> | null = null;
  private left = false;

  constructor(private readonly d: O2cbDaemon, private readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', () => undefined); // 'close' follows
  }

  send(m: DaemonMsg): void {
    if (!this.sock.destroyed) this.sock.write(encodeDaemonMsg(m));
  }

  private onData(chunk: Buffer): void {
    if (this.mode === 'new') this.mode = chunk[0] === 0x7b /* '{' */ ? 'json' : 'frames';
    if (this.mode === 'json') return this.onJson(chunk);
    let bodies: Buffer[];
    try {
      bodies = this.reader.push(chunk);
    } catch (e) {
      return this.drop(`bad frame: ${(e as Error).message}`);
    }
    for (const body of bodies) {
      let m: ClientMsg;
      try {
        m = decodeClientMsg(body);
      } catch (e) {
        return this.drop(`undecodable message: ${(e as Error).message}`);
      }
      try {
        this.dispatch(m);
      } catch (e) {
        return this.drop((e as Error).message);
      }
    }
  }

  private jsonBuf = '';

  private onJson(chunk: Buffer): void {
    this.jsonBuf += chunk.toString('utf8');
    if (this.jsonBuf.length > STATUS_LINE_BYTES_MAX) return this.drop('status request too long');
    const nl = this.jsonBuf.indexOf('\n');
    if (nl < 0) return;
    let reply: object;
    try {
      const req = JSON.parse(this.jsonBuf.slice(0, nl)) as { op?: unknown };
      reply = req.op === 'status' ? this.d.status()
        : req.op === 'dump' ? this.d.dump()
          : { error: `unknown op ${JSON.stringify(req.op)}` };
    } catch (e) {
      reply = { error: `bad request: ${(e as Error).message}` };
    }
    this.sock.end(`${JSON.stringify(reply)}\n`);
  }

  /** A client that breaks the protocol loses its connection (and, if it held locks, the node fences). */
  private drop(why: string): void {
    this.d.log(`client dropped: ${why}`);
    this.sock.destroy();
  }

  private dispatch(m: ClientMsg): void {
    if ('connect' in m && m.connect) {
      if (this.group) throw new Error('second connect on one connection');
      void this.connect(m.connect);
    } else if ('lock' in m && m.lock) {
      const dom = this.requireDomain();
      const { lockId, mode, flags, name, lvb } = m.lock;
      let l = this.lksbs.get(lockId);
      if (!l) {
        l = newLksb({ session: this, lockId } satisfies LockOwner);
        this.lksbs.set(lockId, l);
      }
      if (lvb.length === l.lvb.length) Buffer.from(lvb).copy(l.lvb);
      const modeName = MODE_BY_NUM[mode];
      if (!modeName) throw new Error(`bad lock mode ${mode}`);
      try {
        dom.lock(l, modeName, flags, name);
      } catch (e) {
        // The request never entered the DLM: still exactly one answer.
        this.d.log(`lock ${name} refused: ${(e as Error).message}`);
        const fresh = l.lockId === undefined;
        if (fresh) this.lksbs.delete(lockId);
        this.send({ grant: { lockId, status: statusOf(e), granted: MODE_NUM[l.granted], lvb: l.lvb, lvbValid: l.lvbValid, gone: fresh } });
      }
    } else if ('unlock' in m && m.unlock) {
      const dom = this.requireDomain();
      const { lockId, flags, lvb } = m.unlock;
      const l = this.lksbs.get(lockId);
      if (!l) throw new Error(`unlock of unknown lock ${lockId}`);
      if (lvb.length === l.lvb.length && !(flags & LKF.CANCEL)) Buffer.from(lvb).copy(l.lvb);
      try {
        dom.unlock(l, flags);
      } catch (e) {
        this.d.log(`unlock refused: ${(e as Error).message}`);
        this.send({ unlocked: { lockId, status: statusOf(e), granted: MODE_NUM[l.granted] } });
      }
    } else if ('disconnect' in m && m.disconnect) {
      void this.leave(null);
    }
  }

  private requireDomain(): DlmDomain {
    if (!this.domain) throw new Error('lock request before the lock space was joined');
    return this.domain;
  }

  private async connect(c: { cluster: string; group: string; protoMajor: number; protoMinor: number; device: string }): Promise<void> {
    const refuse = (code: string, message: string): void => {
      this.send({ refused: { code, message } });
      this.sock.end();
    };
    if (c.cluster !== this.d.cfg.name) return refuse('EINVAL', `cluster name on disk ("${c.cluster}") does not match the running cluster ("${this.d.cfg.name}")`);
    if (!/^[0-9A-F]{32}$/.test(c.group)) return refuse('EINVAL', `bad lock space name ${JSON.stringify(c.group)}`);
    if (!this.d.claimDomain(c.group, this)) return refuse('EBUSY', `volume ${c.group} is already mounted on this node`);
    this.group = c.group;
    try {
      const region = await this.d.useRegion(c.device);
      this.regionUuid = region.uuid;
      if (region.uuid.toUpperCase() !== c.group) throw Object.assign(new Error(`device ${c.device} holds volume ${region.uuid}, not ${c.group}`), { code: 'EINVAL' });
      await this.d.awaitConnected(region.uuid);
      // o2dlm clears lksb.lockId when a lock stops existing; the client hears it as `gone`.
      const gone = (l: Lksb): boolean => {
        if (l.lockId !== undefined) return false;
        this.lksbs.delete(ownerOf(l).lockId);
        return true;
      };
      const callbacks: StackCallbacks = {
        onGrant: (l) => this.send({ grant: { lockId: ownerOf(l).lockId, status: l.status, granted: MODE_NUM[l.granted], lvb: l.lvb, lvbValid: l.lvbValid, gone: gone(l) } }),
        onBlocking: (l, level) => this.send({ blocking: { lockId: ownerOf(l).lockId, level: MODE_NUM[level] } }),
        onUnlock: (l, status) => this.send({ unlocked: { lockId: ownerOf(l).lockId, status, granted: MODE_NUM[l.granted], gone: gone(l) } }),
      };
      const proto: ProtocolVersion = { major: c.protoMajor, minor: c.protoMinor };
      this.domain = new DlmDomain(this.d.net, {
        name: c.group, proto, callbacks, log: (l) => this.d.log(`${c.group.slice(0, 8)}: ${l}`),
        onEviction: (node) => this.send({ recovery: { node } }),
        onNodeDown: (node) => this.send({ nodeDown: { node } }),
      });
      const agreed = await this.domain.join();
      this.send({ connected: { thisNode: this.d.cfg.localNode.num, protoMajor: agreed.major, protoMinor: agreed.minor } });
      this.d.log(`joined lock space ${c.group} (protocol ${agreed.major}.${agreed.minor}) for ${c.device}`);
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      this.d.log(`connect to ${c.group} failed: ${(e as Error).message}`);
      this.domain = null;
      await this.release();
      refuse(typeof code === 'string' && /^E[A-Z]+$/.test(code) ? code : 'EIO', (e as Error).message);
    }
  }

  /** Leaves the lock space cleanly (migrating what we master) and lets go of the region. */
  leave(reason: string | null): Promise<void> {
    this.leaving ??= (async () => {
      try {
        if (this.domain) await withTimeout(this.domain.leave(), SHUTDOWN_TIMEOUT_MS, 'leaving the lock space');
      } catch (e) {
        this.d.log(`leaving ${this.group} failed: ${(e as Error).message}`);
      }
      this.domain = null;
      this.left = true;
      await this.release();
      if (reason) this.d.log(`client of ${this.group} disconnected: ${reason}`);
      this.send({ disconnected: {} });
      this.sock.end();
    })();
    return this.leaving;
  }

  private async release(): Promise<void> {
    if (this.regionUuid) await this.d.releaseRegion(this.regionUuid).catch((e) => this.d.log(`stopping heartbeat: ${(e as Error).message}`));
    this.regionUuid = '';
    if (this.group) this.d.releaseDomain(this.group, this);
  }

  /** The connection closed. Without a clean leave, locks this client held would stay held: fence. */
  async closed(): Promise<void> {
    if (this.leaving) return;
    if (this.domain && !this.left) {
      this.d.fence(`the client of lock space ${this.group} went away without leaving it`);
      return;
    }
    await this.release();
  }
}

/** The lksb status for a request the DLM refused outright (DlmError codes). */
function statusOf(e: unknown): number {
  return (e as { code?: unknown }).code === 'ENOTCONN' ? LOCK_STATUS.ENOTCONN : -22; // EINVAL
}

function ownerOf(l: Lksb): LockOwner {
  return l.owner as LockOwner;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<T>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function parseArgs(argv: string[]): { configDir?: string; runDir?: string; clusterName?: string; nodeName?: string } {
  const out: { configDir?: string; runDir?: string; clusterName?: string; nodeName?: string } = {};
  const keys: Record<string, keyof typeof out> = { '--config-dir': 'configDir', '--run-dir': 'runDir', '--cluster': 'clusterName', '--node': 'nodeName' };
  for (let i = 0; i < argv.length; i++) {
    const k = keys[argv[i]];
    if (!k || i + 1 >= argv.length) throw new Error(`usage: o2cbd [--config-dir DIR] [--run-dir DIR] [--cluster NAME] [--node NAME] (bad argument ${JSON.stringify(argv[i])})`);
    out[k] = argv[++i];
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cfg = await loadConfig(args);
  const log = (line: string): void => {
    process.stderr.write(`${new Date().toISOString()} o2cbd[${cfg.name}/${cfg.localNode.name}]: ${line}\n`);
  };
  const d = new O2cbDaemon(cfg, log);
  await d.start();
  const stop = (sig: string): void => {
    log(`${sig}: shutting down`);
    const hard = setTimeout(() => process.exit(1), SHUTDOWN_TIMEOUT_MS * 2);
    hard.unref();
    void d.shutdown().then(() => process.exit(0), (e) => {
      log(`shutdown failed: ${(e as Error).message}`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.stdout.write('ready\n');
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`o2cbd: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
