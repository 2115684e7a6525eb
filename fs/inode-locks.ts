// Per-inode metadata locks (M) on cluster mounts, taken as an operation reads inodes.
//
// What an M lock covers: the inode's block and every block reached through it (extent,
// directory and xattr blocks; an allocator's group descriptors and bitmaps). PR to read
// them, EX to change them; file data too, since reads and writes find it through the
// extent tree. Files no M lock covers (`uncovered`): the slot map (S), each slot's journal,
// local alloc and truncate log (that slot's journal lock J: only its owner and its
// recovery touch them), the system directory and the heartbeat file (written by mkfs only).
//
// Which inodes an operation touches is known only as it runs (a lookup finds the child in
// the parent's directory; an allocation finds the allocator it needs), so a Transaction
// asks for the lock of each inode it reads (Volume.inodeGuard -> reading()) and of each it
// changes (writing(); a new inode is changed before anyone could read it). Each operation
// runs in a scope (run()): every lock it takes stays held until it ends, all at the scope's
// mode (EX for changes, PR for reads), so operations are serializable across the cluster
// (strict two-phase locking), and the journal's checkpoint on downconvert (below) makes
// what an operation committed visible to the next holder.
//
// Names: as OCFS2's, a lock's name holds the inode's generation, so the locks of a freed
// inode and of the next inode in its block never meet. The generation of an inode not yet
// locked comes from an unlocked read of its block, checked once the lock is held (freed and
// reused meanwhile: take the new one's lock instead, and drop what was cached under the
// old one). A freed inode's block is written back cleared (fs/inode-alloc.ts) and belongs
// to its allocator, so no inode lock covers it: the check reads it from the disk when this
// node only has a cached copy of it. Each scope records the generation every lock it holds
// names (Scope.named): an inode read under a lock of another generation starts the
// operation over under the right one (readInode), and a new inode created in a block whose
// old generation's lock the scope holds gets its own lock. An inode created here is changed
// before anyone could know its generation: its lock is mastered here without asking anyone
// (LKF.LOCAL, ocfs2_create_new_inode_locks), which saves a create the mastery round trips;
// the grant is certain, so the creator does not wait for it (DlmGlue.lockNew), and asks for
// the new inode's open lock at the same moment (host.created).
//
// Deadlocks: locks are waited for only in ascending block number (lock-names.ts: one rank,
// ascending name order). A lock that sorts below one the scope holds, or wanted while the
// scope holds a lock of a later rank (an open lock, pin()), is only tried (NOQUEUE); if it
// is busy the operation gives up everything it holds (Restart) and starts over, first
// taking, in order, every lock it has learned it needs. The set only grows, so an
// operation starts over at most once per lock it needs. Operations must therefore be
// free of effects outside their transaction until their last inode read (the replies they
// build come last); a readdir's reply buffer is reset on each start.
//
// Downconverts: before a lock gives up EX the journal is committed and checkpointed (what
// we changed under it is in place; the whole journal, not just this inode's part); before
// it drops to NL whatever it covers is dropped from the caches: the blocks it covered
// (below) and the kernel's attributes of the inode and names in it (fs/posix.ts).
//
// Value blocks (fs/inode-lvb.ts): an M lock carries the inode's attributes. A node leaving
// EX writes them from the image it holds (before the caches go); a node granted the lock
// trusts them from that grant until it changes the inode itself, so the generation check
// under a new lock and a stat of an inode another node changed last need no read.
//
// Which cached blocks a lock covers: every block that enters the cache during an operation
// is tagged with each inode the operation holds (owners()); its true owner is among them,
// because a block is only reached through its inode, read under its lock first. Dropping
// a lock drops every block tagged with its inode: a superset of what it covered, so never
// a stale block, at the price of some blocks re-read. A block a transaction frees leaves
// the cache at commit (it could be handed to another inode next); a block entering the
// cache outside any operation (a checkpoint's write) is kept only if already tagged.
//
// Extent locks (E): a file of at least EXTENT_CHUNK_BYTES has its data covered by range
// locks too, one per chunk. A write that only overwrites data already there (no size
// change, no allocation, mtime fresh: see fs/posix.ts) holds M at PR and its chunks at EX,
// so nodes writing disjoint ranges of one file go on in parallel; a reader holds M and its
// chunks at PR. Any other change of the file holds M at EX, which excludes both. A file's
// size changes only under M EX, so every holder of M at PR agrees on whether E applies.
// E comes after M in the lock order: once a scope holds E it only tries M locks.
//
// The lock cache is bounded: a node keeps the locks of at most `maxCached` inodes (held or
// cached). Beyond that, the least recently used idle ones are given back to the stack,
// each as a downconvert to nothing would (checkpoint if at EX, drop what it covered), with
// their extent locks. OCFS2 drops an inode's locks when the VFS evicts the inode; here the
// kernel's references are not the measure (the open locks follow those, fs/cluster.ts).
//
// Recovery: from the stack's word that a node died until its slot is recovered, no lock is
// taken (the dead node's journal may hold what the disk does not say yet). A scope that
// holds locks and would take another, or is granted one meanwhile, starts over and waits.
import { AsyncLocalStorage } from 'node:async_hooks';
import { DlmGlue, LockHandle, LockRes } from './dlmglue';
import { FsError } from './errors';
import { SYSFILE, slotFileName } from './format/constants';
import { InodeLvb, decodeInodeLvb, encodeInodeLvb } from './inode-lvb';
import { LOCK_TYPE, extentLockName, lockName } from './lock-names';
import type { Volume } from './volume';

