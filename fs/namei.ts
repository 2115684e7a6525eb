// Name-space operations at the transaction level: path lookup, creating, linking,
// unlinking and renaming inodes. No locking or permission checks here: the POSIX layer
// takes the cluster locks (in the documented order) and checks permissions first.
import type { AllocContext } from './alloc';
import { dirFreeStorage, dirInsert, dirIsEmpty, dirLookup, dirRemove, dirRetarget, initEmptyDir } from './dir';
import { FsError } from './errors';
import { INODE_FL, MAX_LINKS, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, fileTypeOfMode } from './format/constants';
import type { Dirent } from './format/dirent';
import { Inode, inlineDataCapacity } from './format/inode';
import { freeAllData, initInlineFile, writeFile } from './file-data';
import { freeInode, newUserInode, nowTimespec } from './inode-alloc';
import { freeAllXattrs } from './xattr';
import type { Transaction } from './transaction';

export function isDir(ino: Inode): boolean {
  return (ino.mode & S_IFMT) === S_IFDIR;
}

/** Resolves an absolute path from the root without following symlinks. */
export async function resolvePath(tx: Transaction, path: string): Promise<Inode> {
  let cur = await tx.getInode(tx.vol.sb.rootBlkno);
  for (const part of path.split('/').filter((p) => p.length > 0 && p !== '.')) {
    if (!isDir(cur)) throw new FsError('ENOTDIR', path);
    if (part === '..') {
      cur = await tx.getInode(cur.parentBlkno);
      continue;
    }
    const e = await dirLookup(tx, cur, Buffer.from(part));
    if (!e) throw new FsError('ENOENT', path);
    cur = await tx.getInode(e.ino);
  }
  return cur;
}

export interface CreateOptions {
  mode: number;
  uid: number;
  gid: number;
  rdev?: number;
  /** Symlink target. */
  target?: Buffer;
}

/** Creates a new inode named `name` in `parent` (file, directory, symlink or special). */
export async function createNode(tx: Transaction, ctx: AllocContext, parent: Inode, name: Buffer, o: CreateOptions): Promise<Inode> {
  if (!isDir(parent)) throw new FsError('ENOTDIR');
  if (await dirLookup(tx, parent, name)) throw new FsError('EEXIST');
  const type = o.mode & S_IFMT;
  if (type === S_IFDIR && parent.links >= MAX_LINKS) throw new FsError('EMLINK');
  const t = nowTimespec();
  const ino = await newUserInode(tx, ctx, { mode: o.mode, uid: o.uid, gid: o.gid, rdev: o.rdev ?? 0, parentBlkno: type === S_IFDIR ? parent.blkno : 0, time: t });
  if (type === S_IFDIR) {
    initEmptyDir(ino);
    ino.links = 2;
  } else if (type === S_IFREG) {
    initInlineFile(ino);
  } else if (type === S_IFLNK) {
    const target = o.target ?? Buffer.alloc(0);
    if (target.length === 0 || target.length > 4095) throw new FsError('ENAMETOOLONG');
    if (target.length <= inlineDataCapacity(tx.bs, ino.xattrInlineBytes)) initInlineFile(ino);
    await writeFile(tx, ctx, ino, 0, target);
  }
  tx.putInode(ino);
  await dirInsert(tx, ctx, parent, name, ino.blkno, fileTypeOfMode(o.mode));
  if (type === S_IFDIR) parent.links += 1;
  parent.mtime = t;
  parent.ctime = t;
  tx.putInode(parent);
  return ino;
}

/** Adds another name for a non-directory inode. */
export async function linkNode(tx: Transaction, ctx: AllocContext, parent: Inode, name: Buffer, ino: Inode): Promise<void> {
  if (isDir(ino)) throw new FsError('EPERM', 'hard links to directories are not allowed');
  if (ino.links >= MAX_LINKS) throw new FsError('EMLINK');
  await dirInsert(tx, ctx, parent, name, ino.blkno, fileTypeOfMode(ino.mode));
  const t = nowTimespec();
  ino.links += 1;
  ino.ctime = t;
  parent.mtime = t;
  parent.ctime = t;
  tx.putInode(ino);
  tx.putInode(parent);
}

/**
 * Removes the name `name` from `parent`. Returns the inode it named, with its link count
 * already lowered; when that reaches zero the caller orphans or frees it.
 */
export async function unlinkName(tx: Transaction, parent: Inode, name: Buffer, expectDir: boolean | null): Promise<Inode> {
  const e = await dirLookup(tx, parent, name);
  if (!e) throw new FsError('ENOENT');
  const ino = await tx.getInode(e.ino);
  if (expectDir === true && !isDir(ino)) throw new FsError('ENOTDIR');
  if (expectDir === false && isDir(ino)) throw new FsError('EISDIR');
  if (isDir(ino) && !(await dirIsEmpty(tx, ino))) throw new FsError('ENOTEMPTY');
  await dirRemove(tx, parent, name);
  const t = nowTimespec();
  parent.mtime = t;
  parent.ctime = t;
  if (isDir(ino)) {
    parent.links -= 1;
    ino.links = 0;
  } else {
    ino.links -= 1;
  }
  ino.ctime = t;
  tx.putInode(parent);
  tx.putInode(ino);
  return ino;
}

