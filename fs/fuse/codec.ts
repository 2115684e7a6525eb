// Byte codecs for the FUSE structures in protocol.ts: request decoders (kernel -> us) and reply
// and notification encoders (us -> kernel), plus the inverse directions that tests and tools
// use for round trips. Every decoder checks the length it reads and throws FsError('EINVAL')
// on a short or malformed body, so a bad request becomes an error reply, never a crash.
import { FsError } from '../errors';
import type { Attr, Entry, FileLock, OpenReply, StatFs } from './ops';
import {
  AttrLayout, AttrOut, CopyFileRangeIn, CopyFileRangeOut, CreateIn, Dirent, DirentPlus, EntryOut,
  FallocateIn, FileLockLayout, FlushIn, FsyncIn, GetattrIn, GetxattrIn, GetxattrOut, InHeader,
  InitIn, InitOut, LinkIn, LkIn, LkOut, NAME_MAX_BYTES, LseekIn, LseekOut, MkdirIn, MknodIn, NotifyDeleteOut,
  NotifyInvalEntryOut, NotifyInvalInodeOut, OpenIn, OpenOut, OpenOutFlag, OutHeader, ReadIn,
  ReleaseIn, Rename2In, RenameIn, SetattrIn, SetxattrIn, StatfsOut, WriteIn, WriteOut, recAlign,
} from './protocol';

const NS_PER_SEC = 1_000_000_000n;
const U32_MAX = 0xffff_ffff;
const U16_MAX = 0xffff;

/** A request the kernel should never have sent: answered EINVAL, and logged. */
export class MalformedRequestError extends FsError {
  constructor(what: string) {
    super('EINVAL', `malformed FUSE request: ${what}`);
    this.name = 'MalformedRequestError';
  }
}

function invalid(what: string): never {
  throw new MalformedRequestError(what);
}

/** Throws EINVAL unless `body` holds at least `sizeBytes` bytes. */
export function requireBytes(body: Buffer, sizeBytes: number, what: string): void {
  if (body.length < sizeBytes) invalid(`${what}: ${body.length} bytes, need ${sizeBytes}`);
}

/** A u64 field that must fit a JS number (inode numbers, handles, offsets). */
export function readU64Number(buf: Buffer, offset: number, what: string): number {
  const value = buf.readBigUInt64LE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) invalid(`${what} ${value} exceeds 2^53`);
  return Number(value);
}

function writeU64Number(buf: Buffer, offset: number, value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a non-negative safe integer, got ${value}`);
  }
  buf.writeBigUInt64LE(BigInt(value), offset);
}

function writeU32(buf: Buffer, offset: number, value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${what} must be a u32, got ${value}`);
  }
  buf.writeUInt32LE(value, offset);
}

/** The NUL-terminated string starting at `offset`: its bytes (a view) and the offset after the NUL. */
export function readCString(body: Buffer, offset: number, what: string): { bytes: Buffer; end: number } {
  const nul = body.indexOf(0, offset);
  if (offset > body.length || nul < 0) invalid(`${what} is not NUL-terminated`);
  if (nul === offset) invalid(`${what} is empty`);
  return { bytes: body.subarray(offset, nul), end: nul + 1 };
}

// --- Times and timeouts ----------------------------------------------------------------------

/** Nanoseconds since the epoch -> (seconds, nanoseconds 0..999999999), floor semantics. */
export function splitNs(ns: bigint): { sec: bigint; nsec: number } {
  let sec = ns / NS_PER_SEC;
  let rem = ns % NS_PER_SEC;
  if (rem < 0n) {
    sec -= 1n;
    rem += NS_PER_SEC;
  }
  return { sec, nsec: Number(rem) };
}

export function joinNs(sec: bigint, nsec: number): bigint {
  return sec * NS_PER_SEC + BigInt(nsec);
}

/** A cache timeout in ms -> (seconds, nanoseconds). */
export function splitTimeoutMs(timeoutMs: number): { sec: bigint; nsec: number } {
  if (!(timeoutMs >= 0) || !Number.isFinite(timeoutMs)) {
    throw new RangeError(`cache timeout must be finite and >= 0 ms, got ${timeoutMs}`);
  }
  const wholeMs = Math.floor(timeoutMs);
  const nsec = Math.round((timeoutMs - wholeMs) * 1e6) + (wholeMs % 1000) * 1_000_000;
  return { sec: BigInt(Math.floor(wholeMs / 1000)), nsec: Math.min(nsec, 999_999_999) };
}

// --- Headers -----------------------------------------------------------------------------------

export interface InHeaderFields {
  lenBytes: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
  totalExtlen: number;
}

export function decodeInHeader(buf: Buffer): InHeaderFields {
  requireBytes(buf, InHeader.size, 'fuse_in_header');
  return {
    lenBytes: buf.readUInt32LE(InHeader.len),
    opcode: buf.readUInt32LE(InHeader.opcode),
    unique: buf.readBigUInt64LE(InHeader.unique),
    nodeid: buf.readBigUInt64LE(InHeader.nodeid),
    uid: buf.readUInt32LE(InHeader.uid),
    gid: buf.readUInt32LE(InHeader.gid),
    pid: buf.readUInt32LE(InHeader.pid),
    totalExtlen: buf.readUInt16LE(InHeader.totalExtlen),
  };
}

