// The commands of debugfs.o2fs. Each command reads the volume through a fresh read-only
// Transaction and returns a Report: `data` is the JSON document's result, `text` the same
// facts for a person. Building the text from the data keeps --json and the text in step.
// Errors are thrown (FsError, CorruptionError, UsageError); the session prints them and
// goes on with the next command.
import { promises as fsp } from 'node:fs';
import { dirLookup, dirReaddir } from '../fs/dir';
import { allRecords } from '../fs/extent-tree';
import { FsError } from '../fs/errors';
import { readFile } from '../fs/file-data';
import {
  BACKUP_SUPER_OFFSETS, EXTENT_FL, FT, INODE_FL, MAX_NODES, SIG, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
} from '../fs/format/constants';
import type { Dirent } from '../fs/format/dirent';
import type { ExtentList } from '../fs/format/extent-list';
import { decodeHeartbeat } from '../fs/format/heartbeat';
import { Inode, Timespec } from '../fs/format/inode';
import { decodeJournalSuper } from '../fs/format/journal-super';
import { decodeSlotMapBlock } from '../fs/format/slot-map';
import { listXattrs, getXattr } from '../fs/xattr';
import { Transaction } from '../fs/transaction';
import type { Volume } from '../fs/volume';
import { UsageError, errorText } from './cli';
import {
  bitNames, dynFeatureNames, featureNames, fileTypeName, hex32, inodeFlagNames, isoOrNever, isoTimeNs,
  joinNames, journalFlagNames, localTime, localTimeNs, modeOctal, modeString, signatureName, stateNames, uuidHex,
} from './describe';

export interface Session {
  readonly vol: Volume;
  readonly json: boolean;
  /** Byte offset the superblock in use was read from (not 8192 with -s). */
  readonly superblockOffsetBytes: number;
  /** Raw bytes to standard output (cat without --json). */
  writeRaw(data: Buffer): Promise<void>;
}

export interface Report {
  /** The `result` of the command's JSON document. */
  data: unknown;
  /** What a person sees; '' prints nothing. */
  text: string;
}

export interface Command {
  name: string;
  usage: string;
  summary: string;
  run(s: Session, tx: Transaction, args: string[]): Promise<Report>;
}

/** Reads file data this much at a time (cat, dump). */
const CHUNK_BYTES = 1 << 20;
/** cat --json carries the data in the document; past this, use dump. */
const CAT_JSON_BYTES_MAX = 16 << 20;
/** Directory entries read per readdir call. */
const READDIR_BATCH = 1024;
/** xattr values shown in text up to this many bytes. */
const XATTR_TEXT_BYTES_MAX = 256;

const FT_NAMES: Record<number, string> = {
  [FT.unknown]: 'unknown', [FT.reg]: 'regular', [FT.dir]: 'directory', [FT.chr]: 'char-device',
  [FT.blk]: 'block-device', [FT.fifo]: 'fifo', [FT.sock]: 'socket', [FT.lnk]: 'symlink',
};

// ---------------------------------------------------------------- arguments and paths

/** Splits leading "-x" flags (from `allowed`) from the operands. */
function flagsAndOperands(cmd: string, args: string[], allowed: string): { flags: Set<string>; operands: string[] } {
  const flags = new Set<string>();
  let i = 0;
  for (; i < args.length && args[i].startsWith('-') && args[i] !== '-'; i++) {
    if (args[i] === '--') {
      i++;
      break;
    }
    for (const c of args[i].slice(1)) {
      if (!allowed.includes(c)) throw new UsageError(`${cmd}: unknown option -${c}; usage: ${usageOf(cmd)}`);
      flags.add(c);
    }
  }
  return { flags, operands: args.slice(i) };
}

function usageOf(cmd: string): string {
  return COMMANDS.find((c) => c.name === cmd)?.usage ?? cmd;
}

function expectOperands(cmd: string, operands: string[], min: number, max: number): void {
  if (operands.length < min || operands.length > max) throw new UsageError(`usage: ${usageOf(cmd)}`);
}

function isDir(ino: Inode): boolean {
  return (ino.mode & S_IFMT) === S_IFDIR;
}

/** Reads inode `blkno`, saying what the block is when it is not an inode. */
async function inodeAt(tx: Transaction, blkno: number, spec: string): Promise<Inode> {
  if (!Number.isSafeInteger(blkno) || blkno >= tx.vol.geo.totalBlocks) {
    throw new UsageError(`${spec}: block number beyond the volume (${tx.vol.geo.totalBlocks} blocks)`);
  }
  const raw = await tx.vol.readData(blkno, 1);
  const sig = raw.toString('latin1', 0, 8);
  if (sig !== SIG.inode) {
    const what = signatureName(sig);
    throw new FsError('EINVAL', `${spec}: block ${blkno} is ${what ? `a ${what}` : 'not a metadata block'}, not an inode`);
  }
  return tx.getInode(blkno);
}

