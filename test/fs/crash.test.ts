// Crash consistency: a seeded workload runs through the mount's own code (PosixFs over a
// journaled MountedVolume) on a disk with a volatile write cache (FaultyBlockDevice); at a
// seeded moment the power is cut (unflushed writes dropped, reordered or torn). Then the
// volume is mounted again (journal replay) and must be:
//   - consistent: fsck finds nothing;
//   - a prefix: its names and types equal the workload's state after some operation at or
//     after the last completed fsync;
//   - honest: every fsync'd file not written to since has exactly its fsync'd content, and
//     no file holds a byte that was never written to it.
// O2FS_CRASH_SEEDS=N runs N seeds (CI runs a few; scripts/crash-soak.sh runs many).
import t, { Test } from 'tap';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FaultyBlockDevice, PowerCutKeep } from '../../blockdev/faulty';
import { openFileDevice } from '../../blockdev/file';
import type { BlockDevice } from '../../blockdev/types';
import { fsck } from '../../fs/fsck/index';
import type { RequestContext } from '../../fs/fuse/ops';
import { PosixFs } from '../../fs/posix';
import { Prng } from '../../fs/prng';
import { MountedVolume } from '../../fs/super';
import { makeVolume } from './populate';
import { OverlayDevice } from './overlay';

const SEEDS = Number(process.env.O2FS_CRASH_SEEDS ?? 12);
const FIRST_SEED = Number(process.env.O2FS_CRASH_FIRST_SEED ?? 1);
const ROOT = 1;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

const dir = mkdtempSync(path.join(os.tmpdir(), 'o2fs-crash-'));
t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));

function ctx(): RequestContext {
  return { unique: 0n, uid: 0, gid: 0, pid: 0, signal: new AbortController().signal };
}

/**
 * Bytes of write `seq` to file `id`: 8-byte words {id u32, seq u24, 0xA5}. Writes are
 * word-aligned, so every nonzero word of a file says which file wrote it.
 */
function pattern(id: number, seq: number, words: number): Buffer {
  const b = Buffer.alloc(words * 8);
  for (let w = 0; w < words; w++) {
    b.writeUInt32LE(id, w * 8);
    b.writeUIntLE(seq & 0xffffff, w * 8 + 4, 3);
    b[w * 8 + 7] = 0xa5;
  }
  return b;
}

/** The ids found in a file's nonzero words; 'bad' if a word is not a pattern word. */
function writersOf(data: Buffer): Set<number> | 'bad' {
  const ids = new Set<number>();
  if (data.length % 8 !== 0) return 'bad';
  for (let off = 0; off < data.length; off += 8) {
    if (data.readBigUInt64LE(off) === 0n) continue;
    if (data[off + 7] !== 0xa5) return 'bad';
    ids.add(data.readUInt32LE(off));
  }
  return ids;
}

interface Model {
  /** path -> file id (directories: -1). */
  names: Map<string, number>;
  content: Map<number, Buffer>;
}

function clone(m: Model): Model {
  return { names: new Map(m.names), content: new Map([...m.content].map(([k, v]) => [k, Buffer.from(v)])) };
}

function namespaceKey(names: Map<string, number>): string {
  return [...names].map(([p, id]) => `${p}:${id < 0 ? 'd' : 'f'}`).sort().join('|');
}

async function listTree(fs: PosixFs, ino: number, prefix: string, out: Map<string, { ino: number; dir: boolean }>): Promise<void> {
  const entries: Array<{ ino: number; name: string; mode: number }> = [];
  await fs.readdir(ctx(), { ino, fh: 0, offset: 0, sizeBytes: 1 << 20 }, { add: (e) => (entries.push({ ino: e.ino, name: e.name.toString(), mode: e.mode }), true), reset: () => void entries.splice(0) });
  for (const e of entries) {
    if (e.name === '.' || e.name === '..' || (prefix === '' && e.name === 'lost+found')) continue;
    const p = `${prefix}/${e.name}`;
    const isDir = (e.mode & 0o170000) === S_IFDIR;
    out.set(p, { ino: e.ino, dir: isDir });
    if (isDir) await listTree(fs, e.ino, p, out);
  }
}

