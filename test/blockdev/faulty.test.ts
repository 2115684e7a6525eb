// FaultyBlockDevice fault semantics. The power-cut cases are model checks: a seeded scenario
// of flushed and unflushed (often overlapping) writes, a cut, then the lower file must equal
// the flushed image with exactly the reported writes (and torn sectors) applied in order.
import t from 'tap';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Prng } from '../../fs/prng';
import { FaultyBlockDevice, PowerCutKeep, PowerCutReport } from '../../blockdev/faulty';
import { FileBlockDevice, openFileDevice } from '../../blockdev/file';
import { expectCode, patternBytes } from './suite';

process.on('unhandledRejection', (err) => {
  throw err;
});

const SECTOR_BYTES = 512;
const DEVICE_BYTES = 64 << 10;
const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-faulty-'));
let counter = 0;
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));

async function freshFaulty(opts: { writeThrough?: boolean; maxPendingBytes?: number } = {}): Promise<{ dev: FaultyBlockDevice; lower: FileBlockDevice; file: string }> {
  const file = path.join(dir, `dev-${counter++}.img`);
  const lower = await openFileDevice(file, { create: { sizeBytes: DEVICE_BYTES } });
  return { dev: new FaultyBlockDevice(lower, opts), lower, file };
}

interface Write {
  offsetBytes: number;
  data: Buffer;
}

/** A seeded scenario: some writes to flush, then unflushed writes of 2..8 sectors that overlap. */
function scenario(seed: number): { flushed: Write[]; unflushed: Write[] } {
  const prng = new Prng(seed);
  const make = (n: number, base: number): Write[] => Array.from({ length: n }, (_, i) => {
    const sectors = prng.int(2, 9);
    const offsetBytes = prng.int(0, DEVICE_BYTES / SECTOR_BYTES - sectors + 1) * SECTOR_BYTES;
    return { offsetBytes, data: patternBytes(base + i, sectors * SECTOR_BYTES) };
  });
  return { flushed: make(prng.int(1, 6), seed * 1000), unflushed: make(prng.int(4, 16), seed * 1000 + 500) };
}

function applyTo(image: Buffer, writes: Write[]): void {
  for (const w of writes) w.data.copy(image, w.offsetBytes);
}

/** Runs scenario(scenarioSeed) and a power cut; returns the lower file's bytes and the report. */
async function cutScenario(scenarioSeed: number, keep: PowerCutKeep, cutSeed: number): Promise<{ image: Buffer; report: PowerCutReport; flushedImage: Buffer; unflushed: Write[] }> {
  const { dev, file } = await freshFaulty();
  const { flushed, unflushed } = scenario(scenarioSeed);
  for (const w of flushed) await dev.write(w.offsetBytes, w.data);
  await dev.flush();
  for (const w of unflushed) await dev.write(w.offsetBytes, w.data);
  const report = await dev.powerCut({ keep, seed: cutSeed });
  await dev.close();
  const image = await fsp.readFile(file);
  await fsp.rm(file);
  const flushedImage = Buffer.alloc(DEVICE_BYTES);
  applyTo(flushedImage, flushed);
  return { image, report, flushedImage, unflushed };
}