/** Thrown inside a scope: give up every lock and start the operation over. */
export class Restart extends Error {
  constructor(readonly blkno: number | null, why: string) {
    super(`operation starts over: ${why}`);
  }
}

/** The inodes no M lock covers (the top of this file says what covers them instead). */
export async function uncoveredInodes(vol: Volume): Promise<number[]> {
  const out = [vol.sb.systemDirBlkno, await vol.systemInode(SYSFILE.slotMap), await vol.systemInode(SYSFILE.heartbeat)];
  for (let slot = 0; slot < vol.sb.maxSlots; slot++) {
    for (const kind of [SYSFILE.journal, SYSFILE.localAlloc, SYSFILE.truncateLog] as const) out.push(await vol.systemInode(slotFileName(kind, slot)));
  }
  return out;
}

export interface InodeLocksHost {
  /**
   * The generation in inode `blkno`'s block: read from the disk without a lock (`locked`
   * false: only to name the lock, checked once it is held) or as this node sees it under
   * the lock. Null when the block holds no inode.
   */
  generation(blkno: number, locked: boolean): Promise<number | null>;
  /** Commits and checkpoints this node's journal: the disk says what we changed. */
  checkpoint(): Promise<void>;
  /** Inode `blkno`'s lock drops to NL: forget the blocks it covered, and the kernel's attributes and names in it. */
  invalidate(blkno: number): void;
  /** One of inode `blkno`'s extent locks leaves the level it had: another node may change those bytes next. */
  extentLeft?(blkno: number): void;
  /**
   * Inode `blkno` (of `generation`) as this node holds it now, from what it has at hand
   * (no I/O): the attributes for its lock's value block as it leaves EX, or null when this
   * node has no image of it (or it is no longer that inode).
   */
  attributes?(blkno: number, generation: number): InodeLvb | null;
  /** Has this node an image of block `blkno` at hand (no I/O)? Then a read of it costs nothing. */
  holdsImage?(blkno: number): boolean;
  /**
   * An operation is committing inode `blkno`, which it created (its lock is being made):
   * the open lock can be asked for now, alongside (fs/cluster.ts).
   */
  created?(blkno: number, generation: number): void;
  log(line: string): void;
}

type Mode = 'PR' | 'EX';

