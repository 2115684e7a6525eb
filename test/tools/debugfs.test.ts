// debugfs.o2fs as a command, on a volume made and filled through the library: every
// command in text and --json, byte-exact cat/dump, -R and piped (interactive) sessions,
// and what happens on corrupt metadata (a clear error, no stack, the session goes on).
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import { allRecords } from '../../fs/extent-tree';
import { writeFile } from '../../fs/file-data';
import { S_IFDIR, S_IFLNK, S_IFREG } from '../../fs/format/constants';
import { encodeHeartbeat } from '../../fs/format/heartbeat';
import { encodeSlotMapBlock } from '../../fs/format/slot-map';
import { mkfs } from '../../fs/mkfs';
import { createNode, resolvePath } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';
import { setXattr } from '../../fs/xattr';
import { STACK_LINE, runTool, tempDir } from './run';

process.on('unhandledRejection', (err) => {
  throw err;
});

const MIB = 1 << 20;
const BIG_BYTES = 300_000;
const MANY_FILES = 1100;
const HB_NODE = 5;
const HB_SEQ = 42;
const HB_GENERATION = 0x1234abcd;
const SLOT_NODE = 7;

const dir = tempDir(t, 'o2fs-debugfs-');
const img = path.join(dir, 'vol.img');
const bigData = randomBytes(BIG_BYTES);
const smallData = Buffer.from('hello, o2fs\n');

interface Facts {
  uuid: string;
  rootBlkno: number;
  lostFoundBlkno: number;
  bigBlkno: number;
  smallBlkno: number;
  bigRanges: Array<{ first: number; last: number }>;
  journal0: number;
  hbBlkno: number;
}
let facts: Facts;

async function firstBlockOf(tx: Transaction, ino: number): Promise<number> {
  const recs = await allRecords(tx, await tx.getInode(ino));
  return recs[0].blkno;
}

