// Round trips and malformed-input checks for the FUSE structure codecs (fs/fuse/codec.ts).
import t from 'tap';
import {
  DirentPacker, decodeAttr, decodeDirents, decodeEntryOut, decodeInitIn, decodeInitOut,
  decodeLkIn, decodeReadIn, decodeRenameIn, decodeSetattrIn, decodeSetxattrIn, decodeWriteIn,
  encodeAttr, encodeEntryOut, encodeInitIn, encodeInitOut, encodeLkIn, encodeReadIn,
  encodeSetattrIn, encodeWriteIn, readCString, splitNs, splitTimeoutMs,
} from '../../fs/fuse/codec';
import type { Attr, Entry } from '../../fs/fuse/ops';
import {
  AttrLayout, Dirent, DirentPlus, EntryOut, InitFlag, InitIn, InitOut, LOCK_END_MAX, LkIn,
  ReadIn, SetattrIn, WriteIn, recAlign,
} from '../../fs/fuse/protocol';

const attr: Attr = {
  ino: 42, sizeBytes: 3 * 1024 * 1024 + 7, blocks512: 6145,
  atimeNs: 1_000_000_000_123_456_789n, mtimeNs: -1_500_000_000n /* 1969-12-31T23:59:58.5 */, ctimeNs: 0n,
  mode: 0o100644, nlink: 2, uid: 1000, gid: 100, rdev: 0, blksizeBytes: 4096,
};

const EINVAL = { name: 'MalformedRequestError', errno: 'EINVAL' };

t.test('struct sizes match include/uapi/linux/fuse.h', async (t) => {
  t.equal(AttrLayout.size, 88);
  t.equal(EntryOut.size, 128);
  t.equal(SetattrIn.size, 88);
  t.equal(ReadIn.size, 40);
  t.equal(WriteIn.size, 40);
  t.equal(LkIn.size, 48);
  t.equal(InitIn.size, 64);
  t.equal(InitOut.size, 64);
  t.equal(Dirent.size, 24);
  t.equal(DirentPlus.size, 152);
  t.equal(recAlign(24 + 5), 32);
});

t.test('nanosecond times split with floor semantics, including before 1970', async (t) => {
  t.same(splitNs(1_000_000_000_123_456_789n), { sec: 1_000_000_000n, nsec: 123_456_789 });
  t.same(splitNs(-1_500_000_000n), { sec: -2n, nsec: 500_000_000 });
  t.same(splitTimeoutMs(1500), { sec: 1n, nsec: 500_000_000 });
  t.same(splitTimeoutMs(0), { sec: 0n, nsec: 0 });
  t.throws(() => splitTimeoutMs(-1));
});

t.test('attr and entry_out round-trip', async (t) => {
  const buf = Buffer.alloc(AttrLayout.size);
  encodeAttr(buf, 0, attr);
  t.same(decodeAttr(buf, 0), attr);
  const entry: Entry = { ino: 42, generation: 7, attr, entryTimeoutMs: 2500, attrTimeoutMs: 1000 };
  const out = encodeEntryOut(entry);
  t.equal(out.length, EntryOut.size);
  t.same(decodeEntryOut(out), entry);
  t.throws(() => encodeEntryOut({ ...entry, ino: 43 }), /entry.ino 43 != entry.attr.ino 42/);
  t.throws(() => encodeEntryOut({ ...entry, attr: { ...attr, sizeBytes: 2 ** 60 } }), RangeError);
});

t.test('setattr_in round-trips, with signed times', async (t) => {
  const f = {
    valid: 0x7ff, fh: 9, sizeBytes: 12345, lockOwner: 0xdead_beef_dead_beefn,
    atimeNs: 5n, mtimeNs: -1n, ctimeNs: 1_700_000_000_000_000_001n, mode: 0o640, uid: 1, gid: 2,
  };
  t.same(decodeSetattrIn(encodeSetattrIn(f)), f);
});

t.test('read_in, write_in and lk_in round-trip', async (t) => {
  const r = { fh: 3, offsetBytes: 2 ** 40, sizeBytes: 131072, readFlags: 2, lockOwner: 77n, flags: 0o2 };
  t.same(decodeReadIn(encodeReadIn(r)), r);
  const w = { fh: 4, offsetBytes: 4096, writeFlags: 1, lockOwner: 5n, flags: 0o1, data: Buffer.from('hello') };
  const wd = decodeWriteIn(encodeWriteIn(w));
  t.same({ ...wd, data: wd.data.toString() }, { ...w, data: 'hello' });
  const lk = { fh: 1, owner: 0xffff_ffff_ffff_ffffn, lock: { start: 0n, end: LOCK_END_MAX, type: 1, pid: 4242 }, lkFlags: 1 };
  t.same(decodeLkIn(encodeLkIn(lk)), lk);
});

