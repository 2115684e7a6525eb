// One handler per replying opcode: decode the request body (codec.ts), call the filesystem
// (ops.ts), encode the reply payload. Handlers throw to fail a request; the session turns the
// exception into an errno reply (session.ts, replyError). Opcodes without a handler here, and
// handlers whose ops method is missing, are answered ENOSYS -- except OPEN/OPENDIR/RELEASE/
// RELEASEDIR, which succeed with fh 0 so a filesystem without handles still works.
// INIT, FORGET, BATCH_FORGET, INTERRUPT, NOTIFY_REPLY and DESTROY are session business.
import { FsError } from '../errors';
import {
  DirentPacker, decodeCopyFileRangeIn, decodeCreateIn, decodeFallocateIn, decodeFlushIn,
  decodeFsyncIn, decodeGetattrIn, decodeGetxattrIn, decodeLinkIn, decodeLkIn, decodeLseekIn,
  decodeMkdirIn, decodeMknodIn, decodeName, decodeOpenIn, decodeReadIn, decodeReleaseIn,
  decodeRenameIn, decodeSetattrIn, decodeSetxattrIn, decodeTwoNames, decodeU32At, decodeWriteIn,
  direntType, encodeAttrOut, encodeCopyFileRangeOut, encodeEntryOut, encodeGetxattrOut,
  encodeLkOut, encodeOpenOut, encodeStatfsOut, encodeU64Reply, encodeWriteOut,
} from './codec';
import type {
  AttrReply, DirEntry, DirEntryPlus, DirFiller, Entry, FuseOps, OpenReply, RequestContext, SetAttrArgs,
} from './ops';
import {
  FSYNC_FDATASYNC, GETATTR_FH, LK_FLOCK, Opcode, READ_LOCKOWNER, RELEASE_FLOCK_UNLOCK,
  RELEASE_FLUSH, SetattrValid, WRITE_LOCKOWNER,
} from './protocol';

/** What handlers need from the session besides the request. */
export interface HandlerEnv {
  readonly ops: FuseOps;
  /** Zero cache timeouts and FOPEN_DIRECT_IO on every open (FuseSessionOptions.noKernelCache). */
  readonly noKernelCache: boolean;
  /** FOPEN_DIRECT_IO on every open; names and attributes cached (FuseSessionOptions.uncachedData). */
  readonly uncachedData: boolean;
  /** Largest READ/READDIR reply we will build (the negotiated max_write/max_pages bound). */
  readonly maxReadBytes: number;
}

/** The decoded part of the header a handler uses. */
export interface HandlerRequest {
  /** fuse_in_header.nodeid: the inode the request is about. */
  readonly ino: number;
  /** The bytes after fuse_in_header, without extensions. */
  readonly body: Buffer;
  /** Keeps `body` valid past the reply until `done` settles (WriteArgs.hold). */
  readonly hold?: (done: Promise<void>) => void;
}

/** The reply payload (after fuse_out_header); [] = success without payload. */
export type ReplyPayload = Buffer[];
export type Handler = (env: HandlerEnv, ctx: RequestContext, req: HandlerRequest) => Promise<ReplyPayload>;

function missing(op: string): never {
  throw new FsError('ENOSYS', `${op} not implemented by the filesystem`);
}

function entryReply(env: HandlerEnv, entry: Entry): ReplyPayload {
  return [encodeEntryOut(env.noKernelCache ? { ...entry, entryTimeoutMs: 0, attrTimeoutMs: 0 } : entry)];
}

function attrReply(env: HandlerEnv, r: AttrReply): ReplyPayload {
  return [encodeAttrOut(r.attr, env.noKernelCache ? 0 : r.attrTimeoutMs)];
}

function openReply(env: HandlerEnv, r: OpenReply): Buffer {
  return encodeOpenOut(env.uncachedData ? { ...r, directIo: true, keepCache: false, cacheDir: false } : r);
}

