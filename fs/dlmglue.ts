// dlmglue: the cluster lock cache between the filesystem and stackglue. A granted level
// stays held after use (the next local use costs nothing); it is given up only when
// another node asks (onBlocking), once no local holder conflicts, after the resource's
// downconvert hook has made the disk say what our caches say (flush, checkpoint,
// invalidate).
//
// The rules ported from OCFS2's dlmglue.c (reference/ocfs2.md §2):
// - BLOCKED: once another node asked for a level, new local holders that would keep it
//   from that node wait (ocfs2_may_continue_on_blocked_lock), so a busy node cannot
//   starve a remote waiter by overlapping its own holds.
// - UPCONVERT_FINISHING: the caller whose upconvert was just granted takes its hold
//   before any downconvert runs, even if a BAST came meanwhile; without this two nodes
//   wanting EX could hand the lock back and forth without either using it.
// - BUSY: an upconvert waiting at the master while we keep a level another node's
//   upconvert waits for is cancelled (see onBlocking).
// - A downconvert clears the blocked state only if the new level satisfies the highest
//   level asked for; a BAST that came during the downconvert is not forgotten (the
//   master tells a lock about a level once, until its mode changes).
// - PENDING (an AST arriving while dlm_lock() has not returned yet) has no counterpart:
//   requests and their callbacks run on one thread, and `busy` covers a request from the
//   moment it is sent until its callback.
import { AsyncLocalStorage } from 'node:async_hooks';
import { FsError } from './errors';
import { parseLockName } from './lock-names';
import {
  ClusterConnection, LKF, LOCK_STATUS, Lksb, LockMode, MODE_ORDER, StackCallbacks, compatible, newLksb,
} from '../stackglue/types';

const WAIT_MS_MAX = 10 * 60_000;

/**
 * Lock order (lock-names.ts documents it: S < R < J < M < E < W < O): while holding locks, a chain of calls may only
 * take locks of a later rank; locks of one rank in ascending name (block number) order.
 * S is outermost; F (flock, held across requests) and P are taken holding nothing.
 * Enforced on every lock() made inside DlmGlue.holding(): a violation throws (assertion).
 */
const RANK: Record<string, number> = { S: 0, R: 1, J: 2, M: 3, E: 4, W: 5, O: 6 };
const APART = new Set(['F', 'P']);

/** The locks the current chain of calls holds (set by DlmGlue.holding). */
const heldHere = new AsyncLocalStorage<readonly LockRes[]>();

function assertLockOrder(held: readonly LockRes[], res: LockRes): void {
  const type = res.type;
  for (const h of held) {
    if (h === res) throw new Error(`assertion: lock order: ${res.name} taken again while held`);
    const ht = h.type;
    if (APART.has(type) || APART.has(ht)) throw new Error(`assertion: lock order: ${res.name} taken while holding ${h.name} (${APART.has(type) ? type : ht} locks are taken alone)`);
    const a = RANK[ht];
    const b = RANK[type];
    if (a === undefined || b === undefined) throw new Error(`assertion: lock order: unranked lock ${a === undefined ? h.name : res.name}`);
    if (b < a || (a === b && res.name <= h.name)) throw new Error(`assertion: lock order: ${res.name} taken while holding ${h.name}`);
  }
}

/** The highest level we may keep while another node waits for `blocking`. */
function highestCompatible(blocking: LockMode): LockMode {
  return blocking === 'EX' ? 'NL' : blocking === 'PR' ? 'PR' : 'EX';
}

/** May a holder at `mode` go ahead while another node waits for `blocking`? */
function mayContinue(blocking: LockMode | null, mode: LockMode): boolean {
  return blocking === null || MODE_ORDER[mode] <= MODE_ORDER[highestCompatible(blocking)];
}

export interface LockResOptions {
  /** The resource carries a value block (the stack gets/puts it on grants/downconverts). */
  usesLvb?: boolean;
  /** Runs before the level drops to `to`: write back and invalidate what the lock covers. */
  onDownconvert?: (to: LockMode) => Promise<void>;
  /**
   * With usesLvb: writes the value block just before the stack takes it (the level leaves
   * EX: downconvert, drop or unmount). Absent: holders at EX write it as they go.
   */
  fillLvb?: (lvb: Buffer) => void;
  /** Another node asked for `level` (a BAST): what that tells the owner, besides the downconvert. */
  onBlocked?: (level: LockMode) => void;
}

