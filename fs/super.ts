// Mounting and unmounting a volume (OCFS2's super.c): open and check the volume, connect
// to its cluster stack, take a slot under the superblock lock, and on the way out release
// orphans nobody uses any more, the slot, and the stack.
import type { BlockDevice } from '../blockdev/types';
import { chooseStack } from '../stackglue/registry';
import type { ClusterConnection } from '../stackglue/types';
import type { AllocContext } from './alloc';
import { listDirectory } from './dir';
import { DlmGlue, LockRes } from './dlmglue';
import { FsError } from './errors';
import { ErrorsPolicy, LOCK_PROTO_MAJOR, LOCK_PROTO_MINOR, SUPERBLOCK_BLKNO, SUPPORTED_RO_COMPAT, SYSFILE, slotFileName } from './format/constants';
import { encodeSuperblock } from './format/superblock';
import { LOCK_TYPE, lockName } from './lock-names';
import { releaseOrphan } from './namei';
import { pickSlot, readSlotMap, writeSlotMap } from './slot-map';
import { Transaction } from './transaction';
import { Volume } from './volume';
import { Journal } from './journal';
import { recoverSlot } from './recovery';
import { HeartbeatWriter, nodeIsAlive } from './heartbeat-lite';
import { ClusterState } from './cluster';
import { InodeLocks, uncoveredInodes } from './inode-locks';
import { randomInt } from 'node:crypto';


/** How long an unmount waits for pending recoveries of dead nodes before it goes anyway. */
const UNMOUNT_RECOVERY_WAIT_MS = 60_000;
/** File data answered but not yet written, at most (fs/data-behind.ts). */
const WRITE_BEHIND_BYTES_MAX = 16 << 20;
export interface MountOptions {
  readOnly?: boolean;
  /** Group commit interval: the journal commits at least this often. Default 5 s. */
  commitSec?: number;
  /** Mount a clustered volume with no stack (single node only). */
  nocluster?: boolean;
  errors?: ErrorsPolicy;
  preferredSlot?: number;
  log?: (line: string) => void;
  /** The device's path, for a cluster stack that heartbeats on it (o2cb). */
  devicePath?: string;
  /** The cluster stack fenced this node: stop all device I/O now (the caller exits). */
  onFenced?: (reason: string) => void;
  /** Cluster mounts: how many inodes' locks this node keeps cached (fs/inode-locks.ts). */
  lockCacheInodes?: number;
}

export class MountedVolume {
  readonly vol: Volume;
  readonly glue: DlmGlue;
  readonly conn: ClusterConnection;
  readonly slot: number;
  readonly ctx: AllocContext;
  readonly orphanDirBlkno: number;
  readonly errors: ErrorsPolicy;
  readonly log: (line: string) => void;
  private readOnlyReason: string | null;
  private readonly superLock: LockRes;
  journal: Journal | null = null;
  /** The mount generation this mount wrote into its slot (0 read-only): who owns its record locks. */
  mountGeneration = 0;
  /** Cluster mounts only (a cluster stack, not local or nocluster): locks, recovery, orphan scan. */
  cluster: ClusterState | null = null;
  private heartbeat: HeartbeatWriter | null = null;
  private commitTimer: NodeJS.Timeout | null = null;

  private constructor(vol: Volume, glue: DlmGlue, conn: ClusterConnection, slot: number, ctx: AllocContext, orphanDirBlkno: number, o: MountOptions) {
    this.vol = vol;
    this.glue = glue;
    this.conn = conn;
    this.slot = slot;
    this.ctx = ctx;
    this.orphanDirBlkno = orphanDirBlkno;
    this.errors = o.errors ?? vol.sb.errorsPolicy;
    this.log = o.log ?? ((l) => process.stderr.write(`o2fs: ${l}\n`));
    this.readOnlyReason = o.readOnly ? 'mounted read-only' : null;
    this.superLock = glue.resource(lockName(LOCK_TYPE.super, SUPERBLOCK_BLKNO));
  }

  get readOnly(): boolean {
    return this.readOnlyReason !== null;
  }

  /** errors=remount-ro: every later change fails with EROFS. */
  enterReadOnly(reason: string): void {
    if (this.readOnlyReason) return;
    this.readOnlyReason = reason;
    this.log(`remounting read-only: ${reason}`);
  }