/** Builds a request: header (len filled in) + body. For tests and tools. */
export function encodeRequest(h: Omit<InHeaderFields, 'lenBytes' | 'totalExtlen'>, body: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(InHeader.size + body.length);
  buf.writeUInt32LE(buf.length, InHeader.len);
  buf.writeUInt32LE(h.opcode, InHeader.opcode);
  buf.writeBigUInt64LE(h.unique, InHeader.unique);
  buf.writeBigUInt64LE(h.nodeid, InHeader.nodeid);
  buf.writeUInt32LE(h.uid, InHeader.uid);
  buf.writeUInt32LE(h.gid, InHeader.gid);
  buf.writeUInt32LE(h.pid, InHeader.pid);
  body.copy(buf, InHeader.size);
  return buf;
}

export function encodeOutHeader(lenBytes: number, error: number, unique: bigint): Buffer {
  const buf = Buffer.alloc(OutHeader.size);
  buf.writeUInt32LE(lenBytes, OutHeader.len);
  buf.writeInt32LE(error, OutHeader.error);
  buf.writeBigUInt64LE(unique, OutHeader.unique);
  return buf;
}

export function decodeOutHeader(buf: Buffer): { lenBytes: number; error: number; unique: bigint } {
  requireBytes(buf, OutHeader.size, 'fuse_out_header');
  return {
    lenBytes: buf.readUInt32LE(OutHeader.len),
    error: buf.readInt32LE(OutHeader.error),
    unique: buf.readBigUInt64LE(OutHeader.unique),
  };
}

// --- Attributes and entries ------------------------------------------------------------------

export function encodeAttr(buf: Buffer, offset: number, attr: Attr): void {
  writeU64Number(buf, offset + AttrLayout.ino, attr.ino, 'attr.ino');
  writeU64Number(buf, offset + AttrLayout.size_, attr.sizeBytes, 'attr.sizeBytes');
  writeU64Number(buf, offset + AttrLayout.blocks, attr.blocks512, 'attr.blocks512');
  const times: [bigint, number, number][] = [
    [attr.atimeNs, AttrLayout.atime, AttrLayout.atimensec],
    [attr.mtimeNs, AttrLayout.mtime, AttrLayout.mtimensec],
    [attr.ctimeNs, AttrLayout.ctime, AttrLayout.ctimensec],
  ];
  for (const [ns, secAt, nsecAt] of times) {
    const { sec, nsec } = splitNs(ns);
    buf.writeBigInt64LE(sec, offset + secAt); // the kernel reads these as signed (pre-1970)
    buf.writeUInt32LE(nsec, offset + nsecAt);
  }
  writeU32(buf, offset + AttrLayout.mode, attr.mode, 'attr.mode');
  writeU32(buf, offset + AttrLayout.nlink, attr.nlink, 'attr.nlink');
  writeU32(buf, offset + AttrLayout.uid, attr.uid, 'attr.uid');
  writeU32(buf, offset + AttrLayout.gid, attr.gid, 'attr.gid');
  writeU32(buf, offset + AttrLayout.rdev, attr.rdev, 'attr.rdev');
  writeU32(buf, offset + AttrLayout.blksize, attr.blksizeBytes ?? 4096, 'attr.blksizeBytes');
  buf.writeUInt32LE(0, offset + AttrLayout.flags);
}

export function decodeAttr(buf: Buffer, offset: number): Attr {
  requireBytes(buf, offset + AttrLayout.size, 'fuse_attr');
  const time = (secAt: number, nsecAt: number): bigint =>
    joinNs(buf.readBigInt64LE(offset + secAt), buf.readUInt32LE(offset + nsecAt));
  return {
    ino: readU64Number(buf, offset + AttrLayout.ino, 'ino'),
    sizeBytes: readU64Number(buf, offset + AttrLayout.size_, 'size'),
    blocks512: readU64Number(buf, offset + AttrLayout.blocks, 'blocks'),
    atimeNs: time(AttrLayout.atime, AttrLayout.atimensec),
    mtimeNs: time(AttrLayout.mtime, AttrLayout.mtimensec),
    ctimeNs: time(AttrLayout.ctime, AttrLayout.ctimensec),
    mode: buf.readUInt32LE(offset + AttrLayout.mode),
    nlink: buf.readUInt32LE(offset + AttrLayout.nlink),
    uid: buf.readUInt32LE(offset + AttrLayout.uid),
    gid: buf.readUInt32LE(offset + AttrLayout.gid),
    rdev: buf.readUInt32LE(offset + AttrLayout.rdev),
    blksizeBytes: buf.readUInt32LE(offset + AttrLayout.blksize),
  };
}

const ZERO_ATTR: Attr = {
  ino: 0, sizeBytes: 0, blocks512: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n,
  mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0,
};