export class LockRes {
  readonly name: string;
  /** The lock type (lock-names.ts), '?' for a name of no known form. */
  readonly type: string;
  readonly lksb: Lksb;
  readonly opts: LockResOptions;
  holdersPr = 0;
  holdersEx = 0;
  /** Highest level another node asked for, or null. */
  blocking: LockMode | null = null;
  busy = false;
  /** The level an upconvert in flight asks for (null when none is). */
  upconverting: LockMode | null = null;
  /** A cancel of that upconvert has been sent. */
  cancelling = false;
  /**
   * With usesLvb: `lvb` says what the resource's value is now, as far as this node knows:
   * set by a grant (the stack's value) and by leaving EX (ours), cleared when the level
   * drops to NL; the user clears it when it changes what the value describes.
   */
  lvbCurrent = false;
  /** The level a brand-new lock's certain grant will give (DlmGlue.lockNew), until it comes. */
  certain: LockMode | null = null;
  /**
   * Made here at EX as a brand-new name (lockNew) and never below EX since: no other node
   * has ever held this lock. Cleared as the level leaves EX.
   */
  exclusiveSinceNew = false;
  attached = false;
  private waiters: Array<() => void> = [];
  grantWaiter: ((status: number) => void) | null = null;

  constructor(name: string, opts: LockResOptions) {
    this.name = name;
    this.type = parseLockName(name)?.type ?? '?';
    this.opts = opts;
    this.lksb = newLksb(this);
  }

  get level(): LockMode {
    return this.lksb.granted;
  }

  get lvb(): Buffer {
    return this.lksb.lvb;
  }

  /** Resolves at the next state change (or after the bound, to re-check). */
  changed(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, WAIT_MS_MAX);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export interface LockHandle {
  readonly res: LockRes;
  readonly mode: 'PR' | 'EX';
  release(): void;
}

export class DlmGlue {
  private conn: ClusterConnection | null = null;
  private readonly resources = new Map<string, LockRes>();
  /** Locks made by lockNew that the lock manager has not been told of yet (registerNew). */
  private readonly unregistered = new Set<LockRes>();
  /** Requests sent to the stack (for tests and stats: cached locks send none). */
  stackRequests = 0;

  readonly callbacks: StackCallbacks = {
    onGrant: (lksb) => {
      const res = lksb.owner as LockRes;
      const w = res.grantWaiter;
      res.grantWaiter = null;
      w?.(lksb.status);
    },
    onBlocking: (lksb, level) => {
      const res = lksb.owner as LockRes;
      if (res.blocking === null || MODE_ORDER[level] > MODE_ORDER[res.blocking]) res.blocking = level;
      res.opts.onBlocked?.(level);
      // OCFS2's BUSY case: our upconvert (say PR->EX) waits at the master while we keep PR,
      // and another node's upconvert waits for our PR: neither can be granted. Cancel ours;
      // once it is back, we downconvert for them and ask again (dlmglue.c's cancel_convert).
      if (res.upconverting !== null && !res.cancelling && res.level !== 'NL' && !compatible(level, res.level)) {
        res.cancelling = true;
        this.connection().unlock(res.lksb, LKF.CANCEL);
      }
      this.kick(res);
    },
    onUnlock: (lksb, status) => {
      const res = lksb.owner as LockRes;
      if (res.cancelling) {
        res.cancelling = false;
        // EBUSY: the grant won; the grant callback already completed the request. Nothing
        // was sent while the cancel was in flight (the lock manager refuses that): now go on.
        if (status === LOCK_STATUS.EBUSY) {
          res.wake();
          this.kick(res);
          return;
        }
      }
      const w = res.grantWaiter;
      res.grantWaiter = null;
      w?.(status);
    },
  };

  attach(conn: ClusterConnection): void {
    this.conn = conn;
  }