function nameBuffer(name: Buffer | string): Buffer {
  return typeof name === 'string' ? Buffer.from(name) : name;
}

/** Reply to GETXATTR/LISTXATTR: size probe (sizeBytes 0), ERANGE, or the bytes. */
function xattrSizedReply(value: Buffer, sizeBytes: number): ReplyPayload {
  if (sizeBytes === 0) return [encodeGetxattrOut(value.length)];
  if (value.length > sizeBytes) throw new FsError('ERANGE', `xattr value is ${value.length} bytes, buffer ${sizeBytes}`);
  return [value];
}

const lookup: Handler = async (env, ctx, req) => {
  const name = decodeName(req.body, 0, 'lookup name');
  return entryReply(env, await env.ops.lookup(ctx, { parent: req.ino, name }));
};

const getattr: Handler = async (env, ctx, req) => {
  // Kernels before 7.9 sent no fuse_getattr_in; we require 7.12, so it is always there.
  const { flags, fh } = decodeGetattrIn(req.body);
  return attrReply(env, await env.ops.getattr(ctx, { ino: req.ino, ...((flags & GETATTR_FH) !== 0 ? { fh } : {}) }));
};

const setattr: Handler = async (env, ctx, req) => {
  if (!env.ops.setattr) missing('setattr');
  const f = decodeSetattrIn(req.body);
  const v = f.valid;
  const args: SetAttrArgs = { ino: req.ino, killSuidgid: (v & SetattrValid.KILL_SUIDGID) !== 0 };
  if (v & SetattrValid.FH) args.fh = f.fh;
  if (v & SetattrValid.MODE) args.mode = f.mode;
  if (v & SetattrValid.UID) args.uid = f.uid;
  if (v & SetattrValid.GID) args.gid = f.gid;
  if (v & SetattrValid.SIZE) args.sizeBytes = f.sizeBytes;
  if (v & SetattrValid.ATIME) args.atimeNs = v & SetattrValid.ATIME_NOW ? 'now' : f.atimeNs;
  if (v & SetattrValid.MTIME) args.mtimeNs = v & SetattrValid.MTIME_NOW ? 'now' : f.mtimeNs;
  if (v & SetattrValid.CTIME) args.ctimeNs = f.ctimeNs;
  if (v & SetattrValid.LOCKOWNER) args.lockOwner = f.lockOwner;
  return attrReply(env, await env.ops.setattr(ctx, args));
};

const readlink: Handler = async (env, ctx, req) => {
  if (!env.ops.readlink) missing('readlink');
  return [await env.ops.readlink(ctx, { ino: req.ino })];
};

const symlink: Handler = async (env, ctx, req) => {
  if (!env.ops.symlink) missing('symlink');
  const [name, target] = decodeTwoNames(req.body, 0, 'symlink');
  return entryReply(env, await env.ops.symlink(ctx, { parent: req.ino, name, target }));
};

const mknod: Handler = async (env, ctx, req) => {
  if (!env.ops.mknod) missing('mknod');
  const a = decodeMknodIn(req.body);
  return entryReply(env, await env.ops.mknod(ctx, { parent: req.ino, ...a }));
};

const mkdir: Handler = async (env, ctx, req) => {
  if (!env.ops.mkdir) missing('mkdir');
  const a = decodeMkdirIn(req.body);
  return entryReply(env, await env.ops.mkdir(ctx, { parent: req.ino, ...a }));
};

const unlink: Handler = async (env, ctx, req) => {
  if (!env.ops.unlink) missing('unlink');
  await env.ops.unlink(ctx, { parent: req.ino, name: decodeName(req.body, 0, 'unlink name') });
  return [];
};

const rmdir: Handler = async (env, ctx, req) => {
  if (!env.ops.rmdir) missing('rmdir');
  await env.ops.rmdir(ctx, { parent: req.ino, name: decodeName(req.body, 0, 'rmdir name') });
  return [];
};