interface Scope {
  readonly mode: Mode;
  readonly duringRecovery: boolean;
  readonly held: Map<number, LockHandle>;
  /** The inode generation each held lock names. */
  readonly named: Map<number, number>;
  /** Highest block number held (locks are waited for only above it). */
  top: number;
  /** >0 while the scope holds a lock of a later rank (pin()): M locks are only tried. */
  pinned: number;
  /** Acquisitions run one at a time: each decides "wait or try" on what is held. */
  chain: Promise<void>;
  /** Records a lock in dlmglue's lock-order check. */
  record: (h: LockHandle) => void;
  /** The operation is over: a take still in flight gives its lock back at once. */
  done: boolean;
  /** Extent locks held, by name. */
  readonly extents: Map<string, LockHandle>;
}

const scopes = new AsyncLocalStorage<Scope>();

/** The data range one extent lock covers (and the least size of a file that has them). */
export const EXTENT_CHUNK_BYTES = 4 * 1024 * 1024;

/** How many inodes' locks a node keeps by default (mount option lockcache=N). */
export const INODE_LOCKS_CACHED_DEFAULT = 8192;
/** The least lockcache= allowed (an operation's own locks must fit, with room to spare). */
export const INODE_LOCKS_CACHED_MIN = 16;

/** How many times one operation may start over before it is a bug (a lock it never gets). */
const RESTARTS_MAX = 10_000;

export interface RunOptions {
  /** Runs each attempt inside this (the caller's node-local lock: taken before any M lock). */
  wrap?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** This is the recovery of a dead slot: it does not wait for itself. */
  duringRecovery?: boolean;
}

export class InodeLocks {
  /** Inodes covered by other locks (see the top of this file). */
  private readonly uncovered = new Set<number>();
  /** Nodes the stack declared dead whose slots are not recovered yet. */
  private readonly pending = new Set<number>();
  private pendingWaiters: Array<() => void> = [];
  /** The generation each inode had when this node last held its lock (names its lock). */
  private readonly generations = new Map<number, number>();
  /** The M lock of each inode whose lock this node keeps, least recently taken first. */
  private readonly cached = new Map<number, LockRes>();
  /** Extent locks made per inode (they go with its M lock). */
  private readonly extentRes = new Map<number, Set<LockRes>>();
  /** M locks named for a generation the inode no longer has: given back at the next trim. */
  private retired: Array<{ blkno: number; res: LockRes }> = [];
  private trimming: Promise<void> | null = null;
  /** Starts over, for tests and the bench. */
  restarts = 0;
  /** Where the time goes (logged at unmount): lock takes and downconverts, count and ms. */
  readonly stats = { takes: 0, takeMs: 0, downconverts: 0, checkpointMs: 0, invalidateMs: 0, extentTakes: 0, evicted: 0, lvbTrusted: 0, lvbPublished: 0 };

  constructor(private readonly glue: DlmGlue, private readonly host: InodeLocksHost, readonly maxCached = INODE_LOCKS_CACHED_DEFAULT) {
    if (!(Number.isInteger(maxCached) && maxCached >= INODE_LOCKS_CACHED_MIN)) throw new RangeError(`inode lock cache of ${maxCached} (at least ${INODE_LOCKS_CACHED_MIN})`);
  }

  /** How many inodes' M locks this node keeps now. */
  get cachedInodes(): number {
    return this.cached.size;
  }

  setUncovered(blknos: Iterable<number>): void {
    this.uncovered.clear();
    for (const b of blknos) this.uncovered.add(b);
  }