/** Writes a fuse_entry_out at `offset`. A negative entry (ino 0) carries zeroed attributes. */
export function writeEntryOut(buf: Buffer, offset: number, entry: Entry): void {
  writeU64Number(buf, offset + EntryOut.nodeid, entry.ino, 'entry.ino');
  writeU64Number(buf, offset + EntryOut.generation, entry.generation, 'entry.generation');
  const ev = splitTimeoutMs(entry.entryTimeoutMs);
  const av = splitTimeoutMs(entry.attrTimeoutMs);
  buf.writeBigUInt64LE(ev.sec, offset + EntryOut.entryValid);
  buf.writeBigUInt64LE(av.sec, offset + EntryOut.attrValid);
  buf.writeUInt32LE(ev.nsec, offset + EntryOut.entryValidNsec);
  buf.writeUInt32LE(av.nsec, offset + EntryOut.attrValidNsec);
  const attr = entry.ino === 0 ? ZERO_ATTR : entry.attr;
  if (entry.ino !== 0 && attr.ino !== entry.ino) {
    throw new RangeError(`entry.ino ${entry.ino} != entry.attr.ino ${attr.ino}`);
  }
  encodeAttr(buf, offset + EntryOut.attr, attr);
}

export function encodeEntryOut(entry: Entry): Buffer {
  const buf = Buffer.alloc(EntryOut.size);
  writeEntryOut(buf, 0, entry);
  return buf;
}

export function decodeEntryOut(buf: Buffer, offset = 0): Entry {
  requireBytes(buf, offset + EntryOut.size, 'fuse_entry_out');
  const ms = (secAt: number, nsecAt: number): number =>
    Number(buf.readBigUInt64LE(offset + secAt)) * 1000 + buf.readUInt32LE(offset + nsecAt) / 1e6;
  return {
    ino: readU64Number(buf, offset + EntryOut.nodeid, 'nodeid'),
    generation: readU64Number(buf, offset + EntryOut.generation, 'generation'),
    entryTimeoutMs: ms(EntryOut.entryValid, EntryOut.entryValidNsec),
    attrTimeoutMs: ms(EntryOut.attrValid, EntryOut.attrValidNsec),
    attr: decodeAttr(buf, offset + EntryOut.attr),
  };
}

export function encodeAttrOut(attr: Attr, attrTimeoutMs: number): Buffer {
  const buf = Buffer.alloc(AttrOut.size);
  const av = splitTimeoutMs(attrTimeoutMs);
  buf.writeBigUInt64LE(av.sec, AttrOut.attrValid);
  buf.writeUInt32LE(av.nsec, AttrOut.attrValidNsec);
  encodeAttr(buf, AttrOut.attr, attr);
  return buf;
}

// --- Request bodies ---------------------------------------------------------------------------
// `body` is the request after fuse_in_header and without extensions.

export function decodeGetattrIn(body: Buffer): { flags: number; fh: number } {
  requireBytes(body, GetattrIn.size, 'fuse_getattr_in');
  return { flags: body.readUInt32LE(GetattrIn.getattrFlags), fh: readU64Number(body, GetattrIn.fh, 'fh') };
}

export interface SetattrInFields {
  valid: number;
  fh: number;
  sizeBytes: number;
  lockOwner: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  mode: number;
  uid: number;
  gid: number;
}

export function decodeSetattrIn(body: Buffer): SetattrInFields {
  requireBytes(body, SetattrIn.size, 'fuse_setattr_in');
  const valid = body.readUInt32LE(SetattrIn.valid);
  return {
    valid,
    fh: readU64Number(body, SetattrIn.fh, 'fh'),
    sizeBytes: readU64Number(body, SetattrIn.size_, 'size'),
    lockOwner: body.readBigUInt64LE(SetattrIn.lockOwner),
    atimeNs: joinNs(body.readBigInt64LE(SetattrIn.atime), body.readUInt32LE(SetattrIn.atimensec)),
    mtimeNs: joinNs(body.readBigInt64LE(SetattrIn.mtime), body.readUInt32LE(SetattrIn.mtimensec)),
    ctimeNs: joinNs(body.readBigInt64LE(SetattrIn.ctime), body.readUInt32LE(SetattrIn.ctimensec)),
    mode: body.readUInt32LE(SetattrIn.mode),
    uid: body.readUInt32LE(SetattrIn.uid),
    gid: body.readUInt32LE(SetattrIn.gid),
  };
}

export function encodeSetattrIn(f: SetattrInFields): Buffer {
  const buf = Buffer.alloc(SetattrIn.size);
  buf.writeUInt32LE(f.valid, SetattrIn.valid);
  writeU64Number(buf, SetattrIn.fh, f.fh, 'fh');
  writeU64Number(buf, SetattrIn.size_, f.sizeBytes, 'size');
  buf.writeBigUInt64LE(f.lockOwner, SetattrIn.lockOwner);
  const times: [bigint, number, number][] = [
    [f.atimeNs, SetattrIn.atime, SetattrIn.atimensec],
    [f.mtimeNs, SetattrIn.mtime, SetattrIn.mtimensec],
    [f.ctimeNs, SetattrIn.ctime, SetattrIn.ctimensec],
  ];
  for (const [ns, secAt, nsecAt] of times) {
    const { sec, nsec } = splitNs(ns);
    buf.writeBigInt64LE(sec, secAt);
    buf.writeUInt32LE(nsec, nsecAt);
  }
  buf.writeUInt32LE(f.mode, SetattrIn.mode);
  buf.writeUInt32LE(f.uid, SetattrIn.uid);
  buf.writeUInt32LE(f.gid, SetattrIn.gid);
  return buf;
}

/** A single NUL-terminated name (LOOKUP UNLINK RMDIR REMOVEXATTR), possibly after `offset`. */
export function decodeName(body: Buffer, offset: number, what: string): Buffer {
  return readCString(body, offset, what).bytes;
}

