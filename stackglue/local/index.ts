// The `local` pseudo-stack: a volume mounted by one node with no cluster at all. Every
// request is granted at once (on the next tick, keeping the callback contract), nobody
// ever blocks us, and LVBs behave as on a real stack for the one node there is: what an
// EX holder writes is what the next holder reads.
import {
  ClusterConnection, ConnectOptions, LKF, LOCK_STATUS, Lksb, LockMode, LVB_BYTES, ProtocolVersion, StackPlugin,
} from '../types';

class LocalConnection implements ClusterConnection {
  readonly stack = 'local';
  readonly thisNode = 0;
  readonly proto: ProtocolVersion;
  private readonly opts: ConnectOptions;
  private readonly lvbs = new Map<string, Buffer>();
  private readonly names = new WeakMap<Lksb, string>();
  private nextLockId = 1;
  private closed = false;

  constructor(opts: ConnectOptions) {
    this.opts = opts;
    this.proto = opts.proto;
  }

  lock(lksb: Lksb, mode: LockMode, flags: number, name: string): void {
    if (this.closed) throw new Error('local stack: connection closed');
    if (flags & LKF.CONVERT && lksb.lockId === undefined) throw new Error(`local stack: convert of ${name} before it was locked`);
    const previous = lksb.granted;
    lksb.lockId ??= this.nextLockId++;
    this.names.set(lksb, name);
    queueMicrotask(() => {
      if (flags & LKF.VALBLK) {
        if (previous === 'EX') this.lvbs.set(name, Buffer.from(lksb.lvb));
        if (mode !== 'NL') (this.lvbs.get(name) ?? Buffer.alloc(LVB_BYTES)).copy(lksb.lvb);
      }
      lksb.granted = mode;
      lksb.status = LOCK_STATUS.OK;
      lksb.lvbValid = true;
      this.opts.callbacks.onGrant(lksb);
    });
  }

  unlock(lksb: Lksb, flags: number): void {
    const name = this.names.get(lksb);
    if (name === undefined) throw new Error('local stack: unlock of a lock never taken');
    queueMicrotask(() => {
      if (flags & LKF.CANCEL) {
        // Nothing is ever waiting here, so there is nothing to cancel: the grant won.
        this.opts.callbacks.onUnlock(lksb, LOCK_STATUS.EBUSY);
        return;
      }
      if (flags & LKF.VALBLK && lksb.granted === 'EX') this.lvbs.set(name, Buffer.from(lksb.lvb));
      lksb.granted = 'NL';
      lksb.lockId = undefined;
      this.opts.callbacks.onUnlock(lksb, LOCK_STATUS.OK);
    });
  }

  async disconnect(): Promise<void> {
    this.closed = true;
  }
}

export const localStack: StackPlugin = {
  name: 'local',
  maxProto: { major: 1, minor: 0 },
  async connect(opts: ConnectOptions): Promise<ClusterConnection> {
    return new LocalConnection(opts);
  },
};
