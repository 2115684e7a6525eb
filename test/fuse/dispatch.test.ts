// The session's dispatcher driven with crafted requests through a FakeChannel: INIT
// negotiation, unknown and malformed requests, error mapping, optional methods, interrupts,
// forgets, notifications, the in-flight bound and the end of a session.
import { constants } from 'node:os';
import t from 'tap';
import { FsError } from '../../fs/errors';
import {
  decodeAttr, decodeDirents, decodeEntryOut, decodeInitOut, decodeOpenOut, encodeReadIn,
} from '../../fs/fuse/codec';
import type { Attr, FuseOps, RequestContext } from '../../fs/fuse/ops';
import {
  AttrOut, EntryOut, GetxattrOut, InitFlag, OpenOutFlag, Opcode, NotifyCode, OutHeader,
} from '../../fs/fuse/protocol';
import { FuseSession, POLL_AFTER_REPLY_US_DEFAULT, type FuseSessionOptions } from '../../fs/fuse/session';
import { FakeChannel, initRequest, request } from './fake-channel';

const E = constants.errno;

const fileAttr: Attr = {
  ino: 2, sizeBytes: 5, blocks512: 1, atimeNs: 1n, mtimeNs: 2n, ctimeNs: 3n,
  mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0,
};

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/** A tiny fs: one file "f" (ino 2); behaviours chosen per test through `hooks`. */
function makeOps(hooks: Partial<FuseOps> = {}): FuseOps & { forgets: [number, number][] } {
  const forgets: [number, number][] = [];
  return {
    forgets,
    async lookup(_ctx, a) {
      if (a.name.toString() !== 'f') throw new FsError('ENOENT');
      return { ino: 2, generation: 1, attr: fileAttr, entryTimeoutMs: 5000, attrTimeoutMs: 7000 };
    },
    async getattr(_ctx, a) {
      return { attr: { ...fileAttr, ino: a.ino }, attrTimeoutMs: 7000 };
    },
    forget(ino, nlookup) {
      forgets.push([ino, nlookup]);
    },
    ...hooks,
  };
}

interface Harness {
  session: FuseSession;
  channel: FakeChannel;
  logs: string[];
}

async function initialized(ops: FuseOps, options: FuseSessionOptions = {}, init = initRequest()): Promise<Harness> {
  const channel = new FakeChannel();
  const logs: string[] = [];
  const session = new FuseSession(channel, ops, { ...options, log: (l) => logs.push(l) });
  await session.handleRequest(init);
  return { session, channel, logs };
}

t.test('INIT negotiates 7.45, 1 MiB writes in one request, and flags from the ops present', async (t) => {
  const withLocks = makeOps({
    async getlk(_c, a) { return a.lock; },
    async setlk() {},
    async readdirplus() {},
  });
  const { channel, session } = await initialized(withLocks);
  const r = channel.replyTo(1n);
  t.equal(r?.error, 0);
  const out = decodeInitOut(r?.payload ?? Buffer.alloc(0));
  t.equal(out.major, 7);
  t.equal(out.minor, 45);
  t.equal(out.maxWriteBytes, 1 << 20, 'max_write 1 MiB');
  t.equal(out.maxPages, 256, 'max_pages = 1 MiB / 4 KiB');
  for (const f of ['ASYNC_READ', 'POSIX_LOCKS', 'FLOCK_LOCKS', 'ATOMIC_O_TRUNC', 'BIG_WRITES', 'DO_READDIRPLUS', 'PARALLEL_DIROPS', 'MAX_PAGES'] as const) {
    t.ok(out.flags & InitFlag[f], `${f} negotiated`);
  }
  for (const f of ['EXPORT_SUPPORT', 'WRITEBACK_CACHE', 'HANDLE_KILLPRIV', 'HANDLE_KILLPRIV_V2', 'SPLICE_READ', 'SETXATTR_EXT', 'SECURITY_CTX', 'DONT_MASK'] as const) {
    t.notOk(out.flags & InitFlag[f], `${f} not negotiated`);
  }
  t.equal((await session.ready).maxWriteBytes, 1 << 20);

  const plain = await initialized(makeOps());
  const plainOut = decodeInitOut(plain.channel.replyTo(1n)?.payload ?? Buffer.alloc(0));
  t.notOk(plainOut.flags & InitFlag.POSIX_LOCKS, 'no lock methods: kernel keeps locks local');
  t.notOk(plainOut.flags & InitFlag.FLOCK_LOCKS);
  t.notOk(plainOut.flags & InitFlag.DO_READDIRPLUS, 'no readdirplus method: plain READDIR');

  const setlkOnly = await initialized(makeOps({ async setlk() {} }));
  const setlkOut = decodeInitOut(setlkOnly.channel.replyTo(1n)?.payload ?? Buffer.alloc(0));
  t.notOk(setlkOut.flags & InitFlag.POSIX_LOCKS, 'POSIX locks need getlk too');
  t.ok(setlkOut.flags & InitFlag.FLOCK_LOCKS, 'flock needs only setlk');

  const wb = await initialized(makeOps(), { writebackCache: true });
  t.ok(decodeInitOut(wb.channel.replyTo(1n)?.payload ?? Buffer.alloc(0)).flags & InitFlag.WRITEBACK_CACHE, 'writeback cache when asked');
});