/** A 64 MiB volume with 3 slots: files (inline, extents, symlink, xattr), a big directory, a heartbeat and a slot map entry. */
async function build(): Promise<Facts> {
  const dev: BlockDevice = await openFileDevice(img, { create: { sizeBytes: 64 * MIB } });
  try {
    await mkfs(dev, { label: 'dbgtest', slots: 3 });
    const vol = await Volume.open(dev, {});
    const tx = new Transaction(vol);
    const ctx = { slot: 0, inodeAllocBlkno: await vol.systemInode('inode_alloc:0000'), extentAllocBlkno: await vol.systemInode('extent_alloc:0000') };
    const root = await tx.getInode(vol.sb.rootBlkno);
    const big = await createNode(tx, ctx, root, Buffer.from('big.bin'), { mode: S_IFREG | 0o644, uid: 1000, gid: 100 });
    await writeFile(tx, ctx, big, 0, bigData);
    const small = await createNode(tx, ctx, root, Buffer.from('small.txt'), { mode: S_IFREG | 0o600, uid: 0, gid: 0 });
    await writeFile(tx, ctx, small, 0, smallData);
    await setXattr(tx, ctx, small, 'user.comment', Buffer.from('a note'));
    const sub = await createNode(tx, ctx, root, Buffer.from('sub dir'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    await createNode(tx, ctx, sub, Buffer.from('link'), { mode: S_IFLNK | 0o777, uid: 0, gid: 0, target: Buffer.from('../small.txt') });
    const many = await createNode(tx, ctx, root, Buffer.from('many'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    for (let i = 0; i < MANY_FILES; i++) await createNode(tx, ctx, many, Buffer.from(`file-${String(i).padStart(5, '0')}`), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    await tx.commit();

    const rtx = new Transaction(vol);
    const bs = vol.geo.blockSize;
    const bigRanges = (await allRecords(rtx, await rtx.getInode(big.blkno))).map((r) => ({ first: r.blkno, last: r.blkno + r.clusters * vol.geo.blocksPerCluster - 1 }));
    // A node's heartbeat and its slot, as a mount would write them.
    const hbBlkno = (await firstBlockOf(rtx, await vol.systemInode('heartbeat'))) + HB_NODE;
    await dev.write(hbBlkno * bs, encodeHeartbeat({ blkno: hbBlkno, fsGeneration: vol.fsGeneration, seq: HB_SEQ, nodeNum: HB_NODE, deadMs: 30_000, hbGeneration: HB_GENERATION, timeMs: Date.now() }, bs));
    const smBlkno = await firstBlockOf(rtx, await vol.systemInode('slot_map'));
    const slots = [0, 1, 2].map((s) => (s === 1 ? { inUse: true, nodeNum: SLOT_NODE, mountGeneration: 0xabc } : { inUse: false, nodeNum: 0, mountGeneration: 0 }));
    await dev.write(smBlkno * bs, encodeSlotMapBlock(slots, 0, smBlkno, vol.fsGeneration, bs));
    await dev.flush();
    return {
      uuid: vol.sb.uuid.toString('hex').toUpperCase(),
      rootBlkno: vol.sb.rootBlkno,
      lostFoundBlkno: (await resolvePath(rtx, '/lost+found')).blkno,
      bigBlkno: big.blkno,
      smallBlkno: small.blkno,
      bigRanges,
      journal0: await vol.systemInode('journal:0000'),
      hbBlkno,
    };
  } finally {
    await dev.close();
  }
}

t.before(async () => {
  facts = await build();
});

const debugfs = (...args: string[]) => runTool('debugfs', [img, ...args]);

/** A copy of the image with `bytes` written at `offset`. */
async function corruptCopy(name: string, offset: number, bytes: Buffer): Promise<string> {
  const copy = path.join(dir, name);
  await fsp.copyFile(img, copy);
  const fh = await fsp.open(copy, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, offset);
  } finally {
    await fh.close();
  }
  return copy;
}

t.test('stats shows the superblock: label, slots, features by name', async (t) => {
  const r = debugfs('-R', 'stats');
  t.equal(r.status, 0, r.err);
  t.match(r.out, /^ {2}Label: dbgtest$/m);
  t.match(r.out, /^ {2}Max slots: 3$/m);
  t.match(r.out, new RegExp(`^ {2}UUID: ${facts.uuid}$`, 'm'));
  t.match(r.out, /^ {2}Incompat features: sparse inline-data xattr indexed-dirs cluster-info \(0x/m);
  t.match(r.out, /^ {2}Compat features: backup-super /m);
  t.match(r.out, new RegExp(`^ {2}Root directory: ${facts.rootBlkno}$`, 'm'));
});

t.test('--json prints one parseable document per command', async (t) => {
  const r = debugfs('--json', '-R', 'stats', '-R', 'ls -l /', '-R', 'slotmap');
  t.equal(r.status, 0, r.err);
  const docs = r.out.trim().split('\n').map((line) => JSON.parse(line));
  t.equal(docs.length, 3);
  t.same(docs.map((d) => d.command), ['stats', 'ls', 'slotmap']);
  t.equal(docs[0].result.label, 'dbgtest');
  t.equal(docs[0].result.maxSlots, 3);
  t.equal(docs[0].result.uuid, facts.uuid);
  t.same(docs[0].result.features.roCompat, ['unwritten']);
  const lf = docs[1].result.entries.find((e: { name: string }) => e.name === 'lost+found');
  t.match(lf, { inode: facts.lostFoundBlkno, type: 'directory', modeString: 'drwx------', links: 2 });
  t.same(docs[2].result.slots[1], { slot: 1, inUse: true, node: SLOT_NODE, mountGeneration: 0xabc });
});

t.test('ls -l / after mkfs shows lost+found; ls lists names', async (t) => {
  const r = debugfs('-R', 'ls -l /');
  t.equal(r.status, 0, r.err);
  t.match(r.out, new RegExp(`^ *${facts.lostFoundBlkno} +drwx------ +2 +0 +0 +\\d+ +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d +lost\\+found$`, 'm'));
  t.match(r.out, new RegExp(`^ *${facts.bigBlkno} +-rw-r--r-- +1 +1000 +100 +${BIG_BYTES} .* big\\.bin$`, 'm'));
  t.match(r.out, /^ *\d+ +drwxr-xr-x .* sub dir$/m);
  t.match(r.out, /^ *\d+ +drwxr-xr-x .* \.$/m);

  const plain = debugfs('-R', 'ls "/sub dir"');
  t.equal(plain.out, '.\n..\nlink\n');
  const longSub = debugfs('-R', 'ls -l "/sub dir"');
  t.match(longSub.out, /lrwxrwxrwx .* link -> \.\.\/small\.txt$/m);
});

t.test('ls reads a big indexed directory completely', async (t) => {
  const r = debugfs('--json', '-R', 'ls /many');
  t.equal(r.status, 0, r.err);
  const names: string[] = JSON.parse(r.out).result.entries.map((e: { name: string }) => e.name);
  t.equal(names.length, MANY_FILES + 2);
  t.equal(new Set(names).size, names.length, 'no name twice');
  t.ok(names.includes('file-00000') && names.includes(`file-${String(MANY_FILES - 1).padStart(5, '0')}`));
});

t.test('stat by path and by <blkno>', async (t) => {
  const byNumber = debugfs('-R', `stat <${facts.bigBlkno}>`);
  t.equal(byNumber.status, 0, byNumber.err);
  t.match(byNumber.out, new RegExp(`^Inode: ${facts.bigBlkno} `, 'm'));
  t.match(byNumber.out, /^Type: regular {3}Mode: -rw-r--r-- \(0100644\) {3}Links: 1$/m);
  t.match(byNumber.out, new RegExp(`^Uid: 1000 {3}Gid: 100 {3}Size: ${BIG_BYTES} {3}Clusters: ${Math.ceil(BIG_BYTES / 4096)}$`, 'm'));
  t.match(byNumber.out, /^Flags: valid \(0x00000001\)$/m);
  t.match(byNumber.out, /^Extent list: depth 0, 1 of \d+ records:$/m);
  t.match(byNumber.out, new RegExp(`blocks ${facts.bigRanges[0].first}-${facts.bigRanges[0].last}`));

  const small = debugfs('-R', 'stat /small.txt');
  t.match(small.out, /^Inline data: 12 bytes$/m);
  t.match(small.out, /^Dynamic features: inline-data inline-xattr /m);
  t.match(small.out, /^Xattrs: user\.comment$/m);

  const journal = debugfs('--json', '-R', 'stat //journal:0000');
  const doc = JSON.parse(journal.out).result;
  t.equal(doc.inode, facts.journal0);
  t.same(doc.flagNames, ['valid', 'system', 'journal']);
  t.match(doc.journal, { totalBlocks: 1024, sequence: 1, empty: true });

  const notInode = debugfs('-R', 'stat <3>');
  t.equal(notInode.status, 4);
  t.equal(notInode.err, 'stat: <3>: block 3 is a group descriptor, not an inode\n');
  const missing = debugfs('-R', 'stat /no/such');
  t.equal(missing.status, 4);
  t.equal(missing.err, 'stat: /no/such: no such file or directory\n');
});

t.test('cat and dump are byte-exact, for extent-mapped and inline files', async (t) => {
  const cat = debugfs('-R', 'cat /big.bin');
  t.equal(cat.status, 0, cat.err);
  t.ok(cat.stdout.equals(bigData), 'cat /big.bin');
  t.ok(debugfs('-R', 'cat /small.txt').stdout.equals(smallData), 'cat /small.txt');
  const catJson = JSON.parse(debugfs('--json', '-R', 'cat /small.txt').out).result;
  t.ok(Buffer.from(catJson.data, 'base64').equals(smallData), 'cat --json carries base64');

  const hostBig = path.join(dir, 'big.out');
  const hostSmall = path.join(dir, 'small.out');
  const dump = debugfs('-R', `dump /big.bin ${hostBig}`, '-R', `dump <${facts.smallBlkno}> ${hostSmall}`);
  t.equal(dump.status, 0, dump.err);
  t.ok(readFileSync(hostBig).equals(bigData), 'dump /big.bin');
  t.ok(readFileSync(hostSmall).equals(smallData), 'dump <small>');

  const dirCat = debugfs('-R', 'cat /sub\\ dir');
  t.equal(dirCat.status, 4);
  t.equal(dirCat.err, 'cat: /sub dir: is a directory\n');
});

t.test('blocks and extents show where the data is', async (t) => {
  const blocks = debugfs('-R', 'blocks /big.bin');
  t.equal(blocks.out, facts.bigRanges.map((r) => `${r.first}-${r.last}\n`).join(''));
  const ext = debugfs('-R', 'extents /big.bin');
  t.match(ext.out, new RegExp(`^Inode ${facts.bigBlkno}: tree depth 0, 0 extent blocks, ${facts.bigRanges.length} extents?, ${Math.ceil(BIG_BYTES / 4096)} clusters$`, 'm'));
  t.match(ext.out, /^\[inode\] depth 0, 1 of \d+ records$/m);
  const inline = debugfs('-R', 'blocks /small.txt');
  t.equal(inline.out, '(no blocks: its 12 bytes are inline in the inode)\n');
  // The big directory's hash index is an extent tree too.
  const dirTree = debugfs('--json', '-R', 'extents /many');
  const tree = JSON.parse(dirTree.out).result;
  t.ok(tree.extents > 1, 'the directory has several leaves');
});

t.test('slotmap, hb, sysdir and xattrs', async (t) => {
  const sm = debugfs('-R', 'slotmap');
  t.equal(sm.status, 0, sm.err);
  t.equal(sm.out, 'Slot#  Node#  Mount generation\n    0  empty\n    1      7  0x00000abc\n    2  empty\n');

  const hb = debugfs('-R', 'hb');
  t.match(hb.out, new RegExp(`^ +${HB_NODE} +${HB_SEQ} +0x00000000${HB_GENERATION.toString(16)} +\\d{4}-.* +30000$`, 'm'));
  t.equal(hb.out.trim().split('\n').length, 2, 'a header and the one node that beats');
  const hbJson = JSON.parse(debugfs('--json', '-R', 'hb').out).result;
  t.match(hbJson.nodes, [{ node: HB_NODE, seq: HB_SEQ, blkno: facts.hbBlkno, deadMs: 30000 }]);
  t.equal(hbJson.nodes.length, 1);

  const sys = debugfs('-R', 'sysdir');
  t.match(sys.out, new RegExp(`^ *${facts.journal0} +journal:0000$`, 'm'));
  for (const name of ['global_bitmap', 'slot_map', 'heartbeat', 'journal:0002', 'orphan_dir:0002']) t.match(sys.out, new RegExp(`\\s${name}$`, 'm'));

  const xa = debugfs('-R', 'xattrs /small.txt');
  t.equal(xa.out, 'user.comment (6 bytes) = "a note"\n');
});

t.test('a corrupt superblock: a clear error, exit 8, no stack trace', async (t) => {
  // A flipped byte inside the superblock (total_blocks) breaks its checksum.
  const bad = await corruptCopy('bad-super.img', 8192 + 0x28, Buffer.from([0xff, 0xff]));
  const r = runTool('debugfs', [bad, '-R', 'stats']);
  t.equal(r.status, 8);
  t.match(r.err, /^debugfs\.o2fs: .*bad-super\.img: corrupt metadata at block 2: O2FSSUPR checksum mismatch/);
  t.notMatch(r.err, STACK_LINE);
  t.equal(r.out, '');

  const zeroed = await corruptCopy('no-super.img', 8192, Buffer.alloc(4096));
  const z = runTool('debugfs', [zeroed, '-R', 'stats']);
  t.equal(z.status, 8);
  t.match(z.err, /no o2fs superblock found/);
  t.notMatch(z.err, STACK_LINE);
});

t.test('a corrupt inode fails that command only; the session goes on', async (t) => {
  const bad = await corruptCopy('bad-inode.img', facts.smallBlkno * 4096 + 0x40, Buffer.from([0xff, 0xff]));
  const r = runTool('debugfs', [bad], { input: 'stat /small.txt\ncat /big.bin\nls -l /\nquit\n' });
  t.equal(r.status, 4, 'a command failed');
  t.match(r.err, new RegExp(`^stat: corrupt metadata at block ${facts.smallBlkno}: O2INODE1 checksum mismatch`));
  t.notMatch(r.err, STACK_LINE);
  t.ok(r.stdout.subarray(0, BIG_BYTES).equals(bigData), 'cat after the failure works');
  t.match(r.out, /lost\+found\n/);
  t.match(r.out, /small\.txt \(corrupt metadata at block \d+: .*\)/, 'ls -l names the broken entry');
});

t.test('interactive mode reads commands from a pipe until quit', async (t) => {
  const r = runTool('debugfs', [img], { input: 'stats\n\n# a comment\nls /\nquit\nstats\n' });
  t.equal(r.status, 0, r.err);
  t.equal(r.out.match(/Label: dbgtest/g)?.length, 1, 'nothing runs after quit');
  t.match(r.out, /^lost\+found$/m);
  t.notMatch(r.out, /debugfs\.o2fs: /, 'no prompt on a pipe');

  const bad = runTool('debugfs', [img], { input: 'bogus\nls "/unterminated\nls /\n' });
  t.equal(bad.status, 4);
  t.match(bad.err, /^bogus: unknown command; "help" lists the commands$/m);
  t.match(bad.err, /unterminated " quote/);
  t.match(bad.out, /^lost\+found$/m, 'end of input ends the session after the last command');

  const json = runTool('debugfs', ['--json', img], { input: 'stat /nope\nhelp\n' });
  const docs = json.out.trim().split('\n').map((line) => JSON.parse(line));
  t.match(docs[0], { command: 'stat', args: ['/nope'], error: { errno: 'ENOENT' } });
  t.ok(docs[1].result.commands.length > 5);
});

t.test('usage errors and --help', async (t) => {
  const unknown = runTool('debugfs', ['--frob', img]);
  t.equal(unknown.status, 1);
  t.equal(unknown.err, 'debugfs.o2fs: unknown option --frob; see --help\n');
  const missing = runTool('debugfs', [path.join(dir, 'missing.img'), '-R', 'stats']);
  t.equal(missing.status, 8);
  t.match(missing.err, /missing\.img: no such file or block device/);
  const help = runTool('debugfs', ['--help']);
  t.equal(help.status, 0);
  t.match(help.out, /^Usage: debugfs\.o2fs \[options\] DEVICE/);
  t.match(help.out, /^ {2}ls \[-l\] \[PATH\] +directory entries/m);
  t.match(help.out, /^ {2}4 {2}one or more commands failed/m);
});
