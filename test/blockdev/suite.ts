// The BlockDevice conformance suite (STYLE.md §2, abstract-level style). Every BlockDevice
// implementation runs it against itself by passing a factory that makes a fresh device;
// capabilities it lacks are declared in `supports`, and those cases are skipped by name with
// the reason, never silently.
//
//   blockDeviceSuite(t, 'file', async () => ({ dev, reopen, cleanup }), { reopen: true })
//
// The suite closes every device it gets (dev and reopened ones) before calling cleanup.
import type {} from 'tap';
import { Prng } from '../../fs/prng';
import { BlockDevice, BlockDeviceError, BlockDeviceErrorCode } from '../../blockdev/types';

export interface DeviceUnderTest {
  dev: BlockDevice;
  /** Opens the same storage again after `dev` was closed. */
  reopen?: (opts?: { readOnly?: boolean }) => Promise<BlockDevice>;
  /** Removes whatever the factory made; called after the suite closed its devices. */
  cleanup: () => Promise<void>;
}

export interface BlockDeviceSupports {
  /** Data flushed (or written before a clean close) survives close + reopen. */
  reopen?: boolean;
  /** reopen({readOnly: true}) yields a read-only device. */
  readOnlyReopen?: boolean;
  /** A fresh device reads zeros everywhere. Default true. */
  zeroed?: boolean;
  /** The device bypasses the host page cache (informational; appears in test names). */
  direct?: boolean;
}

export type DeviceFactory = () => Promise<DeviceUnderTest>;

const LARGE_IO_BYTES = 4 << 20;
const CONCURRENT_WRITES = 100;

/** Deterministic bytes: the same (seed, length) always gives the same buffer. */
export function patternBytes(seed: number, lengthBytes: number): Buffer {
  const prng = new Prng(seed);
  const out = Buffer.allocUnsafe(lengthBytes);
  let i = 0;
  for (; i + 4 <= lengthBytes; i += 4) out.writeUInt32LE(prng.next(), i);
  for (; i < lengthBytes; i++) out[i] = prng.next() & 0xff;
  return out;
}

/** Asserts that `promise` rejects with a BlockDeviceError carrying `code`. */
export async function expectCode(t: tap.Test, promise: Promise<unknown>, code: BlockDeviceErrorCode, what: string): Promise<void> {
  try {
    await promise;
    t.fail(`${what}: resolved, expected ${code}`);
  } catch (err) {
    t.ok(err instanceof BlockDeviceError, `${what}: rejects with a BlockDeviceError`);
    t.equal((err as BlockDeviceError).code, code, `${what}: code ${code}`);
  }
}