function renameHandler(v2: boolean): Handler {
  return async (env, ctx, req) => {
    if (!env.ops.rename) missing('rename');
    const { newParent, flags, names } = decodeRenameIn(req.body, v2);
    await env.ops.rename(ctx, { parent: req.ino, name: names[0], newParent, newName: names[1], flags });
    return [];
  };
}

const link: Handler = async (env, ctx, req) => {
  if (!env.ops.link) missing('link');
  const { oldNodeid, name } = decodeLinkIn(req.body);
  return entryReply(env, await env.ops.link(ctx, { ino: oldNodeid, newParent: req.ino, newName: name }));
};

const open: Handler = async (env, ctx, req) => {
  const a = decodeOpenIn(req.body);
  const r = env.ops.open ? await env.ops.open(ctx, { ino: req.ino, ...a }) : { fh: 0 };
  return [openReply(env, r)];
};

const read: Handler = async (env, ctx, req) => {
  if (!env.ops.read) missing('read');
  const f = decodeReadIn(req.body);
  if (f.sizeBytes > env.maxReadBytes) throw new FsError('EINVAL', `READ of ${f.sizeBytes} bytes exceeds max ${env.maxReadBytes}`);
  const data = await env.ops.read(ctx, {
    ino: req.ino, fh: f.fh, offsetBytes: f.offsetBytes, sizeBytes: f.sizeBytes, flags: f.flags,
    ...((f.readFlags & READ_LOCKOWNER) !== 0 ? { lockOwner: f.lockOwner } : {}),
  });
  if (data.length > f.sizeBytes) throw new Error(`filesystem read returned ${data.length} bytes for a ${f.sizeBytes}-byte READ`);
  return [data];
};

const write: Handler = async (env, ctx, req) => {
  if (!env.ops.write) missing('write');
  const f = decodeWriteIn(req.body);
  const writtenBytes = await env.ops.write(ctx, {
    ino: req.ino, fh: f.fh, offsetBytes: f.offsetBytes, data: f.data, flags: f.flags, writeFlags: f.writeFlags,
    ...((f.writeFlags & WRITE_LOCKOWNER) !== 0 ? { lockOwner: f.lockOwner } : {}),
    ...(req.hold ? { hold: req.hold } : {}),
  });
  if (!Number.isInteger(writtenBytes) || writtenBytes < 0 || writtenBytes > f.data.length) {
    throw new Error(`filesystem write returned ${writtenBytes} for ${f.data.length} bytes`);
  }
  return [encodeWriteOut(writtenBytes)];
};

const statfs: Handler = async (env, ctx, req) => {
  if (!env.ops.statfs) missing('statfs');
  return [encodeStatfsOut(await env.ops.statfs(ctx, { ino: req.ino }))];
};

const release: Handler = async (env, ctx, req) => {
  const f = decodeReleaseIn(req.body);
  await env.ops.release?.(ctx, {
    ino: req.ino, fh: f.fh, flags: f.flags, lockOwner: f.lockOwner,
    flush: (f.releaseFlags & RELEASE_FLUSH) !== 0,
    flockUnlock: (f.releaseFlags & RELEASE_FLOCK_UNLOCK) !== 0,
  });
  return [];
};

function fsyncHandler(dir: boolean): Handler {
  return async (env, ctx, req) => {
    const method = dir ? env.ops.fsyncdir : env.ops.fsync;
    if (!method) missing(dir ? 'fsyncdir' : 'fsync');
    const f = decodeFsyncIn(req.body);
    await method.call(env.ops, ctx, { ino: req.ino, fh: f.fh, dataOnly: (f.fsyncFlags & FSYNC_FDATASYNC) !== 0 });
    return [];
  };
}

const setxattr: Handler = async (env, ctx, req) => {
  if (!env.ops.setxattr) missing('setxattr');
  const a = decodeSetxattrIn(req.body, false);
  await env.ops.setxattr(ctx, { ino: req.ino, ...a });
  return [];
};