t.test('INIT honours the kernel: only offered flags, older minors, other majors', async (t) => {
  const offered = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES;
  const { channel } = await initialized(makeOps(), {}, initRequest(45, offered));
  const out = decodeInitOut(channel.replyTo(1n)?.payload ?? Buffer.alloc(0));
  t.equal(out.flags, offered, 'never more than the kernel offered');

  const old = await initialized(makeOps(), {}, initRequest(20));
  const oldReply = old.channel.replyTo(1n);
  t.equal(oldReply?.payload.length, 24, '7.20 kernel gets the 24-byte init_out');
  t.equal(decodeInitOut(oldReply?.payload ?? Buffer.alloc(0)).minor, 20, 'answers with the kernel minor');

  const ancient = await initialized(makeOps(), {}, initRequest(11));
  t.equal(ancient.channel.replyTo(1n)?.error, -E.EPROTO, 'minor < 12 refused');
  await t.rejects(ancient.session.ready, { name: 'FsError', errno: 'EPROTO' });

  const future = new FakeChannel();
  const s = new FuseSession(future, makeOps(), { log: () => undefined });
  const body = Buffer.alloc(64);
  body.writeUInt32LE(8, 0);
  body.writeUInt32LE(1, 4);
  await s.handleRequest(request(Opcode.INIT, 1n, 0n, body));
  const fr = future.replyTo(1n);
  t.equal(fr?.error, 0);
  t.equal(decodeInitOut(fr?.payload ?? Buffer.alloc(0)).major, 7, 'major 8 kernel: answer major 7 and wait for a new INIT');
  t.equal(s.init, undefined, 'not initialised by a major mismatch');
});