  /**
   * Runs fn as one operation holding `mode` on every inode it reads or changes; starts it
   * over (from scratch: fn must not have effects outside its transaction until its last
   * inode read) when a lock out of order is busy or a node dies meanwhile.
   */
  async run<T>(mode: Mode, fn: () => Promise<T>, o: RunOptions = {}): Promise<T> {
    if (scopes.getStore()) throw new Error('assertion: inode lock scopes do not nest');
    const learned = new Set<number>();
    const wrap = o.wrap ?? (<U>(f: () => Promise<U>): Promise<U> => f());
    for (let attempt = 1; ; attempt++) {
      if (attempt > RESTARTS_MAX) throw new Error(`assertion: an operation started over ${RESTARTS_MAX} times`);
      if (!o.duringRecovery) await this.recoveryDone();
      try {
        return await wrap(() => this.attempt(mode, fn, learned, o.duringRecovery === true));
      } catch (e) {
        if (!(e instanceof Restart)) throw e;
        this.restarts += 1;
        if (e.blkno !== null) learned.add(e.blkno);
      }
    }
  }

  private attempt<T>(mode: Mode, fn: () => Promise<T>, learned: Set<number>, duringRecovery: boolean): Promise<T> {
    return this.glue.collecting(async (record) => {
      const s: Scope = { mode, duringRecovery, held: new Map(), named: new Map(), top: -1, pinned: 0, chain: Promise.resolve(), record, done: false, extents: new Map() };
      try {
        return await scopes.run(s, async () => {
          for (const b of [...learned].sort((x, y) => x - y)) await this.take(s, b);
          return fn();
        });
      } catch (e) {
        // What it held, it needs: the next attempt takes all of it first, in order.
        if (e instanceof Restart) for (const b of s.held.keys()) learned.add(b);
        throw e;
      } finally {
        // A read still queued (a caller that did not await it) must not outlive the scope.
        s.done = true;
        await s.chain;
        for (const h of s.extents.values()) h.release();
        for (const h of s.held.values()) h.release();
        this.maybeTrim();
      }
    });
  }

  /** A transaction is about to read inode `blkno`: the scope must hold its lock. */
  reading(blkno: number): Promise<void> | undefined {
    if (this.uncovered.has(blkno)) return undefined;
    const s = scopes.getStore();
    if (!s) throw new Error(`assertion: inode ${blkno} read outside an inode lock scope`);
    if (s.held.has(blkno)) return undefined;
    return this.enqueue(s, blkno, null);
  }

  /**
   * Has inode `blkno` of `generation` been this node's alone since it was created here? Its
   * lock was made here at EX (a new name) and has not left EX since, so no other node has
   * read it, looked it up or holds it open (each of those holds its lock first).
   */
  ownSinceCreated(blkno: number, generation: number): boolean {
    return this.glue.cached(lockName(LOCK_TYPE.meta, blkno, generation))?.exclusiveSinceNew === true;
  }

  /**
   * Inode `blkno` of `generation` was freed. If the lock manager never heard of its lock (a
   * new lock: DlmGlue.lockNew), it goes at once, so that it is not told of it later for
   * nothing; a lock others know stays cached (giving it back costs a checkpoint). Called
   * in the scope that freed it: the lock goes when the scope ends (maybeTrim).
   */
  freed(blkno: number, generation: number): void {
    const res = this.glue.cached(lockName(LOCK_TYPE.meta, blkno, generation));
    if (res && this.glue.isUnregistered(res)) this.retired.push({ blkno, res });
  }

  /**
   * A transaction is about to commit a change of inode `blkno` (of `generation`): the scope
   * must hold it at EX. Only an inode the transaction `created` may be unlocked until now
   * (nobody else can know it yet: its lock is made here).
   */
  writing(blkno: number, generation: number, created: boolean): Promise<void> | undefined {
    if (this.uncovered.has(blkno)) return undefined;
    const s = scopes.getStore();
    if (!s) throw new Error(`assertion: inode ${blkno} changed outside an inode lock scope`);
    if (s.mode !== 'EX') throw new Error(`assertion: inode ${blkno} changed in a read-only (PR) scope`);
    const h = s.held.get(blkno);
    if (h && s.named.get(blkno) === generation) {
      // Its value block says what the inode was, not what it becomes.
      h.res.lvbCurrent = false;
      return undefined;
    }
    if (!created) {
      if (h) throw new Error(`assertion: inode ${blkno} (generation ${generation}) changed under the lock of generation ${s.named.get(blkno)}`);
      throw new Error(`assertion: inode ${blkno} changed without being read under its lock`);
    }
    if (h) {
      // An earlier attempt of this operation left the lock of the inode that had this block
      // before (taken again first on starting over): it covers nothing of the new one.
      s.held.delete(blkno);
      s.named.delete(blkno);
      h.release();
      this.retired.push({ blkno, res: h.res });
    }
    this.host.created?.(blkno, generation);
    return this.enqueue(s, blkno, generation);
  }