  resource(name: string, opts: LockResOptions = {}): LockRes {
    let res = this.resources.get(name);
    if (!res) {
      res = new LockRes(name, opts);
      this.resources.set(name, res);
    }
    return res;
  }

  private connection(): ClusterConnection {
    if (!this.conn) throw new Error('assertion: dlmglue used before the stack connected');
    return this.conn;
  }

  private request(res: LockRes, mode: LockMode, flags: number): Promise<number> {
    return new Promise((resolve) => {
      res.grantWaiter = resolve;
      this.stackRequests += 1;
      // LOCAL only makes sense for the request that creates the lock.
      const f = res.attached ? (flags & ~LKF.LOCAL) | LKF.CONVERT : flags;
      this.connection().lock(res.lksb, mode, f | (res.opts.usesLvb ? LKF.VALBLK : 0), res.name);
    });
  }

  /**
   * Runs fn as a holder of `held`: locks fn takes (directly or through any call chain it
   * starts) are checked against the lock order.
   */
  holding<T>(held: LockHandle, fn: () => Promise<T>): Promise<T> {
    return heldHere.run([...(heldHere.getStore() ?? []), held.res], fn);
  }

  /**
   * Runs fn with a set of held locks it grows as it goes (locks taken lazily, one
   * operation's inode locks: fs/inode-locks.ts): `record` adds one to the order check.
   */
  collecting<T>(fn: (record: (h: LockHandle) => void) => Promise<T>): Promise<T> {
    const held = [...(heldHere.getStore() ?? [])];
    return heldHere.run(held, () => fn((h) => void held.push(h.res)));
  }

  /**
   * Takes `mode` on a resource: from the cache when held, else from the stack.
   * o.noqueue: only a try (EAGAIN if not grantable at once).
   * o.nudge (with noqueue): a refused try still asks the holders in the way to give up cached levels.
   * o.local: the resource is brand new (its name holds a generation nobody can know yet, as
   * a just-created inode's locks do): the stack may master it here without asking anyone
   * (OCFS2's ocfs2_create_new_inode_locks), and the caller need not wait for the grant (lockNew).
   */
  async lock(res: LockRes, mode: 'PR' | 'EX', o: { noqueue?: boolean; local?: boolean; nudge?: boolean } = {}): Promise<LockHandle> {
    const held = heldHere.getStore();
    // A try (NOQUEUE) cannot deadlock, whatever is held: it is how locks out of order are taken.
    if (held && !o.noqueue) assertLockOrder(held, res);
    for (let round = 0; ; round++) {
      if (round > 1_000_000) throw new Error(`assertion: lock ${res.name} never settled`);
      // Nobody else knows the name yet (no BAST can come): the level on its way is as good as held.
      if (res.certain !== null && MODE_ORDER[mode] <= MODE_ORDER[res.certain]) return this.hold(res, mode);
      if (res.busy || res.cancelling) {
        // A new lock the lock manager has not heard of: tell it now, then wait for the grant.
        if (this.unregistered.has(res)) {
          this.unregistered.delete(res);
          this.sendNew(res);
        }
        // A request of ours is in flight and may wait on a node that waits on us: do not wait behind it.
        if (o.noqueue && res.upconverting !== null) throw new FsError('EAGAIN');
        await res.changed();
        continue;
      }
      // BLOCKED: defer to a node already waiting for a level this hold would keep from it.
      if (!mayContinue(res.blocking, mode)) {
        if (o.noqueue) throw new FsError('EAGAIN');
        this.kick(res);
        await res.changed();
        continue;
      }
      if (MODE_ORDER[mode] <= MODE_ORDER[res.level]) return this.hold(res, mode);
      res.busy = true;
      res.upconverting = mode;
      if (o.local && !res.attached) return this.lockNew(res, mode);
      let status: number;
      try {
        status = await this.request(res, mode, (o.noqueue ? LKF.NOQUEUE : 0) | (o.noqueue && o.nudge ? LKF.NOQUEUEBAST : 0) | (o.local ? LKF.LOCAL : 0));
      } finally {
        res.busy = false;
        res.upconverting = null;
        res.wake();
      }
      if (status === LOCK_STATUS.OK) {
        res.attached = true;
        if (res.opts.usesLvb) res.lvbCurrent = res.lksb.lvbValid;
        // UPCONVERT_FINISHING: the level we waited for is ours to use once, BAST or not;
        // the release gives way.
        if (MODE_ORDER[res.level] < MODE_ORDER[mode]) throw new Error(`assertion: ${res.name} granted ${res.level} for ${mode}`);
        return this.hold(res, mode);
      }
      // Cancelled or refused: give way now if someone asked meanwhile.
      if (res.blocking !== null) this.kick(res);
      if (status === LOCK_STATUS.ECANCEL) {
        if (o.noqueue) throw new FsError('EAGAIN');
        continue; // cancelled to break a conversion deadlock: defer, then ask again
      }
      if (status === LOCK_STATUS.EAGAIN) throw new FsError('EAGAIN');
      throw new FsError('EIO', `cluster lock ${res.name} failed with status ${status}`);
    }
  }

