// The journal on its own: record codecs, commit and replay, wrap-around, revokes, torn
// transactions and bad commit checksums (ignored, not applied), idempotent replay, and
// ordered data (a flush before the commit record only when a transaction needs one; a power
// cut after a commit record never exposes a deleted file's bytes).
import t from 'tap';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FaultyBlockDevice } from '../../blockdev/faulty';
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import { SIG } from '../../fs/format/constants';
import { decodeRecord, encodeCommit, encodeListRecord } from '../../fs/format/journal-records';
import { encodeSlotMapBlock } from '../../fs/format/slot-map';
import { Journal } from '../../fs/journal';
import { Volume } from '../../fs/volume';
import { makeVolume, slotContext } from './populate';
import { S_IFREG } from '../../fs/format/constants';
import { createNode, destroyInode, unlinkName } from '../../fs/namei';
import { Transaction } from '../../fs/transaction';
import { OverlayDevice } from './overlay';

const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-journal-'));
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));

/** A metadata image we can recognise: a slot-map-shaped block carrying `tag`. */
function image(vol: Volume, blkno: number, tag: number): Buffer {
  return encodeSlotMapBlock([{ inUse: true, nodeNum: tag % 250, mountGeneration: tag }], 0, blkno, vol.fsGeneration, vol.geo.blockSize);
}

function tagOf(buf: Buffer): number {
  return buf.toString('latin1', 0, 8) === SIG.slotMap ? buf.readUInt32LE(0x28 + 4) : -1;
}

async function setup(bs = 4096): Promise<{ base: BlockDevice; scratch: number[] }> {
  const img = path.join(dir, `v${Math.random().toString(36).slice(2)}.img`);
  await makeVolume(img, 96 << 20, { blockSize: bs, journalBytes: 4 << 20, slots: 1 });
  const base = await openFileDevice(img, { readOnly: true });
  // Scratch targets: blocks near the end of the volume, unused by mkfs.
  const total = Math.floor((96 << 20) / bs);
  return { base, scratch: Array.from({ length: 600 }, (_, i) => total - 1000 + i) };
}

/** A volume over a copy-on-write overlay, behind a power-cuttable cache, with its journal. */
async function journaled(base: BlockDevice): Promise<{ lower: OverlayDevice; dev: FaultyBlockDevice; vol: Volume; j: Journal }> {
  const lower = new OverlayDevice(base);
  const dev = new FaultyBlockDevice(lower);
  const vol = await Volume.open(dev);
  const j = await Journal.open(vol, 0);
  vol.journal = j;
  return { lower, dev, vol, j };
}

async function readTag(dev: BlockDevice, vol: Volume, blkno: number): Promise<number> {
  return tagOf(await dev.read(blkno * vol.geo.blockSize, vol.geo.blockSize));
}

t.test('record codecs reject what is not theirs', async (t) => {
  const bs = 4096;
  const d = encodeListRecord({ kind: 'descriptor', sequence: 9, blocks: [5, 6, 7] }, 100, 0xabc, bs);
  t.same(decodeRecord(d, 100, 0xabc), { kind: 'descriptor', sequence: 9, blocks: [5, 6, 7] });
  t.equal(decodeRecord(d, 101, 0xabc), null, 'a record at the wrong place');
  t.equal(decodeRecord(d, 100, 0xabd), null, 'a record of another volume');
  const c = encodeCommit({ kind: 'commit', sequence: 9, blockCount: 4, crc: 0xdeadbeef, timeMs: 123 }, 104, 0xabc, bs);
  t.same(decodeRecord(c, 104, 0xabc), { kind: 'commit', sequence: 9, blockCount: 4, crc: 0xdeadbeef, timeMs: 123 });
  c[200] ^= 1;
  t.equal(decodeRecord(c, 104, 0xabc), null, 'a damaged record');
  t.equal(decodeRecord(Buffer.alloc(bs), 104, 0xabc), null, 'a zero block');
});

