// FileBlockDevice and openDevice: the conformance suite on every flavour we can build here
// (sparse file, O_DIRECT file, faulty wrapper in pass-through, a loop block device), then
// the file-specific behaviour: open errors, create/resize, size rounding, exclusivity, sysfs.
import t from 'tap';
import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, promises as fsp, readSync, writeSync } from 'node:fs';
import os, { constants as osConstants } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FaultyBlockDevice } from '../../blockdev/faulty';
import { FileBlockDevice, openFileDevice } from '../../blockdev/file';
import { nowait, nowaitError, type NoWait } from '../../blockdev/nowait';
import { openDevice } from '../../blockdev/open';
import { decodeDevT, readBlockGeometry } from '../../blockdev/sysfs';
import { BlockDevice, BlockDeviceError } from '../../blockdev/types';
import { attachLoop, loopUnavailableReason } from './loop';
import { blockDeviceSuite, DeviceUnderTest, expectCode, patternBytes } from './suite';

const DEVICE_BYTES = 16 << 20;
const runFile = promisify(execFile);

process.on('unhandledRejection', (err) => {
  throw err;
});

const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-blockdev-'));
let counter = 0;
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
const freshPath = (): string => path.join(dir, `dev-${counter++}.img`);

function fileFactory(opts: { direct?: boolean } = {}) {
  return async (): Promise<DeviceUnderTest> => {
    const p = freshPath();
    const dev = await openFileDevice(p, { create: { sizeBytes: DEVICE_BYTES }, direct: opts.direct });
    return {
      dev,
      reopen: (o) => openFileDevice(p, { readOnly: o?.readOnly, direct: opts.direct }),
      cleanup: () => fsp.rm(p, { force: true }),
    };
  };
}

function faultyFactory(writeThrough: boolean) {
  return async (): Promise<DeviceUnderTest> => {
    const p = freshPath();
    const dev = new FaultyBlockDevice(await openFileDevice(p, { create: { sizeBytes: DEVICE_BYTES } }), { writeThrough });
    return {
      dev,
      reopen: async (o) => new FaultyBlockDevice(await openFileDevice(p, { readOnly: o?.readOnly }), { writeThrough }),
      cleanup: () => fsp.rm(p, { force: true }),
    };
  };
}

const O_DIRECT_OCTAL_FLAG = 0o40000; // x86-64/arm64 value as /proc/PID/fdinfo prints it

/** The open flags of this process's descriptors on `target`, from /proc/self/fdinfo. */
async function openFlagsOn(target: string): Promise<number[]> {
  const flags: number[] = [];
  for (const fd of await fsp.readdir('/proc/self/fd')) {
    const link = await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (link !== target) continue;
    const info = await fsp.readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
    const m = /^flags:\s+([0-7]+)$/m.exec(info);
    if (m) flags.push(parseInt(m[1] as string, 8));
  }
  return flags;
}

/** null when O_DIRECT works on a regular file in our temp dir, else why not. */
async function directUnsupportedReason(): Promise<string | null> {
  const p = freshPath();
  try {
    const dev = await openFileDevice(p, { create: { sizeBytes: 1 << 20 }, direct: true });
    await dev.write(0, Buffer.alloc(dev.sectorSize, 1));
    await dev.close();
    return null;
  } catch (err) {
    return `O_DIRECT on a regular file in ${dir} failed: ${(err as Error).message}`;
  } finally {
    await fsp.rm(p, { force: true });
  }
}

t.test('conformance: sparse regular file', async (t) => {
  blockDeviceSuite(t, 'file', fileFactory(), { reopen: true, readOnlyReopen: true });
});

t.test('conformance: sparse regular file, every I/O on the threadpool (no RWF_NOWAIT)', async (t) => {
  const p = freshPath;
  blockDeviceSuite(t, 'file', async () => {
    const at = p();
    const dev = await openFileDevice(at, { create: { sizeBytes: DEVICE_BYTES }, noWait: null });
    return { dev, reopen: (o) => openFileDevice(at, { readOnly: o?.readOnly, noWait: null }), cleanup: () => fsp.rm(at, { force: true }) };
  }, { reopen: true, readOnlyReopen: true });
});