export interface Resolved {
  ino: Inode;
  /** The argument as given. */
  spec: string;
  /** Last path component ("" for the root or <N>). */
  name: string;
}

/**
 * Resolves a command argument: "<N>" is inode N, "//name" starts in the system directory,
 * anything else is a path from the root ("." and ".." work; symlinks are not followed).
 */
export async function resolveArg(tx: Transaction, spec: string): Promise<Resolved> {
  const m = /^<(\d+)>$/.exec(spec);
  if (m) return { ino: await inodeAt(tx, Number(m[1]), spec), spec, name: '' };
  if (/^</.test(spec)) throw new UsageError(`${spec}: expected <N> with N an inode (block) number`);
  const system = spec.startsWith('//');
  let cur = await tx.getInode(system ? tx.vol.sb.systemDirBlkno : tx.vol.sb.rootBlkno);
  const parts = spec.split('/').filter((p) => p.length > 0 && p !== '.');
  let name = '';
  for (const part of parts) {
    if (!isDir(cur)) throw new FsError('ENOTDIR', `${spec}: ${name} is not a directory`);
    if (part === '..') {
      cur = await tx.getInode(cur.parentBlkno);
      name = part;
      continue;
    }
    const e = await dirLookup(tx, cur, Buffer.from(part, 'utf8'));
    if (!e) throw new FsError('ENOENT', `${spec}: no such file or directory`);
    cur = await tx.getInode(e.ino);
    name = part;
  }
  return { ino: cur, spec, name };
}

// ---------------------------------------------------------------- shared renderings

function timeData(ts: Timespec): { sec: number; nsec: number; iso: string | null } {
  return { sec: ts.sec, nsec: ts.nsec, iso: isoTimeNs(ts) };
}

/** Aligns rows of cells into columns (right-aligned unless the column is in `left`). */
function columns(rows: string[][], left: Set<number> = new Set()): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return rows.map((r) => line(r) + '\n').join('');
}

/**
 * Blocks one leaf record maps. File data: its clusters. An indexed directory's tree maps a
 * hash range (cpos) to one leaf block, whatever the cluster size.
 */
function blocksOfRecord(ino: Inode, clusters: number, bpc: number): number {
  return isDir(ino) ? 1 : clusters * bpc;
}

function blockRange(first: number, count: number): string {
  return count <= 1 ? String(first) : `${first}-${first + count - 1}`;
}

// ---------------------------------------------------------------- stats

async function cmdStats(s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('stats', args, 0, 0);
  const sb = tx.vol.sb;
  const geo = tx.vol.geo;
  const f = featureNames(sb);
  const data = {
    superblockOffsetBytes: s.superblockOffsetBytes,
    revision: `${sb.revMajor}.${sb.revMinor}`,
    revMajor: sb.revMajor,
    revMinor: sb.revMinor,
    label: sb.label,
    uuid: uuidHex(sb.uuid),
    fsGeneration: sb.fsGeneration,
    blockSize: geo.blockSize,
    blockSizeBits: sb.blockSizeBits,
    clusterSize: geo.clusterSize,
    clusterSizeBits: sb.clusterSizeBits,
    totalBlocks: sb.totalBlocks,
    totalClusters: sb.totalClusters,
    maxSlots: sb.maxSlots,
    featureCompat: sb.featureCompat,
    featureIncompat: sb.featureIncompat,
    featureRoCompat: sb.featureRoCompat,
    features: f,
    state: sb.state,
    stateNames: stateNames(sb.state),
    rootBlkno: sb.rootBlkno,
    systemDirBlkno: sb.systemDirBlkno,
    firstGroupBlkno: sb.firstGroupBlkno,
    stack: sb.stack,
    clusterName: sb.clusterName,
    lockProtocol: `${sb.lockProtoMajor}.${sb.lockProtoMinor}`,
    errorsPolicy: sb.errorsPolicy,
    dirHashSeed: sb.dirHashSeed,
    mkfsTimeSec: sb.mkfsTimeSec,
    mkfsTime: isoOrNever(sb.mkfsTimeSec),
    lastMountTimeSec: sb.lastMountTimeSec,
    lastMountTime: isoOrNever(sb.lastMountTimeSec),
    lastCheckTimeSec: sb.lastCheckTimeSec,
    lastCheckTime: isoOrNever(sb.lastCheckTimeSec),
    mountCount: sb.mountCount,
    xattrInlineBytes: sb.xattrInlineBytes,
    backupCount: sb.backupCount,
    backupOffsetsBytes: BACKUP_SUPER_OFFSETS.slice(0, sb.backupCount),
  };
  const when = (sec: number): string => (sec === 0 ? 'never' : localTime(sec));
  const lines = [
    `Superblock at byte ${data.superblockOffsetBytes} (block ${data.superblockOffsetBytes / geo.blockSize})`,
    `  Revision: ${data.revision}`,
    `  Label: ${sb.label}`,
    `  UUID: ${data.uuid}`,
    `  FS generation: ${hex32(sb.fsGeneration)}`,
    `  Cluster stack: ${sb.stack}`,
    `  Cluster name: ${sb.clusterName}`,
    `  Lock protocol: ${data.lockProtocol}`,
    `  Block size: ${geo.blockSize} (${sb.blockSizeBits} bits)`,
    `  Cluster size: ${geo.clusterSize} (${sb.clusterSizeBits} bits)`,
    `  Total blocks: ${sb.totalBlocks}`,
    `  Total clusters: ${sb.totalClusters}`,
    `  Max slots: ${sb.maxSlots}`,
    `  Compat features: ${joinNames(f.compat)} (${hex32(sb.featureCompat)})`,
    `  Incompat features: ${joinNames(f.incompat)} (${hex32(sb.featureIncompat)})`,
    `  RO compat features: ${joinNames(f.roCompat)} (${hex32(sb.featureRoCompat)})`,
    `  State: ${sb.state === 0 ? 'clean' : joinNames(data.stateNames)} (${hex32(sb.state)})`,
    `  Errors policy: ${sb.errorsPolicy}`,
    `  Root directory: ${sb.rootBlkno}`,
    `  System directory: ${sb.systemDirBlkno}`,
    `  First group: ${sb.firstGroupBlkno}`,
    `  Dir hash seed: ${hex32(sb.dirHashSeed)}`,
    `  Inline xattr bytes: ${sb.xattrInlineBytes}`,
    `  Backup superblocks: ${sb.backupCount}${sb.backupCount ? ` (at bytes ${data.backupOffsetsBytes.join(', ')})` : ''}`,
    `  Mkfs time: ${when(sb.mkfsTimeSec)}`,
    `  Last mount: ${when(sb.lastMountTimeSec)}`,
    `  Last check: ${when(sb.lastCheckTimeSec)}`,
    `  Mount count: ${sb.mountCount}`,
  ];
  return { data, text: lines.join('\n') + '\n' };
}