t.test('committed transactions survive a crash; uncommitted ones do not', async (t) => {
  const { base, scratch } = await setup();
  t.teardown(() => base.close());
  const { lower, dev, vol, j } = await journaled(base);
  j.add(new Map([[scratch[0], image(vol, scratch[0], 1)], [scratch[1], image(vol, scratch[1], 2)]]), new Set());
  await j.commit();
  j.add(new Map([[scratch[2], image(vol, scratch[2], 3)]]), new Set());
  t.equal(tagOf((await vol.readMeta(scratch[2], SIG.slotMap))), 3, 'running images are visible to readers');
  await dev.powerCut({ keep: 'none' });
  const vol2 = await Volume.open(lower);
  t.equal(await readTag(lower, vol2, scratch[0]), -1, 'not in place before replay');
  const j2 = await Journal.open(vol2, 0);
  t.equal(j2.dirty, true);
  const r = await j2.replay();
  t.equal(r.transactions, 1);
  t.equal(await readTag(lower, vol2, scratch[0]), 1);
  t.equal(await readTag(lower, vol2, scratch[1]), 2);
  t.equal(await readTag(lower, vol2, scratch[2]), -1, 'the uncommitted transaction is gone');
  const again = await (await Journal.open(vol2, 0)).replay();
  t.equal(again.transactions, 0, 'replay leaves a clean journal: a second replay does nothing');
});

t.test('the log wraps around and still replays in order', async (t) => {
  const { base, scratch } = await setup();
  t.teardown(() => base.close());
  const { lower, dev, vol, j } = await journaled(base);
  // 1024-block journal; each commit is 1 descriptor + 8 images + 1 commit = 10 blocks.
  let tag = 0;
  for (let round = 0; round < 300; round++) {
    const imgs = new Map<number, Buffer>();
    for (let k = 0; k < 8; k++) {
      const b = scratch[(round * 8 + k) % scratch.length];
      imgs.set(b, image(vol, b, ++tag));
    }
    j.add(imgs, new Set());
    await j.commit();
  }
  t.ok(j.stats.checkpoints >= 4, `${j.stats.checkpoints} checkpoints: the log went round several times`);
  const expected = new Map<number, number>();
  for (const b of scratch) expected.set(b, tagOf(j.lookup(b) ?? (await vol.readMeta(b, SIG.slotMap))));
  await dev.powerCut({ keep: 'none' });
  const vol2 = await Volume.open(lower);
  await (await Journal.open(vol2, 0)).replay();
  let wrong = 0;
  for (const [b, want] of expected) if ((await readTag(lower, vol2, b)) !== want) wrong++;
  t.equal(wrong, 0, 'every block has its last committed image');
});

t.test('revoked blocks are not replayed from older transactions', async (t) => {
  const { base, scratch } = await setup();
  t.teardown(() => base.close());
  const { lower, dev, vol, j } = await journaled(base);
  const [a, b] = scratch;
  j.add(new Map([[a, image(vol, a, 11)], [b, image(vol, b, 12)]]), new Set());
  await j.commit();
  j.add(new Map(), new Set([a]));
  await j.commit();
  // The freed block now holds something else, written in place (e.g. after reuse).
  await dev.write(a * vol.geo.blockSize, Buffer.alloc(vol.geo.blockSize, 0x77));
  await dev.flush();
  await dev.powerCut({ keep: 'none' });
  const vol2 = await Volume.open(lower);
  const r = await (await Journal.open(vol2, 0)).replay();
  t.equal(r.revoked, 1);
  t.same((await lower.read(a * vol.geo.blockSize, vol.geo.blockSize)).subarray(0, 8), Buffer.alloc(8, 0x77), 'revoked block left alone');
  t.equal(await readTag(lower, vol2, b), 12, 'the rest replayed');
});

t.test('a torn transaction and a bad commit checksum are ignored', async (t) => {
  for (const damage of ['torn', 'checksum'] as const) {
    const { base, scratch } = await setup();
    t.teardown(() => base.close());
    const { lower, dev, vol, j } = await journaled(base);
    j.add(new Map([[scratch[0], image(vol, scratch[0], 21)]]), new Set());
    await j.commit();
    j.add(new Map([[scratch[1], image(vol, scratch[1], 22)], [scratch[2], image(vol, scratch[2], 23)]]), new Set());
    if (damage === 'torn') {
      // Everything of the second transaction but its commit record reaches the disk (the
      // descriptor and its images are one run, one write).
      dev.failAfter({ writes: 1 });
      t.equal(await j.commit().then(() => 'committed', () => 'failed'), 'failed', 'the commit fails part-way');
      dev.failAfter({});
      await dev.flush().catch(() => undefined);
    } else {
      await j.commit();
      // Flip a byte of the second transaction's first image inside the log.
      const js = await Journal.open(vol, 0);
      void js;
      const logBlock = await findLogged(dev, vol, scratch[1]);
      const buf = await dev.read(logBlock * vol.geo.blockSize, vol.geo.blockSize);
      buf[600] ^= 0xff;
      await dev.write(logBlock * vol.geo.blockSize, buf);
      await dev.flush();
    }
    await dev.powerCut({ keep: 'none' });
    const vol2 = await Volume.open(lower);
    const r = await (await Journal.open(vol2, 0)).replay();
    t.equal(r.transactions, 1, `${damage}: only the intact transaction is replayed`);
    t.equal(await readTag(lower, vol2, scratch[0]), 21);
    t.equal(await readTag(lower, vol2, scratch[1]), -1, `${damage}: the damaged transaction is not applied`);
  }
});

