// fsck.o2fs's engine: finds the superblock (or a backup), then checks the volume in
// passes, repairing in place when asked. Every repair goes into one Transaction that is
// committed only in repair mode, so a read-only check sees exactly what a repair would
// leave behind without writing a byte.
//
// Passes: 0 superblock; 1 system directory and allocator structures; 2 system files;
// 3 the tree from the root; 4 orphans; 5 unattached inodes; 6 allocator bitmaps;
// 7 lost+found; 8 link counts; 9 backup superblocks.
import type { BlockDevice } from '../../blockdev/types';
import { AllocContext, allocMetaBlock } from '../alloc';
import { dirInsert, dirLookup, dirRemove, dirRetarget } from '../dir';
import { CorruptionError, FsError } from '../errors';
import {
  GLOBAL_SLOT, INODE_FL, LOST_AND_FOUND, MAX_NODES, NO_SLOT, S_IFDIR, S_IFMT, SIG, SUPERBLOCK_BLKNO, SYSFILE,
  MIN_JOURNAL_BYTES, fileTypeOfMode, slotFileName, sysFileNameOfId,
} from '../format/constants';
import type { Dirent } from '../format/dirent';
import { testBit } from '../format/group';
import { decodeHeartbeat, encodeHeartbeat } from '../format/heartbeat';
import { encodeInode, decodeInode, Inode } from '../format/inode';
import { decodeJournalSuper, encodeJournalSuper } from '../format/journal-super';
import { decodeSlotMapBlock, encodeSlotMapBlock, slotsPerBlock } from '../format/slot-map';
import { Superblock, checkSuperblock, encodeSuperblock, unsupportedIncompat } from '../format/superblock';
import { verifyBlock } from '../format/header';
import { createNode } from '../namei';
import { Transaction } from '../transaction';
import { Volume, backupSuperOffsets, findBackupSuper, findPrimarySuper } from '../volume';
import { Journal } from '../journal';
import { readSlotMap } from '../slot-map';
import { adoptLostGroups, claimFixedAreas, readSubAllocator, rebuildGlobalBitmap, rebuildSubAllocators, SubAllocator } from './allocators';
import { EXIT_OPERATIONAL, Report } from './report';
import { FsckState } from './state';
import { badName, checkInode, readDirectory, readTolerant } from './walk';
import { expectedSystemFiles, fillSystemFile, locateInGroups, needsClusters, parseSysName, rebuildSystemInode } from './system-files';

export interface FsckOptions {
  /** Repair (-y/-p); otherwise check only (-n). */
  repair: boolean;
  /** Check even if the slot map says the volume is mounted. */
  force?: boolean;
  log?: (line: string) => void;
}

export interface FsckResult {
  exitCode: number;
  report: Report;
}

class OperationalError extends Error {}

export async function fsck(dev: BlockDevice, opts: FsckOptions): Promise<FsckResult> {
  const report = new Report(opts.repair, opts.log ?? (() => undefined));
  try {
    await run(dev, opts, report);
  } catch (e) {
    if (e instanceof OperationalError) {
      report.info(`fsck.o2fs: ${e.message}`);
      return { exitCode: EXIT_OPERATIONAL, report };
    }
    throw e;
  }
  return { exitCode: report.exitCode, report };
}