  assertWritable(): void {
    if (this.readOnlyReason) throw new FsError('EROFS', this.readOnlyReason);
  }

  static async mount(dev: BlockDevice, o: MountOptions = {}): Promise<MountedVolume> {
    const log = o.log ?? ((l: string) => process.stderr.write(`o2fs: ${l}\n`));
    const vol = await Volume.open(dev, { readOnly: o.readOnly });
    const sb = vol.sb;
    const unknownRo = sb.featureRoCompat & ~SUPPORTED_RO_COMPAT;
    if (unknownRo && !o.readOnly) throw new FsError('EROFS', `volume has unsupported read-only-compatible features 0x${unknownRo.toString(16)}; mount it read-only`);
    const choice = chooseStack(sb.stack, sb.clusterName, { nocluster: o.nocluster });
    if (choice.nocluster) log(`warning: mounting a volume of cluster "${sb.clusterName}" (${sb.stack}) without its cluster stack; make sure no other node has it mounted`);
    const glue = new DlmGlue();
    const group = sb.uuid.toString('hex').toUpperCase();
    // Deaths reported before the mount is up are recovered as soon as it is.
    const deaths: number[] = [];
    let onDeath = (node: number): void => void deaths.push(node);
    let onNodeDown = (node: number): void => void deaths.push(node);
    const conn = await choice.plugin.connect({
      clusterName: sb.clusterName, group, proto: { major: LOCK_PROTO_MAJOR, minor: LOCK_PROTO_MINOR }, callbacks: glue.callbacks,
      onRecovery: (node) => onDeath(node),
      onNodeDown: (node) => onNodeDown(node),
      onFenced: o.onFenced,
      device: o.devicePath ?? dev.name,
    });
    glue.attach(conn);
    const clustered = conn.stack !== 'local';
    // Cluster mounts lock each inode they read or change (fs/inode-locks.ts).
    let mounted: MountedVolume | null = null;
    const locks = clustered ? new InodeLocks(glue, {
      generation: (blkno, locked) => vol.inodeGeneration(blkno, !locked),
      checkpoint: async () => {
        // Data written behind under the lock is on the disk before the next holder reads it
        // (the commit would wait for it too, when it has metadata to commit).
        await vol.allDataWritten();
        const j = vol.journal;
        if (!j) return;
        await j.commit();
        await j.checkpoint();
      },
      invalidate: (blkno) => {
        vol.forgetCoveredBy(blkno);
        mounted?.invalidateKernel(blkno);
        mounted?.dataMayChange();
      },
      extentLeft: () => mounted?.dataMayChange(),
      attributes: (blkno, generation) => vol.heldInode(blkno, generation),
      holdsImage: (blkno) => vol.heldImage(blkno) !== null,
      // A node creating an inode asks for its open lock alongside its inode lock (two
      // round trips to the stack at once rather than one after the other).
      created: (blkno, generation) => mounted?.cluster?.noteInUse(blkno, generation, true),
      log,
    }, o.lockCacheInodes) : null;
    try {
      if (locks) {
        locks.setUncovered(await uncoveredInodes(vol));
        vol.inodeGuard = locks;
      }
      const superRes = glue.resource(lockName(LOCK_TYPE.super, SUPERBLOCK_BLKNO));
      const held = await glue.lock(superRes, 'EX');
      let slot = 0;
      let mountGeneration = 0;
      let journal: Journal | null = null;
      let heartbeat: HeartbeatWriter | null = null;
      try {
        if (!o.readOnly) {
          // On a cluster stack o2hb heartbeats for this node already (and its daemon refuses a
          // second mount of one volume on one node).
          if (!clustered && await nodeIsAlive(vol, conn.thisNode)) throw new FsError('EBUSY', `the volume is mounted already (node ${conn.thisNode} is heartbeating on it)`);
          let slots = await readSlotMap(new Transaction(vol));
          const stale = slots.findIndex((s) => s.inUse && s.nodeNum === conn.thisNode);
          if (stale >= 0) log(`slot ${stale} was left by an unclean shutdown of node ${conn.thisNode}; recovering it`);
          slot = pickSlot(slots, conn.thisNode, o.preferredSlot);
          // Our slot may hold what a crash left: journal, truncate log, local alloc, orphans.
          const slotCtx: AllocContext = { slot, inodeAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, slot)), extentAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.extentAlloc, slot)) };
          if (locks) await locks.run('EX', () => recoverSlot(vol, slot, slotCtx, { log }), { duringRecovery: true });
          else await recoverSlot(vol, slot, slotCtx, { log });
          journal = await Journal.open(vol, slot);
          vol.journal = journal;
          if (!clustered) heartbeat = await HeartbeatWriter.start(vol, conn.thisNode);
          const tx = new Transaction(vol);
          slots = await readSlotMap(tx);
          mountGeneration = randomInt(1, 0xffffffff);
          slots[slot] = { inUse: true, nodeNum: conn.thisNode, mountGeneration };
          await writeSlotMap(tx, slots);
          await tx.commit({ inPlace: true });
          sb.lastMountTimeSec = Math.floor(Date.now() / 1000);
          sb.mountCount += 1;
          await dev.write(SUPERBLOCK_BLKNO * vol.geo.blockSize, encodeSuperblock(sb, SUPERBLOCK_BLKNO));
          await dev.flush();
        }
      } catch (e) {
        vol.journal = null;
        await heartbeat?.stop().catch(() => undefined);
        throw e;
      } finally {
        held.release();
      }
      const ctx: AllocContext = {
        slot,
        inodeAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, slot)),
        extentAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.extentAlloc, slot)),
      };
      const m = new MountedVolume(vol, glue, conn, slot, ctx, await vol.systemInode(slotFileName(SYSFILE.orphanDir, slot)), { ...o, log });
      mounted = m;
      m.journal = journal;
      m.mountGeneration = mountGeneration;
      m.heartbeat = heartbeat;
      if (clustered) {
        const cluster = new ClusterState({
          vol, glue, locks: locks!, thisNode: conn.thisNode, slot, journal: () => m.journal, inUseLocally: (b) => m.inUseLocally(b), log,
          exclusive: (fn) => m.exclusive(fn),
          readOnly: o.readOnly === true,
        });
        m.cluster = cluster;
        // A read-only mount claims no slot and writes nothing: it only reads under PR, and
        // leaves every recovery to the read-write nodes (it cannot mount over one pending).
        const s = await glue.lock(m.superLock, o.readOnly ? 'PR' : 'EX');
        try {
          await glue.holding(s, async () => {
            if (o.readOnly) return cluster.refuseIfRecoveryPending();
            await cluster.claimJournal();
            await cluster.recoverAbandonedSlots();
          });
        } finally {
          s.release();
        }
        onNodeDown = (node) => cluster.nodeDown(node);
        onDeath = (node) => void cluster.recoverNode(node).catch((e) => log(`recovery of node ${node} failed: ${(e as Error).message}`));
        for (const node of new Set(deaths.splice(0))) onDeath(node);
        if (!o.readOnly) cluster.start(ctx);
      }
      if (journal) {
        if (!clustered) await m.releaseOrphans(() => true);
        // File data writes are answered before they finish (fs/data-behind.ts); on a
        // cluster mount an inode lock leaving EX waits for them (checkpoint above).
        if (!vol.readOnly) vol.enableWriteBehind(WRITE_BEHIND_BYTES_MAX, log);
        m.commitTimer = setInterval(() => void m.sync(false).catch((e) => log(`journal commit failed: ${(e as Error).message}`)), (o.commitSec ?? 5) * 1000);
        m.commitTimer.unref();
      }
      return m;
    } catch (e) {
      await glue.shutdown().catch(() => undefined);
      await conn.disconnect().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Frees orphans of our slot that `unused` says nobody holds: their last link went while
   * they were open, and now the last user is gone too.
   */
  async releaseOrphans(unused: (blkno: number) => boolean): Promise<number> {
    if (this.cluster) {
      // Someone on another node may hold an orphan open: the scan frees what nobody holds.
      return this.cluster.orphanScan(this.ctx);
    }
    const tx = new Transaction(this.vol);
    const orphanDir = await tx.getInode(this.orphanDirBlkno);
    let freed = 0;
    for (const e of await listDirectory(tx, this.orphanDirBlkno)) {
      if (!unused(e.ino)) continue;
      await releaseOrphan(tx, this.ctx, orphanDir, e.name, await tx.getInode(e.ino), 'orphan directory');
      freed++;
    }
    await tx.commit();
    return freed;
  }

  /**
   * Makes every completed change durable: commits the journal (whose commit flushes), or
   * just flushes when no metadata changed (data written in place still needs it).
   */
  async sync(flushAnyway = true): Promise<void> {
    const committed = this.journal ? await this.journal.commit() : false;
    if (!committed && flushAnyway) await this.vol.flush();
  }

  /** Set by the filesystem above: does this node still reference the inode? */
  inUseLocally: (blkno: number) => boolean = () => false;
  /** Set by the filesystem above: runs fn excluding its own requests. */
  exclusive: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn();
  /** Set by the filesystem above: the kernel forgets inode `blkno`'s attributes and the names in it (another node will change them). */
  invalidateKernel: (blkno: number) => void = () => undefined;
  /** Set by the filesystem above: file data read so far may change on another node (an inode or extent lock went). */
  dataMayChange: () => void = () => undefined;

  /** Clean unmount: orphans freed, slot released, everything on disk. */
  async unmount(): Promise<void> {
    if (this.commitTimer) clearInterval(this.commitTimer);
    this.commitTimer = null;
    await this.cluster?.stop();
    // The FUSE session is over: the kernel references nothing any more (it sends no FORGET
    // at unmount), so orphans only we held are free, and on a cluster the last node out
    // frees the rest.
    this.inUseLocally = () => false;
    // A volume that went read-only on errors keeps its slot: the next mount must fsck it.
    if (!this.readOnly) {
      try {
        await this.releaseOrphans(() => true);
        // Recoveries of dead nodes this node has heard of finish first (they need S).
        await this.cluster?.waitRecoveries(UNMOUNT_RECOVERY_WAIT_MS);
        // Inode locks being given back checkpoint the journal: before it shuts down.
        await this.cluster?.locks.settle();
        // Holding S, no recovery can start; one that becomes pending now is left to the
        // survivors or the next mount. The inode locks we cache stay ours until the stack
        // connection closes, after the journal's last checkpoint.
        const held = await this.glue.lock(this.superLock, 'EX');
        try {
          // The slot map changes under S only: a cached copy may be older than that.
          if (this.cluster) this.vol.dropCaches();
          const tx = new Transaction(this.vol);
          const slots = await readSlotMap(tx);
          slots[this.slot] = { inUse: false, nodeNum: 0, mountGeneration: 0 };
          await writeSlotMap(tx, slots);
          // Everything else first: a clean slot must mean a clean journal.
          await this.journal?.shutdown();
          await tx.commit({ inPlace: true });
          this.cluster?.releaseJournal();
        } finally {
          held.release();
        }
        await this.heartbeat?.stop();
      } catch (e) {
        this.log(`unmount could not release slot ${this.slot}: ${(e as Error).message}`);
      }
    } else {
      // Read-only after errors: commit what completed, keep the slot (fsck must look).
      await this.cluster?.locks.settle();
      await this.journal?.commit().catch((e) => this.log(`final journal commit failed: ${(e as Error).message}`));
      if (this.heartbeat) await this.heartbeat.stop().catch(() => undefined);
    }
    this.vol.journal = null;
    await this.vol.flush().catch(() => undefined);
    if (this.cluster) {
      const l = this.cluster.locks;
      const st = l.stats;
      this.log(`cluster locks: ${this.glue.stackRequests} requests to the stack, ${l.restarts} operation restarts; ` +
        `${st.takes} inode lock takes (${st.takeMs.toFixed(0)} ms), ${st.extentTakes} extent lock takes, ${st.evicted} given back (bound ${l.maxCached}), ${st.downconverts} downconverts (checkpoint ${st.checkpointMs.toFixed(0)} ms, invalidation ${st.invalidateMs.toFixed(0)} ms); ` +
        `inode value blocks: ${st.lvbPublished} published, ${st.lvbTrusted} stats answered from one; ` +
        `orphans freed: ${this.cluster.orphansFreed.atLastUse} at their last use here, ${this.cluster.orphansFreed.byScan} by the scan`);
    }
    await this.glue.shutdown();
    await this.conn.disconnect();
  }
}