t.test('init_in / init_out round-trip; flags2 travels only with INIT_EXT', async (t) => {
  const withExt = { major: 7, minor: 45, maxReadaheadBytes: 131072, flags: InitFlag.INIT_EXT | InitFlag.ASYNC_READ | InitFlag.HAS_EXPIRE_ONLY };
  t.same(decodeInitIn(encodeInitIn(withExt)), withExt);
  const noExt = encodeInitIn({ ...withExt, flags: InitFlag.ASYNC_READ | InitFlag.HAS_EXPIRE_ONLY });
  t.equal(decodeInitIn(noExt).flags, InitFlag.ASYNC_READ, 'flags2 ignored without INIT_EXT');
  const out = {
    major: 7, minor: 45, maxReadaheadBytes: 131072, flags: InitFlag.MAX_PAGES | InitFlag.INIT_EXT | InitFlag.DIRECT_IO_ALLOW_MMAP,
    maxBackground: 64, congestionThreshold: 48, maxWriteBytes: 1 << 20, timeGranNs: 1, maxPages: 256, requestTimeoutSec: 0,
  };
  const enc = encodeInitOut(out);
  t.equal(enc.length, 64);
  t.same(decodeInitOut(enc), out);
  const compat = encodeInitOut({ ...out, minor: 22 });
  t.equal(compat.length, 24, 'minor < 23 gets the 24-byte fuse_init_out');
});

t.test('direntries pack into the kernel buffer size and decode back', async (t) => {
  const packer = new DirentPacker(100);
  t.ok(packer.addDirent(5, 3, 8, Buffer.from('abc')), 'first fits (32 bytes)');
  t.ok(packer.addDirent(6, 4, 4, Buffer.from('x'.repeat(20))), 'second fits (48 bytes)');
  t.notOk(packer.addDirent(7, 5, 8, Buffer.from('yy')), 'third does not (would be 112 > 100)');
  t.equal(packer.count, 2);
  t.same(decodeDirents(packer.result(), false), [
    { ino: 5, offset: 3, type: 8, name: 'abc' },
    { ino: 6, offset: 4, type: 4, name: 'x'.repeat(20) },
  ]);
  const plus = new DirentPacker(4096);
  const entry: Entry = { ino: 42, generation: 1, attr, entryTimeoutMs: 1000, attrTimeoutMs: 1000 };
  t.ok(plus.addDirentPlus(entry, 9, Buffer.from('file')));
  const back = decodeDirents(plus.result(), true);
  t.equal(back.length, 1);
  t.equal(back[0]?.name, 'file');
  t.equal(back[0]?.type, 8, 'DT_REG from the mode');
  t.same(back[0]?.entry, entry);
  t.throws(() => packer.addDirent(1, 0, 8, Buffer.from('z')), /offset must be > 0/);
  t.throws(() => new DirentPacker(4096).addDirent(1, 1, 8, Buffer.from('a/b')), /invalid directory entry name/);
});

t.test('malformed bodies are EINVAL, never a crash', async (t) => {
  t.throws(() => decodeReadIn(Buffer.alloc(39)), EINVAL);
  const w = encodeWriteIn({ fh: 1, offsetBytes: 0, writeFlags: 0, lockOwner: 0n, flags: 0, data: Buffer.alloc(100) });
  t.throws(() => decodeWriteIn(w.subarray(0, w.length - 1)), EINVAL, 'data shorter than write_in.size');
  t.throws(() => readCString(Buffer.from('abc'), 0, 'name'), EINVAL, 'no NUL');
  t.throws(() => readCString(Buffer.from('\0'), 0, 'name'), EINVAL, 'empty name');
  const rename = Buffer.concat([Buffer.alloc(8), Buffer.from('old\0new')]);
  t.throws(() => decodeRenameIn(rename, false), EINVAL, 'second name unterminated');
  const setx = Buffer.alloc(8 + 7);
  setx.writeUInt32LE(100, 0); // claims a 100-byte value
  Buffer.from('user.a\0').copy(setx, 8);
  t.throws(() => decodeSetxattrIn(setx, false), EINVAL, 'value shorter than declared');
  const bigOffset = encodeReadIn({ fh: 0, offsetBytes: 0, sizeBytes: 1, readFlags: 0, lockOwner: 0n, flags: 0 });
  bigOffset.writeBigUInt64LE(1n << 60n, ReadIn.offset);
  t.throws(() => decodeReadIn(bigOffset), EINVAL, 'offsets beyond 2^53 are refused');
});