async function run(dev: BlockDevice, opts: FsckOptions, report: Report): Promise<void> {
  // Pass 0: the superblock.
  let sb: Superblock;
  let restorePrimary = false;
  try {
    sb = (await findPrimarySuper(dev)).sb;
  } catch (e) {
    if (!(e instanceof FsError)) throw e;
    const backup = await findBackupSuper(dev);
    if (!backup) throw new OperationalError(`${e.message}; no usable backup superblock either`);
    report.problem(`primary superblock: ${e.message}; using the backup at byte ${backup.offsetBytes}`, true);
    sb = backup.sb;
    restorePrimary = true;
  }
  const unsupported = unsupportedIncompat(sb);
  if (unsupported) throw new OperationalError(`volume uses unsupported features 0x${unsupported.toString(16)}; refusing to check it`);
  let vol: Volume;
  try {
    vol = new Volume(dev, sb, !opts.repair);
  } catch (e) {
    throw new OperationalError((e as Error).message);
  }
  report.info(`checking ${dev.name}: label "${sb.label}", ${vol.geo.totalClusters} clusters of ${vol.geo.clusterSize} bytes, ${sb.maxSlots} slots`);
  if (!(await replayJournals(vol, report, opts))) return;
  const tx = new Transaction(vol);
  const st = new FsckState(vol, tx, report);
  claimFixedAreas(st);

  // Pass 1: the system directory and the allocators (see system-files.ts for how fsck
  // finds them when they are damaged).
  const sysBlk = sb.systemDirBlkno;
  const giaFirstGroup = { blkno: sysBlk - 3, slot: GLOBAL_SLOT };
  let sysDir = await checkInode(st, sysBlk, 'system directory');
  if (sysDir && (sysDir.mode & S_IFMT) !== S_IFDIR) {
    report.problem(`system directory inode ${sysBlk} is not a directory`, true);
    sysDir = null;
  }
  if (!sysDir) {
    report.problem('system directory rebuilt; system files are found again by scanning the global inode allocator', true);
    sysDir = rebuildSystemInode(st, sysBlk, 'systemDir', NO_SLOT, { ...giaFirstGroup, bit: 3 }, sysBlk);
  }
  st.inodes.get(sysDir.blkno)!.parent = sysDir.blkno;
  const sysContents = await readDirectory(st, sysDir);
  const expectedNames = expectedSystemFiles(sb.maxSlots);
  const sys = new Map<string, Inode>();
  const broken = new Map<string, number>();
  const relink: string[] = [];
  const sysRemovals: Dirent[] = [...sysContents.misplaced];
  for (const e of sysContents.entries) {
    const name = e.name.toString('utf8');
    if (!expectedNames.includes(name) || sys.has(name) || broken.has(name)) {
      report.problem(`system directory: unexpected or duplicate entry ${JSON.stringify(name)}; removed`, true);
      sysRemovals.push(e);
      continue;
    }
    const ino = await checkInode(st, e.ino, `system file ${name}`);
    if (!ino) {
      broken.set(name, e.ino);
      continue;
    }
    if (!(ino.flags & INODE_FL.system) || sysFileNameOfId(ino.sysFileId) !== name) {
      report.problem(`system directory entry ${name} names inode ${e.ino}, which is ${sysFileNameOfId(ino.sysFileId) ?? 'not a system file'}; removed`, true);
      sysRemovals.push(e);
      continue;
    }
    sys.set(name, ino);
  }
  for (const e of sysRemovals) await removeEntry(st, sysDir, e);
  // The global allocators come first: everything else is found through them.
  const bootstrap = async (name: string, fallbackBlkno: number, bit: number): Promise<Inode> => {
    const known = sys.get(name);
    if (known) return known;
    const at = broken.get(name);
    if (at === undefined) {
      const ino = await peekInode(st, fallbackBlkno);
      if (ino && ino.flags & INODE_FL.valid && sysFileNameOfId(ino.sysFileId) === name) {
        const ok = await checkInode(st, fallbackBlkno, `system file ${name}`);
        if (ok) {
          report.problem(`system file ${name} found at inode ${fallbackBlkno}, missing from the system directory; relinked`, true);
          sys.set(name, ok);
          relink.push(name);
          return ok;
        }
      }
    }
    // The global allocators live at fixed blocks (mkfs puts them there): an entry naming any
    // other block is damaged itself (say, a flipped bit in its inode number), so the file is
    // rebuilt in its place and the entry pointed back at it.
    const blkno = fallbackBlkno;
    report.problem(`system file ${name} (inode ${blkno}) rebuilt`, true);
    const ino = rebuildSystemInode(st, blkno, parseSysName(name)!.kind, NO_SLOT, { ...giaFirstGroup, bit: blkno - giaFirstGroup.blkno }, sysBlk);
    sys.set(name, ino);
    if (at !== blkno) relink.push(name);
    return ino;
  };
  const gia = await bootstrap(SYSFILE.globalInodeAlloc, sysBlk - 1, 2);
  if (gia.body.kind === 'chain' && gia.body.chain.recs.length === 0) gia.body.chain.recs.push({ free: 0, total: 0, blkno: giaFirstGroup.blkno });
  const bitmapIno = await bootstrap(SYSFILE.globalBitmap, sysBlk - 2, 1);
  const allocators: SubAllocator[] = [await readSubAllocator(st, gia, SYSFILE.globalInodeAlloc, GLOBAL_SLOT)];
  // System inodes the directory lost: every one of them lives in the global inode allocator.
  for (const sg of allocators[0].groups) {
    for (let bit = 1; bit < sg.g.bits; bit++) {
      const blkno = sg.g.blkno + bit;
      if (!testBit(sg.g.bitmap, bit) || st.metaRefs.has(blkno) || st.badBlocks.has(blkno)) continue;
      const ino = await peekInode(st, blkno);
      const name = ino && ino.flags & INODE_FL.valid && ino.flags & INODE_FL.system ? sysFileNameOfId(ino.sysFileId) : null;
      if (!name || !expectedNames.includes(name) || sys.has(name)) continue;
      const ok = await checkInode(st, blkno, `system file ${name}`);
      if (!ok) continue;
      report.problem(`system file ${name} (inode ${blkno}) was missing from the system directory; relinked`, true);
      sys.set(name, ok);
      relink.push(name);
      broken.delete(name);
    }
  }
  const createLater: string[] = [];
  const fillLater: Inode[] = [];
  for (const name of expectedNames) {
    if (sys.has(name)) continue;
    const { kind, slot } = parseSysName(name)!;
    const at = broken.get(name);
    const where = at !== undefined ? locateInGroups(allocators, at) : null;
    if (at === undefined || !where) {
      report.problem(`system file ${name} is missing; recreated`, true);
      createLater.push(name);
      continue;
    }
    report.problem(`system file ${name} (inode ${at}) rebuilt empty`, true);
    const ino = rebuildSystemInode(st, at, kind, slot, where, sysBlk);
    sys.set(name, ino);
    if (needsClusters(kind)) fillLater.push(ino);
  }
  for (const [name, ino] of sys) {
    const info = st.inodes.get(ino.blkno)!;
    info.refs += 1;
    if ((ino.mode & S_IFMT) === S_IFDIR) {
      st.inodes.get(sysDir.blkno)!.subdirs += 1;
      info.parent = sysDir.blkno;
      if (ino.parentBlkno !== sysDir.blkno) {
        report.problem(`system directory ${name}: ".." is ${ino.parentBlkno}`, true);
        ino.parentBlkno = sysDir.blkno;
        tx.putInode(ino);
      }
    }
  }
  const sysMap = new Map<string, number>();
  for (const [n, ino] of sys) sysMap.set(n, ino.blkno);
  vol.setSystemInodes(sysMap);
  for (let s = 0; s < sb.maxSlots; s++) {
    for (const k of [SYSFILE.inodeAlloc, SYSFILE.extentAlloc] as const) {
      const ino = sys.get(slotFileName(k, s));
      if (ino) allocators.push(await readSubAllocator(st, ino, slotFileName(k, s), s));
    }
  }

  // Pass 2: system files with structure of their own.
  await checkSlotMap(st, sys.get(SYSFILE.slotMap), opts);
  await checkHeartbeat(st, sys.get(SYSFILE.heartbeat), opts);
  for (let s = 0; s < sb.maxSlots; s++) {
    await checkJournal(st, sys.get(slotFileName(SYSFILE.journal, s)), s);
    const la = sys.get(slotFileName(SYSFILE.localAlloc, s));
    if (la && la.body.kind === 'localAlloc' && la.body.la.windowBits > 0) st.claimClusters(la.body.la.windowFirstCluster, la.body.la.windowBits, `local alloc window of slot ${s}`);
    const tl = sys.get(slotFileName(SYSFILE.truncateLog, s));
    if (tl && tl.body.kind === 'truncateLog') for (const r of tl.body.recs) st.claimClusters(r.startCluster, r.clusters, `truncate log of slot ${s}`);
  }

  // Pass 3: the tree from the root.
  let root = await checkInode(st, sb.rootBlkno, 'root directory');
  if (root && (root.mode & S_IFMT) !== S_IFDIR) {
    report.problem(`root inode ${sb.rootBlkno} is not a directory`, true);
    root = null;
  }
  if (!root) {
    const where = locateInGroups(allocators, sb.rootBlkno);
    if (!where) throw new OperationalError(`the root directory (inode ${sb.rootBlkno}) is destroyed and lies in no allocator group`);
    report.problem('root directory rebuilt empty; its contents go to /lost+found', true);
    root = rebuildSystemInode(st, sb.rootBlkno, 'systemDir', NO_SLOT, where, sb.rootBlkno);
    root.flags &= ~INODE_FL.system;
    root.sysFileId = 0;
    tx.putInode(root);
  }
  st.inodes.get(root.blkno)!.parent = root.blkno;
  if (root.parentBlkno !== root.blkno) {
    report.problem(`root directory: parent is ${root.parentBlkno}, should be itself`, true);
    root.parentBlkno = root.blkno;
    tx.putInode(root);
  }
  const ctx: AllocContext = { slot: GLOBAL_SLOT, inodeAllocBlkno: gia.blkno, extentAllocBlkno: gia.blkno };
  const reinsert: Array<{ dir: Inode; e: Dirent }> = [];
  await walkDirectories(st, [root], reinsert);

  // Pass 4: orphan directories. An orphan's last user is gone (the volume is not mounted),
  // so it is released: its inode is cleared and the allocator pass reclaims its space.
  for (let s = 0; s < sb.maxSlots; s++) {
    const od = sys.get(slotFileName(SYSFILE.orphanDir, s));
    if (!od) continue;
    const contents = await readDirectory(st, od);
    for (const e of [...contents.entries, ...contents.misplaced]) {
      const ino = await peekInode(st, e.ino);
      if (ino && ino.flags & INODE_FL.orphaned && ino.links === 0 && !st.inodes.has(ino.blkno)) {
        report.problem(`orphan inode ${ino.blkno} in slot ${s} (unlinked while open) is released`, true);
        ino.flags &= ~INODE_FL.valid;
        tx.put(ino.blkno, encodeInode(ino, tx.bs));
        st.badBlocks.add(ino.blkno);
      } else {
        report.problem(`orphan directory of slot ${s}: entry ${e.name.toString()} does not name an orphaned inode`, true);
      }
      await removeEntry(st, od, e);
    }
  }

  // Pass 5: inodes allocated but reachable from nowhere.
  await adoptLostGroups(st, allocators);
  const candidates: Inode[] = [];
  for (const sa of allocators) {
    if (sa.name.startsWith(SYSFILE.extentAlloc)) continue;
    for (const sg of sa.groups) {
      for (let bit = 1; bit < sg.g.bits; bit++) {
        const blkno = sg.g.blkno + bit;
        if (!testBit(sg.g.bitmap, bit) || st.metaRefs.has(blkno) || st.badBlocks.has(blkno)) continue;
        const ino = await peekInode(st, blkno);
        if (!ino || !(ino.flags & INODE_FL.valid)) continue;
        if (ino.flags & INODE_FL.system) continue;
        if (ino.links === 0) {
          report.problem(`unattached inode ${blkno} has no links; released`, true);
          ino.flags &= ~INODE_FL.valid;
          tx.put(blkno, encodeInode(ino, tx.bs));
          continue;
        }
        const ok = await checkInode(st, blkno, 'unattached inode');
        if (ok) candidates.push(ok);
      }
    }
  }
  // Unattached directories bring their subtrees along; what none of them reaches is
  // really unattached.
  await walkDirectories(st, candidates.filter((i) => (i.mode & S_IFMT) === S_IFDIR), reinsert);
  const unattached = candidates.filter((i) => {
    const info = st.inodes.get(i.blkno)!;
    return (i.mode & S_IFMT) === S_IFDIR ? info.parent === 0 : info.refs === 0;
  });

  // Pass 6: allocator bitmaps against what is in use.
  await rebuildSubAllocators(st, allocators);
  await rebuildGlobalBitmap(st, bitmapIno);

  // Pass 7: what needs new space (allocations are safe now): rebuilt system files,
  // re-filed directory entries, lost+found.
  const journalBytes = journalBytesOf(sys, sb.maxSlots, vol.geo.clusterSize);
  for (const ino of fillLater) await fillSystemFile(st, ino, parseSysName(sysFileNameOfId(ino.sysFileId)!)!.kind, journalBytes);
  for (const name of createLater) {
    const { kind, slot } = parseSysName(name)!;
    const mb = await allocMetaBlock(tx, gia.blkno, GLOBAL_SLOT);
    const ino = rebuildSystemInode(st, mb.blkno, kind, slot, { blkno: mb.suballoc.groupBlkno, bit: mb.suballoc.bit, slot: GLOBAL_SLOT }, sysDir.blkno);
    if (needsClusters(kind)) await fillSystemFile(st, ino, kind, journalBytes);
    sys.set(name, ino);
    relink.push(name);
    st.inodes.get(ino.blkno)!.refs += 1;
    if ((ino.mode & S_IFMT) === S_IFDIR) st.inodes.get(sysDir.blkno)!.subdirs += 1;
  }
  for (const name of new Set(relink)) {
    const ino = sys.get(name)!;
    // A damaged system directory may still hold the name (a leaf read back in part): point
    // that entry at the system file instead of adding a second one.
    const existing = await dirLookup(tx, sysDir, Buffer.from(name));
    if (!existing) await dirInsert(tx, ctx, sysDir, Buffer.from(name), ino.blkno, fileTypeOfMode(ino.mode));
    else if (existing.ino !== ino.blkno) await dirRetarget(tx, sysDir, Buffer.from(name), ino.blkno, fileTypeOfMode(ino.mode));
  }
  for (const { dir, e } of reinsert) {
    const target = st.inodes.get(e.ino);
    if (!target) continue;
    try {
      await dirInsert(tx, ctx, dir, e.name, e.ino, fileTypeOfMode(target.ino.mode));
    } catch (err) {
      if (!(err instanceof FsError) || err.errno !== 'EEXIST') throw err;
      target.refs -= 1;
      if ((target.ino.mode & S_IFMT) !== S_IFDIR) continue;
      target.parent = 0;
      unattached.push(target.ino);
    }
  }
  const orphansOfTree = unattached.filter((i) => st.inodes.get(i.blkno)!.refs === 0 && (st.inodes.get(i.blkno)!.parent === 0 || (i.mode & S_IFMT) !== S_IFDIR));
  if (orphansOfTree.length > 0) {
    const lf = await lostAndFound(st, root, ctx);
    for (const ino of orphansOfTree) {
      const name = Buffer.from(`#${ino.blkno}`);
      report.problem(`unattached inode ${ino.blkno} connected to /${LOST_AND_FOUND}/${name.toString()}`, true);
      await dirInsert(tx, ctx, lf, name, ino.blkno, fileTypeOfMode(ino.mode));
      const info = st.inodes.get(ino.blkno)!;
      if ((ino.mode & S_IFMT) === S_IFDIR) {
        info.parent = lf.blkno;
        st.inodes.get(lf.blkno)!.subdirs += 1;
        if (ino.parentBlkno !== lf.blkno) {
          ino.parentBlkno = lf.blkno;
          tx.putInode(ino);
        }
      } else info.refs += 1;
    }
  }

  // Pass 8: link counts.
  for (const info of st.inodes.values()) {
    const ino = info.ino;
    if (ino.flags & INODE_FL.system && (ino.mode & S_IFMT) !== S_IFDIR) continue;
    const want = (ino.mode & S_IFMT) === S_IFDIR ? 2 + info.subdirs : info.refs;
    if (ino.links !== want) {
      report.problem(`inode ${ino.blkno}: link count ${ino.links}, should be ${want}`, true);
      ino.links = want;
      tx.putInode(ino);
    }
  }

  // Pass 9: superblocks.
  const backups = backupSuperOffsets(sb.totalBlocks, vol.geo.blockSize);
  if (sb.backupCount !== backups.length) {
    report.problem(`superblock: records ${sb.backupCount} backups, the volume has room for ${backups.length}`, true);
    sb.backupCount = backups.length;
  }
  const staleBackups: number[] = [];
  for (const off of backups) {
    const buf = await dev.read(off, vol.geo.blockSize);
    let ok = false;
    try {
      const b = checkSuperblock(buf, off / vol.geo.blockSize, vol.geo.blockSize);
      ok = sameIdentity(b, sb);
    } catch {
      ok = false;
    }
    if (!ok) {
      report.problem(`backup superblock at byte ${off} is missing or differs from the primary`, true);
      staleBackups.push(off);
    }
  }

  if (!opts.repair) return;
  sb.lastCheckTimeSec = Math.floor(Date.now() / 1000);
  await tx.commit();
  for (const off of restorePrimary ? backups : staleBackups) await dev.write(off, encodeSuperblock(sb, off / vol.geo.blockSize));
  await dev.write(SUPERBLOCK_BLKNO * vol.geo.blockSize, encodeSuperblock(sb, SUPERBLOCK_BLKNO));
  await dev.flush();
}