/** Two NUL-terminated names one after the other (SYMLINK name+target, RENAME old+new). */
export function decodeTwoNames(body: Buffer, offset: number, what: string): [Buffer, Buffer] {
  const first = readCString(body, offset, `${what} first name`);
  const second = readCString(body, first.end, `${what} second name`);
  return [first.bytes, second.bytes];
}

export function decodeMknodIn(body: Buffer): { mode: number; rdev: number; umask: number; name: Buffer } {
  requireBytes(body, MknodIn.size, 'fuse_mknod_in');
  return {
    mode: body.readUInt32LE(MknodIn.mode),
    rdev: body.readUInt32LE(MknodIn.rdev),
    umask: body.readUInt32LE(MknodIn.umask),
    name: decodeName(body, MknodIn.size, 'mknod name'),
  };
}

export function decodeMkdirIn(body: Buffer): { mode: number; umask: number; name: Buffer } {
  requireBytes(body, MkdirIn.size, 'fuse_mkdir_in');
  return {
    mode: body.readUInt32LE(MkdirIn.mode),
    umask: body.readUInt32LE(MkdirIn.umask),
    name: decodeName(body, MkdirIn.size, 'mkdir name'),
  };
}

export function decodeRenameIn(body: Buffer, v2: boolean): { newParent: number; flags: number; names: [Buffer, Buffer] } {
  const size = v2 ? Rename2In.size : RenameIn.size;
  requireBytes(body, size, v2 ? 'fuse_rename2_in' : 'fuse_rename_in');
  return {
    newParent: readU64Number(body, Rename2In.newdir, 'newdir'),
    flags: v2 ? body.readUInt32LE(Rename2In.flags) : 0,
    names: decodeTwoNames(body, size, 'rename'),
  };
}

export function decodeLinkIn(body: Buffer): { oldNodeid: number; name: Buffer } {
  requireBytes(body, LinkIn.size, 'fuse_link_in');
  return {
    oldNodeid: readU64Number(body, LinkIn.oldnodeid, 'oldnodeid'),
    name: decodeName(body, LinkIn.size, 'link name'),
  };
}

export function decodeOpenIn(body: Buffer): { flags: number; openFlags: number } {
  requireBytes(body, OpenIn.size, 'fuse_open_in');
  return { flags: body.readUInt32LE(OpenIn.flags), openFlags: body.readUInt32LE(OpenIn.openFlags) };
}

export function decodeCreateIn(body: Buffer): { flags: number; mode: number; umask: number; openFlags: number; name: Buffer } {
  requireBytes(body, CreateIn.size, 'fuse_create_in');
  return {
    flags: body.readUInt32LE(CreateIn.flags),
    mode: body.readUInt32LE(CreateIn.mode),
    umask: body.readUInt32LE(CreateIn.umask),
    openFlags: body.readUInt32LE(CreateIn.openFlags),
    name: decodeName(body, CreateIn.size, 'create name'),
  };
}

export interface ReadInFields {
  fh: number;
  offsetBytes: number;
  sizeBytes: number;
  readFlags: number;
  lockOwner: bigint;
  flags: number;
}

/** fuse_read_in: READ, READDIR and READDIRPLUS. */
export function decodeReadIn(body: Buffer): ReadInFields {
  requireBytes(body, ReadIn.size, 'fuse_read_in');
  return {
    fh: readU64Number(body, ReadIn.fh, 'fh'),
    offsetBytes: readU64Number(body, ReadIn.offset, 'offset'),
    sizeBytes: body.readUInt32LE(ReadIn.size_),
    readFlags: body.readUInt32LE(ReadIn.readFlags),
    lockOwner: body.readBigUInt64LE(ReadIn.lockOwner),
    flags: body.readUInt32LE(ReadIn.flags),
  };
}

export function encodeReadIn(f: ReadInFields): Buffer {
  const buf = Buffer.alloc(ReadIn.size);
  writeU64Number(buf, ReadIn.fh, f.fh, 'fh');
  writeU64Number(buf, ReadIn.offset, f.offsetBytes, 'offset');
  buf.writeUInt32LE(f.sizeBytes, ReadIn.size_);
  buf.writeUInt32LE(f.readFlags, ReadIn.readFlags);
  buf.writeBigUInt64LE(f.lockOwner, ReadIn.lockOwner);
  buf.writeUInt32LE(f.flags, ReadIn.flags);
  return buf;
}

export interface WriteInFields {
  fh: number;
  offsetBytes: number;
  writeFlags: number;
  lockOwner: bigint;
  flags: number;
  data: Buffer;
}

export function decodeWriteIn(body: Buffer): WriteInFields {
  requireBytes(body, WriteIn.size, 'fuse_write_in');
  const sizeBytes = body.readUInt32LE(WriteIn.size_);
  requireBytes(body, WriteIn.size + sizeBytes, 'write data');
  return {
    fh: readU64Number(body, WriteIn.fh, 'fh'),
    offsetBytes: readU64Number(body, WriteIn.offset, 'offset'),
    writeFlags: body.readUInt32LE(WriteIn.writeFlags),
    lockOwner: body.readBigUInt64LE(WriteIn.lockOwner),
    flags: body.readUInt32LE(WriteIn.flags),
    data: body.subarray(WriteIn.size, WriteIn.size + sizeBytes),
  };
}