t.test('RWF_NOWAIT: the addon loads; partial, refused and unsupported tries all end in the right bytes', async (t) => {
  t.ok(nowait(), `the nowait addon is built and loads (${nowaitError() || 'ok'})`);
  const calls = { pread: 0, pwrite: 0 };
  let mode: 'half' | 'again' | 'unsupported' = 'half';
  // Does half of the I/O itself (really), or refuses as the kernel would.
  const fake: NoWait = {
    pread(fd, buf, offset) {
      calls.pread++;
      if (mode === 'again') return -osConstants.errno.EAGAIN;
      if (mode === 'unsupported') return -osConstants.errno.EOPNOTSUPP;
      return readSync(fd, buf, 0, buf.length / 2, offset);
    },
    pwrite(fd, buf, offset) {
      calls.pwrite++;
      if (mode === 'again') return -osConstants.errno.EAGAIN;
      if (mode === 'unsupported') return -osConstants.errno.EOPNOTSUPP;
      return writeSync(fd, buf, 0, buf.length / 2, offset);
    },
  };
  const p = freshPath();
  const dev = await openFileDevice(p, { create: { sizeBytes: DEVICE_BYTES }, noWait: fake });
  t.teardown(() => dev.close());
  for (const m of ['half', 'again'] as const) {
    mode = m;
    const data = patternBytes(m === 'half' ? 7 : 8, 16 * 1024);
    await dev.write(8192, data);
    t.ok((await dev.read(8192, data.length)).equals(data), `${m}: 16 KiB written and read back whole`);
  }
  t.same(calls, { pread: 2, pwrite: 2 }, 'small I/O tried with RWF_NOWAIT first');
  const big = patternBytes(9, 128 * 1024);
  await dev.write(1 << 20, big);
  t.ok((await dev.read(1 << 20, big.length)).equals(big), '128 KiB round trip');
  t.same(calls, { pread: 2, pwrite: 2 }, 'I/O over 64 KiB goes straight to the threadpool');
  mode = 'unsupported';
  await dev.write(0, patternBytes(10, 4096));
  await dev.write(4096, patternBytes(11, 4096));
  t.ok((await dev.read(0, 8192)).equals(Buffer.concat([patternBytes(10, 4096), patternBytes(11, 4096)])), 'unsupported: the threadpool does it');
  await dev.read(0, 4096);
  t.same(calls, { pread: 3, pwrite: 3 }, 'a file that refuses RWF_NOWAIT is not asked again');
});

t.test('conformance: regular file with O_DIRECT', async (t) => {
  const reason = await directUnsupportedReason();
  if (reason) {
    t.skip(reason, async () => undefined);
    return;
  }
  blockDeviceSuite(t, 'file', fileFactory({ direct: true }), { reopen: true, readOnlyReopen: true, direct: true });
});

t.test('conformance: faulty wrapper, buffered, no faults armed', async (t) => {
  blockDeviceSuite(t, 'faulty(file)', faultyFactory(false), { reopen: true, readOnlyReopen: true });
});

t.test('conformance: faulty wrapper, write-through, no faults armed', async (t) => {
  blockDeviceSuite(t, 'faulty-wt(file)', faultyFactory(true), { reopen: true, readOnlyReopen: true });
});

t.test('conformance: loop block device (O_DIRECT, sysfs geometry)', async (t) => {
  const reason = await loopUnavailableReason(dir);
  if (reason) {
    t.skip(reason, async () => undefined);
    return;
  }
  blockDeviceSuite(t, 'loop', async () => {
    const backing = freshPath();
    await fsp.writeFile(backing, Buffer.alloc(0));
    await fsp.truncate(backing, DEVICE_BYTES);
    const loop = await attachLoop(backing);
    try {
      const dev = await openFileDevice(loop.path);
      return {
        dev,
        reopen: (o) => openFileDevice(loop.path, { readOnly: o?.readOnly }),
        cleanup: async () => {
          await loop.detach();
          await fsp.rm(backing, { force: true });
        },
      };
    } catch (err) {
      await loop.detach();
      await fsp.rm(backing, { force: true });
      throw err;
    }
  }, { reopen: true, readOnlyReopen: true, direct: true });
});