function sameIdentity(a: Superblock, b: Superblock): boolean {
  return a.uuid.equals(b.uuid) && a.fsGeneration === b.fsGeneration && a.totalBlocks === b.totalBlocks && a.maxSlots === b.maxSlots &&
    a.rootBlkno === b.rootBlkno && a.systemDirBlkno === b.systemDirBlkno && a.firstGroupBlkno === b.firstGroupBlkno &&
    a.featureIncompat === b.featureIncompat && a.featureCompat === b.featureCompat && a.featureRoCompat === b.featureRoCompat &&
    a.clusterSizeBits === b.clusterSizeBits && a.stack === b.stack && a.clusterName === b.clusterName && a.label === b.label;
}

/** Reads an inode without claiming anything; null if it is not a sound inode block. */
async function peekInode(st: FsckState, blkno: number): Promise<Inode | null> {
  const known = st.inodes.get(blkno);
  if (known) return known.ino;
  try {
    const buf = await st.vol.dev.read(blkno * st.vol.geo.blockSize, st.vol.geo.blockSize);
    verifyBlock(buf, blkno, SIG.inode, st.vol.fsGeneration);
    return decodeInode(buf);
  } catch {
    return null;
  }
}

async function removeEntry(st: FsckState, dir: Inode, e: Dirent): Promise<void> {
  try {
    await dirRemove(st.tx, dir, e.name);
  } catch (err) {
    if (!(err instanceof FsError) || err.errno !== 'ENOENT') throw err;
  }
}