export function encodeWriteIn(f: WriteInFields): Buffer {
  const buf = Buffer.alloc(WriteIn.size + f.data.length);
  writeU64Number(buf, WriteIn.fh, f.fh, 'fh');
  writeU64Number(buf, WriteIn.offset, f.offsetBytes, 'offset');
  buf.writeUInt32LE(f.data.length, WriteIn.size_);
  buf.writeUInt32LE(f.writeFlags, WriteIn.writeFlags);
  buf.writeBigUInt64LE(f.lockOwner, WriteIn.lockOwner);
  buf.writeUInt32LE(f.flags, WriteIn.flags);
  f.data.copy(buf, WriteIn.size);
  return buf;
}

export function decodeReleaseIn(body: Buffer): { fh: number; flags: number; releaseFlags: number; lockOwner: bigint } {
  requireBytes(body, ReleaseIn.size, 'fuse_release_in');
  return {
    fh: readU64Number(body, ReleaseIn.fh, 'fh'),
    flags: body.readUInt32LE(ReleaseIn.flags),
    releaseFlags: body.readUInt32LE(ReleaseIn.releaseFlags),
    lockOwner: body.readBigUInt64LE(ReleaseIn.lockOwner),
  };
}

export function decodeFlushIn(body: Buffer): { fh: number; lockOwner: bigint } {
  requireBytes(body, FlushIn.size, 'fuse_flush_in');
  return { fh: readU64Number(body, FlushIn.fh, 'fh'), lockOwner: body.readBigUInt64LE(FlushIn.lockOwner) };
}

export function decodeFsyncIn(body: Buffer): { fh: number; fsyncFlags: number } {
  requireBytes(body, FsyncIn.size, 'fuse_fsync_in');
  return { fh: readU64Number(body, FsyncIn.fh, 'fh'), fsyncFlags: body.readUInt32LE(FsyncIn.fsyncFlags) };
}

export function decodeSetxattrIn(body: Buffer, extended: boolean): { flags: number; name: string; value: Buffer } {
  const size = extended ? SetxattrIn.sizeExt : SetxattrIn.size;
  requireBytes(body, size, 'fuse_setxattr_in');
  const valueBytes = body.readUInt32LE(SetxattrIn.size_);
  const name = readCString(body, size, 'xattr name');
  requireBytes(body, name.end + valueBytes, 'xattr value');
  return {
    flags: body.readUInt32LE(SetxattrIn.flags),
    name: name.bytes.toString('utf8'),
    value: body.subarray(name.end, name.end + valueBytes),
  };
}

export function decodeGetxattrIn(body: Buffer, withName: boolean): { sizeBytes: number; name: string } {
  requireBytes(body, GetxattrIn.size, 'fuse_getxattr_in');
  return {
    sizeBytes: body.readUInt32LE(GetxattrIn.size_),
    name: withName ? decodeName(body, GetxattrIn.size, 'xattr name').toString('utf8') : '',
  };
}

export function encodeGetxattrOut(sizeBytes: number): Buffer {
  const buf = Buffer.alloc(GetxattrOut.size);
  writeU32(buf, GetxattrOut.size_, sizeBytes, 'xattr size');
  return buf;
}

export function decodeFileLock(buf: Buffer, offset: number): FileLock {
  requireBytes(buf, offset + FileLockLayout.size, 'fuse_file_lock');
  return {
    start: buf.readBigUInt64LE(offset + FileLockLayout.start),
    end: buf.readBigUInt64LE(offset + FileLockLayout.end),
    type: buf.readUInt32LE(offset + FileLockLayout.type),
    pid: buf.readUInt32LE(offset + FileLockLayout.pid),
  };
}

export function writeFileLock(buf: Buffer, offset: number, lock: FileLock): void {
  buf.writeBigUInt64LE(lock.start, offset + FileLockLayout.start);
  buf.writeBigUInt64LE(lock.end, offset + FileLockLayout.end);
  writeU32(buf, offset + FileLockLayout.type, lock.type, 'lock.type');
  writeU32(buf, offset + FileLockLayout.pid, lock.pid, 'lock.pid');
}

export function decodeLkIn(body: Buffer): { fh: number; owner: bigint; lock: FileLock; lkFlags: number } {
  requireBytes(body, LkIn.size, 'fuse_lk_in');
  return {
    fh: readU64Number(body, LkIn.fh, 'fh'),
    owner: body.readBigUInt64LE(LkIn.owner),
    lock: decodeFileLock(body, LkIn.lk),
    lkFlags: body.readUInt32LE(LkIn.lkFlags),
  };
}

export function encodeLkIn(f: { fh: number; owner: bigint; lock: FileLock; lkFlags: number }): Buffer {
  const buf = Buffer.alloc(LkIn.size);
  writeU64Number(buf, LkIn.fh, f.fh, 'fh');
  buf.writeBigUInt64LE(f.owner, LkIn.owner);
  writeFileLock(buf, LkIn.lk, f.lock);
  buf.writeUInt32LE(f.lkFlags, LkIn.lkFlags);
  return buf;
}

export function encodeLkOut(lock: FileLock): Buffer {
  const buf = Buffer.alloc(LkOut.size);
  writeFileLock(buf, LkOut.lk, lock);
  return buf;
}