const getxattr: Handler = async (env, ctx, req) => {
  if (!env.ops.getxattr) missing('getxattr');
  const a = decodeGetxattrIn(req.body, true);
  return xattrSizedReply(await env.ops.getxattr(ctx, { ino: req.ino, name: a.name }), a.sizeBytes);
};

const listxattr: Handler = async (env, ctx, req) => {
  if (!env.ops.listxattr) missing('listxattr');
  const a = decodeGetxattrIn(req.body, false);
  const names = await env.ops.listxattr(ctx, { ino: req.ino });
  const list = Buffer.concat(names.map((n) => Buffer.from(`${n}\0`)));
  return xattrSizedReply(list, a.sizeBytes);
};

const removexattr: Handler = async (env, ctx, req) => {
  if (!env.ops.removexattr) missing('removexattr');
  await env.ops.removexattr(ctx, { ino: req.ino, name: decodeName(req.body, 0, 'xattr name').toString('utf8') });
  return [];
};

const flush: Handler = async (env, ctx, req) => {
  if (!env.ops.flush) missing('flush');
  const f = decodeFlushIn(req.body);
  await env.ops.flush(ctx, { ino: req.ino, fh: f.fh, lockOwner: f.lockOwner });
  return [];
};

const opendir: Handler = async (env, ctx, req) => {
  const a = decodeOpenIn(req.body);
  const r = env.ops.opendir ? await env.ops.opendir(ctx, { ino: req.ino, ...a }) : { fh: 0 };
  return [openReply(env, r)];
};

function readdirHandler(plus: boolean): Handler {
  return async (env, ctx, req) => {
    const f = decodeReadIn(req.body);
    const packer = new DirentPacker(Math.min(f.sizeBytes, env.maxReadBytes));
    const args = { ino: req.ino, fh: f.fh, offset: f.offsetBytes, sizeBytes: f.sizeBytes };
    if (plus) {
      if (!env.ops.readdirplus) missing('readdirplus');
      const filler: DirFiller<DirEntryPlus> = {
        add: (e) => packer.addDirentPlus(env.noKernelCache ? { ...e.entry, entryTimeoutMs: 0, attrTimeoutMs: 0 } : e.entry, e.offset, nameBuffer(e.name)),
        reset: () => packer.reset(),
      };
      await env.ops.readdirplus(ctx, args, filler);
    } else {
      if (!env.ops.readdir) missing('readdir');
      const filler: DirFiller<DirEntry> = {
        add: (e) => packer.addDirent(e.ino, e.offset, direntType(e.mode), nameBuffer(e.name)),
        reset: () => packer.reset(),
      };
      await env.ops.readdir(ctx, args, filler);
    }
    return [packer.result()];
  };
}

const releasedir: Handler = async (env, ctx, req) => {
  const f = decodeReleaseIn(req.body);
  await env.ops.releasedir?.(ctx, { ino: req.ino, fh: f.fh, flags: f.flags });
  return [];
};

const getlk: Handler = async (env, ctx, req) => {
  if (!env.ops.getlk) missing('getlk');
  const f = decodeLkIn(req.body);
  const lock = await env.ops.getlk(ctx, { ino: req.ino, fh: f.fh, owner: f.owner, lock: f.lock, flock: (f.lkFlags & LK_FLOCK) !== 0 });
  return [encodeLkOut(lock)];
};

function setlkHandler(sleep: boolean): Handler {
  return async (env, ctx, req) => {
    if (!env.ops.setlk) missing('setlk');
    const f = decodeLkIn(req.body);
    await env.ops.setlk(ctx, {
      ino: req.ino, fh: f.fh, owner: f.owner, lock: f.lock, flock: (f.lkFlags & LK_FLOCK) !== 0, sleep,
    });
    return [];
  };
}

const access: Handler = async (env, ctx, req) => {
  if (!env.ops.access) missing('access');
  await env.ops.access(ctx, { ino: req.ino, mask: decodeU32At(req.body, 0, 'fuse_access_in') });
  return [];
};

