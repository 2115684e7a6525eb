// What a mount on a cluster stack adds to a local one (issue 6):
//
//   - Per-inode metadata locks (M), taken as operations read and change inodes
//     (fs/inode-locks.ts: coverage, lock order, starting over, downconverts).
//   - Open locks (O per inode and generation): a node holds O at PR while the kernel
//     references the inode (taken under the inode's M lock before the reply that gives the
//     kernel the inode), and keeps the level cached after. The node removing the last link
//     frees the inode only if O at EX is grantable at once (NOQUEUE, with NOQUEUEBAST so
//     that nodes merely caching the level give it up; tried three times within ~15 ms):
//     otherwise someone still has it open and it goes to the orphan directory. An inode no
//     other node ever knew (its M lock made here at EX and never below since) needs no
//     open lock to be freed. The name carries the inode's generation, so the open lock of
//     an inode this node just created is new to every node: it is mastered here without
//     asking anyone (LKF.LOCAL), and the lock manager hears of it only when this node gives
//     up an inode lock (fs/dlmglue.ts lockNew): a file made and removed here costs none.
//   - Orphans are freed at their last use, as OCFS2 does at the last iput: the node that
//     parked an inode in its orphan directory tries once its kernel lets go of it, and a node
//     that got a BAST at EX on an inode's open lock while referencing it (someone tried to
//     free it: OCFS2's MAYBE_ORPHANED) tries at its own last use; each frees it only if no
//     other node holds it open (the same NOQUEUE try at EX, made before any inode lock and
//     outside the node's exclusive section, tried five times within ~260 ms). What nobody
//     freed that way (a node died, or the try lost a race) is left to the scan.
//   - Orphan scan: every ORPHAN_SCAN_MS, ONE node of the cluster scans (OCFS2's orphan scan:
//     each node takes the P lock at EX; its value block counts the scans done; a node that
//     finds the count moved since it last looked leaves this period to whoever moved it).
//     The scan reads every slot's orphan directory under PR; only if one names an inode
//     this node does not reference does it look again under EX and free each orphan nobody
//     holds open anywhere. (A scan at EX every 5 s on every node would bounce the orphan
//     directories' locks between idle nodes.) At unmount the kernel references nothing, so
//     the last node out frees what is left.
//   - Recovery of dead nodes: the stack's recovery callback (after DLM recovery) and every
//     mount (for slots left by nodes no longer heartbeating) replay the dead slot's journal,
//     return its local alloc and truncate log, keep its orphans for the scan, and free the
//     slot; under S and the dead slot's journal lock J, both EX (lock order: S, J, M, O).
//     Every mount holds its own slot's J at EX for as long as it is mounted, so J is
//     grantable only once its owner is gone: recovery asks for it without waiting and
//     leaves a slot alone whose owner still holds it (alive after all). From the moment the
//     stack says a node died (onNodeDown, before the DLM can grant anything the dead node
//     held) until its slot is recovered, no inode lock is taken here: the disk does not say
//     what the dead node committed to its journal, and a change made from the disk's older
//     state would be overwritten by the replay (or overwrite it at our next checkpoint).
//     Every node waits, whichever of them does the recovery (OCFS2's
//     ocfs2_wait_for_recovery before cluster locks).
//   - The kernel may cache names and attributes only while the inode locks that cover them
//     are held: a drop to NL invalidates them (fs/posix.ts, invalidateKernel).
import type { AllocContext } from './alloc';
import { listDirectory } from './dir';
import { DlmGlue, LockHandle, LockRes } from './dlmglue';
import type { InodeLocks } from './inode-locks';
import { FsError } from './errors';
import { INODE_FL, SUPERBLOCK_BLKNO, SYSFILE, orphanName, slotFileName } from './format/constants';
import { nodeIsAlive } from './heartbeat-lite';
import type { Journal } from './journal';
import { LOCK_TYPE, lockName } from './lock-names';
import { releaseOrphan } from './namei';
import { recoverSlot } from './recovery';
import { readSlotMap, writeSlotMap } from './slot-map';
import { Transaction } from './transaction';
import type { Volume } from './volume';

