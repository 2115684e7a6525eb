// Recovering a slot after its node crashed (DESIGN.md §3; reference/ocfs2.md §7): replay
// its journal, return its local-alloc window and truncate log to the global bitmap, and
// release its orphans. A mount runs this for its own slot; cluster recovery (issue 6) will
// run it for a dead node's slot. It is idempotent, and the slot's recovery generation
// (the journal inode's id1b) says whether somebody already did it: a caller that read
// generation G before deciding to recover passes it, and finds the work done if the
// generation moved on.
import type { AllocContext } from './alloc';
import { freeClusters } from './alloc';
import { listDirectory } from './dir';
import { FsError } from './errors';
import { JOURNAL_FL, SYSFILE, slotFileName } from './format/constants';
import { testBit } from './format/group';
import { Journal } from './journal';
import { releaseOrphan } from './namei';
import { Transaction } from './transaction';
import type { Volume } from './volume';

export interface RecoveryResult {
  /** False when another node recovered the slot first (its generation moved on). */
  performed: boolean;
  generation: number;
  transactionsReplayed: number;
  clustersReturned: number;
  orphansReleased: number;
}

/** The slot's recovery generation as it is on disk now. */
export async function recoveryGeneration(vol: Volume, slot: number): Promise<number> {
  const tx = new Transaction(vol);
  return (await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.journal, slot)))).id1b;
}

/**
 * Recovers `slot`. `ctx` names the allocators to free through (the recovering mount's own);
 * `inUse(blkno)` says whether an orphan is still open somewhere (then it stays).
 */
export async function recoverSlot(vol: Volume, slot: number, ctx: AllocContext, o: { expectedGeneration?: number; inUse?: (blkno: number) => boolean; log?: (line: string) => void } = {}): Promise<RecoveryResult> {
  const log = o.log ?? (() => undefined);
  const journalIno = await vol.systemInode(slotFileName(SYSFILE.journal, slot));
  const before = (await new Transaction(vol).getInode(journalIno)).id1b;
  if (o.expectedGeneration !== undefined && before !== o.expectedGeneration) {
    return { performed: false, generation: before, transactionsReplayed: 0, clustersReturned: 0, orphansReleased: 0 };
  }
  const result: RecoveryResult = { performed: true, generation: before, transactionsReplayed: 0, clustersReturned: 0, orphansReleased: 0 };
  // The journal first: everything below reads the state it leaves.
  const journal = await Journal.open(vol, slot);
  if (journal.dirty) result.transactionsReplayed = (await journal.replay(log)).transactions;

  const tx = new Transaction(vol);
  const la = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.localAlloc, slot)));
  if (la.body.kind !== 'localAlloc') throw new FsError('EIO', `local alloc of slot ${slot} is malformed`);
  const w = la.body.la;
  for (let bit = 0; bit < w.windowBits; bit++) {
    if (testBit(w.bitmap, bit)) continue;
    await freeClusters(tx, w.windowFirstCluster + bit, 1);
    result.clustersReturned += 1;
  }
  la.body = { kind: 'localAlloc', la: { windowFirstCluster: 0, windowBits: 0, bitmap: Buffer.alloc(0) } };
  tx.putInode(la);
  const tl = await tx.getInode(await vol.systemInode(slotFileName(SYSFILE.truncateLog, slot)));
  if (tl.body.kind !== 'truncateLog') throw new FsError('EIO', `truncate log of slot ${slot} is malformed`);
  for (const r of tl.body.recs) {
    await freeClusters(tx, r.startCluster, r.clusters);
    result.clustersReturned += r.clusters;
  }
  tl.body = { ...tl.body, recs: [] };
  tx.putInode(tl);
  const orphanDirBlkno = await vol.systemInode(slotFileName(SYSFILE.orphanDir, slot));
  const orphanDir = await tx.getInode(orphanDirBlkno);
  for (const e of await listDirectory(tx, orphanDirBlkno)) {
    if (o.inUse?.(e.ino)) continue;
    await releaseOrphan(tx, ctx, orphanDir, e.name, await tx.getInode(e.ino), `orphan directory of slot ${slot}`);
    result.orphansReleased += 1;
  }
  const j = await tx.getInode(journalIno);
  j.id1a &= ~JOURNAL_FL.dirty;
  j.id1b = (before + 1) >>> 0;
  tx.putInode(j);
  await tx.commit({ durable: true });
  result.generation = j.id1b;
  if (result.transactionsReplayed + result.clustersReturned + result.orphansReleased > 0) {
    log(`slot ${slot} recovered: ${result.transactionsReplayed} transactions replayed, ${result.clustersReturned} clusters returned, ${result.orphansReleased} orphans released (generation ${result.generation})`);
  }
  return result;
}