// ---------------------------------------------------------------- ls

interface LsEntry {
  name: string;
  inode: number;
  type: string;
  cookie: number;
  mode?: number;
  modeString?: string;
  links?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: { sec: number; nsec: number; iso: string | null };
  symlinkTarget?: string;
  error?: string;
}

async function longFields(tx: Transaction, e: LsEntry, ino: Inode | null): Promise<void> {
  try {
    const i = ino ?? (await tx.getInode(e.inode));
    e.mode = i.mode;
    e.modeString = modeString(i.mode);
    e.links = i.links;
    e.uid = i.uid;
    e.gid = i.gid;
    e.size = i.size;
    e.mtime = timeData(i.mtime);
    if ((i.mode & S_IFMT) === S_IFLNK) e.symlinkTarget = (await readFile(tx, i, 0, 4096)).toString('utf8');
  } catch (err) {
    // One bad inode must not hide the rest of the directory.
    e.error = errorText(err);
  }
}

async function cmdLs(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  const { flags, operands } = flagsAndOperands('ls', args, 'l');
  expectOperands('ls', operands, 0, 1);
  const long = flags.has('l');
  const r = await resolveArg(tx, operands[0] ?? '/');
  const entries: LsEntry[] = [];
  if (!isDir(r.ino)) {
    const e: LsEntry = { name: r.name || r.spec, inode: r.ino.blkno, type: fileTypeName(r.ino.mode), cookie: 0 };
    if (long) await longFields(tx, e, r.ino);
    entries.push(e);
  } else {
    const dots: LsEntry[] = [
      { name: '.', inode: r.ino.blkno, type: 'directory', cookie: 1 },
      { name: '..', inode: r.ino.parentBlkno, type: 'directory', cookie: 2 },
    ];
    entries.push(...dots);
    let after = 2;
    for (;;) {
      const batch: Dirent[] = await dirReaddir(tx, r.ino, after, READDIR_BATCH);
      if (batch.length === 0) break;
      for (const d of batch) {
        if (d.cookie <= after) throw new FsError('EIO', `directory ${r.ino.blkno}: readdir went backwards at cookie ${d.cookie}`);
        after = d.cookie;
        entries.push({ name: d.name.toString('utf8'), inode: d.ino, type: FT_NAMES[d.fileType] ?? `type-${d.fileType}`, cookie: d.cookie });
      }
      if (batch.length < READDIR_BATCH) break;
    }
    if (long) {
      await longFields(tx, entries[0], r.ino);
      for (const e of entries.slice(1)) await longFields(tx, e, null);
    }
  }
  const data = { path: r.spec, inode: r.ino.blkno, long, entries };
  if (!long) return { data, text: entries.map((e) => e.name + '\n').join('') };
  const rows = entries.map((e) => e.error
    ? [String(e.inode), '?', '?', '?', '?', '?', '?', `${e.name} (${e.error})`]
    : [String(e.inode), e.modeString!, String(e.links), String(e.uid), String(e.gid), String(e.size), localTime(e.mtime!.sec), e.symlinkTarget !== undefined ? `${e.name} -> ${e.symlinkTarget}` : e.name]);
  return { data, text: columns(rows, new Set([1])) };
}