t.test('unknown opcodes get ENOSYS; malformed requests EINVAL; nothing throws', async (t) => {
  const { channel, logs, session } = await initialized(makeOps());
  await session.handleRequest(request(9999, 10n, 1n, Buffer.alloc(16)));
  t.equal(channel.replyTo(10n)?.error, -E.ENOSYS, 'opcode 9999 -> ENOSYS');
  await session.handleRequest(request(Opcode.IOCTL, 11n, 1n, Buffer.alloc(32)));
  t.equal(channel.replyTo(11n)?.error, -E.ENOSYS, 'known but unimplemented (IOCTL) -> ENOSYS');
  await session.handleRequest(request(Opcode.STATX, 12n, 1n));
  t.equal(channel.replyTo(12n)?.error, -E.ENOSYS, 'STATX -> ENOSYS (kernel falls back to GETATTR)');

  const before = channel.replies.length;
  await session.handleRequest(Buffer.alloc(20, 0xff));
  t.equal(channel.replies.length, before, 'a 20-byte request has no unique: dropped, no reply');
  t.match(logs.join('\n'), /dropped a 20-byte request/);

  const lying = request(Opcode.LOOKUP, 13n, 1n, cstr('f'));
  lying.writeUInt32LE(lying.length + 100, 0);
  await session.handleRequest(lying);
  t.equal(channel.replyTo(13n)?.error, -E.EINVAL, 'header length mismatch -> EINVAL');

  await session.handleRequest(request(Opcode.LOOKUP, 14n, 1n, Buffer.from('f')));
  t.equal(channel.replyTo(14n)?.error, -E.EINVAL, 'name without NUL -> EINVAL');
  t.match(logs.join('\n'), /LOOKUP: EINVAL: malformed FUSE request: lookup name is not NUL-terminated/, 'and logged');
  await session.handleRequest(request(Opcode.GETATTR, 15n, 2n, Buffer.alloc(10)));
  t.equal(channel.replyTo(15n)?.error, -E.EINVAL, 'short fuse_getattr_in -> EINVAL');
  const badNode = request(Opcode.GETATTR, 16n, 1n << 60n, Buffer.alloc(16));
  await session.handleRequest(badNode);
  t.equal(channel.replyTo(16n)?.error, -E.EINVAL, 'nodeid beyond 2^53 -> EINVAL');

  await session.handleRequest(request(Opcode.LOOKUP, 17n, 1n, cstr('f')));
  const ok = channel.replyTo(17n);
  t.equal(ok?.error, 0, 'the session still serves after all that');
  t.equal(ok?.payload.length, EntryOut.size);
  t.equal(decodeEntryOut(ok?.payload ?? Buffer.alloc(0)).entryTimeoutMs, 5000);
});

t.test('errors map to errno in one place; unknown exceptions are EIO plus a log line', async (t) => {
  const { channel, logs, session } = await initialized(makeOps({
    async unlink(_c, a) {
      const name = a.name.toString();
      if (name === 'fserror') throw new FsError('EROFS');
      if (name === 'syserror') throw Object.assign(new Error('denied'), { code: 'EACCES' });
      if (name === 'abort') throw new DOMException('aborted', 'AbortError');
      if (name === 'bug') throw new TypeError('undefined is not a function');
      throw 'a string';
    },
  }));
  const cases: [string, number][] = [['fserror', E.EROFS], ['syserror', E.EACCES], ['abort', E.EINTR], ['bug', E.EIO], ['other', E.EIO]];
  let unique = 20n;
  for (const [name, errno] of cases) {
    await session.handleRequest(request(Opcode.UNLINK, unique, 1n, cstr(name)));
    t.equal(channel.replyTo(unique)?.error, -errno, `${name} -> ${errno}`);
    unique += 1n;
  }
  const unexpected = logs.filter((l) => l.includes('unexpected exception'));
  t.equal(unexpected.length, 2, 'only the two unknown exceptions are logged');
  t.match(unexpected[0] ?? '', /TypeError: undefined is not a function/);
});

t.test('optional methods: ENOSYS when absent, except open/opendir/release which succeed', async (t) => {
  const { channel, session } = await initialized(makeOps());
  await session.handleRequest(request(Opcode.MKDIR, 30n, 1n, Buffer.concat([Buffer.alloc(8), cstr('d')])));
  t.equal(channel.replyTo(30n)?.error, -E.ENOSYS, 'mkdir missing -> ENOSYS');
  await session.handleRequest(request(Opcode.FLUSH, 31n, 2n, Buffer.alloc(24)));
  t.equal(channel.replyTo(31n)?.error, -E.ENOSYS, 'flush missing -> ENOSYS (kernel stops sending it)');
  await session.handleRequest(request(Opcode.OPEN, 32n, 2n, Buffer.alloc(8)));
  const open = channel.replyTo(32n);
  t.equal(open?.error, 0, 'open missing -> success');
  t.same(decodeOpenOut(open?.payload ?? Buffer.alloc(0)), { fh: 0, openFlags: 0 });
  await session.handleRequest(request(Opcode.RELEASE, 33n, 2n, Buffer.alloc(24)));
  t.equal(channel.replyTo(33n)?.error, 0, 'release missing -> success');
  await session.handleRequest(request(Opcode.GETXATTR, 34n, 2n, Buffer.concat([Buffer.alloc(8), cstr('user.x')])));
  t.equal(channel.replyTo(34n)?.error, -E.ENOSYS, 'getxattr missing -> ENOSYS');
});