t.test('block devices: geometry, O_DIRECT, exclusive, read-only', async (t) => {
  const reason = await loopUnavailableReason(dir);
  if (reason) {
    t.skip(reason, async () => undefined);
    return;
  }
  const backing = freshPath();
  await fsp.writeFile(backing, Buffer.alloc(0));
  await fsp.truncate(backing, DEVICE_BYTES);
  t.teardown(() => fsp.rm(backing, { force: true }));

  t.test('512-byte loop: size from sysfs, direct by default, O_EXCL', async (t) => {
    const loop = await attachLoop(backing);
    t.teardown(() => loop.detach());
    const dev = await openFileDevice(loop.path, { exclusive: true });
    t.teardown(() => dev.close());
    t.equal(dev.kind, 'block');
    t.equal(dev.direct, true, 'block devices bypass the page cache by default');
    t.equal(dev.sizeBytes, DEVICE_BYTES, 'size read from sysfs');
    t.equal(dev.sectorSize, 512, 'sectorSize = logical block size');
    t.equal(dev.exclusiveEnforced, true);
    t.same(await openFlagsOn(loop.path).then((f) => f.map((x) => (x & O_DIRECT_OCTAL_FLAG) !== 0)), [true], 'open with O_DIRECT (per /proc/self/fdinfo)');
    await expectCode(t, openFileDevice(loop.path, { exclusive: true }), 'EBUSY', 'a second exclusive open');
    // Another writer underneath (a plain descriptor stands in for another host): a direct
    // read must see its data at once, not a cached copy.
    await dev.write(0, patternBytes(1, 4096));
    t.ok((await dev.read(0, 4096)).equals(patternBytes(1, 4096)));
    const other = await openFileDevice(loop.path, { direct: true });
    await other.write(0, patternBytes(2, 4096));
    await other.close();
    t.ok((await dev.read(0, 4096)).equals(patternBytes(2, 4096)), 'sees the other writer\'s data');
  });

  t.test('4096-byte loop: sectorSize follows the logical block size', async (t) => {
    const loop = await attachLoop(backing, { sectorSize: 4096 });
    t.teardown(() => loop.detach());
    const dev = await openFileDevice(loop.path);
    t.teardown(() => dev.close());
    t.equal(dev.sectorSize, 4096);
    await expectCode(t, dev.read(512, 512), 'EINVAL', '512-byte I/O on a 4K device');
    await expectCode(t, openFileDevice(loop.path, { sectorSize: 512 }), 'EINVAL', 'sectorSize below the logical block size');
  });

  t.test('read-only loop: read-write open says EROFS, readOnly open works', async (t) => {
    const loop = await attachLoop(backing, { readOnly: true });
    t.teardown(() => loop.detach());
    await expectCode(t, openFileDevice(loop.path), 'EROFS', 'read-write open');
    const dev = await openFileDevice(loop.path, { readOnly: true });
    t.equal(dev.readOnly, true);
    await dev.close();
  });

  t.test('create on a block device is refused', async (t) => {
    const loop = await attachLoop(backing);
    t.teardown(() => loop.detach());
    await expectCode(t, openFileDevice(loop.path, { create: { sizeBytes: 4096 } }), 'EEXIST', 'create without resize');
    await expectCode(t, openFileDevice(loop.path, { create: { sizeBytes: 4096, resize: true } }), 'EINVAL', 'create with resize');
  });
});