// ---------------------------------------------------------------- stat

function bodyData(ino: Inode): Record<string, unknown> {
  const b = ino.body;
  switch (b.kind) {
    case 'extents':
      return {
        kind: 'extents', depth: b.list.depth, count: b.list.count, used: b.list.records.length,
        records: b.list.records.map((r) => ({ cpos: r.cpos, clusters: r.clusters, blkno: r.blkno, flags: bitNames(r.flags, EXTENT_FL) })),
      };
    case 'inline':
      return { kind: 'inline', bytes: b.data.length };
    case 'chain':
      return { kind: 'chain', clustersPerGroup: b.chain.cpg, bitsPerCluster: b.chain.bpc, count: b.chain.count, used: b.chain.recs.length, chains: b.chain.recs.map((r) => ({ free: r.free, total: r.total, firstGroupBlkno: r.blkno })) };
    case 'localAlloc': {
      let used = 0;
      for (let i = 0; i < b.la.windowBits; i++) if (b.la.bitmap[i >> 3] & (1 << (i & 7))) used++;
      return { kind: 'localAlloc', windowFirstCluster: b.la.windowFirstCluster, windowBits: b.la.windowBits, bitmapBytes: b.la.bitmap.length, usedBits: used };
    }
    case 'truncateLog':
      return { kind: 'truncateLog', count: b.count, used: b.recs.length, records: b.recs.map((r) => ({ startCluster: r.startCluster, clusters: r.clusters })) };
  }
}

function id1Data(ino: Inode): Record<string, unknown> {
  if (ino.flags & INODE_FL.journal) return { journalFlags: ino.id1a, journalFlagNames: journalFlagNames(ino.id1a), recoveryGeneration: ino.id1b };
  if (ino.flags & INODE_FL.chain) return { usedBits: ino.id1a, totalBits: ino.id1b };
  return { id1a: ino.id1a, id1b: ino.id1b };
}