  /**
   * A brand-new name (LKF.LOCAL): the grant is certain, so the holder goes on without
   * waiting for it, and the lock manager is not even told yet. Nobody else can ask for the
   * name before it learns of it from something this node gives up later (the directory
   * entry naming a new inode, under the directory's lock), so every lock made this way is
   * registered (registerNew) before this node downconverts or unlocks any inode lock; its later
   * messages reach its lock daemon after that request, on the same connection (o2cbd
   * handles a LOCAL request synchronously: it is mastered here before the next message is
   * read). A new lock given up before that (a file made and removed here, its inode's locks
   * dropped) never costs a request. Until registered and granted, `busy` keeps any other
   * request from being sent, and holders at up to the level on its way go on (`certain`).
   * A refusal (the daemon gone or fencing us) is reported; the mount is being torn down
   * then anyway.
   */
  private lockNew(res: LockRes, mode: 'PR' | 'EX'): LockHandle {
    res.certain = mode;
    res.exclusiveSinceNew = mode === 'EX';
    this.unregistered.add(res);
    return this.hold(res, mode);
  }

  /**
   * Before `res` leaves a level: the new locks are told first if it is an inode lock (M).
   * Only those cover what names an inode (directory and orphan directory entries), so only
   * giving one up can tell another node a new inode's name.
   */
  private registerNewBefore(res: LockRes): void {
    if (res.type === 'M') this.registerNew();
  }

  /** Was `res` made by lockNew and not told to the lock manager yet? */
  isUnregistered(res: LockRes): boolean {
    return this.unregistered.has(res);
  }

  /** Tells the lock manager of every lock made by lockNew so far (see there). */
  registerNew(): void {
    const all = [...this.unregistered];
    this.unregistered.clear();
    for (const res of all) this.sendNew(res);
  }

  private sendNew(res: LockRes): void {
    const mode = res.certain;
    if (mode === null) throw new Error(`assertion: new lock ${res.name} registered with no level`);
    void this.request(res, mode, LKF.LOCAL).then((status) => {
      res.busy = false;
      res.upconverting = null;
      res.certain = null;
      if (status === LOCK_STATUS.OK) {
        res.attached = true;
        if (MODE_ORDER[res.level] < MODE_ORDER[mode]) throw new Error(`assertion: ${res.name} granted ${res.level} for ${mode}`);
      } else {
        res.exclusiveSinceNew = false;
        this.onDownconvertError(res.name, new FsError('EIO', `a new lock was refused (status ${status}) after its holder went on`));
      }
      res.wake();
      if (res.blocking !== null) this.kick(res);
    }).catch((e: Error) => this.onDownconvertError(res.name, e));
  }

  /**
   * A lock made by lockNew that the lock manager was never told of, with no holder left:
   * forgotten here, as if unlocked (nobody else knows it). False if it is not such a lock.
   */
  private forgetUnregistered(res: LockRes): boolean {
    if (!this.unregistered.has(res) || res.holdersEx + res.holdersPr > 0) return false;
    this.unregistered.delete(res);
    if (this.resources.get(res.name) === res) this.resources.delete(res.name);
    this.forgotten(res);
    return true;
  }