/** True when `maybeChild` is `dir` or lies below it (walks ".." up to the root). */
export async function isSubdir(tx: Transaction, maybeChild: Inode, dir: Inode): Promise<boolean> {
  let cur = maybeChild;
  for (let depth = 0; depth < 4096; depth++) {
    if (cur.blkno === dir.blkno) return true;
    if (cur.blkno === tx.vol.sb.rootBlkno) return false;
    cur = await tx.getInode(cur.parentBlkno);
  }
  throw new FsError('ELOOP', 'directory tree too deep');
}

export interface RenameResult {
  moved: Inode;
  /** The inode the target name used to point at (link count already lowered), if any. */
  replaced: Inode | null;
}

/** rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE flags (1 and 2 as in Linux). */
export async function renameNode(tx: Transaction, ctx: AllocContext, oldDir: Inode, oldName: Buffer, newDir: Inode, newName: Buffer, flags = 0): Promise<RenameResult> {
  const NOREPLACE = 1;
  const EXCHANGE = 2;
  const src = await dirLookup(tx, oldDir, oldName);
  if (!src) throw new FsError('ENOENT');
  const dst: Dirent | null = await dirLookup(tx, newDir, newName);
  const sameDir = oldDir.blkno === newDir.blkno;
  // Reload the directory objects as one when they are the same inode.
  const nd = sameDir ? oldDir : newDir;
  const moved = await tx.getInode(src.ino);
  if (flags & NOREPLACE && dst) throw new FsError('EEXIST');
  if (flags & EXCHANGE && !dst) throw new FsError('ENOENT');
  if (dst && dst.ino === src.ino) return { moved, replaced: null };
  if (isDir(moved) && !sameDir && (await isSubdir(tx, nd, moved))) throw new FsError('EINVAL', 'cannot move a directory into itself');
  const t = nowTimespec();
  if (flags & EXCHANGE) {
    const other = await tx.getInode(dst!.ino);
    if (isDir(other) && !sameDir && (await isSubdir(tx, oldDir, other))) throw new FsError('EINVAL', 'cannot move a directory into itself');
    await dirRetarget(tx, oldDir, oldName, other.blkno, fileTypeOfMode(other.mode));
    await dirRetarget(tx, nd, newName, moved.blkno, fileTypeOfMode(moved.mode));
    if (!sameDir) {
      if (isDir(moved)) { moved.parentBlkno = nd.blkno; nd.links += 1; oldDir.links -= 1; }
      if (isDir(other)) { other.parentBlkno = oldDir.blkno; oldDir.links += 1; nd.links -= 1; }
    }
    moved.ctime = t;
    other.ctime = t;
    for (const d of sameDir ? [oldDir] : [oldDir, nd]) { d.mtime = t; d.ctime = t; tx.putInode(d); }
    tx.putInode(moved);
    tx.putInode(other);
    return { moved, replaced: null };
  }
  let replaced: Inode | null = null;
  if (dst) {
    const victim = await tx.getInode(dst.ino);
    if (isDir(moved) && !isDir(victim)) throw new FsError('ENOTDIR');
    if (!isDir(moved) && isDir(victim)) throw new FsError('EISDIR');
    if (isDir(victim) && !(await dirIsEmpty(tx, victim))) throw new FsError('ENOTEMPTY');
    await dirRetarget(tx, nd, newName, moved.blkno, fileTypeOfMode(moved.mode));
    if (isDir(victim)) {
      victim.links = 0;
      nd.links -= 1;
    } else victim.links -= 1;
    victim.ctime = t;
    tx.putInode(victim);
    replaced = victim;
  } else {
    await dirInsert(tx, ctx, nd, newName, moved.blkno, fileTypeOfMode(moved.mode));
  }
  await dirRemove(tx, oldDir, oldName);
  if (isDir(moved) && !sameDir) {
    moved.parentBlkno = nd.blkno;
    oldDir.links -= 1;
    nd.links += 1;
  }
  moved.ctime = t;
  for (const d of sameDir ? [oldDir] : [oldDir, nd]) { d.mtime = t; d.ctime = t; tx.putInode(d); }
  tx.putInode(moved);
  return { moved, replaced };
}

/**
 * Frees orphan `ino` (no links, parked in `orphanDir` under `name`): the entry goes, then
 * the inode and everything it owns. An inode that is no orphan there is damage (EIO);
 * `where` names the orphan directory in that message.
 */
export async function releaseOrphan(tx: Transaction, ctx: AllocContext, orphanDir: Inode, name: Buffer, ino: Inode, where: string): Promise<void> {
  if (!(ino.flags & INODE_FL.orphaned) || ino.links !== 0) throw new FsError('EIO', `${where} names inode ${ino.blkno}, which is not an orphan`);
  await dirRemove(tx, orphanDir, name);
  await destroyInode(tx, ctx, ino);
}

/** Frees everything an inode owns and the inode itself (its last link and user are gone). */
export async function destroyInode(tx: Transaction, ctx: AllocContext, ino: Inode): Promise<void> {
  if (isDir(ino)) await dirFreeStorage(tx, ino);
  else await freeAllData(tx, ino);
  await freeAllXattrs(tx, ctx, ino);
  await freeInode(tx, ino);
}
