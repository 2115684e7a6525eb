// mkfs.o2fs as a command: creating image files, refusing to overwrite filesystems it
// recognises (and overwriting with -F), sizes, usage errors, exit statuses, --json.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp, statSync } from 'node:fs';
import path from 'node:path';
import { openFileDevice } from '../../blockdev/file';
import { findPrimarySuper } from '../../fs/volume';
import { tool as mkfsTool } from '../../tools/mkfs';
import { STACK_LINE, runInProcess, runTool, tempDir } from './run';

process.on('unhandledRejection', (err) => {
  throw err;
});

const MIB = 1 << 20;
const dir = tempDir(t, 'o2fs-mkfs-');
let counter = 0;
const fresh = (): string => path.join(dir, `vol-${counter++}.img`);

async function superOf(file: string) {
  const dev = await openFileDevice(file, { readOnly: true });
  try {
    return (await findPrimarySuper(dev)).sb;
  } finally {
    await dev.close();
  }
}

async function sparseFile(file: string, sizeBytes: number, patches: Array<{ offset: number; bytes: Buffer }> = []): Promise<void> {
  const fh = await fsp.open(file, 'w');
  try {
    await fh.truncate(sizeBytes);
    for (const p of patches) await fh.write(p.bytes, 0, p.bytes.length, p.offset);
  } finally {
    await fh.close();
  }
}