t.test('open errors', async (t) => {
  await expectCode(t, openFileDevice(path.join(dir, 'missing.img')), 'ENOENT', 'missing file');
  await expectCode(t, openFileDevice(path.join(dir, 'no-such-dir', 'x.img')), 'ENOENT', 'missing parent');
  await expectCode(t, openFileDevice(path.join(dir, 'no-such-dir', 'x.img'), { create: { sizeBytes: 4096 } }), 'ENOENT', 'create in a missing directory');
  await expectCode(t, openFileDevice(dir), 'EINVAL', 'a directory');
  await expectCode(t, openFileDevice('/dev/null'), 'EINVAL', 'a character device');
  await expectCode(t, openFileDevice(''), 'EINVAL', 'empty path');
  try {
    await openFileDevice(path.join(dir, 'missing.img'));
  } catch (err) {
    t.match((err as Error).message, /missing\.img: no such file or block device/, 'the message names the path');
  }
  for (const sectorSize of [256, 1000, 131072]) {
    await expectCode(t, openFileDevice(freshPath(), { create: { sizeBytes: 1 << 20 }, sectorSize }), 'EINVAL', `sectorSize ${sectorSize}`);
  }
});

t.test('permission denied is EACCES', async (t) => {
  const sub = path.join(dir, 'perm');
  await fsp.mkdir(sub, { mode: 0o755 });
  await fsp.chmod(sub, 0o755);
  const p = path.join(sub, 'private.img');
  await fsp.writeFile(p, Buffer.alloc(4096));
  await fsp.chmod(p, 0o600);
  if (process.getuid?.() !== 0) {
    await fsp.chmod(p, 0o000);
    await expectCode(t, openFileDevice(p), 'EACCES', 'open of an unreadable file');
    return;
  }
  // Root bypasses file permissions, so ask an unprivileged child (uid nobody) to open it.
  const fileModule = path.resolve(__dirname, '../../blockdev/file.js');
  const script = `require(${JSON.stringify(fileModule)}).openFileDevice(${JSON.stringify(p)}, { readOnly: true })` +
    `.then((d) => { console.log('OPENED'); return d.close(); }, (e) => console.log(e.name + ' ' + e.code))`;
  let stdout: string;
  try {
    ({ stdout } = await runFile(process.execPath, ['-e', script], { uid: 65534, gid: 65534, timeout: 10_000, cwd: '/' }));
  } catch (err) {
    t.skip(`cannot run a child as uid 65534: ${(err as Error).message.split('\n')[0]}`, async () => undefined);
    return;
  }
  t.equal(stdout.trim(), 'BlockDeviceError EACCES', 'an unprivileged opener gets EACCES');
});

t.test('create, resize and size rounding', async (t) => {
  const p = freshPath();
  const dev = await openFileDevice(p, { create: { sizeBytes: 64 << 20 } });
  t.equal(dev.sizeBytes, 64 << 20);
  t.equal(dev.kind, 'file');
  t.equal(dev.direct, false);
  await dev.write(32 << 20, Buffer.alloc(4096, 7));
  await dev.flush();
  await dev.close();
  const st = await fsp.stat(p);
  t.equal(st.size, 64 << 20, 'file length');
  t.ok(st.blocks * 512 < 1 << 20, `the file is sparse (${st.blocks * 512} bytes allocated)`);

  await expectCode(t, openFileDevice(p, { create: { sizeBytes: 1 << 20 } }), 'EEXIST', 'create over an existing file');
  t.equal((await fsp.stat(p)).size, 64 << 20, 'EEXIST left the file alone');
  const grown = await openFileDevice(p, { create: { sizeBytes: 128 << 20, resize: true } });
  t.equal(grown.sizeBytes, 128 << 20, 'resize grows');
  t.ok((await grown.read(32 << 20, 4096)).equals(Buffer.alloc(4096, 7)), 'resize keeps data');
  await grown.close();
  const shrunk = await openFileDevice(p, { create: { sizeBytes: 1 << 20, resize: true } });
  t.equal(shrunk.sizeBytes, 1 << 20, 'resize shrinks when told');
  await shrunk.close();

  await expectCode(t, openFileDevice(freshPath(), { create: { sizeBytes: 1000 } }), 'EINVAL', 'create size not a multiple of the sector');
  await expectCode(t, openFileDevice(freshPath(), { create: { sizeBytes: 0 } }), 'EINVAL', 'create size 0');
  const roPath = freshPath();
  await expectCode(t, openFileDevice(roPath, { create: { sizeBytes: 4096 }, readOnly: true }), 'EINVAL', 'create + readOnly');
  await t.rejects(fsp.stat(roPath), 'create + readOnly made no file');

  const odd = freshPath();
  await fsp.writeFile(odd, Buffer.alloc(10 * 512 + 100, 1));
  const rounded = await openFileDevice(odd);
  t.equal(rounded.sizeBytes, 10 * 512, 'size rounds down to whole 512-byte sectors');
  await expectCode(t, rounded.read(10 * 512, 512), 'ERANGE', 'the partial tail is beyond the end');
  await rounded.close();
  const rounded4k = await openFileDevice(odd, { sectorSize: 4096 });
  t.equal(rounded4k.sizeBytes, 4096, 'and to whole 4096-byte sectors');
  await expectCode(t, rounded4k.read(512, 512), 'EINVAL', '512-byte I/O with sectorSize 4096');
  await rounded4k.close();
});