/** How often each node looks for orphans nobody holds open any more. */
export const ORPHAN_SCAN_MS = 5_000;
/** Pauses between the tries of a freeing node for an inode's open lock at EX. */
const OPEN_TRY_DELAYS_MS = [2, 10];
/**
 * The same for a free at last use (freeOrphan), which holds nothing while it waits: it
 * can wait longer for nodes that are slow to give up a level they only cache.
 */
const LAST_USE_TRY_DELAYS_MS = [2, 10, 50, 200];
/** How often a read-only mount looks whether a dead node's slot has been recovered. */
const RO_RECOVERY_POLL_MS = 250;

export interface ClusterHost {
  readonly vol: Volume;
  readonly glue: DlmGlue;
  readonly locks: InodeLocks;
  readonly thisNode: number;
  readonly slot: number;
  journal(): Journal | null;
  /** Is the inode referenced by this node's kernel or open here? */
  inUseLocally(blkno: number): boolean;
  /** Runs fn excluding this node's own filesystem requests (taken before any inode lock). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** A read-only mount: it never writes, and leaves recovery to the read-write nodes. */
  readonly readOnly: boolean;
  log(line: string): void;
}

export class ClusterState {
  private readonly superRes: LockRes;
  /**
   * Open locks of inodes referenced here, by inode block: held at PR (a holder, so a BAST
   * cannot take them) until the kernel forgets the inode. Then the level stays cached with
   * no holder: a later lookup costs nothing, and a node that wants to free the inode nudges
   * it away (NOQUEUEBAST).
   */
  private readonly openLocks = new Map<number, { res: LockRes; held: LockHandle | null; dropped: boolean }>();
  /**
   * Open locks cached with no holder (the kernel forgot the inode), least recently
   * forgotten first; beyond the inode lock cache's bound the oldest are given back.
   */
  private readonly idleOpens = new Map<number, LockRes>();
  /** Open locks being given back (stop() waits for them). */
  private readonly openDrops = new Set<Promise<unknown>>();
  private readonly pendingOpens = new Set<Promise<void>>();
  private scanTimer: NodeJS.Timeout | null = null;
  /** The periodic scan in progress (stop() waits for it: it holds locks). */
  private scanning: Promise<void> | null = null;
  /** The P lock: its value block's first 4 bytes count the periodic scans (little-endian). */
  private readonly scanRes: LockRes;
  /** The count as this node last saw it (-1: not yet). */
  private scanSeqSeen = -1;
  private recoveries: Promise<void> = Promise.resolve();
  /**
   * Inodes referenced here whose open lock another node asked for at EX: it tried to free
   * them, so they may be orphans now (OCFS2's MAYBE_ORPHANED); their last use here checks.
   * Inode block -> generation.
   */
  private readonly maybeOrphans = new Map<number, number>();
  /** Orphans this node freed (logged at unmount). */
  readonly orphansFreed = { atLastUse: 0, byScan: 0 };
  private stopped = false;
  /** Our own slot's journal lock, held at EX while mounted. */
  private ownJournal: LockHandle | null = null;

  constructor(private readonly h: ClusterHost) {
    this.superRes = h.glue.resource(lockName(LOCK_TYPE.super, SUPERBLOCK_BLKNO));
    this.scanRes = h.glue.resource(lockName(LOCK_TYPE.orphanScan, SUPERBLOCK_BLKNO), { usesLvb: true });
  }

  /** The per-inode lock scopes every operation runs in. */
  get locks(): InodeLocks {
    return this.h.locks;
  }

  /** Slot `slot`'s journal lock (on its journal inode). */
  private async journalRes(slot: number): Promise<LockRes> {
    return this.h.glue.resource(lockName(LOCK_TYPE.journal, await this.h.vol.systemInode(slotFileName(SYSFILE.journal, slot))));
  }

