// fs/read-ahead.ts on its own: which READs start fetches, which are answered from them, and
// that a moved epoch (a change here, a lock another node may write under) never lets old
// bytes through. The mount-level cases are in test/mount/read-ahead.test.ts.
import t, { Test } from 'tap';
import { READ_AHEAD_CHUNK_BYTES as CHUNK, READ_AHEAD_WINDOW_BYTES as WINDOW, ReadAhead } from '../../fs/read-ahead';

const FILE = 64 * CHUNK;
/** The file's byte at `pos`, as a fetch reads it in `epoch`. */
const byteAt = (pos: number, epoch: number): number => (pos * 7 + epoch) & 0xff;

function world(): { ra: ReadAhead; fetches: Array<[number, number]>; fetch: (o: number, n: number) => Promise<Buffer | null>; setEpoch: (e: number) => void } {
  const fetches: Array<[number, number]> = [];
  let epoch = 0;
  const ra = new ReadAhead();
  const fetch = async (o: number, n: number): Promise<Buffer | null> => {
    fetches.push([o, n]);
    if (o >= FILE) return null;
    const len = Math.min(n, FILE - o);
    const b = Buffer.alloc(len);
    for (let i = 0; i < len; i++) b[i] = byteAt(o + i, epoch);
    return b;
  };
  return { ra, fetches, fetch, setEpoch: (e) => void (epoch = e) };
}

/** One READ as fs/posix.ts does it; `read` answers misses. */
async function read(w: ReturnType<typeof world>, offset: number, size: number, epoch = 0): Promise<{ data: Buffer; served: boolean }> {
  const sequential = w.ra.arrive(7, offset, size);
  const got = await w.ra.take(7, offset, size);
  let data = got;
  if (!data) {
    data = Buffer.alloc(Math.max(0, Math.min(size, FILE - offset)));
    for (let i = 0; i < data.length; i++) data[i] = byteAt(offset + i, epoch);
  }
  w.ra.after(7, sequential, w.fetch);
  return { data, served: got !== null };
}

function expectBytes(t: Test, data: Buffer, offset: number, epoch: number, what: string): void {
  let bad = -1;
  for (let i = 0; i < data.length && bad < 0; i++) if (data[i] !== byteAt(offset + i, epoch)) bad = i;
  t.equal(bad, -1, what);
}

t.test('a sequential reader is read ahead, up to the window, and answered from the fetches', async (t) => {
  const w = world();
  t.notOk((await read(w, 0, CHUNK)).served, 'the first READ goes to the disk');
  t.equal(w.fetches.length, 0, 'one READ is not a stream yet');
  t.notOk((await read(w, CHUNK, CHUNK)).served, 'nor the second');
  t.equal(w.fetches.length, WINDOW / CHUNK, 'the second starts the window');
  t.equal(w.fetches[0][0], 2 * CHUNK, 'from where it ended');
  let served = 0;
  for (let k = 2; k < 20; k++) {
    const r = await read(w, k * CHUNK, CHUNK);
    if (r.served) served++;
    expectBytes(t, r.data, k * CHUNK, 0, `chunk ${k} right`);
  }
  t.equal(served, 18, 'every later READ from a fetch');
  t.ok(w.fetches.length <= 20 + WINDOW / CHUNK, 'no byte fetched twice');
  t.same(new Set(w.fetches.map(([o]) => o)).size, w.fetches.length, 'each fetch a different range');
});

t.test('READs split below the fetch size (an unaligned buffer) are answered from one fetch', async (t) => {
  const w = world();
  const head = CHUNK - 4096;
  let served = 0;
  for (let k = 0; k < 10; k++) {
    for (const [o, n] of [[k * CHUNK, head], [k * CHUNK + head, 4096]]) {
      const r = await read(w, o, n);
      if (r.served) served++;
      expectBytes(t, r.data, o, 0, `[${o}, +${n}) right`);
    }
  }
  t.ok(served >= 17, `${served} of 20 READs from fetches`);
});

t.test('READs that straddle two fetches are answered from both', async (t) => {
  const w = world();
  // A small first READ puts every later 1 MiB READ across a fetch boundary.
  await read(w, 0, 100);
  let served = 0;
  for (let k = 0; k < 12; k++) {
    const o = 100 + k * CHUNK;
    const r = await read(w, o, CHUNK);
    if (r.served) served++;
    expectBytes(t, r.data, o, 0, `[${o}, +1 MiB) right`);
    t.equal(r.data.length, CHUNK, `[${o}, +1 MiB) whole`);
  }
  t.ok(served >= 10, `${served} of 12 READs from fetches`);
});

t.test('a moved epoch drops what was fetched before it', async (t) => {
  const w = world();
  await read(w, 0, CHUNK);
  await read(w, CHUNK, CHUNK);
  // A change: the disk now says epoch 1, and the fetches in flight read epoch 0.
  w.ra.bump();
  w.setEpoch(1);
  const r = await read(w, 2 * CHUNK, CHUNK, 1);
  t.notOk(r.served, 'not answered from a fetch of the old epoch');
  expectBytes(t, r.data, 2 * CHUNK, 1, 'the new bytes');
  const next = await read(w, 3 * CHUNK, CHUNK, 1);
  expectBytes(t, next.data, 3 * CHUNK, 1, 'and the READ after it too, fetched or not');
  t.equal(w.ra.stats.served + w.ra.stats.dropped > 0, true);
});

t.test('random and small readers start nothing; the end of the file is a short answer', async (t) => {
  const w = world();
  for (const o of [5, 3, 9, 1]) await read(w, o * CHUNK, CHUNK);
  t.equal(w.fetches.length, 0, 'no fetch for random READs');
  for (let k = 0; k < 8; k++) await read(w, k * 4096, 4096);
  t.equal(w.fetches.length, 0, 'no fetch for small sequential READs');
  const tail = world();
  for (let k = 60; k < 64; k++) await read(tail, k * CHUNK, CHUNK);
  const end = await read(tail, 64 * CHUNK, CHUNK);
  t.equal(end.data.length, 0, 'nothing past the end');
  const forgotten = world();
  await read(forgotten, 0, CHUNK);
  await read(forgotten, CHUNK, CHUNK);
  forgotten.ra.forget(7);
  t.notOk((await read(forgotten, 2 * CHUNK, CHUNK)).served, 'a forgotten inode keeps no fetches');
});