t.test('exclusive on a regular file is accepted but not enforced (documented)', async (t) => {
  const p = freshPath();
  const a = await openFileDevice(p, { create: { sizeBytes: 1 << 20 }, exclusive: true });
  const b = await openFileDevice(p, { exclusive: true });
  t.equal(a.exclusiveEnforced, false);
  t.equal(b.exclusiveEnforced, false);
  await a.close();
  await b.close();
});

t.test('O_DIRECT on a regular file', async (t) => {
  const reason = await directUnsupportedReason();
  if (reason) {
    t.skip(reason, async () => undefined);
    return;
  }
  const p = freshPath();
  const dev = await openFileDevice(p, { create: { sizeBytes: 8 << 20 }, direct: true });
  t.teardown(() => dev.close());
  t.equal(dev.direct, true);
  t.ok(dev.sectorSize >= 512);
  const flags = await openFlagsOn(p);
  t.equal(flags.length, 1, 'one descriptor on the file');
  t.ok(flags.every((f) => (f & O_DIRECT_OCTAL_FLAG) !== 0), 'it is open with O_DIRECT (per /proc/self/fdinfo)');
  const buffered = await openFileDevice(p);
  t.ok((await openFlagsOn(p)).filter((f) => (f & O_DIRECT_OCTAL_FLAG) === 0).length === 1, 'a default open of a file is not O_DIRECT');
  await buffered.close();
  // A writer underneath through a plain descriptor: the direct device must not serve a
  // cached copy of the old contents.
  await dev.write(1 << 20, patternBytes(5, 8192));
  t.ok((await dev.read(1 << 20, 8192)).equals(patternBytes(5, 8192)));
  const fd = openSync(p, 'r+');
  try {
    writeSync(fd, patternBytes(6, 8192), 0, 8192, 1 << 20);
  } finally {
    closeSync(fd);
  }
  t.ok((await dev.read(1 << 20, 8192)).equals(patternBytes(6, 8192)), 'sees data written underneath');
  // Larger than one bounce slot and from a misaligned caller buffer.
  const big = Buffer.alloc((3 << 20) + 1);
  patternBytes(7, 3 << 20).copy(big, 1);
  await dev.write(2 << 20, big.subarray(1));
  t.ok((await dev.read(2 << 20, 3 << 20)).equals(patternBytes(7, 3 << 20)), '3 MiB from a misaligned buffer');
  // More concurrent I/O than bounce slots.
  await Promise.all(Array.from({ length: 40 }, (_, i) => dev.write(i * 65536, patternBytes(200 + i, 65536))));
  const back = await Promise.all(Array.from({ length: 40 }, (_, i) => dev.read(i * 65536, 65536)));
  t.ok(back.every((b, i) => b.equals(patternBytes(200 + i, 65536))), '40 concurrent 64 KiB writes through 8 slots');
});