/** Breadth-first walk over directories: checks entries, counts links, finds subdirs. */
async function walkDirectories(st: FsckState, start: Inode[], reinsert: Array<{ dir: Inode; e: Dirent }>): Promise<void> {
  const queue = [...start];
  for (let qi = 0; qi < queue.length; qi++) {
    const dir = queue[qi];
    if (st.walkedDirs.has(dir.blkno)) continue;
    st.walkedDirs.add(dir.blkno);
    const dinfo = st.inodes.get(dir.blkno)!;
    const contents = await readDirectory(st, dir);
    const names = new Set<string>();
    const drop: Dirent[] = [];
    for (const e of contents.entries) {
      const name = e.name.toString('latin1');
      const why = badName(e.name);
      if (why) {
        st.report.problem(`directory ${dir.blkno}: entry ${JSON.stringify(name)}: ${why}; removed`, true);
        drop.push(e);
        continue;
      }
      if (names.has(name)) {
        st.report.problem(`directory ${dir.blkno}: duplicate entry ${JSON.stringify(name)}; removed`, true);
        drop.push(e);
        continue;
      }
      names.add(name);
      const child = await checkInode(st, e.ino, `directory ${dir.blkno} entry ${JSON.stringify(name)}`);
      if (!child || child.flags & INODE_FL.system) {
        if (child) st.report.problem(`directory ${dir.blkno}: entry ${JSON.stringify(name)} names system inode ${child.blkno}; removed`, true);
        else st.report.problem(`directory ${dir.blkno}: entry ${JSON.stringify(name)} named an unusable inode; removed`, true);
        drop.push(e);
        continue;
      }
      const cinfo = st.inodes.get(child.blkno)!;
      const isDir = (child.mode & S_IFMT) === S_IFDIR;
      if (isDir && cinfo.parent !== 0) {
        st.report.problem(`directory ${dir.blkno}: entry ${JSON.stringify(name)} is a second link to directory ${child.blkno}; removed`, true);
        drop.push(e);
        continue;
      }
      if (e.fileType !== fileTypeOfMode(child.mode)) {
        st.report.problem(`directory ${dir.blkno}: entry ${JSON.stringify(name)} has file type ${e.fileType}, inode says ${fileTypeOfMode(child.mode)}`, true);
        await dirRetarget(st.tx, dir, e.name, child.blkno, fileTypeOfMode(child.mode));
      }
      if (isDir) {
        cinfo.parent = dir.blkno;
        dinfo.subdirs += 1;
        if (child.parentBlkno !== dir.blkno) {
          st.report.problem(`directory ${child.blkno}: ".." is ${child.parentBlkno}, should be ${dir.blkno}`, true);
          child.parentBlkno = dir.blkno;
          st.tx.putInode(child);
        }
        queue.push(child);
      } else cinfo.refs += 1;
    }
    for (const e of drop) await removeEntry(st, dir, e);
    for (const e of contents.misplaced) {
      // Filed under the wrong hash (often: a damaged name): re-filed only if it is a name at
      // all, and not one the directory already holds.
      const why = badName(e.name) ?? (names.has(e.name.toString('latin1')) ? 'duplicate of an entry filed correctly' : null);
      if (why) {
        st.report.problem(`directory ${dir.blkno}: misfiled entry ${JSON.stringify(e.name.toString('latin1'))}: ${why}; dropped`, true);
        continue;
      }
      names.add(e.name.toString('latin1'));
      const child = await checkInode(st, e.ino, `directory ${dir.blkno} misfiled entry`);
      if (!child) continue;
      const cinfo = st.inodes.get(child.blkno)!;
      if ((child.mode & S_IFMT) === S_IFDIR) {
        if (cinfo.parent !== 0) continue;
        cinfo.parent = dir.blkno;
        dinfo.subdirs += 1;
        queue.push(child);
      } else cinfo.refs += 1;
      reinsert.push({ dir, e });
    }
  }
}