async function cmdStat(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('stat', args, 1, 1);
  const { ino } = await resolveArg(tx, args[0]);
  let xattrs: string[] | null = null;
  let xattrError: string | undefined;
  try {
    xattrs = await listXattrs(tx, ino);
  } catch (err) {
    xattrError = errorText(err);
  }
  let journal: Record<string, unknown> | undefined;
  if (ino.flags & INODE_FL.journal && ino.body.kind === 'extents' && ino.body.list.depth === 0 && ino.body.list.records.length > 0) {
    try {
      const js = decodeJournalSuper(await tx.read(ino.body.list.records[0].blkno, SIG.journalSuper));
      journal = { superBlkno: js.blkno, totalBlocks: js.totalBlocks, firstLogBlock: js.firstLogBlock, sequence: js.sequence, start: js.start, startSequence: js.startSequence, empty: js.start === 0 };
    } catch (err) {
      journal = { error: errorText(err) };
    }
  }
  const data = {
    inode: ino.blkno,
    generation: ino.generation,
    fsGeneration: ino.fsGeneration,
    suballoc: { slot: ino.suballoc.slot, bit: ino.suballoc.bit, groupBlkno: ino.suballoc.groupBlkno },
    type: fileTypeName(ino.mode),
    mode: ino.mode,
    modeOctal: modeOctal(ino.mode),
    modeString: modeString(ino.mode),
    uid: ino.uid,
    gid: ino.gid,
    links: ino.links,
    size: ino.size,
    clusters: ino.clusters,
    flags: ino.flags,
    flagNames: inodeFlagNames(ino.flags),
    dynFeatures: ino.dyn,
    dynFeatureNames: dynFeatureNames(ino.dyn),
    attr: ino.attr,
    xattrInlineBytes: ino.xattrInlineBytes,
    atime: timeData(ino.atime),
    ctime: timeData(ino.ctime),
    mtime: timeData(ino.mtime),
    dtime: timeData(ino.dtime),
    rdev: ino.rdev,
    xattrBlkno: ino.xattrBlkno,
    orphanedSlot: ino.orphanedSlot,
    parentBlkno: ino.parentBlkno,
    id1: id1Data(ino),
    body: bodyData(ino),
    xattrs,
    ...(xattrError !== undefined ? { xattrError } : {}),
    ...(journal ? { journal } : {}),
  };
  const t = (ts: Timespec): string => `${localTimeNs(ts)} (${ts.sec}.${String(ts.nsec).padStart(9, '0')})`;
  const lines = [
    `Inode: ${ino.blkno}   Generation: ${hex32(ino.generation)}   FS generation: ${hex32(ino.fsGeneration)}`,
    `Type: ${data.type}   Mode: ${data.modeString} (${data.modeOctal})   Links: ${ino.links}`,
    `Uid: ${ino.uid}   Gid: ${ino.gid}   Size: ${ino.size}   Clusters: ${ino.clusters}`,
    `Flags: ${joinNames(data.flagNames)} (${hex32(ino.flags)})`,
    `Dynamic features: ${joinNames(data.dynFeatureNames)} (${hex32(ino.dyn)})   Attr: ${hex32(ino.attr)}`,
    `Suballoc: slot ${ino.suballoc.slot === 0xffff ? 'global' : ino.suballoc.slot}   bit ${ino.suballoc.bit}   group ${ino.suballoc.groupBlkno}`,
    `Parent: ${ino.parentBlkno}   Rdev: ${ino.rdev}   Orphaned slot: ${ino.orphanedSlot === 0xffff ? 'none' : ino.orphanedSlot}`,
    `atime: ${t(ino.atime)}`,
    `ctime: ${t(ino.ctime)}`,
    `mtime: ${t(ino.mtime)}`,
    `dtime: ${ino.dtime.sec === 0 && ino.dtime.nsec === 0 ? 'none' : t(ino.dtime)}`,
  ];
  const id1 = data.id1;
  if (ino.flags & INODE_FL.journal) lines.push(`Journal flags: ${joinNames(id1.journalFlagNames as string[])}   Recovery generation: ${ino.id1b}`);
  else if (ino.flags & INODE_FL.chain) lines.push(`Allocator bits: ${ino.id1a} used of ${ino.id1b}`);
  else if (ino.id1a || ino.id1b) lines.push(`id1: ${ino.id1a} ${ino.id1b}`);
  const b = ino.body;
  switch (b.kind) {
    case 'inline':
      lines.push(`Inline data: ${b.data.length} bytes`);
      break;
    case 'extents': {
      lines.push(`Extent list: depth ${b.list.depth}, ${b.list.records.length} of ${b.list.count} records${b.list.records.length ? ':' : ''}`);
      const rows = b.list.records.map((r) => b.list.depth === 0
        ? isDir(ino)
          ? ['', `hash ${r.cpos}`, `leaf block ${r.blkno}`, '']
          : ['', `cpos ${r.cpos}`, `clusters ${r.clusters}`, `blocks ${blockRange(r.blkno, blocksOfRecord(ino, r.clusters, tx.vol.geo.blocksPerCluster))}`, joinNames(bitNames(r.flags, EXTENT_FL)).replace(/^none$/, '')]
        : ['', `cpos ${r.cpos}`, `extent block ${r.blkno}`, '']);
      lines.push(columns(rows, new Set([1, 2, 3])).trimEnd());
      break;
    }
    case 'chain':
      lines.push(`Chain list: ${b.chain.recs.length} of ${b.chain.count} chains, ${b.chain.cpg} clusters per group, ${b.chain.bpc} bits per cluster`);
      b.chain.recs.forEach((r, i) => lines.push(`  chain ${i}: first group ${r.blkno}, ${r.free} free of ${r.total}`));
      break;
    case 'localAlloc': {
      const d = data.body as { usedBits: number };
      lines.push(`Local alloc window: first cluster ${b.la.windowFirstCluster}, ${b.la.windowBits} bits (${d.usedBits} used)`);
      break;
    }
    case 'truncateLog':
      lines.push(`Truncate log: ${b.recs.length} of ${b.count} records`);
      b.recs.forEach((r) => lines.push(`  clusters ${r.startCluster}+${r.clusters}`));
      break;
  }
  if (journal) {
    lines.push(journal.error !== undefined
      ? `Journal superblock: ${String(journal.error)}`
      : `Journal: ${String(journal.totalBlocks)} blocks, sequence ${String(journal.sequence)}, ${journal.empty ? 'empty' : `start ${String(journal.start)} (sequence ${String(journal.startSequence)})`}`);
  }
  lines.push(`Xattr block: ${ino.xattrBlkno || 'none'}   Inline xattr bytes: ${ino.xattrInlineBytes}`);
  lines.push(xattrError !== undefined ? `Xattrs: (unreadable: ${xattrError})` : `Xattrs: ${xattrs!.length ? xattrs!.join(' ') : 'none'}`);
  return { data, text: lines.filter((l) => l.length > 0).join('\n') + '\n' };
}

// ---------------------------------------------------------------- cat, dump

function assertReadable(r: Resolved): void {
  const type = r.ino.mode & S_IFMT;
  if (type === S_IFDIR) throw new FsError('EISDIR', `${r.spec}: is a directory`);
  if (type !== S_IFREG && type !== S_IFLNK) throw new FsError('EINVAL', `${r.spec}: is a ${fileTypeName(r.ino.mode)}, it has no data`);
}