function hasMkfsExt4(): boolean {
  try {
    execFileSync('mkfs.ext4', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

t.test('--size creates the image file and the summary describes the volume', async (t) => {
  const img = fresh();
  const r = runTool('mkfs', ['--size', '64M', '-L', 'alpha', '-N', '3', img]);
  t.equal(r.status, 0, r.err);
  t.equal(r.err, '');
  t.equal(statSync(img).size, 64 * MIB);
  const sb = await superOf(img);
  t.equal(sb.label, 'alpha');
  t.equal(sb.maxSlots, 3);
  t.equal(sb.stack, 'local');
  t.match(r.out, /^Label: alpha$/m);
  t.match(r.out, new RegExp(`^UUID: ${sb.uuid.toString('hex').toUpperCase()}$`, 'm'));
  t.match(r.out, /^Block size: 4096 \(12 bits\)$/m);
  t.match(r.out, /^Cluster size: 4096 \(12 bits\)$/m);
  t.match(r.out, /^Volume size: 67108864 \(16384 clusters\) \(16384 blocks\)$/m);
  t.match(r.out, /^Node slots: 3$/m);
  t.match(r.out, /^Journal size: 4194304 /m);
  t.match(r.out, /^Cluster stack: local$/m);
  t.match(r.out, /^Features: .*inline-data/m);
});

t.test('--json prints one document with the geometry', async (t) => {
  const img = fresh();
  const r = runTool('mkfs', ['--json', '--size', '80M', '-b', '2K', '-C', '8K', '-J', 'size=8M', '--cluster-stack=o2cb', '--cluster-name', 'web', img]);
  t.equal(r.status, 0, r.err);
  const doc = JSON.parse(r.out);
  const sb = await superOf(img);
  t.equal(doc.uuid, sb.uuid.toString('hex').toUpperCase());
  t.equal(doc.blockSize, 2048);
  t.equal(doc.clusterSize, 8192);
  t.equal(doc.totalClusters, (80 * MIB) / 8192);
  t.equal(doc.journalBytes, 8 * MIB);
  t.equal(doc.stack, 'o2cb');
  t.equal(doc.clusterName, 'web');
  t.same(doc.features.roCompat, ['unwritten']);
  t.equal(sb.clusterName, 'web');
});

t.test('refuses an existing o2fs volume without -F and overwrites it with -F', async (t) => {
  const img = fresh();
  t.equal(runTool('mkfs', ['-q', '--size', '64M', '-L', 'first', img]).status, 0);
  const before = await superOf(img);
  const refused = runTool('mkfs', ['-L', 'second', img]);
  t.equal(refused.status, 1);
  t.match(refused.err, /^mkfs\.o2fs: .* contains an o2fs volume \(label "first", UUID [0-9A-F]{32}, 2 slots\); use -F to overwrite it\n$/);
  t.notMatch(refused.err, STACK_LINE);
  t.ok((await superOf(img)).uuid.equals(before.uuid), 'the volume is untouched');

  const forced = runTool('mkfs', ['-F', '-q', '-L', 'second', img]);
  t.equal(forced.status, 0, forced.err);
  t.equal(forced.out, '', '-q prints nothing');
  const after = await superOf(img);
  t.equal(after.label, 'second');
  t.notOk(after.uuid.equals(before.uuid), 'a new volume');
});

t.test('refuses an ext4 image without -F', async (t) => {
  const img = fresh();
  await sparseFile(img, 64 * MIB);
  if (hasMkfsExt4()) {
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'extdata', img], { stdio: 'ignore' });
  } else {
    // The ext4 magic by hand: s_magic 0xEF53 at 1080, extents (incompat 0x40) at 1120.
    const sb = Buffer.alloc(1024);
    sb.writeUInt16LE(0xef53, 0x38);
    sb.writeUInt32LE(0x40, 0x60);
    sb.write('extdata', 0x78);
    await sparseFile(img, 64 * MIB, [{ offset: 1024, bytes: sb }]);
  }
  const r = runTool('mkfs', [img]);
  t.equal(r.status, 1);
  t.match(r.err, /contains an ext4 filesystem \(label "extdata"\); use -F to overwrite it/);
  t.notMatch(r.err, STACK_LINE);
  const forced = runTool('mkfs', ['-F', img]);
  t.equal(forced.status, 0, forced.err);
  t.match(forced.err, /overwriting an ext4 filesystem/);
  t.equal((await superOf(img)).maxSlots, 2);
});

t.test('recognises other filesystems by their magic numbers', async (t) => {
  const cases: Array<{ name: string; offset: number; bytes: Buffer; expect: RegExp }> = [
    { name: 'xfs', offset: 0, bytes: Buffer.from('XFSB'), expect: /an XFS filesystem/ },
    { name: 'btrfs', offset: 65600, bytes: Buffer.from('_BHRfS_M'), expect: /a btrfs filesystem/ },
    { name: 'ocfs2', offset: 2 * 4096, bytes: Buffer.from('OCFSV2'), expect: /an OCFS2 volume/ },
    { name: 'ocfs2-512', offset: 2 * 512, bytes: Buffer.from('OCFSV2'), expect: /an OCFS2 volume/ },
    { name: 'swap', offset: 4086, bytes: Buffer.from('SWAPSPACE2'), expect: /a swap area/ },
    { name: 'luks', offset: 0, bytes: Buffer.from('LUKS\xba\xbe', 'latin1'), expect: /a LUKS encrypted container/ },
  ];
  for (const c of cases) {
    const img = fresh();
    await sparseFile(img, 64 * MIB, [{ offset: c.offset, bytes: c.bytes }]);
    const r = runTool('mkfs', [img]);
    t.equal(r.status, 1, `${c.name}: refused`);
    t.match(r.err, c.expect, c.name);
  }
});

t.test('an unknown option is exit 1 with a one-line message', async (t) => {
  const r = runTool('mkfs', ['--foo', fresh()]);
  t.equal(r.status, 1);
  t.equal(r.err, 'mkfs.o2fs: unknown option --foo; see --help\n');
  t.equal(r.out, '');
});

t.test('usage errors: unknown options, bad sizes, bad values, no device', async (t) => {
  // In-process: the same Tool.run and error reporting as the executable, minus a process
  // start per case.
  const img = fresh();
  const cases: Array<{ args: string[]; expect: RegExp }> = [
    { args: ['--foo', img], expect: /^mkfs\.o2fs: unknown option --foo; see --help\n$/ },
    { args: ['-x', img], expect: /^mkfs\.o2fs: unknown option -x; see --help\n$/ },
    { args: [img, '--size'], expect: /option --size needs a value/ },
    { args: ['--size', '12Q', img], expect: /^mkfs\.o2fs: bad size "12Q" for --size/ },
    { args: ['--size', '1000', img], expect: /--size must be a positive multiple of 512 bytes/ },
    { args: ['--size', '64M', '-b', '3000', img], expect: /block size 3000 is not one of 512, 1024, 2048, 4096/ },
    { args: ['--size', '64M', '-C', '2K', img], expect: /cluster size 2048 must be a power of two from 4K to 1M/ },
    { args: ['--size', '64M', '-N', '0', img], expect: /--slots must be 1\.\.255, got 0/ },
    { args: ['--size', '64M', '-J', '1M', img], expect: /journal size 1048576 is below the minimum/ },
    { args: ['--size', '64M', '--cluster-stack', 'pacemaker', img], expect: /unknown cluster stack "pacemaker"/ },
    { args: ['--size', '64M', '--cluster-stack', 'user', img], expect: /--cluster-name is required with --cluster-stack=user/ },
    { args: ['--size', '64M', '-L', 'x'.repeat(65), img], expect: /is longer than 64 bytes/ },
    { args: [], expect: /no DEVICE given; see --help/ },
    { args: ['a.img', 'b.img'], expect: /one DEVICE expected, got 2/ },
    { args: [path.join(dir, 'missing.img')], expect: /missing\.img: no such file or block device \(add --size SIZE to create an image file\)/ },
  ];
  for (const c of cases) {
    const r = await runInProcess(mkfsTool, c.args);
    t.equal(r.status, 1, `exit 1 for ${c.args.join(' ')}`);
    t.match(r.err, c.expect);
    t.notMatch(r.err, STACK_LINE);
  }
  t.notOk(existsSync(img), 'no image file left behind by a refused run');
});

t.test('too small a device is refused with the size it needs', async (t) => {
  const img = fresh();
  const r = runTool('mkfs', ['--size', '8M', img]);
  t.equal(r.status, 1);
  t.match(r.err, /^mkfs\.o2fs: device too small: 8388608 bytes; 2 slots with 4 MiB journals need at least \d+ MiB\n$/);
  t.notOk(existsSync(img), '--size made no file');

  await sparseFile(img, 16 * MIB);
  const existing = runTool('mkfs', [img]);
  t.equal(existing.status, 1);
  t.match(existing.err, /device too small: 16777216 bytes/);
  t.notMatch(existing.err, STACK_LINE);
});

t.test('an image file whose size differs from --size is resized only with -F', async (t) => {
  const img = fresh();
  await sparseFile(img, 64 * MIB);
  const refused = runTool('mkfs', ['--size', '96M', img]);
  t.equal(refused.status, 1);
  t.match(refused.err, /is 67108864 bytes \(64 MiB\), not the 100663296 bytes \(96 MiB\) --size asks for; use -F to resize it/);
  t.equal(statSync(img).size, 64 * MIB);

  const same = runTool('mkfs', ['-q', '--size', '64M', img]);
  t.equal(same.status, 0, `the same size is fine: ${same.err}`);

  const forced = runTool('mkfs', ['-q', '-F', '--size', '96M', img]);
  t.equal(forced.status, 0, forced.err);
  t.equal(statSync(img).size, 96 * MIB);
  t.equal((await superOf(img)).totalBlocks, (96 * MIB) / 4096);
});

t.test('--help is readable and documents the exit statuses', async (t) => {
  const r = runTool('mkfs', ['--help']);
  t.equal(r.status, 0);
  t.match(r.out, /^Usage: mkfs\.o2fs \[options\] DEVICE/);
  t.match(r.out, /Exit status:\n {2}0 .*\n {2}1 .*/);
  t.match(r.out, /^ {2}8 {2}operational error/m);
  t.equal(r.err, '');
});