t.test('noKernelCache zeroes every timeout and forces FOPEN_DIRECT_IO', async (t) => {
  const ops = makeOps({ async open() { return { fh: 7, keepCache: true } } });
  const { channel, session } = await initialized(ops, { noKernelCache: true });
  t.ok(decodeInitOut(channel.replyTo(1n)?.payload ?? Buffer.alloc(0)).flags & InitFlag.DIRECT_IO_ALLOW_MMAP, 'mmap stays possible');
  await session.handleRequest(request(Opcode.LOOKUP, 40n, 1n, cstr('f')));
  const e = decodeEntryOut(channel.replyTo(40n)?.payload ?? Buffer.alloc(0));
  t.equal(e.entryTimeoutMs, 0);
  t.equal(e.attrTimeoutMs, 0);
  await session.handleRequest(request(Opcode.GETATTR, 41n, 2n, Buffer.alloc(16)));
  t.equal(channel.replyTo(41n)?.payload.readBigUInt64LE(AttrOut.attrValid), 0n);
  await session.handleRequest(request(Opcode.OPEN, 42n, 2n, Buffer.alloc(8)));
  const o = decodeOpenOut(channel.replyTo(42n)?.payload ?? Buffer.alloc(0));
  t.equal(o.fh, 7);
  t.equal(o.openFlags & OpenOutFlag.DIRECT_IO, OpenOutFlag.DIRECT_IO, 'direct I/O forced on');
  t.equal(o.openFlags & OpenOutFlag.KEEP_CACHE, 0, 'keep_cache forced off');

  const cached = await initialized(makeOps());
  await cached.session.handleRequest(request(Opcode.GETATTR, 43n, 2n, Buffer.alloc(16)));
  const attrOut = cached.channel.replyTo(43n)?.payload ?? Buffer.alloc(0);
  t.equal(attrOut.readBigUInt64LE(AttrOut.attrValid), 7n, 'with caching the fs timeout (7 s) goes through');
  t.equal(decodeAttr(attrOut, AttrOut.attr).mode, 0o100644);
});

t.test('GETXATTR/LISTXATTR: size probe, ERANGE, value', async (t) => {
  const value = Buffer.from('0123456789');
  const { channel, session } = await initialized(makeOps({
    async getxattr() { return value; },
    async listxattr() { return ['user.a', 'user.bb']; },
  }));
  const get = (unique: bigint, size: number): Promise<void> => {
    const body = Buffer.concat([Buffer.alloc(8), cstr('user.a')]);
    body.writeUInt32LE(size, 0);
    return session.handleRequest(request(Opcode.GETXATTR, unique, 2n, body));
  };
  await get(50n, 0);
  t.equal(channel.replyTo(50n)?.payload.readUInt32LE(0), 10, 'size 0: fuse_getxattr_out with the size');
  t.equal(channel.replyTo(50n)?.payload.length, GetxattrOut.size);
  await get(51n, 4);
  t.equal(channel.replyTo(51n)?.error, -E.ERANGE, 'too small: ERANGE');
  await get(52n, 100);
  t.equal(channel.replyTo(52n)?.payload.toString(), '0123456789');
  const list = Buffer.alloc(8);
  list.writeUInt32LE(100, 0);
  await session.handleRequest(request(Opcode.LISTXATTR, 53n, 2n, list));
  t.equal(channel.replyTo(53n)?.payload.toString(), 'user.a\0user.bb\0');
});