async function cmdCat(s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('cat', args, 1, 1);
  const r = await resolveArg(tx, args[0]);
  assertReadable(r);
  const size = r.ino.size;
  if (s.json) {
    if (size > CAT_JSON_BYTES_MAX) throw new FsError('EFBIG', `${r.spec}: ${size} bytes is too much for a JSON document (limit ${CAT_JSON_BYTES_MAX}); use dump`);
    const data = await readFile(tx, r.ino, 0, size);
    return { data: { path: r.spec, inode: r.ino.blkno, size, encoding: 'base64', data: data.toString('base64') }, text: '' };
  }
  for (let off = 0; off < size; off += CHUNK_BYTES) await s.writeRaw(await readFile(tx, r.ino, off, Math.min(CHUNK_BYTES, size - off)));
  return { data: { path: r.spec, inode: r.ino.blkno, size }, text: '' };
}

async function cmdDump(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('dump', args, 2, 2);
  const r = await resolveArg(tx, args[0]);
  assertReadable(r);
  const hostFile = args[1];
  const size = r.ino.size;
  const fh = await fsp.open(hostFile, 'w', 0o644);
  try {
    for (let off = 0; off < size; off += CHUNK_BYTES) {
      const chunk = await readFile(tx, r.ino, off, Math.min(CHUNK_BYTES, size - off));
      if (chunk.length === 0) break;
      await fh.write(chunk, 0, chunk.length, off);
    }
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  return { data: { path: r.spec, inode: r.ino.blkno, hostFile, bytes: size }, text: '' };
}

// ---------------------------------------------------------------- blocks, extents

function noTreeReason(ino: Inode): string | null {
  switch (ino.body.kind) {
    case 'extents': return null;
    case 'inline': return `its ${ino.body.data.length} bytes are inline in the inode`;
    case 'chain': return 'it is a chain allocator (see stat)';
    case 'localAlloc': return 'it is a local alloc window (see stat)';
    case 'truncateLog': return 'it is a truncate log (see stat)';
  }
}

async function cmdBlocks(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('blocks', args, 1, 1);
  const r = await resolveArg(tx, args[0]);
  const why = noTreeReason(r.ino);
  const bpc = tx.vol.geo.blocksPerCluster;
  if (why) return { data: { path: r.spec, inode: r.ino.blkno, kind: r.ino.body.kind, ranges: [] }, text: `(no blocks: ${why})\n` };
  const ranges = (await allRecords(tx, r.ino)).map((rec) => ({
    cpos: rec.cpos,
    first: rec.blkno,
    last: rec.blkno + blocksOfRecord(r.ino, rec.clusters, bpc) - 1,
    blocks: blocksOfRecord(r.ino, rec.clusters, bpc),
    unwritten: (rec.flags & EXTENT_FL.unwritten) !== 0,
  }));
  const text = ranges.length === 0 ? '(no blocks)\n' : ranges.map((x) => `${blockRange(x.first, x.blocks)}${x.unwritten ? ' (unwritten)' : ''}\n`).join('');
  return { data: { path: r.spec, inode: r.ino.blkno, kind: 'extents', blockSize: tx.vol.geo.blockSize, ranges }, text };
}

interface TreeRec {
  cpos: number;
  clusters: number;
  flags: string[];
  blkno: number;
  child?: TreeNode;
  error?: string;
}

interface TreeNode {
  /** null: the root, in the inode. */
  blkno: number | null;
  depth: number;
  count: number;
  used: number;
  records: TreeRec[];
}

async function walkTree(tx: Transaction, ino: Inode, list: ExtentList, blkno: number | null, stats: { blocks: number; extents: number; clusters: number }): Promise<TreeNode> {
  const node: TreeNode = { blkno, depth: list.depth, count: list.count, used: list.records.length, records: [] };
  for (const r of list.records) {
    const rec: TreeRec = { cpos: r.cpos, clusters: r.clusters, flags: bitNames(r.flags, EXTENT_FL), blkno: r.blkno };
    node.records.push(rec);
    if (list.depth === 0) {
      stats.extents += 1;
      stats.clusters += r.clusters;
      continue;
    }
    try {
      const eb = await tx.getExtentBlock(r.blkno);
      if (eb.ownerBlkno !== ino.blkno) throw new FsError('EIO', `extent block ${eb.blkno} belongs to inode ${eb.ownerBlkno}`);
      if (eb.list.depth !== list.depth - 1) throw new FsError('EIO', `extent block ${eb.blkno} has depth ${eb.list.depth}, expected ${list.depth - 1}`);
      stats.blocks += 1;
      rec.child = await walkTree(tx, ino, eb.list, eb.blkno, stats);
    } catch (err) {
      // Show the rest of the tree; the broken branch says why.
      rec.error = errorText(err);
    }
  }
  return node;
}

function treeText(ino: Inode, node: TreeNode, bpc: number, indent: string, out: string[]): void {
  out.push(`${indent}[${node.blkno === null ? 'inode' : `block ${node.blkno}`}] depth ${node.depth}, ${node.used} of ${node.count} records`);
  for (const r of node.records) {
    if (node.depth === 0) {
      out.push(isDir(ino)
        ? `${indent}  hash ${r.cpos}  leaf block ${r.blkno}`
        : `${indent}  cpos ${r.cpos}  clusters ${r.clusters}  blocks ${blockRange(r.blkno, blocksOfRecord(ino, r.clusters, bpc))}${r.flags.length ? `  ${r.flags.join(' ')}` : ''}`);
    } else {
      out.push(`${indent}  cpos ${r.cpos} -> extent block ${r.blkno}${r.error ? `: ERROR ${r.error}` : ''}`);
      if (r.child) treeText(ino, r.child, bpc, indent + '    ', out);
    }
  }
}

async function cmdExtents(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('extents', args, 1, 1);
  const r = await resolveArg(tx, args[0]);
  const why = noTreeReason(r.ino);
  if (why || r.ino.body.kind !== 'extents') return { data: { path: r.spec, inode: r.ino.blkno, kind: r.ino.body.kind, tree: null }, text: `(no extent tree: ${why})\n` };
  const stats = { blocks: 0, extents: 0, clusters: 0 };
  const tree = await walkTree(tx, r.ino, r.ino.body.list, null, stats);
  const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
  const mapped = isDir(r.ino) ? plural(stats.extents, 'directory leaf block') : `${plural(stats.extents, 'extent')}, ${plural(stats.clusters, 'cluster')}`;
  const out = [`Inode ${r.ino.blkno}: tree depth ${tree.depth}, ${plural(stats.blocks, 'extent block')}, ${mapped}`];
  treeText(r.ino, tree, tx.vol.geo.blocksPerCluster, '', out);
  return { data: { path: r.spec, inode: r.ino.blkno, kind: 'extents', extentBlocks: stats.blocks, extents: stats.extents, clusters: stats.clusters, tree }, text: out.join('\n') + '\n' };
}

// ---------------------------------------------------------------- slot map, heartbeat, system dir

/** The physical blocks of a contiguous system file, in order. */
async function systemFileBlocks(tx: Transaction, name: string, blocks: number): Promise<number[]> {
  const ino = await tx.getInode(await tx.vol.systemInode(name));
  if (ino.body.kind !== 'extents') throw new FsError('EIO', `system file ${name} (inode ${ino.blkno}) has no extent list`);
  const out: number[] = [];
  const bpc = tx.vol.geo.blocksPerCluster;
  for (const r of await allRecords(tx, ino)) {
    for (let b = 0; b < r.clusters * bpc && out.length < blocks; b++) out.push(r.blkno + b);
  }
  if (out.length < blocks) throw new FsError('EIO', `system file ${name} (inode ${ino.blkno}) maps ${out.length} blocks, expected ${blocks}`);
  return out;
}

async function cmdSlotmap(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('slotmap', args, 0, 0);
  const maxSlots = tx.vol.sb.maxSlots;
  const ino = await tx.getInode(await tx.vol.systemInode('slot_map'));
  const blocks = await systemFileBlocks(tx, 'slot_map', Math.ceil(ino.size / tx.bs));
  const slots: Array<{ slot: number; inUse: boolean; node: number | null; mountGeneration: number | null }> = [];
  for (const blkno of blocks) {
    const { firstSlot, recs } = decodeSlotMapBlock(await tx.read(blkno, SIG.slotMap));
    if (firstSlot !== slots.length) throw new FsError('EIO', `slot map block ${blkno} starts at slot ${firstSlot}, expected ${slots.length}`);
    recs.forEach((r, i) => slots.push({ slot: firstSlot + i, inUse: r.inUse, node: r.inUse ? r.nodeNum : null, mountGeneration: r.inUse ? r.mountGeneration : null }));
  }
  if (slots.length < maxSlots) throw new FsError('EIO', `slot map holds ${slots.length} slots, the superblock says ${maxSlots}`);
  const shown = slots.slice(0, maxSlots);
  const rows = [['Slot#', 'Node#', 'Mount generation'], ...shown.map((x) => [String(x.slot), x.inUse ? String(x.node) : 'empty', x.inUse ? hex32(x.mountGeneration!) : ''])];
  return { data: { maxSlots, slots: shown }, text: columns(rows) };
}

async function cmdHb(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('hb', args, 0, 0);
  const blocks = await systemFileBlocks(tx, 'heartbeat', MAX_NODES);
  const nodes: Array<{ node: number; blkno: number; seq: number; generation: string; timeMs: number; time: string | null; deadMs: number }> = [];
  for (let n = 0; n < blocks.length; n++) {
    const raw = await tx.read(blocks[n], SIG.heartbeat);
    const hb = decodeHeartbeat(raw);
    if (hb.seq === 0) continue;
    if (hb.nodeNum !== n) throw new FsError('EIO', `heartbeat block ${blocks[n]} (node ${n}) says it is node ${hb.nodeNum}`);
    // hb_generation is a full u64: read it raw so no bit is lost to a JS number.
    const generation = '0x' + raw.readBigUInt64LE(0x30).toString(16).padStart(16, '0');
    nodes.push({ node: n, blkno: blocks[n], seq: hb.seq, generation, timeMs: hb.timeMs, time: hb.timeMs ? new Date(hb.timeMs).toISOString() : null, deadMs: hb.deadMs });
  }
  if (nodes.length === 0) return { data: { nodes }, text: 'no node has written a heartbeat\n' };
  const rows = [['Node', 'Seq', 'Generation', 'Time', 'Dead ms'], ...nodes.map((x) => [String(x.node), String(x.seq), x.generation, x.timeMs ? `${localTime(Math.floor(x.timeMs / 1000))}.${String(x.timeMs % 1000).padStart(3, '0')}` : '-', String(x.deadMs)])];
  return { data: { nodes }, text: columns(rows) };
}

async function cmdSysdir(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('sysdir', args, 0, 0);
  const dir = await tx.getInode(tx.vol.sb.systemDirBlkno);
  const files = (await dirReaddir(tx, dir, 0, Infinity))
    .map((d) => ({ name: d.name.toString('utf8'), inode: d.ino, type: FT_NAMES[d.fileType] ?? `type-${d.fileType}` }))
    .sort((a, b) => a.inode - b.inode);
  const rows = files.map((f) => [String(f.inode), f.name]);
  return { data: { inode: dir.blkno, files }, text: `System directory: inode ${dir.blkno}\n` + columns(rows) };
}

// ---------------------------------------------------------------- xattrs

function printable(b: Buffer): boolean {
  const s = b.toString('utf8');
  return Buffer.from(s, 'utf8').equals(b) && !/[\x00-\x08\x0b-\x1f\x7f]/.test(s);
}

async function cmdXattrs(_s: Session, tx: Transaction, args: string[]): Promise<Report> {
  expectOperands('xattrs', args, 1, 1);
  const r = await resolveArg(tx, args[0]);
  const names = await listXattrs(tx, r.ino);
  const xattrs: Array<{ name: string; size: number; text: string | null; base64: string }> = [];
  for (const name of names) {
    const v = await getXattr(tx, r.ino, name);
    xattrs.push({ name, size: v.length, text: printable(v) ? v.toString('utf8') : null, base64: v.toString('base64') });
  }
  const show = (x: (typeof xattrs)[number]): string => {
    const v = Buffer.from(x.base64, 'base64');
    const cut = v.length > XATTR_TEXT_BYTES_MAX ? ' ...' : '';
    const head = v.subarray(0, XATTR_TEXT_BYTES_MAX);
    return x.text !== null ? JSON.stringify(head.toString('utf8')) + cut : `0x${head.toString('hex')}${cut}`;
  };
  const text = xattrs.length === 0 ? '(no extended attributes)\n' : xattrs.map((x) => `${x.name} (${x.size} bytes) = ${show(x)}\n`).join('');
  return { data: { path: r.spec, inode: r.ino.blkno, xattrs }, text };
}

// ---------------------------------------------------------------- help

async function cmdHelp(): Promise<Report> {
  const rows = COMMANDS.map((c) => [c.usage, c.summary]);
  rows.push(['quit', 'leave debugfs (also q, exit, end of input)']);
  const text = columns(rows, new Set([0])) + 'PATH is a path from the root, //NAME a system file, <N> the inode at block N.\n';
  return { data: { commands: COMMANDS.map((c) => ({ name: c.name, usage: c.usage, summary: c.summary })) }, text };
}

export const COMMANDS: Command[] = [
  { name: 'stats', usage: 'stats', summary: 'superblock fields, features by name', run: cmdStats },
  { name: 'ls', usage: 'ls [-l] [PATH]', summary: 'directory entries; -l: inode, mode, links, uid, gid, size, mtime', run: cmdLs },
  { name: 'stat', usage: 'stat PATH|<N>', summary: 'every inode field, extent list, xattr names', run: cmdStat },
  { name: 'cat', usage: 'cat PATH', summary: 'file contents to standard output', run: cmdCat },
  { name: 'dump', usage: 'dump PATH HOSTFILE', summary: 'copy file contents to HOSTFILE on this host', run: cmdDump },
  { name: 'blocks', usage: 'blocks PATH', summary: "physical block ranges of the file's extents", run: cmdBlocks },
  { name: 'extents', usage: 'extents PATH', summary: 'the whole extent tree, with its extent blocks', run: cmdExtents },
  { name: 'slotmap', usage: 'slotmap', summary: 'which node holds each slot', run: cmdSlotmap },
  { name: 'hb', usage: 'hb', summary: 'heartbeat blocks that nodes have written', run: cmdHb },
  { name: 'sysdir', usage: 'sysdir', summary: 'system files and their inode numbers', run: cmdSysdir },
  { name: 'xattrs', usage: 'xattrs PATH', summary: 'extended attributes and their values', run: cmdXattrs },
  { name: 'help', usage: 'help', summary: 'this list', run: cmdHelp },
];

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}
