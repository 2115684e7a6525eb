// Read-ahead where the kernel caches no pages (-o nokernelcache here; every cluster mount):
// a sequential reader is answered from bytes fetched ahead, and a change made meanwhile
// through another descriptor (an overwrite, a truncate) is never hidden by them.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsckClean, mountFresh, tempDir } from './harness';

const dir = tempDir(t, 'o2fs-ra-');
const MiB = 1 << 20;

t.test('nokernelcache: sequential reads see every change made while they were read ahead', async (t) => {
  const m = await mountFresh(t, dir, { options: 'nokernelcache' });
  const file = path.join(m.mp, 'seq');
  const data = Buffer.alloc(16 * MiB);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
  await fsp.writeFile(file, data);
  const reader = await fsp.open(file, 'r');
  const writer = await fsp.open(file, 'r+');
  t.teardown(async () => {
    await reader.close().catch(() => undefined);
    await writer.close().catch(() => undefined);
  });
  const buf = Buffer.alloc(MiB);
  const readAt = async (k: number): Promise<Buffer> => {
    const { bytesRead } = await reader.read(buf, 0, MiB, k * MiB);
    return Buffer.from(buf.subarray(0, bytesRead));
  };
  // Two sequential READs start the fetches (up to 4 MiB ahead).
  t.ok((await readAt(0)).equals(data.subarray(0, MiB)), 'MiB 0');
  t.ok((await readAt(1)).equals(data.subarray(MiB, 2 * MiB)), 'MiB 1');
  // Overwrite inside what is being read ahead.
  const marker = Buffer.alloc(4096, 0xa5);
  await writer.write(marker, 0, marker.length, 3 * MiB + 8192);
  marker.copy(data, 3 * MiB + 8192);
  t.ok((await readAt(2)).equals(data.subarray(2 * MiB, 3 * MiB)), 'MiB 2');
  t.ok((await readAt(3)).equals(data.subarray(3 * MiB, 4 * MiB)), 'MiB 3 holds the overwrite');
  // Shrink the file below what was fetched: the reader sees the new end.
  await writer.truncate(5 * MiB + 100);
  t.ok((await readAt(4)).equals(data.subarray(4 * MiB, 5 * MiB)), 'MiB 4');
  t.equal((await readAt(5)).length, 100, 'the new end of the file');
  t.equal((await readAt(6)).length, 0, 'nothing past it');
  // A reader that goes on to the end reads everything right.
  await writer.truncate(0);
  await writer.write(data, 0, data.length, 0);
  for (let k = 0; k < 16; k++) {
    if (!(await readAt(k)).equals(data.subarray(k * MiB, (k + 1) * MiB))) t.fail(`MiB ${k} after the rewrite`);
  }
  await reader.close();
  await writer.close();
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0, 'fsck clean');
});