export function decodeU32At(body: Buffer, offset: number, what: string): number {
  requireBytes(body, offset + 4, what);
  return body.readUInt32LE(offset);
}

export function decodeFallocateIn(body: Buffer): { fh: number; offsetBytes: number; lengthBytes: number; mode: number } {
  requireBytes(body, FallocateIn.size, 'fuse_fallocate_in');
  return {
    fh: readU64Number(body, FallocateIn.fh, 'fh'),
    offsetBytes: readU64Number(body, FallocateIn.offset, 'offset'),
    lengthBytes: readU64Number(body, FallocateIn.length, 'length'),
    mode: body.readUInt32LE(FallocateIn.mode),
  };
}

export function decodeLseekIn(body: Buffer): { fh: number; offsetBytes: number; whence: number } {
  requireBytes(body, LseekIn.size, 'fuse_lseek_in');
  return {
    fh: readU64Number(body, LseekIn.fh, 'fh'),
    offsetBytes: readU64Number(body, LseekIn.offset, 'offset'),
    whence: body.readUInt32LE(LseekIn.whence),
  };
}

export function encodeU64Reply(value: number, what: string): Buffer {
  const buf = Buffer.alloc(LseekOut.size);
  writeU64Number(buf, LseekOut.offset, value, what);
  return buf;
}