/** The image the report claims: flushed state + kept writes in order + torn sectors. */
function expectedImage(flushedImage: Buffer, unflushed: Write[], report: PowerCutReport): Buffer {
  const image = Buffer.from(flushedImage);
  applyTo(image, report.keptWrites.map((i) => unflushed[i] as Write));
  if (report.tornWrite) {
    const w = unflushed[report.tornWrite.index] as Write;
    for (const s of report.tornWrite.keptSectors) {
      w.data.copy(image, w.offsetBytes + s * SECTOR_BYTES, s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
    }
  }
  return image;
}

t.test("powerCut 'none' drops unflushed writes, keeps flushed ones, and kills the device", async (t) => {
  const { dev, lower, file } = await freshFaulty();
  const a = patternBytes(1, 4 * SECTOR_BYTES);
  const b = patternBytes(2, 2 * SECTOR_BYTES);
  const c = patternBytes(3, SECTOR_BYTES);
  await dev.write(0, a);
  await dev.flush();
  t.equal(dev.pendingWriteCount, 0, 'flush empties the log');
  await dev.write(SECTOR_BYTES, b); // overwrites part of the flushed write
  await dev.write(32 * SECTOR_BYTES, c);
  t.equal(dev.pendingWriteCount, 2);
  const seen = await dev.read(0, 4 * SECTOR_BYTES);
  const merged = Buffer.from(a);
  b.copy(merged, SECTOR_BYTES);
  t.ok(seen.equals(merged), 'read-your-writes over flushed data');
  t.ok((await lower.read(0, 4 * SECTOR_BYTES)).equals(a), 'the lower device does not have them yet');

  const report = await dev.powerCut({ keep: 'none' });
  t.same(report, { pendingWrites: 2, keptWrites: [], tornWrite: null });
  t.equal(dev.isDead, true);
  await expectCode(t, dev.read(0, SECTOR_BYTES), 'EIO', 'read after the cut');
  await expectCode(t, dev.write(0, c), 'EIO', 'write after the cut');
  await expectCode(t, dev.flush(), 'EIO', 'flush after the cut');
  await expectCode(t, dev.powerCut(), 'EIO', 'a second cut');
  t.throws(() => dev.failAfter({}), { code: 'EIO' }, 'failAfter after the cut');
  await dev.close();
  await expectCode(t, lower.read(0, SECTOR_BYTES), 'ECLOSED', 'close closed the lower device');
  await expectCode(t, dev.read(0, SECTOR_BYTES), 'ECLOSED', 'closed wins over dead');

  const image = await fsp.readFile(file);
  t.ok(image.subarray(0, 4 * SECTOR_BYTES).equals(a), 'flushed data survived, the overwrite did not');
  t.ok(image.subarray(32 * SECTOR_BYTES, 33 * SECTOR_BYTES).equals(Buffer.alloc(SECTOR_BYTES)), 'the unflushed write is gone');
  const again = new FaultyBlockDevice(await openFileDevice(file));
  t.ok((await again.read(0, 4 * SECTOR_BYTES)).equals(a), 'a new wrapper over the same storage works');
  await again.close();
});

t.test("powerCut 'random-subset': matches its report, deterministic per seed, reorders", async (t) => {
  const outcomes = new Set<string>();
  let reordered = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const run1 = await cutScenario(seed, 'random-subset', seed * 7);
    const run2 = await cutScenario(seed, 'random-subset', seed * 7);
    t.ok(run1.image.equals(expectedImage(run1.flushedImage, run1.unflushed, run1.report)), `seed ${seed}: the disk is flushed + exactly the reported writes`);
    t.ok(run1.image.equals(run2.image) && JSON.stringify(run1.report) === JSON.stringify(run2.report), `seed ${seed}: same seed, same outcome`);
    t.equal(run1.report.tornWrite, null, 'random-subset keeps whole writes');
    t.equal(run1.report.pendingWrites, run1.unflushed.length);
    t.equal(new Set(run1.report.keptWrites).size, run1.report.keptWrites.length, 'no write applied twice');
    const kept = run1.report.keptWrites;
    if (kept.some((v, i) => i > 0 && v < (kept[i - 1] as number))) reordered++;
    outcomes.add(JSON.stringify(run1.report.keptWrites));
  }
  t.ok(outcomes.size > 20, `different seeds keep different subsets (${outcomes.size} distinct of 30)`);
  t.ok(reordered > 10, `kept writes are applied out of order (${reordered} of 30 runs)`);
  // The same scenario with different cut seeds differs too.
  const cuts = new Set<string>();
  for (let cutSeed = 1; cutSeed <= 10; cutSeed++) cuts.add(JSON.stringify((await cutScenario(5, 'random-subset', cutSeed)).report.keptWrites));
  t.ok(cuts.size > 5, `one scenario, ten cut seeds: ${cuts.size} distinct outcomes`);
});