t.test('READDIR stops at the kernel buffer size: the filler says when', async (t) => {
  let accepted = 0;
  const { channel, session } = await initialized(makeOps({
    async readdir(_c, a, out) {
      for (let i = a.offset; i < 1000; i++) {
        if (!out.add({ ino: 100 + i, offset: i + 1, mode: 0o100644, name: `entry-${i}` })) return;
        accepted += 1;
      }
    },
  }));
  const readIn = (offset: number): Buffer => encodeReadIn({ fh: 0, offsetBytes: offset, sizeBytes: 4096, readFlags: 0, lockOwner: 0n, flags: 0 });
  await session.handleRequest(request(Opcode.READDIR, 60n, 1n, readIn(0)));
  const first = decodeDirents(channel.replyTo(60n)?.payload ?? Buffer.alloc(0), false);
  t.ok(first.length > 50 && first.length < 200, `one 4 KiB page holds ${first.length} entries`);
  t.equal(first.length, accepted, 'exactly the accepted entries are in the reply');
  t.ok((channel.replyTo(60n)?.payload.length ?? 0) <= 4096);
  const last = first[first.length - 1];
  await session.handleRequest(request(Opcode.READDIR, 61n, 1n, readIn(last?.offset ?? 0)));
  const second = decodeDirents(channel.replyTo(61n)?.payload ?? Buffer.alloc(0), false);
  t.equal(second[0]?.name, `entry-${first.length}`, 'continues right after the last cookie');
});

t.test('INTERRUPT aborts the request it names; unknown ones get EAGAIN', async (t) => {
  let sawAbort = false;
  const { channel, session } = await initialized(makeOps({
    async getattr(ctx: RequestContext) {
      await new Promise<void>((_resolve, reject) => {
        ctx.signal.addEventListener('abort', () => {
          sawAbort = true;
          reject(ctx.signal.reason);
        });
      });
      throw new Error('unreachable');
    },
  }));
  const pending = session.handleRequest(request(Opcode.GETATTR, 70n, 2n, Buffer.alloc(16)));
  t.equal(session.stats.inFlight, 1, 'tracked while in flight');
  const intr = Buffer.alloc(8);
  intr.writeBigUInt64LE(70n, 0);
  await session.handleRequest(request(Opcode.INTERRUPT, 71n, 0n, intr));
  await pending;
  t.ok(sawAbort, 'the filesystem observed the AbortSignal');
  t.equal(channel.replyTo(70n)?.error, -E.EINTR, 'interrupted request answered EINTR');
  t.equal(channel.replyTo(71n), undefined, 'no reply to a successful INTERRUPT');
  t.equal(session.stats.inFlight, 0);
  intr.writeBigUInt64LE(999n, 0);
  await session.handleRequest(request(Opcode.INTERRUPT, 73n, 0n, intr));
  t.equal(channel.replyTo(73n)?.error, -E.EAGAIN, 'unknown target: EAGAIN so the kernel retries');
});

t.test('FORGET and BATCH_FORGET reach the filesystem and are never answered', async (t) => {
  const ops = makeOps();
  const { channel, session } = await initialized(ops);
  const replies = channel.replies.length;
  const forget = Buffer.alloc(8);
  forget.writeBigUInt64LE(3n, 0);
  await session.handleRequest(request(Opcode.FORGET, 80n, 2n, forget));
  const batch = Buffer.alloc(8 + 2 * 16);
  batch.writeUInt32LE(2, 0);
  batch.writeBigUInt64LE(5n, 8);
  batch.writeBigUInt64LE(1n, 16);
  batch.writeBigUInt64LE(6n, 24);
  batch.writeBigUInt64LE(2n, 32);
  await session.handleRequest(request(Opcode.BATCH_FORGET, 81n, 0n, batch));
  const lying = Buffer.from(batch);
  lying.writeUInt32LE(1000, 0); // claims 1000 entries, carries 2
  await session.handleRequest(request(Opcode.BATCH_FORGET, 82n, 0n, lying));
  t.same(ops.forgets, [[2, 3], [5, 1], [6, 2]], 'forgets passed through; the lying batch dropped whole');
  t.equal(channel.replies.length, replies, 'no replies');
});