t.test('a commit that fails (device error, or too big for the log) leaves its blocks, revokes and ordered data to the next', async (t) => {
  const { base, scratch } = await setup();
  t.teardown(() => base.close());
  const { lower, dev, vol, j } = await journaled(base);
  const [a, b] = scratch;
  j.add(new Map([[a, image(vol, a, 11)]]), new Set());
  await j.commit();
  // Free a, change b; the commit's first write fails.
  j.add(new Map([[b, image(vol, b, 12)]]), new Set([a]), [], true);
  const write = dev.write.bind(dev);
  const flush = dev.flush.bind(dev);
  let fail = true;
  dev.write = async (offsetBytes: number, data: Buffer): Promise<void> => {
    if (fail) {
      fail = false;
      throw new Error('injected write error');
    }
    return write(offsetBytes, data);
  };
  await t.rejects(j.commit(), /injected/);
  let flushes = 0;
  dev.flush = async (): Promise<void> => {
    flushes += 1;
    return flush();
  };
  t.equal(await j.commit(), true, 'the next commit carries it');
  t.equal(flushes, 2, 'still with the flush ordered data asks for');
  await dev.write(a * vol.geo.blockSize, Buffer.alloc(vol.geo.blockSize, 0x77));
  await dev.flush();
  await dev.powerCut({ keep: 'none' });
  const vol2 = await Volume.open(lower);
  const r = await (await Journal.open(vol2, 0)).replay();
  t.equal(r.revoked, 1, 'the revoke was kept');
  t.same((await lower.read(a * vol.geo.blockSize, vol.geo.blockSize)).subarray(0, 8), Buffer.alloc(8, 0x77), 'the freed block left alone');
  t.equal(await readTag(lower, vol2, b), 12, 'b replayed');

  // Too big for the log: refused, and nothing of it lost either.
  const big = await journaled(base);
  const images = new Map(scratch.slice(0, 590).map((x) => [x, image(big.vol, x, 5)]));
  for (let k = 0; k < 500; k++) images.set(scratch[0] - 2000 - k, image(big.vol, scratch[0] - 2000 - k, 6));
  big.j.add(images, new Set([scratch[599]]));
  await t.rejects(big.j.commit(), /does not fit/);
  t.equal(big.j.runningBlocks, images.size, 'the images are still to commit');
  t.ok((big.j as unknown as { runningRevokes: Set<number> }).runningRevokes.has(scratch[599]), 'and the revoke');
});

t.test('ordered data: a flush between file data and the commit record only when the transaction asks', async (t) => {
  for (const ordered of [false, true]) {
    const { base, scratch } = await setup();
    t.teardown(() => base.close());
    const { lower, dev, vol, j } = await journaled(base);
    const ops: string[] = [];
    const dataAt = scratch[10] * vol.geo.blockSize;
    const write = dev.write.bind(dev);
    const flush = dev.flush.bind(dev);
    dev.write = async (offsetBytes: number, data: Buffer): Promise<void> => {
      ops.push(offsetBytes === dataAt ? 'data' : data.toString('latin1', 0, 8) === SIG.journalCommit ? 'commit' : 'log');
      return write(offsetBytes, data);
    };
    dev.flush = async (): Promise<void> => {
      ops.push('flush');
      return flush();
    };
    await vol.writeData(scratch[10], Buffer.alloc(vol.geo.blockSize, 7));
    j.add(new Map([[scratch[0], image(vol, scratch[0], 31)]]), new Set(), [], ordered);
    await j.commit();
    t.equal(ops.filter((o) => o !== 'log').join(' '), ordered ? 'data flush commit flush' : 'data commit flush',
      ordered ? 'ordered: the data is durable before the commit record is written' : 'not ordered: one flush, after the commit record');
    // Either way the commit is durable once commit() returns.
    await dev.powerCut({ keep: 'none' });
    const vol2 = await Volume.open(lower);
    t.equal((await (await Journal.open(vol2, 0)).replay()).transactions, 1);
    t.equal(await readTag(lower, vol2, scratch[0]), 31);
  }
});