  /**
   * Inode `blkno` was read as `generation` under this scope's lock. A lock named for another
   * generation covers nothing here: the block was freed and came back as another inode (a
   * value block or an image this node trusted said otherwise). Start over under the right lock.
   */
  readInode(blkno: number, generation: number): void {
    if (this.uncovered.has(blkno)) return;
    const s = scopes.getStore();
    const named = s?.named.get(blkno);
    if (named === undefined || named === generation) return;
    this.generations.set(blkno, generation);
    this.host.invalidate(blkno);
    throw new Restart(blkno, `inode ${blkno} is generation ${generation}, its lock names ${named}`);
  }

  /** A block `owner`'s lock covers is being read: this operation must hold that lock. */
  assertCovered(owner: number, what: string): void {
    if (this.uncovered.has(owner)) return;
    const s = scopes.getStore();
    if (!s?.held.has(owner)) throw new Error(`assertion: ${what} read without the lock of inode ${owner}, which covers it`);
  }

  /**
   * A transaction with changes commits. Inside an operation it must hold its locks at EX:
   * a lock left at PR is given up without a checkpoint (nothing may have changed under it).
   * Outside any operation only blocks no inode lock covers change (the slot map under S).
   */
  committing(): void {
    const s = scopes.getStore();
    if (s && s.mode !== 'EX') throw new Error('assertion: a transaction with changes commits in a read-only (PR) scope');
  }

  /** The inodes whose locks cover a block entering the cache now (Volume's cache tags). */
  owners(blkno: number): readonly number[] | null {
    const s = scopes.getStore();
    if (!s) return null;
    // The block itself, in case it is an inode whose lock is being taken (its generation
    // is read under the lock before the scope records it).
    return [blkno, ...s.held.keys()];
  }

  /**
   * Takes the extent locks of bytes [start, end) of inode `blkno` (whose M this scope
   * holds), in ascending order, at `mode`; held until the scope ends.
   */
  async ranges(blkno: number, generation: number, start: number, end: number, mode: Mode): Promise<void> {
    const s = scopes.getStore();
    if (!s) throw new Error('assertion: extent locks taken outside an inode lock scope');
    if (!s.held.has(blkno)) throw new Error(`assertion: extent locks of inode ${blkno} taken without its M lock`);
    if (mode === 'EX' && s.mode === 'EX') throw new Error('assertion: a scope holding M at EX needs no extent locks');
    if (end <= start) return;
    await s.chain;
    s.pinned += 1; // from now on M locks are only tried (E comes after M)
    for (let chunk = Math.floor(start / EXTENT_CHUNK_BYTES); chunk * EXTENT_CHUNK_BYTES < end; chunk++) {
      const name = extentLockName(blkno, generation, chunk);
      if (s.extents.has(name)) continue;
      const h = await this.glue.lock(this.glue.resource(name, { onDownconvert: async () => this.host.extentLeft?.(blkno) }), mode);
      let mine = this.extentRes.get(blkno);
      if (!mine) this.extentRes.set(blkno, (mine = new Set()));
      mine.add(h.res);
      s.extents.set(name, h);
      s.record(h);
      this.stats.extentTakes += 1;
    }
  }