  /** Mount, holding S: take our slot's journal lock for as long as we are mounted. */
  async claimJournal(): Promise<void> {
    if (this.ownJournal) throw new Error('assertion: journal lock taken twice');
    this.ownJournal = await this.h.glue.lock(await this.journalRes(this.h.slot), 'EX', { noqueue: true }).catch((e) => {
      throw e instanceof FsError && e.errno === 'EAGAIN' ? new FsError('EBUSY', `the journal of slot ${this.h.slot} is locked by a live node`) : e;
    });
  }

  /** Unmount: our slot is free again. */
  releaseJournal(): void {
    this.ownJournal?.release();
    this.ownJournal = null;
  }

  /** The stack says `node` died: no inode lock is taken until its slot is recovered. */
  nodeDown(node: number): void {
    if (node === this.h.thisNode) throw new Error('assertion: told of our own death');
    if (this.h.locks.nodeDown(node)) this.h.log(`node ${node} died: holding I/O until its slot is recovered`);
  }

  /** Waits (at most `ms`) until no recovery is pending; false if some still is. */
  async waitRecoveries(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); });
    await Promise.race([this.h.locks.recoveryDone(), timeout]);
    clearTimeout(timer);
    const pending = this.h.locks.pendingNodes;
    if (pending.length > 0) this.h.log(`recovery of node(s) ${pending.join(', ')} still pending`);
    return pending.length === 0;
  }

  /**
   * The inode just became referenced here: take its open lock (awaited by flushOpens()).
   * `created`: this operation created the inode (its open lock is new to everyone).
   */
  noteInUse(blkno: number, generation: number, created = false): void {
    const name = lockName(LOCK_TYPE.open, blkno, generation);
    const had = this.openLocks.get(blkno);
    if (had?.res.name === name) return;
    // Held for an earlier inode in this block (one whose creation never committed): let it go.
    if (had) this.giveBackOpen(blkno, this.letGo(blkno, had));
    this.idleOpens.delete(blkno);
    const entry = { res: this.openRes(blkno, generation), held: null as LockHandle | null, dropped: false };
    this.openLocks.set(blkno, entry);
    const p: Promise<void> = this.h.glue.lock(entry.res, 'PR', { local: created }).then((held) => {
      if (entry.dropped) held.release();
      else entry.held = held;
    }, (e) => {
      if (this.openLocks.get(blkno) === entry) this.openLocks.delete(blkno);
      this.h.log(`open lock of inode ${blkno}: ${(e as Error).message}`);
    }).finally(() => this.pendingOpens.delete(p));
    this.pendingOpens.add(p);
  }

  /** Inode `blkno`'s open lock (of `generation`). */
  private openRes(blkno: number, generation: number): LockRes {
    const name = lockName(LOCK_TYPE.open, blkno, generation);
    return this.h.glue.resource(name, {
      onBlocked: (level) => {
        if (level === 'EX' && this.openLocks.get(blkno)?.res.name === name) this.maybeOrphans.set(blkno, generation);
      },
    });
  }

  /** The generation of inode `blkno` if another node maybe orphaned it while referenced here (asked once). */
  takeMaybeOrphan(blkno: number): number | undefined {
    const generation = this.maybeOrphans.get(blkno);
    this.maybeOrphans.delete(blkno);
    return generation;
  }

  /** Waits for open locks requested so far (called before an operation lets go of its inode locks). */
  async flushOpens(): Promise<void> {
    while (this.pendingOpens.size > 0) await Promise.all([...this.pendingOpens]);
  }

  /** Nobody references the inode here any more: let go of its open lock (the level stays cached). */
  dropOpen(blkno: number): void {
    const entry = this.openLocks.get(blkno);
    if (!entry) return;
    this.idleOpens.set(blkno, this.letGo(blkno, entry));
    while (this.idleOpens.size > this.h.locks.maxCached) {
      const [oldest, res] = this.idleOpens.entries().next().value as [number, LockRes];
      this.idleOpens.delete(oldest);
      this.giveBackOpen(oldest, res);
    }
  }

  /** Releases inode `blkno`'s open-lock entry (a grant still on its way is released on arrival); returns its resource. */
  private letGo(blkno: number, entry: { res: LockRes; held: LockHandle | null; dropped: boolean }): LockRes {
    this.openLocks.delete(blkno);
    entry.dropped = true;
    entry.held?.release();
    entry.held = null;
    return entry.res;
  }

  /**
   * Gives an open lock nobody here holds back to the DLM (no cache to drop). A request
   * still in flight (a grant released on arrival) is waited for first; if the inode is
   * referenced here again meanwhile, the lock stays.
   */
  private giveBackOpen(blkno: number, res: LockRes): void {
    const p: Promise<unknown> = this.h.glue.drop(res, () => this.openLocks.get(blkno)?.res === res)
      .catch((e: Error) => this.h.log(`giving back the open lock of inode ${blkno}: ${e.message}`))
      .finally(() => this.openDrops.delete(p));
    this.openDrops.add(p);
  }

  /**
   * May the last link's removal free the inode now? Only if no node holds it open: O at EX
   * without waiting, unless no other node ever knew the inode (ownSinceCreated). The caller
   * holds the inode's M at EX. `then` runs while O is held (so any inode lock it needs is
   * only tried: O comes after M).
   */
  async ifUnusedEverywhere(blkno: number, generation: number, then: () => Promise<void>): Promise<boolean> {
    const res = this.openRes(blkno, generation);
    if (this.h.locks.ownSinceCreated(blkno, generation)) {
      await then();
      this.giveBackUnlessReferenced(blkno, res);
      this.h.locks.freed(blkno, generation);
      return true;
    }
    const held = await this.tryOpenExclusive(res);
    if (!held) return false;
    try {
      await this.h.locks.pin(then);
    } finally {
      held.release();
      this.giveBackUnlessReferenced(blkno, res);
    }
    return true;
  }

  /**
   * O at EX if it is grantable now (NOQUEUE), else null. Nodes that only cache the level
   * (they looked the inode up once) give it up when nudged; a node that references it
   * keeps it. So: a try, and one more after each of `delaysMs`.
   */
  private async tryOpenExclusive(res: LockRes, delaysMs: readonly number[] = OPEN_TRY_DELAYS_MS): Promise<LockHandle | null> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.h.glue.lock(res, 'EX', { noqueue: true, nudge: true });
      } catch (e) {
        if (!(e instanceof FsError && e.errno === 'EAGAIN')) throw e;
        if (attempt >= delaysMs.length) return null;
        await new Promise((resolve) => setTimeout(resolve, delaysMs[attempt]));
      }
    }
  }

  /**
   * Inode `blkno`'s open lock `res` goes back to the DLM in the background (nobody waits
   * for the lock of an inode freed or still used elsewhere), unless referenced here again.
   */
  private giveBackUnlessReferenced(blkno: number, res: LockRes): void {
    if (this.openLocks.get(blkno)?.res === res) return;
    if (this.idleOpens.get(blkno) === res) this.idleOpens.delete(blkno);
    this.giveBackOpen(blkno, res);
  }

  /**
   * The last reference here to inode `blkno` (of `generation`), which may be an orphan, is
   * gone: if it is one, free it now (its orphan directory entry with it) unless another
   * node holds it open, as OCFS2 does at the last iput; the orphan scan frees what this
   * leaves. Returns whether it freed the inode.
   *
   * An inode no other node ever knew (ownSinceCreated: the files this node made and
   * removed) needs no open lock. Otherwise the open lock is tried first, before any inode
   * lock and outside this node's exclusive section, so that this node's requests do not
   * wait for that round trip to the stack. That reverses the lock order (M, then O) and is
   * safe for an inode with no links only: the one request that waits for O while holding M
   * is a lookup or a create giving the kernel the inode (noteInUse), and nothing can look
   * up an inode that has no name. So the inode is checked, under its M at EX, to have none
   * (and to be the same inode).
   */
  async freeOrphan(ctx: AllocContext, blkno: number, generation: number): Promise<boolean> {
    const vol = this.h.vol;
    const res = this.openRes(blkno, generation);
    let held: LockHandle | null = null;
    if (!this.h.locks.ownSinceCreated(blkno, generation)) {
      held = await this.tryOpenExclusive(res, LAST_USE_TRY_DELAYS_MS);
      if (!held) return false;
    }
    try {
      return await this.h.locks.run('EX', async () => {
        const tx = new Transaction(vol);
        const i = await tx.getInode(blkno);
        if (!(i.flags & INODE_FL.valid) || i.generation !== generation || !(i.flags & INODE_FL.orphaned) || i.links !== 0) return false;
        if (i.orphanedSlot >= vol.sb.maxSlots) throw new FsError('EIO', `orphan inode ${blkno} names slot ${i.orphanedSlot}`);
        const orphanDir = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.orphanDir, i.orphanedSlot)));
        if (this.h.inUseLocally(blkno)) return false;
        // Another node took the inode's lock since we looked (its orphan scan): leave it to the scan.
        if (!held && !this.h.locks.ownSinceCreated(blkno, generation)) return false;
        await releaseOrphan(tx, ctx, orphanDir, orphanName(blkno), i, `orphan directory of slot ${i.orphanedSlot}`);
        await tx.commit();
        this.orphansFreed.atLastUse += 1;
        this.h.locks.freed(blkno, generation);
        return true;
      }, { wrap: (f) => this.h.exclusive(f) });
    } finally {
      held?.release();
      this.giveBackUnlessReferenced(blkno, res);
    }
  }

  /** Starts the periodic orphan scan. */
  start(ctx: AllocContext): void {
    this.scanTimer = setInterval(() => {
      if (this.scanning) return;
      this.scanning = this.periodicScan(ctx).then(() => undefined, (e) => this.h.log(`orphan scan: ${(e as Error).message}`)).finally(() => {
        this.scanning = null;
      });
    }, ORPHAN_SCAN_MS);
    this.scanTimer.unref();
  }

  /**
   * One period's turn: scans only if nobody has since this node last looked (the P lock's
   * count is what we saw), and counts the scan. Returns whether this node scanned.
   */
  async periodicScan(ctx: AllocContext): Promise<boolean> {
    const p = await this.h.glue.lock(this.scanRes, 'EX');
    try {
      const seq = p.res.lksb.lvbValid ? p.res.lvb.readUInt32LE(0) : 0;
      if (seq !== this.scanSeqSeen) {
        this.scanSeqSeen = seq;
        return false;
      }
      this.scanSeqSeen = (seq + 1) >>> 0;
      p.res.lvb.writeUInt32LE(this.scanSeqSeen, 0);
    } finally {
      p.release();
    }
    await this.orphanScan(ctx);
    return true;
  }

  /** Stops the periodic scan; resolves once a scan in progress has let go of its locks. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.scanTimer) clearInterval(this.scanTimer);
    this.scanTimer = null;
    await this.scanning;
    // The session is over: the kernel references nothing (it sends no FORGET at unmount).
    await this.flushOpens();
    for (const blkno of [...this.openLocks.keys()]) this.dropOpen(blkno);
    await Promise.all([...this.openDrops]);
  }

  /** Frees orphans (of every slot) that no node holds open. Returns how many. */
  async orphanScan(ctx: AllocContext): Promise<number> {
    const locks = this.h.locks;
    const wrap = <T>(fn: () => Promise<T>): Promise<T> => this.h.exclusive(fn);
    // A look under PR first: most scans find nothing, and must not take EX from others.
    const candidates = (await locks.run('PR', () => this.orphanCandidates(), { wrap })).length;
    if (candidates === 0) return 0;
    const freed = await locks.run('EX', async () => {
      let n = 0;
      const vol = this.h.vol;
      for (const { slot, dirBlkno, name, ino } of await this.orphanCandidates()) {
        const generation = (await new Transaction(vol).getInode(ino)).generation;
        await this.ifUnusedEverywhere(ino, generation, async () => {
          const tx = new Transaction(vol);
          const i = await tx.getInode(ino);
          await releaseOrphan(tx, ctx, await tx.getInode(dirBlkno), name, i, `orphan directory of slot ${slot}`);
          await tx.commit();
          n++;
        });
      }
      return n;
    }, { wrap });
    this.orphansFreed.byScan += freed;
    if (freed > 0) this.h.log(`orphan scan freed ${freed} inode(s)`);
    return freed;
  }

  /** Orphans of every slot that this node does not reference. Runs in an inode lock scope. */
  private async orphanCandidates(): Promise<Array<{ slot: number; dirBlkno: number; name: Buffer; ino: number }>> {
    const vol = this.h.vol;
    const out: Array<{ slot: number; dirBlkno: number; name: Buffer; ino: number }> = [];
    for (let slot = 0; slot < vol.sb.maxSlots; slot++) {
      const dirBlkno = await vol.systemInode(slotFileName(SYSFILE.orphanDir, slot));
      for (const e of await listDirectory(new Transaction(vol), dirBlkno)) {
        if (!this.h.inUseLocally(e.ino)) out.push({ slot, dirBlkno, name: e.name, ino: e.ino });
      }
    }
    return out;
  }

  /**
   * Node `node` died (DLM recovery is done): recover its slot, retrying until done (inode
   * locks wait meanwhile). Serialized, idempotent: whichever node gets S first does it.
   */
  recoverNode(node: number): Promise<void> {
    this.nodeDown(node);
    this.recoveries = this.recoveries.catch(() => undefined).then(async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.recover((slots) => slots.findIndex((s) => s.inUse && s.nodeNum === node), `node ${node} died`);
          break;
        } catch (e) {
          this.h.log(`recovery of node ${node}, attempt ${attempt}: ${(e as Error).message}`);
          if (this.stopped) throw e;
          await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, 200 * attempt)));
        }
      }
      this.h.locks.recovered(node);
    });
    return this.recoveries;
  }

  /**
   * At mount (holding S at EX): recovers every slot in use by a node that is not
   * heartbeating on the volume (it died while nobody was mounted to notice).
   */
  async recoverAbandonedSlots(): Promise<void> {
    this.h.vol.dropCaches(); // the slot map may have changed since we last held S
    const slots = await readSlotMap(new Transaction(this.h.vol));
    const others = slots.map((s, i) => ({ s, i })).filter(({ s, i }) => s.inUse && i !== this.h.slot && s.nodeNum !== this.h.thisNode);
    const alive = await Promise.all(others.map(({ s }) => nodeIsAlive(this.h.vol, s.nodeNum)));
    for (let k = 0; k < others.length; k++) {
      if (alive[k]) continue;
      const { s, i } = others[k];
      await this.recoverSlotLocked(i, `slot ${i} was left by node ${s.nodeNum}, which is not heartbeating`);
    }
  }

  /**
   * Read-only mount, holding S: refuses to mount over a slot whose node is not running (its
   * journal may hold what the disk does not say yet, and this mount cannot replay it).
   */
  async refuseIfRecoveryPending(): Promise<void> {
    this.h.vol.dropCaches();
    const slots = await readSlotMap(new Transaction(this.h.vol));
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i];
      if (!s.inUse || s.nodeNum === this.h.thisNode || await nodeIsAlive(this.h.vol, s.nodeNum)) continue;
      throw new FsError('EBUSY', `slot ${i} was left by node ${s.nodeNum}, which is not running, and needs recovery; mount read-write on some node first`);
    }
  }

  private async recover(find: (slots: Awaited<ReturnType<typeof readSlotMap>>) => number, why: string): Promise<void> {
    if (this.h.readOnly) return this.waitRecoveredElsewhere(find, why);
    const s = await this.h.glue.lock(this.superRes, 'EX');
    try {
      // The slot map changes under S only (mounts, unmounts, recoveries elsewhere): what
      // our cache holds of it may be old.
      this.h.vol.dropCaches();
      const slot = find(await readSlotMap(new Transaction(this.h.vol)));
      if (slot < 0 || slot === this.h.slot) return; // already recovered by another node
      await this.h.glue.holding(s, () => this.recoverSlotLocked(slot, why));
    } finally {
      s.release();
    }
  }

  /** Read-only mount: waits until a read-write node has recovered and freed the slot. */
  private async waitRecoveredElsewhere(find: (slots: Awaited<ReturnType<typeof readSlotMap>>) => number, why: string): Promise<void> {
    for (let round = 0; ; round++) {
      const s = await this.h.glue.lock(this.superRes, 'PR');
      let slot: number;
      try {
        this.h.vol.dropCaches();
        slot = find(await readSlotMap(new Transaction(this.h.vol)));
      } finally {
        s.release();
      }
      if (slot < 0) return;
      if (round === 0) this.h.log(`read-only mount: waiting for a read-write node to recover slot ${slot} (${why})`);
      if (this.stopped) throw new FsError('ENOTCONN', `slot ${slot} not recovered before unmount`);
      await new Promise((resolve) => setTimeout(resolve, RO_RECOVERY_POLL_MS));
    }
  }

  /**
   * Caller holds S at EX. Replays and releases `slot` under its journal lock at EX (and the
   * inode locks its transactions take); leaves it alone if its owner still holds J.
   */
  private async recoverSlotLocked(slot: number, why: string): Promise<void> {
    const jres = await this.journalRes(slot);
    let j: LockHandle;
    try {
      j = await this.h.glue.lock(jres, 'EX', { noqueue: true });
    } catch (e) {
      if (!(e instanceof FsError && e.errno === 'EAGAIN')) throw e;
      this.h.log(`slot ${slot} not recovered (${why}): its journal lock is held, its node is alive`);
      return;
    }
    try {
      await this.h.glue.holding(j, () => this.h.locks.run('EX', () => this.replayAndFree(slot, why), {
        wrap: (fn) => this.h.exclusive(fn),
        duringRecovery: true,
      }));
    } finally {
      j.release();
    }
    await this.h.glue.drop(jres);
  }

  private async replayAndFree(slot: number, why: string): Promise<void> {
    const vol = this.h.vol;
    {
      this.h.log(`recovering slot ${slot}: ${why}`);
      // Our own journal first: the dead slot's replay writes in place.
      const j = this.h.journal();
      if (j) {
        await j.commit();
        await j.checkpoint();
      }
      const slotCtx: AllocContext = {
        slot,
        inodeAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, slot)),
        extentAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.extentAlloc, slot)),
      };
      // Orphans stay for the orphan scan: another node may hold one open.
      const r = await recoverSlot(vol, slot, slotCtx, { inUse: () => true, log: (l) => this.h.log(l) });
      vol.dropCaches();
      const tx = new Transaction(vol);
      const slots = await readSlotMap(tx);
      slots[slot] = { inUse: false, nodeNum: 0, mountGeneration: 0 };
      await writeSlotMap(tx, slots);
      await tx.commit({ inPlace: true });
      this.h.log(`slot ${slot} recovered: ${r.transactionsReplayed} transaction(s) replayed, ${r.clustersReturned} cluster(s) returned`);
    }
  }
}