t.test('openDevice dispatch', async (t) => {
  const p = freshPath();
  const made = await openFileDevice(p, { create: { sizeBytes: 1 << 20 } });
  await made.close();
  const byPath: BlockDevice = await openDevice(p);
  t.ok(byPath instanceof FileBlockDevice, 'a path opens a file device');
  t.equal(byPath.sizeBytes, 1 << 20);
  await byPath.close();
  const byUrl = await openDevice(`file://${p}`, { readOnly: true });
  t.equal(byUrl.readOnly, true, 'file:// URL with options');
  await byUrl.close();
  await expectCode(t, openDevice('iscsi://127.0.0.1:3260/iqn.2024-01.test.local:tgt1/1'), 'EINVAL', 'iscsi://');
  try {
    await openDevice('iscsi://127.0.0.1/iqn.x/1');
  } catch (err) {
    t.match((err as BlockDeviceError).message, /not supported yet/, 'says iscsi is not supported yet');
  }
  await expectCode(t, openDevice('nbd://host/export'), 'EINVAL', 'unknown scheme');
  await expectCode(t, openDevice(''), 'EINVAL', 'empty spec');
  await expectCode(t, openDevice(path.join(dir, 'nope.img')), 'ENOENT', 'missing path');
});

t.test('sysfs geometry', async (t) => {
  const makedev = (major: number, minor: number): bigint => {
    const ma = BigInt(major);
    const mi = BigInt(minor);
    return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
  };
  for (const [major, minor] of [[8, 0], [8, 17], [259, 3], [7, 1], [4095, 1048575], [253, 70000]] as const) {
    t.same(decodeDevT(makedev(major, minor)), { major, minor }, `dev_t ${major}:${minor}`);
  }
  // A fake sysfs: a disk with a queue/ and a partition that has none of its own.
  const root = path.join(dir, 'sysfs');
  const disk = path.join(root, 'devices', 'sda');
  await fsp.mkdir(path.join(disk, 'queue'), { recursive: true });
  await fsp.mkdir(path.join(disk, 'sda1'), { recursive: true });
  await fsp.mkdir(path.join(root, 'dev', 'block'), { recursive: true });
  await fsp.writeFile(path.join(disk, 'size'), '2097152\n');
  await fsp.writeFile(path.join(disk, 'ro'), '0\n');
  await fsp.writeFile(path.join(disk, 'queue', 'logical_block_size'), '4096\n');
  await fsp.writeFile(path.join(disk, 'sda1', 'size'), '2048\n');
  await fsp.writeFile(path.join(disk, 'sda1', 'ro'), '1\n');
  await fsp.symlink('../../devices/sda', path.join(root, 'dev', 'block', '8:0'));
  await fsp.symlink('../../devices/sda/sda1', path.join(root, 'dev', 'block', '8:1'));
  const whole = await readBlockGeometry({ major: 8, minor: 0 }, root);
  t.same({ size: whole.sizeBytes, lbs: whole.logicalBlockSizeBytes, ro: whole.readOnly }, { size: 2097152 * 512, lbs: 4096, ro: false }, 'disk');
  const part = await readBlockGeometry({ major: 8, minor: 1 }, root);
  t.same({ size: part.sizeBytes, lbs: part.logicalBlockSizeBytes, ro: part.readOnly }, { size: 2048 * 512, lbs: 4096, ro: true }, 'partition uses the parent queue');
  await t.rejects(readBlockGeometry({ major: 9, minor: 9 }, root), 'an unknown device rejects');
  await fsp.writeFile(path.join(disk, 'size'), 'garbage\n');
  await t.rejects(readBlockGeometry({ major: 8, minor: 0 }, root), /expected an integer/, 'a malformed size rejects');
});