t.test("powerCut 'prefix': an ordered prefix, the next write possibly torn at sector boundaries only", async (t) => {
  let torn = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const run = await cutScenario(seed, 'prefix', seed);
    const { report } = run;
    t.same(report.keptWrites, Array.from({ length: report.keptWrites.length }, (_, i) => i), `seed ${seed}: kept writes are a prefix, in order`);
    t.ok(run.image.equals(expectedImage(run.flushedImage, run.unflushed, report)), `seed ${seed}: the disk is flushed + prefix + torn sectors`);
    t.ok(run.image.equals((await cutScenario(seed, 'prefix', seed)).image), `seed ${seed}: deterministic`);
    if (report.tornWrite) {
      torn++;
      const { index, keptSectors, totalSectors } = report.tornWrite;
      t.equal(index, report.keptWrites.length, 'the torn write is the one right after the prefix');
      t.ok(keptSectors.length > 0 && keptSectors.length < totalSectors, 'a torn write keeps some but not all sectors');
      // Sector by sector, the torn write's range holds either its new data or what was there
      // before it (the flushed image plus the prefix), never a mix inside a sector.
      const w = run.unflushed[index] as Write;
      const before = expectedImage(run.flushedImage, run.unflushed, { ...report, tornWrite: null });
      for (let s = 0; s < totalSectors; s++) {
        const at = w.offsetBytes + s * SECTOR_BYTES;
        const got = run.image.subarray(at, at + SECTOR_BYTES);
        const isNew = got.equals(w.data.subarray(s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES));
        const isOld = got.equals(before.subarray(at, at + SECTOR_BYTES));
        t.ok(isNew || isOld, `seed ${seed} sector ${s}: all old or all new`);
        t.equal(isNew, keptSectors.includes(s), `seed ${seed} sector ${s}: matches the report`);
      }
    }
  }
  t.ok(torn >= 5, `torn writes happened (${torn} of 40 seeds)`);
});

t.test('failAfter fails exactly the (N+1)th call of each kind, and can be cleared', async (t) => {
  const { dev } = await freshFaulty();
  t.teardown(() => dev.close());
  const s = SECTOR_BYTES;
  dev.failAfter({ writes: 3 });
  for (let i = 0; i < 3; i++) await dev.write(i * s, patternBytes(10 + i, s));
  await expectCode(t, dev.write(3 * s, patternBytes(13, s)), 'EIO', 'write 4');
  await expectCode(t, dev.write(4 * s, patternBytes(14, s)), 'EIO', 'write 5');
  await expectCode(t, dev.write(1, patternBytes(14, s)), 'EINVAL', 'a malformed write is checked first');
  t.ok((await dev.read(3 * s, s)).equals(Buffer.alloc(s)), 'a failed write left nothing behind');
  t.equal(dev.pendingWriteCount, 3);

  dev.failAfter({ reads: 2, flushes: 1 });
  await dev.write(5 * s, patternBytes(15, s));
  t.pass('replacing the budgets cleared the write limit');
  await dev.read(0, s);
  await dev.read(0, s);
  await expectCode(t, dev.read(0, s), 'EIO', 'read 3');
  await dev.flush();
  t.equal(dev.pendingWriteCount, 0, 'flush 1 succeeded');
  await dev.write(6 * s, patternBytes(16, s));
  await expectCode(t, dev.flush(), 'EIO', 'flush 2');
  t.equal(dev.pendingWriteCount, 1, 'a failed flush applied nothing');

  dev.failAfter({ writes: 0 });
  await expectCode(t, dev.write(0, patternBytes(17, s)), 'EIO', 'writes: 0 fails the very next write');
  dev.failAfter({});
  await dev.write(0, patternBytes(17, s));
  await dev.flush();
  t.ok((await dev.read(0, s)).equals(patternBytes(17, s)), 'failAfter({}) clears every limit');
  t.equal(dev.isDead, false, 'injected failures do not kill the device');
});