async function lostAndFound(st: FsckState, root: Inode, ctx: AllocContext): Promise<Inode> {
  const e = await dirLookup(st.tx, root, Buffer.from(LOST_AND_FOUND));
  if (e) {
    const info = st.inodes.get(e.ino);
    if (info && (info.ino.mode & S_IFMT) === S_IFDIR) return info.ino;
  }
  st.report.problem(`/${LOST_AND_FOUND} is missing; created`, true);
  const lf = await createNode(st.tx, ctx, root, Buffer.from(LOST_AND_FOUND), { mode: S_IFDIR | 0o700, uid: 0, gid: 0 });
  st.inodes.set(lf.blkno, { ino: lf, refs: 0, subdirs: 0, parent: root.blkno, orphan: false });
  st.inodes.get(root.blkno)!.subdirs += 1;
  return lf;
}

async function checkSlotMap(st: FsckState, ino: Inode | undefined, opts: FsckOptions): Promise<void> {
  if (!ino || ino.body.kind !== 'extents' || ino.body.list.records.length === 0) return;
  const bs = st.vol.geo.blockSize;
  const first = ino.body.list.records[0].blkno;
  const blocks = Math.ceil(st.vol.sb.maxSlots / slotsPerBlock(bs));
  const inUse: string[] = [];
  for (let i = 0; i < blocks; i++) {
    const buf = await readTolerant(st, first + i, SIG.slotMap, 'slot map');
    let recs = null;
    if (buf) {
      try {
        recs = decodeSlotMapBlock(buf);
      } catch (e) {
        st.report.problem(`slot map block ${first + i}: ${(e as Error).message}`, true);
      }
    }
    const firstSlot = i * slotsPerBlock(bs);
    const n = Math.min(slotsPerBlock(bs), st.vol.sb.maxSlots - firstSlot);
    if (!recs || recs.firstSlot !== firstSlot || recs.recs.length !== n) {
      if (recs) st.report.problem(`slot map block ${first + i} describes the wrong slots; rewritten empty`, true);
      st.tx.put(first + i, encodeSlotMapBlock(Array.from({ length: n }, () => ({ inUse: false, nodeNum: 0, mountGeneration: 0 })), firstSlot, first + i, st.vol.fsGeneration, bs));
      continue;
    }
    recs.recs.forEach((r, k) => {
      if (r.inUse) inUse.push(`slot ${firstSlot + k} (node ${r.nodeNum})`);
    });
  }
  if (inUse.length > 0) {
    const msg = `the volume is in use: ${inUse.join(', ')} (mounted, or a node crashed)`;
    if (opts.repair && !opts.force) throw new OperationalError(`${msg}; unmount it everywhere first, or force with -f if those nodes are down`);
    if (!opts.repair) {
      st.report.info(`warning: ${msg}`);
      return;
    }
    // Forced: the operator says those nodes are down, so their slots are stale.
    st.report.problem(`${msg}; stale slots released`, true);
    const per = slotsPerBlock(bs);
    for (let i = 0; i < blocks; i++) {
      const n = Math.min(per, st.vol.sb.maxSlots - i * per);
      st.tx.put(first + i, encodeSlotMapBlock(Array.from({ length: n }, () => ({ inUse: false, nodeNum: 0, mountGeneration: 0 })), i * per, first + i, st.vol.fsGeneration, bs));
    }
  }
}