t.test('a transaction asks for ordered data when it puts file data in new or unwritten clusters, not when it overwrites', async (t) => {
  const { writeFile, allocateRange } = await import('../../fs/file-data');
  const { EXTENT_FL } = await import('../../fs/format/constants');
  const { base } = await setup();
  t.teardown(() => base.close());
  const { vol, j } = await journaled(base);
  const ctx = await slotContext(vol, 0);
  const cs = vol.geo.clusterSize;
  const step = async (what: string, fn: (tx: Transaction) => Promise<unknown>): Promise<boolean> => {
    const tx = new Transaction(vol);
    await fn(tx);
    const ordered = tx.orderedData;
    await tx.commit();
    void what;
    return ordered;
  };
  let blkno = 0;
  t.equal(await step('create', async (tx) => {
    blkno = (await createNode(tx, ctx, await tx.getInode(vol.sb.rootBlkno), Buffer.from('f'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 })).blkno;
  }), false, 'creating an empty file: no');
  t.equal(await step('write new', async (tx) => writeFile(tx, ctx, await tx.getInode(blkno), 0, Buffer.alloc(2 * cs, 1))), true, 'writing into new clusters: yes');
  t.equal(await step('overwrite', async (tx) => writeFile(tx, ctx, await tx.getInode(blkno), 100, Buffer.alloc(cs, 2))), false, 'overwriting written clusters: no');
  t.equal(await step('preallocate', async (tx) => {
    const i = await tx.getInode(blkno);
    await allocateRange(tx, ctx, i, 8, 2, EXTENT_FL.unwritten);
    tx.putInode(i);
  }), true, 'preallocating (allocation): yes');
  t.equal(await step('write unwritten', async (tx) => writeFile(tx, ctx, await tx.getInode(blkno), 8 * cs, Buffer.alloc(cs, 3))), true, 'writing into unwritten clusters: yes');
  await j.shutdown();
});

t.test('ordered data: the power going right after a commit record never leaves a new file holding a deleted file\'s bytes', async (t) => {
  const { writeFile, readFile } = await import('../../fs/file-data');
  const { dirLookup } = await import('../../fs/dir');
  const { extentAt } = await import('../../fs/file-data');
  const SEEDS = 40;
  let reused = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const { base } = await setup();
    const { lower, dev, vol, j } = await journaled(base);
    const ctx = await slotContext(vol, 0);
    const cs = vol.geo.clusterSize;
    const mode = { mode: S_IFREG | 0o644, uid: 0, gid: 0 };
    // File a: written and durable, then deleted (its clusters free again once that is durable).
    let tx = new Transaction(vol);
    const a = await createNode(tx, ctx, await tx.getInode(vol.sb.rootBlkno), Buffer.from('a'), mode);
    await writeFile(tx, ctx, a, 0, Buffer.alloc(4 * cs, 0x41));
    const aFirst = (await extentAt(tx, a, 0))!.blkno;
    await tx.commit();
    await j.commit();
    tx = new Transaction(vol);
    await destroyInode(tx, ctx, await unlinkName(tx, await tx.getInode(vol.sb.rootBlkno), Buffer.from('a'), false));
    await tx.commit();
    await j.commit();
    // File b takes clusters (a's, as it happens) and is written; the power goes the moment
    // its commit record is written, with a seeded subset of the unflushed writes kept.
    tx = new Transaction(vol);
    const b = await createNode(tx, ctx, await tx.getInode(vol.sb.rootBlkno), Buffer.from('b'), mode);
    await writeFile(tx, ctx, b, 0, Buffer.alloc(4 * cs, 0x42));
    if ((await extentAt(tx, b, 0))!.blkno === aFirst) reused++;
    await tx.commit();
    const write = dev.write.bind(dev);
    let cut: Promise<unknown> | null = null;
    dev.write = async (offsetBytes: number, data: Buffer): Promise<void> => {
      await write(offsetBytes, data);
      if (!cut && data.toString('latin1', 0, 8) === SIG.journalCommit) cut = dev.powerCut({ keep: 'random-subset', seed });
    };
    await j.commit().catch(() => undefined); // its last flush meets a dead device
    t.ok(cut, `seed ${seed}: the power went after the commit record`);
    await cut;
    const vol2 = await Volume.open(lower);
    await (await Journal.open(vol2, 0)).replay();
    const rtx = new Transaction(vol2);
    const e = await dirLookup(rtx, await rtx.getInode(vol2.sb.rootBlkno), Buffer.from('b'));
    if (!e) continue; // the commit did not survive: nothing points anywhere
    const bi = await rtx.getInode(e.ino);
    const got = await readFile(rtx, bi, 0, bi.size);
    const foreign = got.findIndex((x) => x !== 0x42 && x !== 0);
    t.equal(foreign, -1, `seed ${seed}: b (${got.length} bytes) holds only its own bytes`);
    rtx.abort();
  }
  t.ok(reused >= SEEDS / 2, `b's clusters were a's in ${reused} of ${SEEDS} runs (the case this test is about)`);
});