t.test('notifications: INVAL_INODE / INVAL_ENTRY wire format and results', async (t) => {
  const { channel, session } = await initialized(makeOps());
  await session.handleRequest(request(Opcode.INIT, 2n, 0n, Buffer.alloc(64))); // a second INIT is refused
  t.equal(channel.replyTo(2n)?.error, -E.EIO);
  // notify() needs a running session
  await t.rejects(session.notifyInvalInode(2), { name: 'FsError', errno: 'ENOTCONN' });
  const running = new FakeChannel();
  const s = new FuseSession(running, makeOps(), { log: () => undefined, readers: 1 });
  s.start();
  running.push(initRequest());
  await s.ready;
  t.equal(await s.notifyInvalInode(2, 4096, 8192), true);
  const ii = running.notifies[0] ?? Buffer.alloc(0);
  t.equal(ii.readUInt32LE(0), OutHeader.size + 24, 'len');
  t.equal(ii.readInt32LE(4), NotifyCode.INVAL_INODE, 'error field carries the notify code');
  t.equal(ii.readBigUInt64LE(8), 0n, 'unique 0');
  t.same([ii.readBigUInt64LE(16), ii.readBigInt64LE(24), ii.readBigInt64LE(32)], [2n, 4096n, 8192n]);
  t.equal(await s.notifyInvalEntry(1, 'name'), true);
  const ie = running.notifies[1] ?? Buffer.alloc(0);
  t.equal(ie.readInt32LE(4), NotifyCode.INVAL_ENTRY);
  t.equal(ie.subarray(16 + 16).toString(), 'name\0');
  running.notifyError = 'ENOENT';
  t.equal(await s.notifyInvalInode(12345), false, 'kernel does not know the inode: false');
  running.notifyError = 'EINVAL';
  await t.rejects(s.notifyInvalInode(2), { name: 'FsError', errno: 'EINVAL' });
  await t.rejects(s.notifyInvalEntry(1, 'x'.repeat(300)), { name: 'FsError', errno: 'ENAMETOOLONG' });
  await t.rejects(s.notifyInvalInode(-5), { name: 'FsError', errno: 'EINVAL' }, 'bad numbers reject, never throw');
  running.notifyError = undefined;
  t.equal(await s.notifyInvalEntry(1, 'n', { expireOnly: true }), true);
  t.equal(running.notifies[running.notifies.length - 1]?.readUInt32LE(16 + 12), 1, 'FUSE_EXPIRE_ONLY flag sent');
  const oldKernel = new FakeChannel();
  const s3 = new FuseSession(oldKernel, makeOps(), { log: () => undefined, readers: 1 });
  s3.start();
  oldKernel.push(initRequest(45, InitFlag.ASYNC_READ));
  await s3.ready;
  await t.rejects(s3.notifyInvalEntry(1, 'n', { expireOnly: true }), { name: 'FsError', errno: 'EOPNOTSUPP' },
    'expireOnly needs a kernel offering HAS_EXPIRE_ONLY');
  oldKernel.end();
  await s3.closed;
  running.end();
  await s.closed;
});

t.test('DESTROY and ENODEV end the session and resolve closed; destroy() runs once', async (t) => {
  let destroyed = 0;
  const channel = new FakeChannel();
  const s = new FuseSession(channel, makeOps({ destroy() { destroyed += 1; } }), { log: () => undefined, readers: 3 });
  s.start();
  channel.push(initRequest());
  await s.ready;
  channel.push(request(Opcode.DESTROY, 90n, 0n));
  await new Promise((r) => setTimeout(r, 20));
  t.equal(channel.replyTo(90n)?.error, 0, 'DESTROY answered');
  channel.end(); // the kernel tears the connection down after DESTROY
  await s.closed;
  t.equal(s.endReason, 'destroy');
  t.equal(destroyed, 1);
  t.ok(channel.closed, 'descriptor closed');
  await t.rejects(s.notifyInvalInode(2), { name: 'FsError', errno: 'ENOTCONN' }, 'no notifications after the end');

  const c2 = new FakeChannel();
  const s2 = new FuseSession(c2, makeOps(), { log: () => undefined });
  s2.start();
  c2.end();
  await s2.closed;
  t.equal(s2.endReason, 'unmounted');
  await t.rejects(s2.ready, { name: 'FsError', errno: 'ENOTCONN' }, 'ready rejects when the session ends before INIT');
});