/** A heartbeat this recent means the node may be alive: the volume is in use. */
const HEARTBEAT_RECENT_MS_MIN = 30_000;

async function checkHeartbeat(st: FsckState, ino: Inode | undefined, opts: FsckOptions): Promise<void> {
  if (!ino || ino.body.kind !== 'extents' || ino.body.list.records.length === 0) return;
  const first = ino.body.list.records[0].blkno;
  const live: string[] = [];
  for (let n = 0; n < MAX_NODES; n++) {
    const buf = await readTolerant(st, first + n, SIG.heartbeat, `heartbeat block of node ${n}`);
    const hb = buf ? decodeHeartbeat(buf) : null;
    if (hb && hb.seq !== 0) {
      const ageMs = Date.now() - hb.timeMs;
      if (ageMs < Math.max(HEARTBEAT_RECENT_MS_MIN, 2 * hb.deadMs)) live.push(`node ${n} (heartbeat ${Math.max(0, Math.round(ageMs / 1000))} s ago)`);
    }
    if (!hb || hb.nodeNum !== n) {
      if (hb) st.report.problem(`heartbeat block ${first + n} names node ${hb.nodeNum}, expected ${n}`, true);
      st.tx.put(first + n, encodeHeartbeat({ blkno: first + n, fsGeneration: st.vol.fsGeneration, seq: 0, nodeNum: n, deadMs: 0, hbGeneration: 0, timeMs: 0 }, st.vol.geo.blockSize));
    }
  }
  if (live.length > 0) {
    const msg = `nodes are heartbeating on this volume: ${live.join(', ')}`;
    if (opts.repair && !opts.force) throw new OperationalError(`${msg}; it is in use, refusing to repair (force with -f only if those nodes are down)`);
    st.report.info(`warning: ${msg}`);
  }
}