  /** A new lock left unregistered and out of the cache: as if it had been unlocked. */
  private forgotten(res: LockRes): void {
    res.busy = false;
    res.upconverting = null;
    res.certain = null;
    res.exclusiveSinceNew = false;
    res.wake();
  }

  private hold(res: LockRes, mode: 'PR' | 'EX'): LockHandle {
    if (mode === 'EX') res.holdersEx += 1;
    else res.holdersPr += 1;
    let released = false;
    return {
      res,
      mode,
      release: () => {
        if (released) throw new Error(`assertion: lock ${res.name} released twice`);
        released = true;
        if (mode === 'EX') res.holdersEx -= 1;
        else res.holdersPr -= 1;
        if (res.holdersEx < 0 || res.holdersPr < 0) throw new Error(`assertion: ${res.name} holder count below zero`);
        res.wake();
        if (res.blocking !== null) this.kick(res);
      },
    };
  }

  /**
   * Says what went wrong when a downconvert nobody awaits fails (the stack went away, or a
   * checkpoint failed): the lock stays at its level, and the next release tries again.
   */
  onDownconvertError: (name: string, e: Error) => void = (name, e) => process.stderr.write(`o2fs: downconvert of ${name}: ${e.message}\n`);

  private kick(res: LockRes): void {
    this.maybeDownconvert(res).catch((e: Error) => this.onDownconvertError(res.name, e));
  }

  /** Gives up as much of the level as the blocking node needs, once holders allow it. */
  private async maybeDownconvert(res: LockRes): Promise<void> {
    if (res.busy || res.cancelling || res.blocking === null) return;
    const target = highestCompatible(res.blocking);
    if (MODE_ORDER[res.level] <= MODE_ORDER[target]) {
      res.blocking = null;
      res.wake();
      return;
    }
    if (res.holdersEx > 0 || (target === 'NL' && res.holdersPr > 0)) return;
    res.busy = true;
    try {
      // The value first: the hook may drop the caches it is made from (nothing changes them
      // now: no holder is left, and new ones wait while busy).
      this.fillLvb(res);
      await res.opts.onDownconvert?.(target);
      res.exclusiveSinceNew = false;
      this.registerNewBefore(res);
      const status = await this.request(res, target, 0);
      if (status !== LOCK_STATUS.OK) throw new FsError('EIO', `downconvert of ${res.name} failed with status ${status}`);
      if (target === 'NL') res.lvbCurrent = false;
    } finally {
      res.busy = false;
      res.wake();
    }
    // A BAST for a higher level may have come while we converted: it still stands.
    if (mayContinue(res.blocking, res.level)) res.blocking = null;
    res.wake();
    if (res.blocking !== null) this.kick(res);
  }

  /**
   * Gives a resource back to the stack entirely (unlock) and forgets it, once nobody here
   * holds it or has a request in flight; a later lock() starts afresh. For per-inode locks
   * whose inode we let go of. `keep` says, while it waits, that the lock is wanted here
   * again after all: then it stays. Returns whether it was given back.
   */
  async drop(res: LockRes, keep: () => boolean = () => false): Promise<boolean> {
    for (let round = 0; ; round++) {
      // A new lock nobody was told of goes as soon as its last holder does.
      if (!keep() && this.forgetUnregistered(res)) return true;
      if (!(res.busy || res.cancelling || res.holdersEx + res.holdersPr > 0)) break;
      if (!this.keeps(res) || keep()) return false;
      if (round > 10_000) throw new Error(`assertion: lock ${res.name} never became idle`);
      await res.changed();
    }
    // (dropIfIdle decides at once, on the state just checked.)
    return !keep() && this.dropIfIdle(res, async () => undefined);
  }

