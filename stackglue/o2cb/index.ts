// The `o2cb` stack plugin: the filesystem's side of the node's o2cb daemon (o2cbd, started
// by `o2cb register-cluster`), which runs o2hb, o2net and o2dlm for every mount on this node,
// as the kernel's o2cb stack does for OCFS2. One unix-socket connection per mount carries the
// local protocol in dlm/o2cb/o2cbd.proto; this file turns it back into the stackglue
// contract: lock()/unlock() queue a request, exactly one callback reports its outcome.
// If the daemon fences this node or dies, every request in flight completes with ENOTCONN
// and onFenced() tells the mount to stop (OCFS2: losing the control daemon is losing
// cluster membership).
import * as net from 'node:net';
import { constants as osConstants } from 'node:os';
import { Errno, FsError } from '../../fs/errors';
import { DaemonMsg, FrameReader, MODE_BY_NUM, MODE_NUM, decodeDaemonMsg, encodeClientMsg } from '../../dlm/o2cb/o2cbd-wire';
import { runDirFromEnv, socketPath } from '../../dlm/o2cb/o2nm';
import {
  ClusterConnection, ConnectOptions, LKF, LOCK_STATUS, Lksb, LockMode, LVB_BYTES, ProtocolVersion, StackPlugin,
} from '../types';

/** Joining waits for the heartbeat to become steady and the domain join: seconds, bounded. */
const CONNECT_TIMEOUT_MS = 60_000;

type Pending = 'lock' | 'unlock';

class O2cbConnection implements ClusterConnection {
  readonly stack = 'o2cb';
  thisNode = -1;
  proto: ProtocolVersion = { major: 0, minor: 0 };
  private readonly locks = new Map<number, Lksb>();
  private readonly pending = new Map<number, Pending>();
  private nextLockId = 1;
  private dead: string | null = null;
  private disconnecting = false;

  constructor(private readonly sock: net.Socket, private readonly opts: ConnectOptions) {}

  /** Called by the reader for every daemon message after Connected. */
  onMessage(m: DaemonMsg): void {
    const cb = this.opts.callbacks;
    if (m.grant) {
      const lksb = this.locks.get(m.grant.lockId);
      if (!lksb || this.pending.get(m.grant.lockId) !== 'lock') throw new Error(`grant for lock ${m.grant.lockId} with no lock request pending`);
      this.pending.delete(m.grant.lockId);
      if (m.grant.gone) this.forget(m.grant.lockId, lksb);
      lksb.status = m.grant.status;
      if (m.grant.status === LOCK_STATUS.OK) {
        lksb.granted = modeOf(m.grant.granted);
        if (m.grant.lvb.length === LVB_BYTES) Buffer.from(m.grant.lvb).copy(lksb.lvb);
        lksb.lvbValid = m.grant.lvbValid;
      }
      cb.onGrant(lksb);
    } else if (m.blocking) {
      const lksb = this.locks.get(m.blocking.lockId);
      if (lksb) cb.onBlocking(lksb, modeOf(m.blocking.level));
    } else if (m.unlocked) {
      const id = m.unlocked.lockId;
      const lksb = this.locks.get(id);
      if (!lksb) throw new Error(`unlock result for unknown lock ${id}`);
      // An unlock completes here; so does a lock request that a cancel stopped (ECANCEL is
      // its only callback). A cancel that lost to the grant (EBUSY) completes nothing: the
      // grant callback did.
      if (this.pending.get(id) === 'unlock' || m.unlocked.status === LOCK_STATUS.ECANCEL) this.pending.delete(id);
      lksb.granted = modeOf(m.unlocked.granted);
      if (m.unlocked.gone) this.forget(id, lksb);
      cb.onUnlock(lksb, m.unlocked.status);
    } else if (m.recovery) {
      this.opts.onRecovery(m.recovery.node);
    } else if (m.nodeDown) {
      this.opts.onNodeDown?.(m.nodeDown.node);
    } else if (m.fenced) {
      this.die(`fenced: ${m.fenced.reason}`);
    } else if (m.disconnected) {
      this.die('disconnected');
    }
  }

  /** The daemon says the lock no longer exists: the lksb may start a new one. */
  private forget(id: number, lksb: Lksb): void {
    this.locks.delete(id);
    this.pending.delete(id);
    if (lksb.lockId === id) lksb.lockId = undefined;
  }

  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void {
    this.assertUsable();
    if (flags & LKF.CONVERT && lksb.lockId === undefined) throw new Error(`o2cb: convert of ${name} before it was locked`);
    const id = lksb.lockId ?? this.nextLockId++;
    if (this.pending.has(id)) throw new Error(`o2cb: lock ${name} already has a request in flight`);
    lksb.lockId = id;
    this.locks.set(id, lksb);
    this.pending.set(id, 'lock');
    this.sock.write(encodeClientMsg({ lock: { lockId: id, mode: MODE_NUM[mode], flags, name, lvb: lksb.lvb } }));
  }