async function checkJournal(st: FsckState, ino: Inode | undefined, slot: number): Promise<void> {
  if (!ino || ino.body.kind !== 'extents' || ino.body.list.records.length === 0) return;
  const bs = st.vol.geo.blockSize;
  const first = ino.body.list.records[0].blkno;
  const totalBlocks = Math.floor((ino.clusters * st.vol.geo.clusterSize) / bs);
  const buf = await readTolerant(st, first, SIG.journalSuper, `journal superblock of slot ${slot}`);
  let js = null;
  if (buf) {
    try {
      js = decodeJournalSuper(buf);
    } catch (e) {
      st.report.problem(`journal superblock of slot ${slot}: ${(e as Error).message}`, true);
    }
  }
  if (js && js.totalBlocks > totalBlocks) {
    st.report.problem(`journal of slot ${slot} claims ${js.totalBlocks} blocks, its file has ${totalBlocks}`, true);
    js = null;
  }
  if (!js) {
    st.report.info(`journal of slot ${slot} reset to empty`);
    st.tx.put(first, encodeJournalSuper({ blkno: first, fsGeneration: st.vol.fsGeneration, totalBlocks, firstLogBlock: 1, sequence: 1, start: 0, startSequence: 0 }, bs));
    return;
  }
  if (js.start !== 0) st.report.problem(`journal of slot ${slot} holds transactions that were never checkpointed (needs replay)`, false);
}