  /**
   * Gives a resource back now if nobody here holds or is changing it, else returns false
   * at once. It leaves the cache first (a later lock() makes a new one, which the stack
   * queues behind this one's level until the unlock); then `before` runs (make the disk and
   * caches not need the level: checkpoint, invalidate), then the unlock. For bounding the
   * lock cache (fs/inode-locks.ts). `told`: false for a new lock the lock manager never
   * heard of (lockNew): no other node can take it before this node gives up an inode lock,
   * whose downconvert checkpoints anyway, so only this node's caches need to let go.
   */
  async dropIfIdle(res: LockRes, before: (level: LockMode, told: boolean) => Promise<void>): Promise<boolean> {
    if (this.unregistered.has(res) && res.holdersEx + res.holdersPr === 0 && this.keeps(res)) {
      // It leaves the cache (and the locks to register) first, as below; nobody else knows
      // it, so nobody else can take it while `before` runs.
      this.resources.delete(res.name);
      this.unregistered.delete(res);
      await before(res.certain ?? 'NL', false);
      if (res.holdersEx + res.holdersPr === 0) {
        this.forgotten(res);
        return true;
      }
      // Held again meanwhile through a reference kept elsewhere: it stays, still new.
      this.unregistered.add(res);
      if (!this.resources.has(res.name)) this.resources.set(res.name, res);
      return false;
    }
    if (res.busy || res.cancelling || res.holdersEx + res.holdersPr > 0 || !this.keeps(res)) return false;
    this.resources.delete(res.name);
    if (res.attached) await this.unlockDetached(res, before);
    return true;
  }

  /**
   * Unlocks a resource just taken out of the cache, after `before`; if `before` fails the
   * lock is still ours at the stack, so it goes back in the cache (unless a new one took
   * its place) and the error is thrown.
   */
  private async unlockDetached(res: LockRes, before: (level: LockMode, told: boolean) => Promise<void>): Promise<void> {
    res.busy = true;
    try {
      const flags = this.fillLvb(res);
      try {
        await before(res.level, true);
      } catch (e) {
        if (!this.resources.has(res.name)) this.resources.set(res.name, res);
        throw e;
      }
      await this.unlock(res, flags);
    } finally {
      res.busy = false;
      res.wake();
    }
  }

  /**
   * About to leave EX with a value block: fillLvb writes the value the request will carry;
   * returns the flag an unlock needs to carry it (requests always carry VALBLK).
   */
  private fillLvb(res: LockRes): number {
    if (!res.opts.usesLvb || res.level !== 'EX') return 0;
    res.opts.fillLvb?.(res.lvb);
    res.lvbCurrent = true;
    return LKF.VALBLK;
  }

  /** Gives the resource back to the stack (`flags`: fillLvb's, the value block with it). */
  private async unlock(res: LockRes, flags: number): Promise<void> {
    res.exclusiveSinceNew = false;
    this.registerNewBefore(res);
    await new Promise<number>((resolve) => {
      res.grantWaiter = resolve;
      this.connection().unlock(res.lksb, flags);
    });
    res.attached = false;
    res.lvbCurrent = false;
  }

  /** The resource this node keeps under `name`, if any (none is made). */
  cached(name: string): LockRes | undefined {
    return this.resources.get(name);
  }

  /** Is `res` the resource this node keeps under its name (not dropped or being dropped)? */
  keeps(res: LockRes): boolean {
    return this.resources.get(res.name) === res;
  }

  /** How many resources this node keeps (held, cached or on their way). */
  get cachedCount(): number {
    return this.resources.size;
  }

  /** Drops every lock (umount); resources must have no holders. */
  async shutdown(): Promise<void> {
    // New locks nobody was told of are simply forgotten; those whose grants are on the way come in first.
    for (const res of [...this.unregistered]) {
      if (res.holdersEx + res.holdersPr > 0) throw new Error(`assertion: lock ${res.name} still held at shutdown`);
      this.forgetUnregistered(res);
    }
    for (const res of this.resources.values()) {
      for (let round = 0; res.busy; round++) {
        if (round > 10_000) throw new Error(`assertion: lock ${res.name} stayed busy at shutdown`);
        await res.changed();
      }
    }
    for (const res of this.resources.values()) {
      if (res.holdersEx + res.holdersPr > 0) throw new Error(`assertion: lock ${res.name} still held at shutdown`);
      if (res.attached) await this.unlock(res, this.fillLvb(res));
    }
    this.resources.clear();
  }
}