t.test('in-flight requests are bounded: readers pause at maxInFlight', async (t) => {
  const release: (() => void)[] = [];
  const channel = new FakeChannel();
  const s = new FuseSession(channel, makeOps({
    async getattr(_c, a) {
      await new Promise<void>((r) => release.push(r));
      return { attr: { ...fileAttr, ino: a.ino }, attrTimeoutMs: 0 };
    },
  }), { log: () => undefined, readers: 1, maxInFlight: 2 });
  s.start();
  channel.push(initRequest());
  await s.ready;
  for (let u = 100n; u < 105n; u++) channel.push(request(Opcode.GETATTR, u, 2n, Buffer.alloc(16)));
  await new Promise((r) => setTimeout(r, 20));
  t.equal(s.stats.inFlight, 2, 'only two handled at once');
  const readsWhilePaused = channel.readsIssued;
  await new Promise((r) => setTimeout(r, 20));
  t.equal(channel.readsIssued, readsWhilePaused, 'no reads while full');
  for (let i = 0; i < 5 && release.length > 0; i++) {
    release.splice(0).forEach((r) => r());
    await new Promise((r) => setTimeout(r, 10));
  }
  release.splice(0).forEach((r) => r());
  await new Promise((r) => setTimeout(r, 10));
  t.equal(channel.replies.filter((r) => r.unique >= 100n).length, 5, 'all five answered in the end');
  channel.end();
  await s.closed;
});

t.test('polling after replies: on while it finds requests, then one probe per 64 replies', async (t) => {
  const { channel, session } = await initialized(makeOps());
  const asked: number[] = [];
  let found: boolean | null = null;
  (channel as FakeChannel & { pollBriefly(budgetNs: number): boolean | null }).pollBriefly = (budgetNs) => {
    if (found !== null) asked.push(budgetNs);
    return found;
  };
  const getattr = (unique: bigint): Promise<void> => session.handleRequest(request(Opcode.GETATTR, unique, 2n, Buffer.alloc(16)));
  for (let i = 0; i < 10; i++) await getattr(80n + BigInt(i));
  t.same({ found: session.stats.pollsFound, missed: session.stats.pollsMissed }, { found: 0, missed: 0 }, 'no reader waiting: neither found nor missed');
  found = true;
  for (let i = 0; i < 10; i++) await getattr(100n + BigInt(i));
  t.equal(asked.length, 10, 'a poll after every reply while polls find requests');
  t.ok(asked.every((ns) => ns === POLL_AFTER_REPLY_US_DEFAULT * 1000), 'with the default budget');
  found = false;
  for (let i = 0; i < 200; i++) await getattr(200n + BigInt(i));
  // Two misses stop it; then every 64th reply probes: 2 + floor(198 / 64) = 5 polls.
  t.equal(asked.length - 10, 5, 'two misses, then a probe every 64 replies');
  found = true;
  for (let i = 0; i < 64; i++) await getattr(500n + BigInt(i));
  // 6 replies had passed since the last probe: the 58th reply now probes, finds, and the 6
  // replies after it poll again.
  t.equal(asked.length - 15, 7, 'a probe that finds a request turns polling back on');
  t.same({ found: session.stats.pollsFound, missed: session.stats.pollsMissed }, { found: 10 + (asked.length - 15), missed: 5 });

  const off = await initialized(makeOps(), { pollAfterReplyUs: 0 });
  let offPolls = 0;
  (off.channel as FakeChannel & { pollBriefly(budgetNs: number): boolean | null }).pollBriefly = () => (offPolls++, true);
  await off.session.handleRequest(request(Opcode.GETATTR, 9n, 2n, Buffer.alloc(16)));
  t.equal(offPolls, 0, 'pollAfterReplyUs 0: never');
  t.throws(() => new FuseSession(new FakeChannel(), makeOps(), { pollAfterReplyUs: 5000 }), /pollAfterReplyUs/);
});
