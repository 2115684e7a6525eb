// fsck.o2fs against damage: for each kind of metadata block of a populated volume, and
// each kind of damage, a read-only check reports it (exit 4), a repair fixes it (exit 1),
// a second check is clean (exit 0), and no file ever reads back wrong data.
import t from 'tap';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import { FsError } from '../../fs/errors';
import { readFile } from '../../fs/file-data';
import { fsck } from '../../fs/fsck/index';
import { resolvePath } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { Volume } from '../../fs/volume';
import { listDirectory } from '../../fs/dir';
import { Damage, damageBlock, interestingBlocks } from './corrupt';
import { makeVolume, populate } from './populate';
import { OverlayDevice } from './overlay';

process.on('unhandledRejection', (err) => {
  throw err;
});

const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-fsck-'));
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));

/** Damage that takes names or contents away: the files it reaches may end up elsewhere. */
const STRUCTURAL = ['root inode', 'directory inode', 'directory leaf', 'first directory leaf', 'file inode', 'extent block'];

async function contentsCheck(dev: BlockDevice, files: Map<string, Buffer>): Promise<{ wrong: string[]; missing: string[]; lostFound: number }> {
  const vol = await Volume.open(dev, { readOnly: true });
  const tx = new Transaction(vol);
  const wrong: string[] = [];
  const missing: string[] = [];
  for (const [p, data] of files) {
    let ino;
    try {
      ino = await resolvePath(tx, p);
    } catch (e) {
      if (e instanceof FsError && e.errno === 'ENOENT') {
        missing.push(p);
        continue;
      }
      throw e;
    }
    const got = await readFile(tx, ino, 0, ino.size);
    // A sparse file whose extent block was cut out reads zeros there: allowed, but any
    // byte that is not zero must be the byte that was written.
    for (let i = 0; i < data.length; i++) {
      if (got[i] !== data[i] && got[i] !== 0) {
        wrong.push(p);
        break;
      }
    }
    if (got.length !== data.length && !wrong.includes(p)) wrong.push(p);
  }
  const lf = await resolvePath(tx, '/lost+found');
  return { wrong, missing, lostFound: (await listDirectory(tx, lf.blkno)).length };
}

t.test('damage matrix', async (t) => {
  const base = path.join(dir, 'base.img');
  await makeVolume(base, 256 << 20, { slots: 24, journalBytes: 4 << 20 });
  let dev: BlockDevice = await openFileDevice(base, {});
  const { files } = await populate(dev, { manyFiles: 400, sparseExtents: 300 });
  const blocks = await interestingBlocks(dev);
  await dev.close();
  const baseDev = await openFileDevice(base, { readOnly: true });
  t.teardown(() => baseDev.close());
  t.ok(blocks.size >= 20, `${blocks.size} kinds of block to damage`);
  const damages: Damage[] = ['garbage', 'flip', 'zero'];
  for (const [name, blkno] of blocks) {
    for (const how of damages) {
      dev = new OverlayDevice(baseDev);
      await damageBlock(dev, 4096, blkno, how);
      const lines: string[] = [];
      const log = (l: string) => lines.push(l);
      const check = await fsck(dev, { repair: false, log });
      const fix = await fsck(dev, { repair: true, log });
      const again = await fsck(dev, { repair: false, log });
      const label = `${how} ${name} (block ${blkno})`;
      t.equal(check.exitCode, 4, `${label}: check finds it`) || t.comment(lines.join('\n'));
      t.equal(fix.exitCode, 1, `${label}: repair fixes it`) || t.comment(lines.join('\n'));
      t.equal(again.exitCode, 0, `${label}: then clean`) || t.comment(lines.join('\n'));
      const c = await contentsCheck(dev, files);
      t.same(c.wrong, [], `${label}: no file reads wrong data`);
      if (!STRUCTURAL.includes(name)) t.same(c.missing, [], `${label}: every file still at its path`);
      else if (how === 'flip') t.ok(c.missing.length <= 1, `${label}: at most the name with the flipped byte changed`);
      else if (name.startsWith('directory') || name.endsWith('directory leaf') || name === 'root inode') t.ok(c.lostFound >= 1, `${label}: ${c.missing.length} names lost, ${c.lostFound} inodes found again in lost+found`);
      else t.ok(c.missing.length <= 1, `${label}: at most the damaged file is gone`);
      await dev.close();
    }
  }
});