export function blockDeviceSuite(t: tap.Test, name: string, factory: DeviceFactory, supports: BlockDeviceSupports = {}): void {
  const zeroed = supports.zeroed ?? true;
  const label = supports.direct ? `${name} [direct]` : name;

  /** Runs `body` with a fresh device; closes every device it used, then cleans up. */
  function withDevice(caseName: string, body: (t: tap.Test, d: DeviceUnderTest, opened: BlockDevice[]) => Promise<void>): void {
    t.test(`${label}: ${caseName}`, async (t) => {
      const d = await factory();
      const opened: BlockDevice[] = [d.dev];
      try {
        await body(t, d, opened);
      } finally {
        for (const dev of opened) await dev.close().catch(() => undefined);
        await d.cleanup();
      }
    });
  }

  function skipCase(caseName: string, reason: string): void {
    t.test(`${label}: ${caseName}`, { skip: reason }, async () => undefined);
  }

  withDevice('geometry is sane', async (t, { dev }) => {
    t.ok(typeof dev.name === 'string' && dev.name.length > 0, 'has a name');
    t.ok(Number.isSafeInteger(dev.sectorSize) && dev.sectorSize >= 512 && (dev.sectorSize & (dev.sectorSize - 1)) === 0, `sectorSize ${dev.sectorSize} is a power of two >= 512`);
    t.ok(Number.isSafeInteger(dev.sizeBytes) && dev.sizeBytes > 0 && dev.sizeBytes % dev.sectorSize === 0, `sizeBytes ${dev.sizeBytes} is a positive multiple of sectorSize`);
    t.equal(dev.readOnly, false, 'a fresh device is writable');
  });

  if (zeroed) {
    withDevice('never-written areas read as zeros', async (t, { dev }) => {
      const ss = dev.sectorSize;
      const lastSector = dev.sizeBytes - ss;
      for (const [offset, length] of [[0, ss], [Math.floor(dev.sizeBytes / 2 / ss) * ss, 8 * ss], [lastSector, ss]] as const) {
        const buf = await dev.read(offset, Math.min(length, dev.sizeBytes - offset));
        t.ok(buf.every((b) => b === 0), `zeros at offset ${offset}`);
      }
    });
  } else {
    skipCase('never-written areas read as zeros', 'supports.zeroed is false: this device is not fresh');
  }

  withDevice('write then read at first, middle and last sectors, neighbours untouched', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const middle = Math.floor(dev.sizeBytes / 2 / ss) * ss + 3 * ss;
    const targets = [
      { offset: 0, length: ss },
      { offset: middle, length: 5 * ss },
      { offset: dev.sizeBytes - ss, length: ss },
      { offset: dev.sizeBytes - 3 * ss, length: ss },
    ];
    // Known neighbour contents first so "untouched" does not rely on zeroed devices.
    const fence = patternBytes(999, ss);
    const neighbours = [ss, middle - ss, middle + 5 * ss, dev.sizeBytes - 2 * ss, dev.sizeBytes - 4 * ss];
    for (const off of neighbours) await dev.write(off, fence);
    for (const [i, { offset, length }] of targets.entries()) await dev.write(offset, patternBytes(i + 1, length));
    for (const [i, { offset, length }] of targets.entries()) {
      t.ok((await dev.read(offset, length)).equals(patternBytes(i + 1, length)), `read back ${length} bytes at ${offset}`);
    }
    for (const off of neighbours) t.ok((await dev.read(off, ss)).equals(fence), `neighbour sector at ${off} untouched`);
    // A read spanning several writes sees each of them.
    const span = await dev.read(dev.sizeBytes - 4 * ss, 4 * ss);
    t.ok(span.subarray(0, ss).equals(fence) && span.subarray(ss, 2 * ss).equals(patternBytes(4, ss)) &&
      span.subarray(2 * ss, 3 * ss).equals(fence) && span.subarray(3 * ss).equals(patternBytes(3, ss)), 'a read across four writes sees all of them');
  });

  withDevice('read into a caller buffer fills that buffer; a write does not keep the caller buffer', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const data = patternBytes(41, 3 * ss);
    await dev.write(5 * ss, data);
    data.fill(0xee); // the caller reuses its buffer at once
    const backing = Buffer.alloc(5 * ss, 0x77);
    const into = backing.subarray(ss, 4 * ss);
    const got = await dev.read(5 * ss, 3 * ss, into);
    t.equal(got, into, 'resolves with the caller buffer');
    t.ok(into.equals(patternBytes(41, 3 * ss)), 'the data landed in it');
    t.ok(backing.subarray(0, ss).every((b) => b === 0x77) && backing.subarray(4 * ss).every((b) => b === 0x77), 'bytes around it untouched');
    await t.rejects(dev.read(0, 2 * ss, Buffer.alloc(ss)), { code: 'EINVAL' }, 'a buffer of the wrong length is refused');
  });

  withDevice('a partial overwrite replaces exactly the sectors written', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const base = patternBytes(10, 8 * ss);
    const patch = patternBytes(11, 2 * ss);
    await dev.write(16 * ss, base);
    await dev.write(19 * ss, patch);
    const expected = Buffer.from(base);
    patch.copy(expected, 3 * ss);
    t.ok((await dev.read(16 * ss, 8 * ss)).equals(expected), 'merged contents');
  });

  withDevice('large I/O (4 MiB) at the start and ending at the last sector', async (t, { dev }) => {
    if (dev.sizeBytes < 2 * LARGE_IO_BYTES) {
      t.skip(`device of ${dev.sizeBytes} bytes is smaller than 2 x 4 MiB`, async () => undefined);
      return;
    }
    const a = patternBytes(20, LARGE_IO_BYTES);
    const b = patternBytes(21, LARGE_IO_BYTES);
    await Promise.all([dev.write(0, a), dev.write(dev.sizeBytes - LARGE_IO_BYTES, b)]);
    t.ok((await dev.read(0, LARGE_IO_BYTES)).equals(a), '4 MiB at offset 0');
    t.ok((await dev.read(dev.sizeBytes - LARGE_IO_BYTES, LARGE_IO_BYTES)).equals(b), '4 MiB ending at the last sector');
    const ss = dev.sectorSize;
    const mid = await dev.read(LARGE_IO_BYTES - ss, 2 * ss);
    t.ok(mid.subarray(0, ss).equals(a.subarray(LARGE_IO_BYTES - ss)), 'small read of the tail of a large write');
  });

  withDevice('misaligned or malformed requests reject with EINVAL', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const one = Buffer.alloc(ss);
    const before = await dev.read(0, 2 * ss);
    await expectCode(t, dev.read(1, ss), 'EINVAL', 'read at offset 1');
    await expectCode(t, dev.read(ss / 2, ss), 'EINVAL', 'read at half a sector');
    await expectCode(t, dev.read(0, ss + 1), 'EINVAL', 'read of sectorSize+1 bytes');
    await expectCode(t, dev.read(0, 1), 'EINVAL', 'read of 1 byte');
    await expectCode(t, dev.read(-ss, ss), 'EINVAL', 'read at a negative offset');
    await expectCode(t, dev.read(0, -ss), 'EINVAL', 'read of a negative length');
    await expectCode(t, dev.read(ss + 0.5, ss), 'EINVAL', 'read at a fractional offset');
    await expectCode(t, dev.read(Number.NaN, ss), 'EINVAL', 'read at NaN');
    await expectCode(t, dev.write(ss / 2, one), 'EINVAL', 'write at half a sector');
    await expectCode(t, dev.write(0, Buffer.alloc(ss + 1)), 'EINVAL', 'write of sectorSize+1 bytes');
    await expectCode(t, dev.write(0, Buffer.alloc(ss - 1)), 'EINVAL', 'write of sectorSize-1 bytes');
    t.ok((await dev.read(0, 2 * ss)).equals(before), 'rejected writes changed nothing');
  });

  withDevice('requests beyond the end reject with ERANGE', async (t, { dev }) => {
    const ss = dev.sectorSize;
    await expectCode(t, dev.read(dev.sizeBytes, ss), 'ERANGE', 'read at sizeBytes');
    await expectCode(t, dev.read(dev.sizeBytes - ss, 2 * ss), 'ERANGE', 'read straddling the end');
    await expectCode(t, dev.read(0, dev.sizeBytes + ss), 'ERANGE', 'read longer than the device');
    await expectCode(t, dev.read(dev.sizeBytes + 1024 * ss, ss), 'ERANGE', 'read far beyond the end');
    await expectCode(t, dev.write(dev.sizeBytes, Buffer.alloc(ss)), 'ERANGE', 'write at sizeBytes');
    await expectCode(t, dev.write(dev.sizeBytes - ss, Buffer.alloc(2 * ss)), 'ERANGE', 'write straddling the end');
    t.equal((await dev.read(dev.sizeBytes - ss, ss)).length, ss, 'the last sector is still readable');
  });

  withDevice('zero-length I/O succeeds and does nothing', async (t, { dev }) => {
    t.equal((await dev.read(0, 0)).length, 0, 'read(0, 0)');
    t.equal((await dev.read(dev.sizeBytes - dev.sectorSize, 0)).length, 0, 'read of 0 bytes at the last sector');
    t.equal((await dev.read(dev.sizeBytes, 0)).length, 0, 'read of 0 bytes at sizeBytes');
    await dev.write(0, Buffer.alloc(0));
    await dev.write(dev.sizeBytes, Buffer.alloc(0));
    t.pass('zero-length writes resolve');
  });

  withDevice(`${CONCURRENT_WRITES} concurrent non-overlapping writes, then concurrent reads`, async (t, { dev }) => {
    const ss = dev.sectorSize;
    const slotBytes = 2 * ss;
    const strideBytes = Math.floor(dev.sizeBytes / CONCURRENT_WRITES / ss) * ss;
    if (strideBytes < slotBytes) {
      t.skip(`device too small for ${CONCURRENT_WRITES} separate ${slotBytes}-byte writes`, async () => undefined);
      return;
    }
    const offsets = Array.from({ length: CONCURRENT_WRITES }, (_, i) => i * strideBytes);
    await Promise.all(offsets.map((off, i) => dev.write(off, patternBytes(100 + i, slotBytes))));
    const reads = await Promise.all(offsets.map((off) => dev.read(off, slotBytes)));
    const bad = reads.map((buf, i) => (buf.equals(patternBytes(100 + i, slotBytes)) ? -1 : i)).filter((i) => i >= 0);
    t.same(bad, [], 'every write read back intact');
    // Interleave flushes with a second wave of writes: flush must not disturb anything.
    await Promise.all(offsets.map((off, i) => (i % 10 === 0 ? dev.flush() : dev.write(off + ss, patternBytes(300 + i, ss)))));
    const second = await Promise.all(offsets.map((off) => dev.read(off + ss, ss)));
    const bad2 = second.map((buf, i) => (i % 10 === 0 || buf.equals(patternBytes(300 + i, ss)) ? -1 : i)).filter((i) => i >= 0);
    t.same(bad2, [], 'writes concurrent with flushes read back intact');
  });

  withDevice('the device keeps no reference to caller buffers', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const data = patternBytes(40, 2 * ss);
    const copy = Buffer.from(data);
    await dev.write(4 * ss, data);
    data.fill(0xee);
    const got = await dev.read(4 * ss, 2 * ss);
    t.ok(got.equals(copy), 'changing the written buffer afterwards does not change the device');
    got.fill(0xdd);
    t.ok((await dev.read(4 * ss, 2 * ss)).equals(copy), 'changing a read result does not change the device');
    // Writing from a view at an odd byte offset of a larger buffer (what codecs hand us).
    const big = Buffer.alloc(ss + 1);
    const view = big.subarray(1);
    patternBytes(41, ss).copy(view);
    await dev.write(8 * ss, view);
    t.ok((await dev.read(8 * ss, ss)).equals(patternBytes(41, ss)), 'a write from an unaligned subarray');
  });

  withDevice('flush with nothing to flush resolves; repeated flushes resolve', async (t, { dev }) => {
    await dev.flush();
    await Promise.all([dev.flush(), dev.flush(), dev.flush()]);
    t.pass('flushes resolved');
  });

  withDevice('in-flight writes at close complete; calls after close reject ECLOSED; double close is harmless', async (t, { dev }) => {
    const ss = dev.sectorSize;
    const writes = Array.from({ length: 20 }, (_, i) => dev.write(i * ss, patternBytes(50 + i, ss)));
    const closing = dev.close();
    const results = await Promise.allSettled(writes);
    t.same(results.filter((r) => r.status === 'rejected').length, 0, 'writes issued before close all resolved');
    await closing;
    await expectCode(t, dev.read(0, ss), 'ECLOSED', 'read after close');
    await expectCode(t, dev.write(0, Buffer.alloc(ss)), 'ECLOSED', 'write after close');
    await expectCode(t, dev.flush(), 'ECLOSED', 'flush after close');
    await expectCode(t, dev.read(1, 1), 'ECLOSED', 'a malformed call after close still says ECLOSED');
    await dev.close();
    await Promise.all([dev.close(), dev.close()]);
    t.pass('closing again resolves');
  });

  if (supports.reopen) {
    withDevice('flushed data persists across close and reopen', async (t, d, opened) => {
      const { dev } = d;
      const ss = dev.sectorSize;
      const places = [0, 17 * ss, dev.sizeBytes - 2 * ss];
      for (const [i, off] of places.entries()) await dev.write(off, patternBytes(60 + i, 2 * ss));
      await dev.flush();
      await dev.close();
      const again = await (d.reopen as NonNullable<DeviceUnderTest['reopen']>)();
      opened.push(again);
      t.equal(again.sizeBytes, dev.sizeBytes, 'same size after reopen');
      t.equal(again.sectorSize, dev.sectorSize, 'same sectorSize after reopen');
      for (const [i, off] of places.entries()) t.ok((await again.read(off, 2 * ss)).equals(patternBytes(60 + i, 2 * ss)), `data at ${off}`);
    });
    withDevice('a clean close loses no resolved write, even unflushed', async (t, d, opened) => {
      const { dev } = d;
      const ss = dev.sectorSize;
      await dev.write(5 * ss, patternBytes(70, 3 * ss));
      await dev.close();
      const again = await (d.reopen as NonNullable<DeviceUnderTest['reopen']>)();
      opened.push(again);
      t.ok((await again.read(5 * ss, 3 * ss)).equals(patternBytes(70, 3 * ss)), 'data written before close is there');
    });
  } else {
    skipCase('flushed data persists across close and reopen', 'supports.reopen is false');
    skipCase('a clean close loses no resolved write, even unflushed', 'supports.reopen is false');
  }

  if (supports.reopen && supports.readOnlyReopen) {
    withDevice('a read-only device reads but rejects writes with EROFS', async (t, d, opened) => {
      const { dev } = d;
      const ss = dev.sectorSize;
      await dev.write(2 * ss, patternBytes(80, ss));
      await dev.flush();
      await dev.close();
      const ro = await (d.reopen as NonNullable<DeviceUnderTest['reopen']>)({ readOnly: true });
      opened.push(ro);
      t.equal(ro.readOnly, true, 'readOnly is reported');
      t.ok((await ro.read(2 * ss, ss)).equals(patternBytes(80, ss)), 'reads work');
      await expectCode(t, ro.write(2 * ss, Buffer.alloc(ss)), 'EROFS', 'write');
      await expectCode(t, ro.write(0, Buffer.alloc(0)), 'EROFS', 'zero-length write');
      await ro.flush();
      t.pass('flush on a read-only device resolves');
      t.ok((await ro.read(2 * ss, ss)).equals(patternBytes(80, ss)), 'data unchanged');
    });
  } else {
    skipCase('a read-only device reads but rejects writes with EROFS', 'supports.readOnlyReopen is false');
  }
}