  /**
   * The attributes of inode `blkno` from its lock's value block, taking the lock in this
   * scope as a read would; null when this node holds an image of the inode (reading it
   * costs nothing) or the value cannot be trusted (read the inode block).
   */
  async attributes(blkno: number): Promise<InodeLvb | null> {
    const s = scopes.getStore();
    if (!s) throw new Error(`assertion: inode ${blkno} read outside an inode lock scope`);
    if (this.uncovered.has(blkno) || !this.host.holdsImage) return null;
    await this.reading(blkno);
    const h = s.held.get(blkno);
    const generation = this.generations.get(blkno);
    if (!h || generation === undefined) throw new Error(`assertion: inode ${blkno} not held after its lock was taken`);
    if (this.host.holdsImage(blkno)) return null;
    const lvb = this.trustedLvb(h.res, generation);
    if (lvb) this.stats.lvbTrusted += 1;
    return lvb;
  }

  /** What `res`'s value block says, if it is current and about this generation of the inode. */
  private trustedLvb(res: LockRes, generation: number): InodeLvb | null {
    if (!res.lvbCurrent || !res.lksb.lvbValid) return null;
    const lvb = decodeInodeLvb(res.lvb);
    return lvb && lvb.generation === generation ? lvb : null;
  }

  /** Runs fn while the scope holds a lock of a later rank (an open lock): M locks are only tried. */
  async pin<T>(fn: () => Promise<T>): Promise<T> {
    const s = scopes.getStore();
    if (!s) return fn();
    s.pinned += 1;
    try {
      return await fn();
    } finally {
      s.pinned -= 1;
    }
  }

  /** `created`: the generation of an inode this scope created (null: an existing inode). */
  private enqueue(s: Scope, blkno: number, created: number | null): Promise<void> {
    const p = s.chain.then(() => (s.held.has(blkno) ? undefined : this.take(s, blkno, created)));
    s.chain = p.catch(() => undefined);
    return p;
  }

  private async take(s: Scope, blkno: number, created: number | null = null): Promise<void> {
    const wait = blkno > s.top && s.pinned === 0;
    for (let round = 0; ; round++) {
      if (round > 100) throw new Error(`assertion: the generation of inode ${blkno} never settled`);
      // (An inode created here is nobody else's: no recovery can concern it.)
      if (!s.duringRecovery && created === null && this.pending.size > 0) throw new Restart(blkno, 'a node died');
      const generation = created ?? this.generations.get(blkno) ?? (await this.host.generation(blkno, false)) ?? 0;
      let h: LockHandle;
      const t0 = performance.now();
      try {
        h = await this.glue.lock(this.resource(blkno, generation), s.mode, { noqueue: !wait, local: created !== null });
      } catch (e) {
        if (!wait && e instanceof FsError && e.errno === 'EAGAIN') throw new Restart(blkno, `inode ${blkno} is busy`);
        throw e;
      } finally {
        this.stats.takes += 1;
        this.stats.takeMs += performance.now() - t0;
      }
      // Under the lock: is the inode still the one the name says? (Freed and reused since we
      // last held it, or since the unlocked read.) A value block we may trust says yes
      // without a read: only a holder of this very name at EX wrote it, and a free of the
      // inode writes version 0.
      if (created !== null) h.res.lvbCurrent = false;
      const now = created ?? (this.trustedLvb(h.res, generation) ? generation : null) ?? (await this.host.generation(blkno, true)) ?? generation;
      if (now !== generation) {
        h.release();
        this.retired.push({ blkno, res: h.res });
        this.generations.set(blkno, now);
        // What this node keeps from under the old generation's lock, the new one does not cover.
        this.host.invalidate(blkno);
        continue;
      }
      this.generations.set(blkno, generation);
      const before = this.cached.get(blkno);
      if (before !== undefined && before !== h.res) this.retired.push({ blkno, res: before });
      this.cached.delete(blkno);
      this.cached.set(blkno, h.res);
      if (s.done) {
        h.release();
        throw new Restart(null, 'the operation ended while its lock was on the way');
      }
      s.held.set(blkno, h);
      s.named.set(blkno, generation);
      s.top = Math.max(s.top, blkno);
      s.record(h);
      // Granted once DLM recovery freed what the dead node held: not ours to read yet.
      if (!s.duringRecovery && created === null && this.pending.size > 0) throw new Restart(null, 'a node died');
      return;
    }
  }