function minBigint(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

export function decodeCopyFileRangeIn(body: Buffer): {
  fhIn: number; offIn: number; nodeidOut: number; fhOut: number; offOut: number; lengthBytes: number; flags: number;
} {
  requireBytes(body, CopyFileRangeIn.size, 'fuse_copy_file_range_in');
  const flags = body.readBigUInt64LE(CopyFileRangeIn.flags);
  if (flags > 0xffff_ffffn) invalid(`copy_file_range flags ${flags}`);
  return {
    fhIn: readU64Number(body, CopyFileRangeIn.fhIn, 'fh_in'),
    offIn: readU64Number(body, CopyFileRangeIn.offIn, 'off_in'),
    nodeidOut: readU64Number(body, CopyFileRangeIn.nodeidOut, 'nodeid_out'),
    fhOut: readU64Number(body, CopyFileRangeIn.fhOut, 'fh_out'),
    offOut: readU64Number(body, CopyFileRangeIn.offOut, 'off_out'),
    // "Copy up to len bytes": a shorter copy is a valid answer, so clamp to a JS-safe length.
    lengthBytes: Number(minBigint(body.readBigUInt64LE(CopyFileRangeIn.len), BigInt(Number.MAX_SAFE_INTEGER))),
    flags: Number(flags),
  };
}

export function encodeWriteOut(sizeBytes: number): Buffer {
  const buf = Buffer.alloc(WriteOut.size);
  writeU32(buf, WriteOut.size_, sizeBytes, 'write size');
  return buf;
}

export function encodeCopyFileRangeOut(bytesCopied: number): Buffer {
  const buf = Buffer.alloc(CopyFileRangeOut.size);
  writeU64Number(buf, CopyFileRangeOut.bytesCopied, bytesCopied, 'bytes copied');
  return buf;
}

export function encodeOpenOut(reply: OpenReply): Buffer {
  const buf = Buffer.alloc(OpenOut.size);
  writeU64Number(buf, OpenOut.fh, reply.fh, 'fh');
  let flags = 0;
  if (reply.directIo) flags |= OpenOutFlag.DIRECT_IO;
  if (reply.keepCache) flags |= OpenOutFlag.KEEP_CACHE;
  if (reply.nonSeekable) flags |= OpenOutFlag.NONSEEKABLE;
  if (reply.cacheDir) flags |= OpenOutFlag.CACHE_DIR;
  if (reply.noFlush) flags |= OpenOutFlag.NOFLUSH;
  if (reply.parallelDirectWrites) flags |= OpenOutFlag.PARALLEL_DIRECT_WRITES;
  buf.writeUInt32LE(flags, OpenOut.openFlags);
  return buf;
}

export function decodeOpenOut(buf: Buffer): { fh: number; openFlags: number } {
  requireBytes(buf, OpenOut.size, 'fuse_open_out');
  return { fh: readU64Number(buf, OpenOut.fh, 'fh'), openFlags: buf.readUInt32LE(OpenOut.openFlags) };
}

export function encodeStatfsOut(st: StatFs): Buffer {
  const buf = Buffer.alloc(StatfsOut.size);
  writeU64Number(buf, StatfsOut.blocks, st.blocks, 'blocks');
  writeU64Number(buf, StatfsOut.bfree, st.blocksFree, 'blocksFree');
  writeU64Number(buf, StatfsOut.bavail, st.blocksAvailable, 'blocksAvailable');
  writeU64Number(buf, StatfsOut.files, st.files, 'files');
  writeU64Number(buf, StatfsOut.ffree, st.filesFree, 'filesFree');
  writeU32(buf, StatfsOut.bsize, st.blockSizeBytes, 'blockSizeBytes');
  writeU32(buf, StatfsOut.namelen, st.nameLengthMax, 'nameLengthMax');
  writeU32(buf, StatfsOut.frsize, st.fragmentSizeBytes, 'fragmentSizeBytes');
  return buf;
}

// --- INIT --------------------------------------------------------------------------------------

export interface InitInFields {
  major: number;
  minor: number;
  maxReadaheadBytes: number;
  /** flags | flags2 << 32 (flags2 only when the kernel set INIT_EXT). */
  flags: bigint;
}

export function decodeInitIn(body: Buffer): InitInFields {
  requireBytes(body, 8, 'fuse_init_in major/minor');
  const major = body.readUInt32LE(InitIn.major);
  const minor = body.readUInt32LE(InitIn.minor);
  // A kernel with a different major may send a different layout: only major/minor are read.
  if (major !== 7) return { major, minor, maxReadaheadBytes: 0, flags: 0n };
  requireBytes(body, InitIn.sizeCompat, 'fuse_init_in');
  let flags = BigInt(body.readUInt32LE(InitIn.flags));
  if ((flags & (1n << 30n)) !== 0n && body.length >= InitIn.flags2 + 4) {
    flags |= BigInt(body.readUInt32LE(InitIn.flags2)) << 32n;
  }
  return { major, minor, maxReadaheadBytes: body.readUInt32LE(InitIn.maxReadahead), flags };
}

export function encodeInitIn(f: InitInFields): Buffer {
  const buf = Buffer.alloc(InitIn.size);
  buf.writeUInt32LE(f.major, InitIn.major);
  buf.writeUInt32LE(f.minor, InitIn.minor);
  buf.writeUInt32LE(f.maxReadaheadBytes, InitIn.maxReadahead);
  buf.writeUInt32LE(Number(f.flags & 0xffff_ffffn), InitIn.flags);
  buf.writeUInt32LE(Number(f.flags >> 32n), InitIn.flags2);
  return buf;
}

export interface InitOutFields {
  major: number;
  minor: number;
  maxReadaheadBytes: number;
  /** flags | flags2 << 32; flags2 is written only if INIT_EXT is among the flags. */
  flags: bigint;
  maxBackground: number;
  congestionThreshold: number;
  maxWriteBytes: number;
  timeGranNs: number;
  maxPages: number;
  requestTimeoutSec: number;
}

/** fuse_init_out; the 24-byte 7.22 layout when minor < 23, the 64-byte layout otherwise. */
export function encodeInitOut(f: InitOutFields): Buffer {
  const buf = Buffer.alloc(f.minor < 23 ? InitOut.sizeCompat22 : InitOut.size);
  buf.writeUInt32LE(f.major, InitOut.major);
  buf.writeUInt32LE(f.minor, InitOut.minor);
  writeU32(buf, InitOut.maxReadahead, f.maxReadaheadBytes, 'max_readahead');
  buf.writeUInt32LE(Number(f.flags & 0xffff_ffffn), InitOut.flags);
  if (f.maxBackground > U16_MAX || f.congestionThreshold > U16_MAX || f.maxPages > U16_MAX) {
    throw new RangeError('max_background / congestion_threshold / max_pages must fit u16');
  }
  buf.writeUInt16LE(f.maxBackground, InitOut.maxBackground);
  buf.writeUInt16LE(f.congestionThreshold, InitOut.congestionThreshold);
  writeU32(buf, InitOut.maxWrite, f.maxWriteBytes, 'max_write');
  if (buf.length === InitOut.size) {
    writeU32(buf, InitOut.timeGran, f.timeGranNs, 'time_gran');
    buf.writeUInt16LE(f.maxPages, InitOut.maxPages);
    buf.writeUInt32LE(Number((f.flags >> 32n) & 0xffff_ffffn), InitOut.flags2);
    buf.writeUInt16LE(f.requestTimeoutSec, InitOut.requestTimeout);
  }
  return buf;
}

export function decodeInitOut(buf: Buffer): InitOutFields {
  requireBytes(buf, InitOut.sizeCompat22, 'fuse_init_out');
  const full = buf.length >= InitOut.size;
  let flags = BigInt(buf.readUInt32LE(InitOut.flags));
  if (full) flags |= BigInt(buf.readUInt32LE(InitOut.flags2)) << 32n;
  return {
    major: buf.readUInt32LE(InitOut.major),
    minor: buf.readUInt32LE(InitOut.minor),
    maxReadaheadBytes: buf.readUInt32LE(InitOut.maxReadahead),
    flags,
    maxBackground: buf.readUInt16LE(InitOut.maxBackground),
    congestionThreshold: buf.readUInt16LE(InitOut.congestionThreshold),
    maxWriteBytes: buf.readUInt32LE(InitOut.maxWrite),
    timeGranNs: full ? buf.readUInt32LE(InitOut.timeGran) : 0,
    maxPages: full ? buf.readUInt16LE(InitOut.maxPages) : 0,
    requestTimeoutSec: full ? buf.readUInt16LE(InitOut.requestTimeout) : 0,
  };
}

// --- Directory records ---------------------------------------------------------------------------

/** File type bits of a mode -> the DT_* value READDIR records carry. */
export function direntType(mode: number): number {
  return (mode & 0o170000) >>> 12;
}

/** A filesystem bug, not a kernel one: thrown as RangeError, answered EIO. */
function checkDirent(name: Buffer, nextOffset: number): void {
  if (name.length === 0 || name.length > NAME_MAX_BYTES || name.includes(0) || name.includes(0x2f)) {
    throw new RangeError(`invalid directory entry name ${JSON.stringify(name.toString())}`);
  }
  if (!(nextOffset > 0)) throw new RangeError(`directory entry offset must be > 0, got ${nextOffset}`);
}

/**
 * Packs fuse_dirent / fuse_direntplus records into a reply of at most `capacityBytes`
 * (the size the kernel asked for). `add*` returns false, writing nothing, when a record
 * does not fit.
 */
export class DirentPacker {
  private readonly buf: Buffer;
  private usedBytes = 0;
  private count_ = 0;

  constructor(capacityBytes: number) {
    this.buf = Buffer.alloc(capacityBytes);
  }

  get count(): number {
    return this.count_;
  }

  /** Forgets every entry added (an operation that starts over adds them again). */
  reset(): void {
    this.usedBytes = 0;
    this.count_ = 0;
  }

  addDirent(ino: number, nextOffset: number, type: number, name: Buffer): boolean {
    checkDirent(name, nextOffset);
    const recBytes = recAlign(Dirent.size + name.length);
    if (this.usedBytes + recBytes > this.buf.length) return false;
    this.writeDirent(this.usedBytes, ino, nextOffset, type, name);
    this.usedBytes += recBytes;
    this.count_ += 1;
    return true;
  }

  addDirentPlus(entry: Entry, nextOffset: number, name: Buffer): boolean {
    checkDirent(name, nextOffset);
    const recBytes = recAlign(DirentPlus.size + name.length);
    if (this.usedBytes + recBytes > this.buf.length) return false;
    const at = this.usedBytes;
    writeEntryOut(this.buf, at + DirentPlus.entryOut, entry);
    this.writeDirent(at + DirentPlus.dirent, entry.ino, nextOffset, direntType(entry.attr.mode), name);
    this.usedBytes += recBytes;
    this.count_ += 1;
    return true;
  }

  /** The packed records (a view; padding bytes are zero). */
  result(): Buffer {
    return this.buf.subarray(0, this.usedBytes);
  }

  private writeDirent(at: number, ino: number, nextOffset: number, type: number, name: Buffer): void {
    writeU64Number(this.buf, at + Dirent.ino, ino, 'dirent ino');
    writeU64Number(this.buf, at + Dirent.off, nextOffset, 'dirent offset');
    this.buf.writeUInt32LE(name.length, at + Dirent.namelen);
    this.buf.writeUInt32LE(type, at + Dirent.type);
    name.copy(this.buf, at + Dirent.size);
  }
}

export interface DecodedDirent {
  ino: number;
  offset: number;
  type: number;
  name: string;
  entry?: Entry;
}

/** Parses a READDIR (plus=false) or READDIRPLUS reply payload. For tests and tools. */
export function decodeDirents(buf: Buffer, plus: boolean): DecodedDirent[] {
  const out: DecodedDirent[] = [];
  let at = 0;
  const headerBytes = plus ? DirentPlus.size : Dirent.size;
  const maxRecords = Math.ceil(buf.length / 8);
  for (let i = 0; i < maxRecords && at < buf.length; i++) {
    requireBytes(buf, at + headerBytes, 'dirent');
    const d = at + (plus ? DirentPlus.dirent : 0);
    const namelen = buf.readUInt32LE(d + Dirent.namelen);
    requireBytes(buf, d + Dirent.size + namelen, 'dirent name');
    out.push({
      ino: readU64Number(buf, d + Dirent.ino, 'ino'),
      offset: readU64Number(buf, d + Dirent.off, 'off'),
      type: buf.readUInt32LE(d + Dirent.type),
      name: buf.subarray(d + Dirent.size, d + Dirent.size + namelen).toString(),
      ...(plus ? { entry: decodeEntryOut(buf, at) } : {}),
    });
    at += recAlign(headerBytes + namelen);
  }
  return out;
}

// --- Notifications ---------------------------------------------------------------------------------

export function encodeNotifyInvalInode(ino: number, offsetBytes: number, lengthBytes: number): Buffer {
  const buf = Buffer.alloc(NotifyInvalInodeOut.size);
  writeU64Number(buf, NotifyInvalInodeOut.ino, ino, 'ino');
  buf.writeBigInt64LE(BigInt(offsetBytes), NotifyInvalInodeOut.off);
  buf.writeBigInt64LE(BigInt(lengthBytes), NotifyInvalInodeOut.len);
  return buf;
}

/** fuse_notify_inval_entry_out + name + NUL. */
export function encodeNotifyInvalEntry(parent: number, name: Buffer, flags: number): Buffer {
  const buf = Buffer.alloc(NotifyInvalEntryOut.size + name.length + 1);
  writeU64Number(buf, NotifyInvalEntryOut.parent, parent, 'parent');
  buf.writeUInt32LE(name.length, NotifyInvalEntryOut.namelen);
  buf.writeUInt32LE(flags, NotifyInvalEntryOut.flags);
  name.copy(buf, NotifyInvalEntryOut.size);
  return buf;
}

/** fuse_notify_delete_out + name + NUL. */
export function encodeNotifyDelete(parent: number, child: number, name: Buffer): Buffer {
  const buf = Buffer.alloc(NotifyDeleteOut.size + name.length + 1);
  writeU64Number(buf, NotifyDeleteOut.parent, parent, 'parent');
  writeU64Number(buf, NotifyDeleteOut.child, child, 'child');
  buf.writeUInt32LE(name.length, NotifyDeleteOut.namelen);
  name.copy(buf, NotifyDeleteOut.size);
  return buf;
}