/** The log block holding the most recent image of `target` (scanning the journal area). */
async function findLogged(dev: BlockDevice, vol: Volume, target: number): Promise<number> {
  const bs = vol.geo.blockSize;
  for (let b = 0; b < vol.geo.totalBlocks; b++) {
    const buf = await dev.read(b * bs, bs);
    if (buf.toString('latin1', 0, 8) !== SIG.journalDescriptor) continue;
    const rec = decodeRecord(buf, b, vol.fsGeneration);
    if (rec && rec.kind === 'descriptor') {
      const i = rec.blocks.indexOf(target);
      if (i >= 0) return b + 1 + i;
    }
  }
  throw new Error(`block ${target} not found in the journal`);
}

t.test('recoverSlot: replays, releases orphans, bumps the recovery generation once', async (t) => {
  const { MountedVolume } = await import('../../fs/super');
  const { PosixFs } = await import('../../fs/posix');
  const { recoverSlot, recoveryGeneration } = await import('../../fs/recovery');
  const { slotContext } = await import('./populate');
  const { base } = await setup();
  t.teardown(() => base.close());
  const lower = new OverlayDevice(base);
  const dev = new FaultyBlockDevice(lower);
  const m = await MountedVolume.mount(dev, { commitSec: 3600, log: () => undefined });
  const fs = new PosixFs(m, { entryTimeoutMs: 0, attrTimeoutMs: 0, keepCache: false });
  const c = { unique: 0n, uid: 0, gid: 0, pid: 0, signal: new AbortController().signal };
  const r = await fs.create(c, { parent: 1, name: Buffer.from('open-unlinked'), mode: 0o644, umask: 0, flags: 2, openFlags: 0 });
  await fs.write(c, { ino: r.entry.ino, fh: r.open.fh, offsetBytes: 0, data: Buffer.alloc(100000, 3), flags: 0, writeFlags: 0 });
  await fs.unlink(c, { parent: 1, name: Buffer.from('open-unlinked') });
  await fs.fsync(c, { ino: r.entry.ino, fh: r.open.fh, dataOnly: false });
  await dev.powerCut({ keep: 'none' });
  // Another node (here: the same process, offline) recovers the dead mount's slot.
  const vol = await Volume.open(lower);
  const g0 = await recoveryGeneration(vol, 0);
  const ctx = await slotContext(vol, 0);
  const first = await recoverSlot(vol, 0, ctx, { expectedGeneration: g0 });
  t.equal(first.performed, true);
  t.ok(first.transactionsReplayed >= 1, 'the journal was replayed');
  t.equal(first.orphansReleased, 1, 'the open-unlinked file is released');
  t.equal(first.generation, g0 + 1);
  const late = await recoverSlot(vol, 0, ctx, { expectedGeneration: g0 });
  t.equal(late.performed, false, 'a second recoverer that saw the old generation does nothing');
  const { fsck } = await import('../../fs/fsck/index');
  const ck = await fsck(lower, { repair: false, log: () => undefined });
  t.equal(ck.exitCode, 0, 'consistent afterwards (the slot map still names the dead node; fsck only warns)');
});

t.test('an inode freed after its last image was committed is not "held": its lock value block must not call it alive', async (t) => {
  const { base } = await setup();
  const { vol, j } = await journaled(base);
  const ctx = await slotContext(vol, 0);
  const tx = new Transaction(vol);
  const root = await tx.getInode(vol.sb.rootBlkno);
  const i = await createNode(tx, ctx, root, Buffer.from('soon-gone'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
  await tx.commit();
  await j.commit();
  t.ok(vol.heldInode(i.blkno, i.generation), 'a live inode just created is held');
  const tx2 = new Transaction(vol);
  const gone = await unlinkName(tx2, await tx2.getInode(vol.sb.rootBlkno), Buffer.from('soon-gone'), false);
  await destroyInode(tx2, ctx, gone);
  await tx2.commit();
  t.ok(j.lookup(i.blkno), 'the journal still keeps its last committed image (until the checkpoint)');
  t.equal(vol.heldInode(i.blkno, i.generation), null, 'but it is not held: a value block filled now says nothing');
  await j.shutdown();
});