  unlock(lksb: Lksb, flags: number): void {
    this.assertUsable();
    const id = lksb.lockId;
    if (id === undefined || !this.locks.has(id)) throw new Error('o2cb: unlock of a lock never taken');
    // CANCEL targets the lock request in flight; a plain unlock needs none pending.
    if (!(flags & LKF.CANCEL)) {
      if (this.pending.has(id)) throw new Error('o2cb: unlock with a request in flight (cancel it first)');
      this.pending.set(id, 'unlock');
    }
    this.sock.write(encodeClientMsg({ unlock: { lockId: id, flags, lvb: lksb.lvb } }));
  }

  async disconnect(): Promise<void> {
    if (this.dead) return;
    this.disconnecting = true;
    const closed = new Promise<void>((resolve) => this.sock.once('close', () => resolve()));
    this.sock.write(encodeClientMsg({ disconnect: {} }));
    const timer = setTimeout(() => this.sock.destroy(), CONNECT_TIMEOUT_MS);
    await closed;
    clearTimeout(timer);
  }

  /** The daemon is gone or fenced us: complete everything in flight, tell the mount. */
  die(reason: string): void {
    if (this.dead) return;
    this.dead = reason;
    this.sock.destroy();
    const cb = this.opts.callbacks;
    for (const [id, kind] of [...this.pending]) {
      this.pending.delete(id);
      const lksb = this.locks.get(id)!;
      lksb.status = LOCK_STATUS.ENOTCONN;
      if (kind === 'lock') cb.onGrant(lksb);
      else cb.onUnlock(lksb, LOCK_STATUS.ENOTCONN);
    }
    if (!this.disconnecting) this.opts.onFenced?.(reason);
  }

  private assertUsable(): void {
    if (this.dead) throw new FsError('ENOTCONN', `o2cb stack: ${this.dead}`);
  }
}

function modeOf(n: number): LockMode {
  const m = MODE_BY_NUM[n];
  if (!m) throw new Error(`o2cb: bad lock mode ${n} from the daemon`);
  return m;
}

export const o2cbStack: StackPlugin = {
  name: 'o2cb',
  maxProto: { major: 1, minor: 0 },
  async connect(opts: ConnectOptions): Promise<ClusterConnection> {
    if (!opts.device) throw new FsError('EINVAL', 'o2cb stack: connect needs the shared device to heartbeat on');
    const path = socketPath(opts.runDir ?? runDirFromEnv(), opts.clusterName);
    const sock = net.createConnection(path);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (e: NodeJS.ErrnoException) => reject(new FsError('ENOTCONN', e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
        ? `the volume belongs to cluster "${opts.clusterName}" on the o2cb cluster stack, which is not running on this node (no o2cb daemon at ${path}); start it with "o2cb register-cluster ${opts.clusterName}", or mount with -o nocluster if no other node can have it mounted`
        : `cannot reach the o2cb daemon at ${path}: ${e.message}`)));
    });
    const conn = new O2cbConnection(sock, opts);
    const reader = new FrameReader();
    let joined: ((m: DaemonMsg) => void) | null = null;
    const first = new Promise<DaemonMsg>((resolve) => { joined = resolve; });
    sock.on('data', (chunk: Buffer) => {
      try {
        for (const body of reader.push(chunk)) {
          const m = decodeDaemonMsg(body);
          if (joined) {
            const j = joined;
            joined = null;
            j(m);
          } else conn.onMessage(m);
        }
      } catch (e) {
        conn.die(`bad message from the o2cb daemon: ${(e as Error).message}`);
      }
    });
    sock.on('error', () => undefined); // 'close' follows and reports it
    sock.on('close', () => {
      if (joined) joined({ refused: { code: 'ENOTCONN', message: 'the o2cb daemon closed the connection' } });
      conn.die('the o2cb daemon went away');
    });
    sock.write(encodeClientMsg({
      connect: { cluster: opts.clusterName, group: opts.group, protoMajor: opts.proto.major, protoMinor: opts.proto.minor, device: opts.device },
    }));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<DaemonMsg>((resolve) => {
      timer = setTimeout(() => resolve({ refused: { code: 'ETIMEDOUT', message: `no answer from the o2cb daemon in ${CONNECT_TIMEOUT_MS} ms` } }), CONNECT_TIMEOUT_MS);
    });
    const m = await Promise.race([first, timeout]);
    clearTimeout(timer);
    if (!m.connected) {
      sock.destroy();
      const r = m.refused ?? { code: 'EPROTO', message: 'unexpected first message from the o2cb daemon' };
      throw new FsError(r.code in osConstants.errno ? (r.code as Errno) : 'EIO', `o2cb stack: ${r.message}`);
    }
    conn.thisNode = m.connected.thisNode;
    conn.proto = { major: m.connected.protoMajor, minor: m.connected.protoMinor };
    return conn;
  },
};