  private resource(blkno: number, generation: number): LockRes {
    const res: LockRes = this.glue.resource(lockName(LOCK_TYPE.meta, blkno, generation), {
      usesLvb: true,
      // Leaving EX (before the downconvert drops the caches): what the inode is now, for the next holder.
      fillLvb: (lvb) => {
        const attrs = this.host.attributes?.(blkno, generation) ?? null;
        encodeInodeLvb(lvb, attrs);
        if (attrs) this.stats.lvbPublished += 1;
      },
      onDownconvert: async (to) => {
        const t0 = performance.now();
        // Leaving PR: nothing changed under it since the EX before it was given up (and
        // checkpointed); a scope at PR on a cached EX leaves the level at EX.
        if (res.level === 'EX') await this.host.checkpoint();
        const t1 = performance.now();
        if (to === 'NL') this.host.invalidate(blkno);
        this.stats.downconverts += 1;
        this.stats.checkpointMs += t1 - t0;
        this.stats.invalidateMs += performance.now() - t1;
      },
    });
    return res;
  }

  // --- the bounded lock cache -----------------------------------------------------------------

  /** Resolves once no trim is in progress (unmount waits before dropping every lock). */
  async settle(): Promise<void> {
    while (this.trimming) await this.trimming;
  }

  private maybeTrim(): void {
    if (this.trimming || (this.cached.size <= this.maxCached && this.retired.length === 0)) return;
    this.trimming = this.trim()
      .catch((e: Error) => this.host.log(`giving back cached inode locks: ${e.message}`))
      .finally(() => { this.trimming = null; });
  }

  /** Gives back retired locks, then the least recently used idle ones down to 90% of the bound. */
  private async trim(): Promise<void> {
    const retired = this.retired;
    this.retired = [];
    for (const { blkno, res } of retired) await this.evict(blkno, res);
    const target = Math.floor(this.maxCached * 0.9);
    for (const [blkno, res] of [...this.cached]) {
      if (this.cached.size <= target) break;
      await this.evict(blkno, res);
    }
  }

  /** Gives back inode `blkno`'s lock `res` (and its extent locks) if nobody here uses it. */
  private async evict(blkno: number, res: LockRes): Promise<void> {
    const dropped = this.glue.dropIfIdle(res, async (level, told) => {
      if (level === 'EX' && told) await this.host.checkpoint();
      if (level !== 'NL') this.host.invalidate(blkno);
    });
    // dropIfIdle decided at once; the cache says so at once (a take meanwhile adds it back).
    if (this.cached.get(blkno) === res && !this.glue.keeps(res)) {
      this.cached.delete(blkno);
      this.generations.delete(blkno);
    }
    if (!(await dropped)) return;
    this.stats.evicted += 1;
    const extents = this.extentRes.get(blkno);
    if (!extents || this.cached.has(blkno)) return;
    for (const e of [...extents]) if (await this.glue.dropIfIdle(e, async () => this.host.extentLeft?.(blkno))) extents.delete(e);
    if (extents.size === 0) this.extentRes.delete(blkno);
  }

  // --- recovery of dead nodes ----------------------------------------------------------------

  /** The stack says `node` died: no lock is taken until recovered(node). */
  nodeDown(node: number): boolean {
    if (this.pending.has(node)) return false;
    this.pending.add(node);
    return true;
  }

  recovered(node: number): void {
    this.pending.delete(node);
    if (this.pending.size > 0) return;
    const w = this.pendingWaiters;
    this.pendingWaiters = [];
    for (const f of w) f();
  }

  get pendingNodes(): number[] {
    return [...this.pending];
  }

  recoveryDone(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.pendingWaiters.push(resolve));
  }
}