const create: Handler = async (env, ctx, req) => {
  if (!env.ops.create) missing('create');
  const a = decodeCreateIn(req.body);
  const r = await env.ops.create(ctx, { parent: req.ino, ...a });
  return [...entryReply(env, r.entry), openReply(env, r.open)];
};

const fallocate: Handler = async (env, ctx, req) => {
  if (!env.ops.fallocate) missing('fallocate');
  const f = decodeFallocateIn(req.body);
  await env.ops.fallocate(ctx, { ino: req.ino, ...f });
  return [];
};

const lseek: Handler = async (env, ctx, req) => {
  if (!env.ops.lseek) missing('lseek');
  const f = decodeLseekIn(req.body);
  return [encodeU64Reply(await env.ops.lseek(ctx, { ino: req.ino, ...f }), 'lseek offset')];
};

function copyFileRangeHandler(wide: boolean): Handler {
  return async (env, ctx, req) => {
    if (!env.ops.copyFileRange) missing('copy_file_range');
    const f = decodeCopyFileRangeIn(req.body);
    // COPY_FILE_RANGE replies in a u32 (fuse_write_out): never ask for more than fits.
    const lengthBytes = wide ? f.lengthBytes : Math.min(f.lengthBytes, 0xffff_f000);
    const copiedBytes = await env.ops.copyFileRange(ctx, {
      inoIn: req.ino, fhIn: f.fhIn, offsetInBytes: f.offIn, inoOut: f.nodeidOut, fhOut: f.fhOut,
      offsetOutBytes: f.offOut, lengthBytes, flags: f.flags,
    });
    if (!Number.isInteger(copiedBytes) || copiedBytes < 0 || copiedBytes > lengthBytes) {
      throw new Error(`filesystem copy_file_range returned ${copiedBytes} for ${lengthBytes} bytes`);
    }
    return [wide ? encodeCopyFileRangeOut(copiedBytes) : encodeWriteOut(copiedBytes)];
  };
}

/** Replying opcodes o2fs implements. Everything else gets ENOSYS from the session. */
export const HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [Opcode.LOOKUP, lookup],
  [Opcode.GETATTR, getattr],
  [Opcode.SETATTR, setattr],
  [Opcode.READLINK, readlink],
  [Opcode.SYMLINK, symlink],
  [Opcode.MKNOD, mknod],
  [Opcode.MKDIR, mkdir],
  [Opcode.UNLINK, unlink],
  [Opcode.RMDIR, rmdir],
  [Opcode.RENAME, renameHandler(false)],
  [Opcode.RENAME2, renameHandler(true)],
  [Opcode.LINK, link],
  [Opcode.OPEN, open],
  [Opcode.READ, read],
  [Opcode.WRITE, write],
  [Opcode.STATFS, statfs],
  [Opcode.RELEASE, release],
  [Opcode.FSYNC, fsyncHandler(false)],
  [Opcode.SETXATTR, setxattr],
  [Opcode.GETXATTR, getxattr],
  [Opcode.LISTXATTR, listxattr],
  [Opcode.REMOVEXATTR, removexattr],
  [Opcode.FLUSH, flush],
  [Opcode.OPENDIR, opendir],
  [Opcode.READDIR, readdirHandler(false)],
  [Opcode.READDIRPLUS, readdirHandler(true)],
  [Opcode.RELEASEDIR, releasedir],
  [Opcode.FSYNCDIR, fsyncHandler(true)],
  [Opcode.GETLK, getlk],
  [Opcode.SETLK, setlkHandler(false)],
  [Opcode.SETLKW, setlkHandler(true)],
  [Opcode.ACCESS, access],
  [Opcode.CREATE, create],
  [Opcode.FALLOCATE, fallocate],
  [Opcode.LSEEK, lseek],
  [Opcode.COPY_FILE_RANGE, copyFileRangeHandler(false)],
  [Opcode.COPY_FILE_RANGE_64, copyFileRangeHandler(true)],
]);