/** Journal size to give a recreated journal: the size of the others, else the minimum. */
function journalBytesOf(sys: Map<string, Inode>, maxSlots: number, clusterSize: number): number {
  for (let s = 0; s < maxSlots; s++) {
    const j = sys.get(slotFileName(SYSFILE.journal, s));
    if (j && j.clusters > 0) return j.clusters * clusterSize;
  }
  return Math.max(MIN_JOURNAL_BYTES, clusterSize);
}

/**
 * Replays every dirty journal before checking (repair mode), as a mount would. A read-only
 * check cannot replay: it reports the journal and stops, since what it would check is not
 * yet the volume's state. Returns false to stop the check.
 */
async function replayJournals(vol: Volume, report: Report, opts: FsckOptions): Promise<boolean> {
  const dirty: Journal[] = [];
  try {
    for (let s = 0; s < vol.sb.maxSlots; s++) {
      const j = await Journal.open(vol, s);
      if (j.dirty) dirty.push(j);
    }
  } catch (e) {
    report.info(`journals not examined (${(e as Error).message}); checking the volume as it is`);
    vol.dropCaches();
    return true;
  }
  if (dirty.length === 0) return true;
  const slots = dirty.map((j) => j.slot).join(', ');
  if (!opts.repair) {
    report.problem(`journal of slot ${slots} holds committed transactions not yet in place; fsck -n does not replay: run fsck.o2fs -y, or mount the volume`, false);
    return false;
  }
  if (!opts.force) {
    const inUse = (await readSlotMap(new Transaction(vol))).some((r, i) => r.inUse && dirty.some((j) => j.slot === i));
    if (inUse) throw new OperationalError(`journal of slot ${slots} needs replay and its slot is in use (mounted, or the node crashed); unmount it everywhere, or force with -f if that node is down`);
  }
  for (const j of dirty) {
    const r = await j.replay();
    report.info(`journal of slot ${j.slot}: replayed ${r.transactions} transactions (${r.blocks} blocks)`);
  }
  vol.dropCaches();
  return true;
}