async function runSeed(t: Test, base: BlockDevice, seed: number): Promise<void> {
  const rng = new Prng(seed);
  const lower = new OverlayDevice(base);
  const dev = new FaultyBlockDevice(lower);
  const m = await MountedVolume.mount(dev, { commitSec: 3600, log: () => undefined });
  const fs = new PosixFs(m, { entryTimeoutMs: 0, attrTimeoutMs: 0, keepCache: false });
  const model: Model = { names: new Map([['/d0', -1], ['/d1', -1]]), content: new Map() };
  const inodes = new Map<string, number>();
  for (const d of ['d0', 'd1']) inodes.set(`/${d}`, (await fs.mkdir(ctx(), { parent: ROOT, name: Buffer.from(d), mode: 0o755, umask: 0 })).ino);
  await m.sync();
  const history: string[] = [namespaceKey(model.names)];
  const idMaps: Array<Map<string, number>> = [new Map(model.names)];
  // Called synchronously after each call that changed names: the order of the calls is the
  // order of their transactions (the mount serialises them).
  const record = (): void => {
    history.push(namespaceKey(model.names));
    idMaps.push(new Map(model.names));
  };
  let lastFsyncIndex = 0;
  let fsyncSnapshot: Model = clone(model);
  const dirtySinceFsync = new Set<number>();
  let nextId = 1;
  let writeSeq = 0;
  const opsTotal = 40 + rng.int(0, 120);
  const cutAfter = rng.int(5, opsTotal);
  let done = 0;
  let cut = false;
  // Workers run concurrently: a file an operation is working on is not picked by another.
  const busy = new Set<string>();
  // Files with a write or truncate under way: until it returns it may or may not land.
  const inFlight = new Set<number>();
  const opLog = new Map<number, string[]>();
  const note = (id: number, what: string): void => {
    if (!opLog.has(id)) opLog.set(id, []);
    opLog.get(id)!.push(what);
  };
  const files = (): string[] => [...model.names].filter(([q, id]) => id >= 0 && !busy.has(q)).map(([q]) => q);
  const parentOf = (p: string): { parent: number; name: Buffer } => ({ parent: inodes.get(path.dirname(p))!, name: Buffer.from(path.basename(p)) });

  async function oneOp(): Promise<void> {
    const kind = rng.int(0, 10);
    const fl = files();
    const claimed: string[] = [];
    const pick = (): string => {
      const q = fl[rng.int(0, fl.length)];
      busy.add(q);
      claimed.push(q);
      return q;
    };
    try {
      await opOf(kind, fl, pick);
    } finally {
      for (const q of claimed) busy.delete(q);
    }
  }

  async function opOf(kind: number, fl: string[], pick: () => string): Promise<void> {
    if (kind <= 2 || fl.length === 0) {
      const p = `/d${rng.int(0, 2)}/f${nextId}`;
      const id = nextId++;
      const { parent, name } = parentOf(p);
      const r = await fs.create(ctx(), { parent, name, mode: 0o644, umask: 0, flags: 2, openFlags: 0 });
      inodes.set(p, r.entry.ino);
      model.names.set(p, id);
      model.content.set(id, Buffer.alloc(0));
      dirtySinceFsync.add(id);
      record();
      await fs.release(ctx(), { ino: r.entry.ino, fh: r.open.fh, flags: 0, flush: false, flockUnlock: false, lockOwner: 0n });
    } else if (kind <= 5) {
      const p = pick();
      const id = model.names.get(p)!;
      const cur = model.content.get(id)!;
      const off = 8 * rng.int(0, Math.max(1, (cur.length + 20000) / 8));
      const data = pattern(id, ++writeSeq, 1 + rng.int(0, 4000));
      dirtySinceFsync.add(id);
      inFlight.add(id);
      note(id, `w${writeSeq}@${off}+${data.length}[`);
      await fs.write(ctx(), { ino: inodes.get(p)!, fh: 0, offsetBytes: off, data, flags: 0, writeFlags: 0 });
      note(id, ']w');
      inFlight.delete(id);
      const next = Buffer.alloc(Math.max(cur.length, off + data.length));
      cur.copy(next);
      data.copy(next, off);
      model.content.set(id, next);
      dirtySinceFsync.add(id);
    } else if (kind === 6) {
      const p = pick();
      const id = model.names.get(p)!;
      const size = 8 * rng.int(0, 5000);
      dirtySinceFsync.add(id);
      inFlight.add(id);
      note(id, `t${size}[`);
      await fs.setattr(ctx(), { ino: inodes.get(p)!, sizeBytes: size, killSuidgid: false });
      note(id, `]t`);
      inFlight.delete(id);
      const cur = model.content.get(id)!;
      const next = Buffer.alloc(size);
      cur.copy(next, 0, 0, Math.min(size, cur.length));
      model.content.set(id, next);
      dirtySinceFsync.add(id);
    } else if (kind === 7) {
      const from = pick();
      const to = `/d${rng.int(0, 2)}/r${nextId++}`;
      const a = parentOf(from);
      const b = parentOf(to);
      await fs.rename(ctx(), { parent: a.parent, name: a.name, newParent: b.parent, newName: b.name, flags: 0 });
      const id = model.names.get(from)!;
      model.names.delete(from);
      model.names.set(to, id);
      inodes.set(to, inodes.get(from)!);
    } else if (kind === 8) {
      // Unlink a file while it is open, keep writing to it, then close it.
      const p = pick();
      const ino = inodes.get(p)!;
      const { parent, name } = parentOf(p);
      const id = model.names.get(p)!;
      // If the unlink does not survive a crash, the file comes back with these writes in it.
      dirtySinceFsync.add(id);
      inFlight.add(id);
      const fh = (await fs.open(ctx(), { ino, flags: 2, openFlags: 0 })).fh;
      await fs.unlink(ctx(), { parent, name });
      model.names.delete(p);
      record();
      await fs.write(ctx(), { ino, fh, offsetBytes: 0, data: pattern(id, ++writeSeq, 100), flags: 0, writeFlags: 0 });
      await fs.release(ctx(), { ino, fh, flags: 0, flush: false, flockUnlock: false, lockOwner: 0n });
      fs.forget(ino, 1);
      inFlight.delete(id);
    } else {
      const p = pick();
      // Everything that completed before fsync starts is in the journal's running
      // transaction, so that state (not what others change meanwhile) is durable after it.
      const atStart = history.length;
      for (const id of model.content.keys()) note(id, `F${atStart}[`);
      const snapshot = clone(model);
      const dirtyAtStart = new Set(dirtySinceFsync);
      await fs.fsync(ctx(), { ino: inodes.get(p)!, fh: 0, dataOnly: false });
      for (const id of model.content.keys()) note(id, `]F${atStart}`);
      if (atStart >= lastFsyncIndex) {
        lastFsyncIndex = atStart - 1;
        fsyncSnapshot = snapshot;
        // Files written since the snapshot stay dirty; the rest are clean as of it.
        for (const id of dirtyAtStart) if (!dirtySinceFsync.has(id)) dirtyAtStart.delete(id);
        dirtySinceFsync.clear();
        for (const id of model.content.keys()) if (!snapshot.content.get(id)?.equals(model.content.get(id)!)) dirtySinceFsync.add(id);
        for (const id of inFlight) dirtySinceFsync.add(id);
      }
    }
  }

  // Three workers issue operations concurrently; the mount serialises them.
  const worker = async (): Promise<void> => {
    while (!cut && done < opsTotal) {
      try {
        await oneOp();
      } catch (e) {
        if (cut) return;
        throw new Error(`seed ${seed}: operation failed before the cut: ${(e as Error).stack}`);
      }
      if (cut) return;
      record();
      done += 1;
      if (done === cutAfter && !cut && !process.env.O2FS_CRASH_LIVECHECK) {
        cut = true;
        const keep = ((process.env.O2FS_CRASH_KEEP ? [process.env.O2FS_CRASH_KEEP] : ['none', 'random-subset', 'prefix']) as PowerCutKeep[])[rng.int(0, process.env.O2FS_CRASH_KEEP ? 1 : 3)];
        for (const id of model.content.keys()) note(id, 'CUT');
        await dev.powerCut({ keep, seed: seed * 7919 });
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  if (process.env.O2FS_CRASH_LIVECHECK) {
    const live = new Map<string, { ino: number; dir: boolean }>();
    await listTree(fs, ROOT, '', live);
    const liveKey = namespaceKey(new Map([...live].map(([p, v]) => [p, v.dir ? -1 : 0])));
    t.equal(liveKey, history[history.length - 1], `seed ${seed}: live namespace matches the model`);
  }
  if (!cut) await dev.powerCut({ keep: 'none' });

  // Power back on: mount (replays), look, unmount, fsck.
  const m2 = await MountedVolume.mount(lower, { commitSec: 3600, log: () => undefined });
  const fs2 = new PosixFs(m2, { entryTimeoutMs: 0, attrTimeoutMs: 0, keepCache: false });
  const tree = new Map<string, { ino: number; dir: boolean }>();
  await listTree(fs2, ROOT, '', tree);
  const got = namespaceKey(new Map([...tree].map(([p, v]) => [p, v.dir ? -1 : 0])));
  const candidates = history.slice(lastFsyncIndex);
  if (!t.ok(candidates.includes(got), `seed ${seed}: the namespace is the state after some operation since the last fsync`)) {
    t.comment(`got ${got}; last fsync at ${lastFsyncIndex} of ${history.length}`);
    history.forEach((h, i) => t.comment(`${i}: ${h}`));
  }
  let foreign = 0;
  let fsyncMismatch = 0;
  const since = idMaps.slice(lastFsyncIndex);
  for (const [p, v] of tree) {
    if (v.dir) continue;
    const attr = await fs2.getattr(ctx(), { ino: v.ino });
    const data = await fs2.read(ctx(), { ino: v.ino, fh: 0, offsetBytes: 0, sizeBytes: attr.attr.sizeBytes, flags: 0 });
    // The ids this path can have had in the states the disk may be in.
    const allowed = new Set(since.map((mp) => mp.get(p)).filter((x): x is number => x !== undefined));
    const writers = writersOf(data);
    if (writers === 'bad' || [...writers].some((w) => !allowed.has(w))) {
      foreign += 1;
      t.comment(`seed ${seed}: ${p} holds words of ${writers === 'bad' ? 'garbage' : [...writers].join(',')}, allowed ${[...allowed].join(',')}`);
    }
    // A file fsync'd and not written since must read exactly as it was at the fsync.
    for (const id of allowed) {
      if (fsyncSnapshot.content.has(id) && !dirtySinceFsync.has(id) && [...writersOf(data) as Set<number>].every((w) => w === id)) {
        if (!data.equals(fsyncSnapshot.content.get(id)!)) {
          fsyncMismatch += 1;
          t.comment(`seed ${seed}: ${p} (file ${id}) differs from its fsync'd content (${data.length} vs ${fsyncSnapshot.content.get(id)!.length} bytes)`);
          const want = fsyncSnapshot.content.get(id)!;
          for (let off = 0; off < Math.min(data.length, want.length); off += 8) {
            if (!data.subarray(off, off + 8).equals(want.subarray(off, off + 8))) {
              t.comment(`  first difference at ${off}: got ${data.subarray(off, off + 8).toString('hex')} want ${want.subarray(off, off + 8).toString('hex')}`);
              break;
            }
          }
          t.comment(`  ops on file ${id}: ${(opLog.get(id) ?? []).join(' ')}`);
        }
      }
    }
  }
  t.equal(fsyncMismatch, 0, `seed ${seed}: fsync'd files have exactly their fsync'd content`);
  t.equal(foreign, 0, `seed ${seed}: no file holds bytes never written to it`);
  await m2.unmount();
  const r = await fsck(lower, { repair: false, log: () => undefined });
  t.equal(r.exitCode, 0, `seed ${seed}: fsck clean after recovery`) || t.comment(r.report.lines.join('\n'));
}


t.test('power cuts at seeded points', async (t) => {
  const img = path.join(dir, 'base.img');
  await makeVolume(img, 128 << 20, { journalBytes: 4 << 20 });
  const base = await openFileDevice(img, { readOnly: true });
  t.teardown(() => base.close());
  for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++) await runSeed(t, base, seed);
});