t.test('not a volume, truncated volume, future features: operational errors', async (t) => {
  const junk = path.join(dir, 'junk.img');
  await fsp.writeFile(junk, Buffer.alloc(8 << 20, 0x33));
  let dev = await openFileDevice(junk, {});
  let lines: string[] = [];
  let r = await fsck(dev, { repair: true, log: (l) => lines.push(l) });
  t.equal(r.exitCode, 8);
  t.match(lines.join('\n'), /no o2fs superblock/);
  await dev.close();

  const img = path.join(dir, 'trunc.img');
  await makeVolume(img, 128 << 20, { journalBytes: 4 << 20 });
  await fsp.truncate(img, 64 << 20);
  dev = await openFileDevice(img, {});
  lines = [];
  r = await fsck(dev, { repair: true, log: (l) => lines.push(l) });
  t.equal(r.exitCode, 8, 'truncated image');
  t.match(lines.join('\n'), /truncated image/);
  await dev.close();
});

t.test('a volume in use (slot taken, or a live heartbeat) is not repaired unless forced', async (t) => {
  const { Volume: V } = await import('../../fs/volume');
  const { Transaction: Tx } = await import('../../fs/transaction');
  const { encodeHeartbeat } = await import('../../fs/format/heartbeat');
  const { encodeSlotMapBlock } = await import('../../fs/format/slot-map');
  const img = path.join(dir, 'inuse.img');
  await makeVolume(img, 128 << 20, { journalBytes: 4 << 20 });
  const dev = await openFileDevice(img, {});
  const vol = await V.open(dev);
  const tx = new Tx(vol);
  const hb = await tx.getInode(await vol.systemInode('heartbeat'));
  const sm = await tx.getInode(await vol.systemInode('slot_map'));
  if (hb.body.kind !== 'extents' || sm.body.kind !== 'extents') throw new Error('unexpected layout');
  const hbBlk = hb.body.list.records[0].blkno + 7;
  await dev.write(hbBlk * 4096, encodeHeartbeat({ blkno: hbBlk, fsGeneration: vol.fsGeneration, seq: 5, nodeNum: 7, deadMs: 8000, hbGeneration: 1, timeMs: Date.now() }, 4096));
  let lines: string[] = [];
  let r = await fsck(dev, { repair: true, log: (l) => lines.push(l) });
  t.equal(r.exitCode, 8, 'live heartbeat: refused');
  t.match(lines.join('\n'), /node 7 \(heartbeat/);
  t.equal((await fsck(dev, { repair: false, log: () => undefined })).exitCode, 0, 'a read-only check still runs');
  t.equal((await fsck(dev, { repair: true, force: true, log: () => undefined })).exitCode, 0, 'forced');
  await dev.write(hbBlk * 4096, encodeHeartbeat({ blkno: hbBlk, fsGeneration: vol.fsGeneration, seq: 5, nodeNum: 7, deadMs: 8000, hbGeneration: 1, timeMs: Date.now() - 3_600_000 }, 4096));
  const smBlk = sm.body.list.records[0].blkno;
  await dev.write(smBlk * 4096, encodeSlotMapBlock([{ inUse: false, nodeNum: 0, mountGeneration: 0 }, { inUse: true, nodeNum: 3, mountGeneration: 9 }], 0, smBlk, vol.fsGeneration, 4096));
  lines = [];
  r = await fsck(dev, { repair: true, log: (l) => lines.push(l) });
  t.equal(r.exitCode, 8, 'slot in use: refused');
  t.match(lines.join('\n'), /slot 1 \(node 3\)/);
  await dev.close();
});