t.test('write-through sends writes straight down; a cut then loses nothing', async (t) => {
  const { dev, lower, file } = await freshFaulty({ writeThrough: true });
  await dev.write(0, patternBytes(20, 2 * SECTOR_BYTES));
  t.equal(dev.pendingWriteCount, 0);
  t.ok((await lower.read(0, 2 * SECTOR_BYTES)).equals(patternBytes(20, 2 * SECTOR_BYTES)), 'the lower device has it before any flush');
  const report = await dev.powerCut({ keep: 'none' });
  t.equal(report.pendingWrites, 0);
  await dev.close();
  t.ok((await fsp.readFile(file)).subarray(0, 2 * SECTOR_BYTES).equals(patternBytes(20, 2 * SECTOR_BYTES)));
});

t.test('maxPendingBytes writes the log back under pressure', async (t) => {
  const { dev, lower } = await freshFaulty({ maxPendingBytes: 4 * SECTOR_BYTES });
  t.teardown(() => dev.close());
  for (let i = 0; i < 10; i++) await dev.write(i * SECTOR_BYTES, patternBytes(30 + i, SECTOR_BYTES));
  t.ok(dev.pendingBytes <= 4 * SECTOR_BYTES, `pending stays bounded (${dev.pendingBytes} bytes)`);
  t.ok((await lower.read(0, SECTOR_BYTES)).equals(patternBytes(30, SECTOR_BYTES)), 'old writes reached the lower device');
});

t.test('a cut during a flush leaves an ordered prefix of the log on disk', async (t) => {
  for (let seed = 1; seed <= 10; seed++) {
    const { dev, file } = await freshFaulty();
    const { unflushed } = scenario(seed);
    for (const w of unflushed) await dev.write(w.offsetBytes, w.data);
    // Settle-handler attached at once: the flush may reject while we are cutting.
    const flushing = dev.flush().then(() => 'resolved', (err: { code?: string }) => err.code);
    // Let the flush get a few writes down first, depending on the seed.
    for (let i = 0; i < seed; i++) await new Promise((resolve) => setImmediate(resolve));
    const report = await dev.powerCut({ keep: 'none' });
    const flushResult = await flushing;
    await dev.close();
    const image = await fsp.readFile(file);
    await fsp.rm(file);
    // Whatever the flush got down is a prefix of the log, in order.
    const landed = unflushed.length - report.pendingWrites;
    const expected = Buffer.alloc(DEVICE_BYTES);
    applyTo(expected, unflushed.slice(0, landed));
    t.ok(image.equals(expected), `seed ${seed}: ${landed} of ${unflushed.length} writes landed, in order`);
    t.ok(flushResult === 'EIO' || (flushResult === 'resolved' && report.pendingWrites === 0), `seed ${seed}: the flush ${flushResult}`);
  }
});

t.test('Prng (fs/prng.ts) is the reference mulberry32 and replayable', async (t) => {
  const a = new Prng(1);
  t.same([a.next(), a.next(), a.next()], [2693262067, 11749833, 2265367787], 'pinned sequence for seed 1');
  const b = new Prng(7);
  const c = new Prng(7);
  t.same(Array.from({ length: 50 }, () => b.int(-3, 1000)), Array.from({ length: 50 }, () => c.int(-3, 1000)), 'same seed, same ints');
  const d = new Prng(9);
  const ints = Array.from({ length: 2000 }, () => d.int(5, 9));
  t.ok(ints.every((x) => x >= 5 && x < 9) && new Set(ints).size === 4, 'int covers exactly [lo, hi)');
  const f = new Prng(3).float();
  t.ok(f >= 0 && f < 1, 'float in [0, 1)');
  t.same(new Prng(11).shuffle([1, 2, 3, 4, 5, 6]).sort(), [1, 2, 3, 4, 5, 6], 'shuffle permutes');
});
