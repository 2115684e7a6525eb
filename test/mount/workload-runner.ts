// One worker of the seeded random POSIX workload (workload.test.ts runs several at once, on an
// o2fs mount and on a host directory, and compares the results).
//
//   node dist/test/mount/workload-runner.js --seed S --worker K --root DIR --ops N [--log FILE] [--manifest FILE]
//
// The worker works only inside DIR/w<K>, so workers never race each other and the final tree
// depends only on (seed, worker, ops). Every choice comes from the seeded PRNG and from a model
// of the worker's own namespace (names, types, sizes, link counts, open descriptors) — never
// from what the filesystem returns — so a filesystem that answers differently shows up as a
// different line in the log, not as a different schedule. The log has one line per operation
// with its arguments and its outcome (errno, bytes, hash of data read, stat fields); logs of
// two runs of the same seed must be identical. Paths in the log are relative to DIR/w<K>.
//
// At the end the worker closes its descriptors, checks every name, type, size and link count
// and every directory listing against its model, and writes a manifest (JSON): the paths
// whose mtime it set explicitly and that nothing changed since, the count of model
// mismatches, and how often each operation ran and failed. Exit status: 0 done (mismatches
// are data, not a crash); 2 bad usage; anything else a crash of the worker itself.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Prng } from '../../fs/prng';

const KIB = 1024;
const MIB = 1024 * KIB;
const CLUSTER_BYTES = 4 * KIB;
/** Limits that keep a worker inside its share of a small test volume, whatever the seed. */
const FILE_SIZE_BYTES_MAX = 6 * MIB;
const WORKER_BYTES_MAX = 40 * MIB;
const OPEN_FDS_MAX = 6;
const DIR_DEPTH_MAX = 4;
const XATTRS_PER_OBJ_MAX = 5;
const XATTR_VALUE_BYTES_MAX = 500;
const NAME_BYTES_MAX = 255;
const SETFATTR_TIMEOUT_MS = 10_000;

type Kind = 'file' | 'dir' | 'symlink';

/** A file, directory or symlink of the model; `names` are paths relative to the worker's root. */
interface Obj {
  id: number;
  kind: Kind;
  names: string[];
  /** Bytes (a symlink: its target's length). Unused for directories. */
  size: number;
  opens: number;
  /** The mtime was set by utimes and nothing has changed it since. */
  mtimeExplicit: boolean;
  xattrs: string[];
}

interface OpenFd {
  fd: number;
  obj: Obj;
}

class WorkloadError extends Error {}

function sha(b: Buffer | string): string {
  return createHash('sha1').update(b).digest('hex').slice(0, 12);
}

function parent(rel: string): string {
  const p = path.posix.dirname(rel);
  return p === '.' ? '' : p;
}

function depth(rel: string): number {
  return rel === '' ? 0 : rel.split('/').length;
}

function inSubtree(rel: string, top: string): boolean {
  return rel === top || rel.startsWith(`${top}/`);
}

export class Worker {
  private readonly prng: Prng;
  private readonly base: string;
  private readonly paths = new Map<string, Obj>();
  private readonly fds: OpenFd[] = [];
  private nextId = 1;
  private nextName = 0;
  private readonly lines: string[] = [];
  private note = '';
  mismatches = 0;
  readonly opCounts: Record<string, number> = {};
  readonly errCounts: Record<string, number> = {};

  constructor(seed: number, worker: number, root: string) {
    // Workers of one seed get different but reproducible streams.
    this.prng = new Prng((seed * 1_000_003 + worker * 7919) >>> 0);
    this.base = path.join(root, `w${worker}`);
  }

  // --- model helpers -------------------------------------------------------------------------

  private abs(rel: string): string {
    return rel === '' ? this.base : path.join(this.base, rel);
  }

  private pick<T>(items: readonly T[]): T {
    assert(items.length > 0, 'pick from an empty list');
    return items[this.prng.int(0, items.length)] as T;
  }

  private chance(p: number): boolean {
    return this.prng.float() < p;
  }

  private addObj(kind: Kind, rel: string, size: number): Obj {
    const o: Obj = { id: this.nextId++, kind, names: [rel], size, opens: 0, mtimeExplicit: false, xattrs: [] };
    this.paths.set(rel, o);
    return o;
  }

  private all(kind?: Kind): [string, Obj][] {
    return [...this.paths].filter(([, o]) => kind === undefined || o.kind === kind);
  }

  private dirs(): string[] {
    return this.all('dir').map(([p]) => p);
  }

  private nonDirs(): string[] {
    return [...this.paths].filter(([, o]) => o.kind !== 'dir').map(([p]) => p);
  }

  private files(): string[] {
    return this.all('file').map(([p]) => p);
  }

  private children(dir: string): string[] {
    const out: string[] = [];
    for (const p of this.paths.keys()) if (p !== '' && parent(p) === dir) out.push(path.posix.basename(p));
    return out.sort();
  }

  private subdirCount(dir: string): number {
    let n = 0;
    for (const [p, o] of this.paths) if (o.kind === 'dir' && p !== '' && parent(p) === dir) n++;
    return n;
  }

  private totalBytes(): number {
    const seen = new Set<Obj>([...this.paths.values(), ...this.fds.map((f) => f.obj)]);
    let n = 0;
    for (const o of seen) if (o.kind === 'file') n += o.size;
    return n;
  }

  /** A namespace change in `dir` updates its mtime: an explicit one no longer holds. */
  private touchDir(dir: string): void {
    const d = this.paths.get(dir);
    if (d) d.mtimeExplicit = false;
  }

  private dropName(o: Obj, rel: string): void {
    o.names = o.names.filter((n) => n !== rel);
    this.paths.delete(rel);
  }

  private freshName(prefix: string): string {
    const stem = `${prefix}${this.nextName++}`;
    const r = this.prng.float();
    if (r < 0.08) {
      // Long names, up to the 255-byte limit.
      const total = this.prng.int(100, NAME_BYTES_MAX + 1);
      return `${stem}_${'x'.repeat(Math.max(0, total - stem.length - 1))}`;
    }
    if (r < 0.13) return `${stem} ñé€日本`;
    return stem;
  }

  private freshPath(dir: string, prefix: string): string {
    return path.posix.join(dir, this.freshName(prefix));
  }

  /** Deterministic pseudo-random bytes from the workload's stream. */
  private data(len: number): Buffer {
    const b = Buffer.allocUnsafe(len);
    let i = 0;
    for (; i + 4 <= len; i += 4) b.writeUInt32LE(this.prng.next(), i);
    for (; i < len; i++) b[i] = this.prng.next() & 0xff;
    return b;
  }

  private writeLen(): number {
    const r = this.prng.float();
    if (r < 0.55) return this.prng.int(1, 4 * KIB + 1);
    if (r < 0.9) return this.prng.int(4 * KIB + 1, 64 * KIB);
    return this.prng.int(64 * KIB, 1100 * KIB);
  }

  /** A write offset: inside the file, at EOF, beyond EOF (a hole) or near a cluster boundary. */
  private writeOffset(size: number): number {
    const r = this.prng.float();
    if (size === 0 || r < 0.15) return size + this.prng.int(0, 2 * MIB);
    if (r < 0.55) return this.prng.int(0, size);
    if (r < 0.75) return size;
    const aligned = Math.floor(this.prng.int(0, size + 1) / CLUSTER_BYTES) * CLUSTER_BYTES;
    return Math.max(0, aligned + this.prng.int(-3, 4));
  }

  /** Shrinks a write so the file and the worker stay under their limits. */
  private clampWrite(o: Obj, off: number, len: number): [number, number] {
    const room = Math.min(FILE_SIZE_BYTES_MAX, o.size + Math.max(0, WORKER_BYTES_MAX - this.totalBytes()));
    if (off + len <= room) return [off, len];
    if (off >= room) off = o.size > 0 ? this.prng.int(0, o.size) : 0;
    return [off, Math.max(1, Math.min(len, room - off))];
  }

  private fdFor(o: Obj): OpenFd | undefined {
    const mine = this.fds.filter((f) => f.obj === o);
    return mine.length > 0 ? this.pick(mine) : undefined;
  }

  private closeFd(f: OpenFd): void {
    // close(2) frees the descriptor even when it reports an error (from FUSE FLUSH).
    this.fds.splice(this.fds.indexOf(f), 1);
    f.obj.opens--;
    fs.closeSync(f.fd);
  }

  private say(s: string): void {
    this.note = s;
  }

  // --- operations -----------------------------------------------------------------------------
  // Each returns the outcome text; the arguments go in `note` first so a failure still logs them.
  // The model changes only after the system calls succeeded.

  private create(): string {
    const dir = this.pick(this.dirs());
    const probeLong = this.chance(0.02);
    const rel = probeLong ? path.posix.join(dir, `long${this.nextName++}_${'y'.repeat(NAME_BYTES_MAX)}`.slice(0, NAME_BYTES_MAX + 1)) : this.freshPath(dir, 'f');
    const mode = this.pick([0o644, 0o600, 0o755, 0o640, 0o666, 0o4755]);
    const len = this.chance(0.3) ? 0 : this.writeLen();
    const keep = this.chance(0.25) && this.fds.length < OPEN_FDS_MAX;
    const buf = this.data(len);
    this.say(`${rel} mode=${mode.toString(8)} len=${len} keep=${keep}`);
    const fd = fs.openSync(this.abs(rel), 'wx+', mode);
    let n = 0;
    try {
      if (len > 0) n = fs.writeSync(fd, buf, 0, len, 0);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    const o = this.addObj('file', rel, n);
    this.touchDir(dir);
    if (keep) {
      this.fds.push({ fd, obj: o });
      o.opens++;
    } else fs.closeSync(fd);
    return `wrote=${n}`;
  }

  private writeAt(o: Obj, f: OpenFd | undefined, rel: string): string {
    let off = this.writeOffset(o.size);
    let len = this.writeLen();
    [off, len] = this.clampWrite(o, off, len);
    const buf = this.data(len);
    this.say(`${f ? `fd:${o.id}` : rel} off=${off} len=${len}`);
    const fd = f ? f.fd : fs.openSync(this.abs(rel), 'r+');
    try {
      const n = fs.writeSync(fd, buf, 0, len, off);
      o.size = Math.max(o.size, off + n);
      o.mtimeExplicit = false;
      return `wrote=${n}`;
    } finally {
      if (!f) fs.closeSync(fd);
    }
  }

  private write(): string {
    const rel = this.pick(this.files());
    const o = this.paths.get(rel)!;
    return this.writeAt(o, this.chance(0.5) ? this.fdFor(o) : undefined, rel);
  }

  private append(): string {
    const rel = this.pick(this.files());
    const o = this.paths.get(rel)!;
    const [, len] = this.clampWrite(o, o.size, this.writeLen());
    const buf = this.data(len);
    this.say(`${rel} len=${len}`);
    const fd = fs.openSync(this.abs(rel), 'a');
    try {
      const n = fs.writeSync(fd, buf);
      o.size += n;
      o.mtimeExplicit = false;
      return `wrote=${n}`;
    } finally {
      fs.closeSync(fd);
    }
  }

  private truncLen(o: Obj): number {
    const r = this.prng.float();
    if (r < 0.1) return 0;
    if (r < 0.5) return this.prng.int(0, o.size + 1);
    if (r < 0.85) return Math.min(FILE_SIZE_BYTES_MAX, o.size + this.prng.int(1, 3 * MIB));
    if (r < 0.9) return o.size;
    const aligned = Math.floor(this.prng.int(0, o.size + 1) / CLUSTER_BYTES) * CLUSTER_BYTES;
    return Math.max(0, aligned + this.prng.int(-2, 3));
  }

  private truncate(): string {
    const rel = this.pick(this.files());
    const o = this.paths.get(rel)!;
    const len = this.truncLen(o);
    const f = this.chance(0.4) ? this.fdFor(o) : undefined;
    this.say(`${f ? `fd:${o.id}` : rel} ${o.size}->${len}`);
    if (f) fs.ftruncateSync(f.fd, len);
    else fs.truncateSync(this.abs(rel), len);
    o.size = len;
    o.mtimeExplicit = false;
    return 'ok';
  }

  private readAt(fd: number, o: Obj): string {
    const off = this.prng.int(0, o.size + 8 * KIB);
    const len = this.prng.int(1, 256 * KIB);
    const buf = Buffer.alloc(len);
    let got = 0;
    // A regular file gives short reads only at EOF; loop anyway so a short FUSE read is no excuse.
    for (let guard = 0; guard < 1000 && got < len; guard++) {
      const n = fs.readSync(fd, buf, got, len - got, off + got);
      if (n === 0) break;
      got += n;
    }
    const want = Math.max(0, Math.min(len, o.size - off));
    if (got !== want) this.mismatch(`read fd:${o.id} off=${off} len=${len}: got ${got} bytes, model says ${want}`);
    return `off=${off} len=${len} got=${got} sha=${sha(buf.subarray(0, got))}`;
  }

  private read(): string {
    const rel = this.pick(this.files());
    const o = this.paths.get(rel)!;
    this.say(rel);
    if (this.chance(0.2)) {
      const all = fs.readFileSync(this.abs(rel));
      if (all.length !== o.size) this.mismatch(`${rel}: read ${all.length} bytes, model size ${o.size}`);
      return `whole=${all.length} sha=${sha(all)}`;
    }
    const fd = fs.openSync(this.abs(rel), 'r');
    try {
      return this.readAt(fd, o);
    } finally {
      fs.closeSync(fd);
    }
  }

  private statLine(st: fs.BigIntStats, o: Obj): string {
    const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    let s = `${kind} mode=${(Number(st.mode) & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid} nlink=${st.nlink}`;
    if (o.kind !== 'dir') s += ` size=${st.size}`;
    if (o.mtimeExplicit) s += ` mtime=${st.mtimeNs}`;
    return s;
  }

  private checkStat(where: string, st: fs.BigIntStats, o: Obj, rel?: string): void {
    const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    if (kind !== o.kind) this.mismatch(`${where}: type ${kind}, model ${o.kind}`);
    if (o.kind !== 'dir' && Number(st.size) !== o.size) this.mismatch(`${where}: size ${st.size}, model ${o.size}`);
    const nlink = o.kind === 'dir' ? 2 + this.subdirCount(rel ?? '') : o.names.length;
    if (Number(st.nlink) !== nlink) this.mismatch(`${where}: nlink ${st.nlink}, model ${nlink}`);
  }

  private stat(): string {
    const rel = this.pick([...this.paths.keys()]);
    const o = this.paths.get(rel)!;
    this.say(rel || '.');
    const st = fs.lstatSync(this.abs(rel), { bigint: true });
    this.checkStat(rel || '.', st, o, rel);
    return this.statLine(st, o);
  }

  private renameNonDir(): string {
    const src = this.pick(this.nonDirs());
    const o = this.paths.get(src)!;
    const r = this.prng.float();
    let dst: string;
    const subdirs = this.dirs().filter((d) => d !== '');
    if (r < 0.5 || this.nonDirs().length < 2) {
      dst = this.freshPath(this.chance(0.4) ? parent(src) : this.pick(this.dirs()), 'r');
    } else if (r < 0.95 || subdirs.length === 0) {
      dst = this.pick(this.nonDirs().filter((p) => p !== src));
    } else {
      // Probe: a file over a directory fails with EISDIR.
      dst = this.pick(subdirs);
    }
    this.say(`${src} -> ${dst || '.'}`);
    fs.renameSync(this.abs(src), this.abs(dst));
    const victim = this.paths.get(dst);
    if (victim === o) return 'same-inode'; // POSIX: both names stay.
    if (victim) this.dropName(victim, dst);
    this.dropName(o, src);
    o.names.push(dst);
    this.paths.set(dst, o);
    this.touchDir(parent(src));
    this.touchDir(parent(dst));
    return victim ? `replaced:${victim.kind}` : 'ok';
  }

  private renameDir(): string {
    const candidates = this.dirs().filter((d) => d !== '');
    if (candidates.length === 0) return this.mkdir();
    const src = this.pick(candidates);
    const parents = this.dirs().filter((d) => !inSubtree(d, src) && depth(d) + (this.maxDepthBelow(src) + 1) <= DIR_DEPTH_MAX + 1);
    if (parents.length === 0) return `${src} no-target`;
    const r = this.prng.float();
    let dst: string;
    const unrelated = this.dirs().filter((d) => d !== '' && !inSubtree(d, src) && !inSubtree(src, d));
    const emptyOnes = unrelated.filter((d) => this.children(d).length === 0 && parents.includes(parent(d)));
    const fullOnes = unrelated.filter((d) => this.children(d).length > 0);
    if (r < 0.7 || (emptyOnes.length === 0 && fullOnes.length === 0)) dst = this.freshPath(this.chance(0.4) ? parent(src) : this.pick(parents), 'D');
    else if (r < 0.95 && emptyOnes.length > 0) dst = this.pick(emptyOnes);
    else if (fullOnes.length > 0) dst = this.pick(fullOnes); // probe: ENOTEMPTY
    else dst = this.freshPath(this.pick(parents), 'D');
    this.say(`${src} -> ${dst}`);
    fs.renameSync(this.abs(src), this.abs(dst));
    const victim = this.paths.get(dst);
    if (victim) this.paths.delete(dst);
    const moved = [...this.paths].filter(([p]) => inSubtree(p, src));
    for (const [p] of moved) this.paths.delete(p);
    for (const [p, obj] of moved) {
      const np = dst + p.slice(src.length);
      obj.names = obj.names.map((n) => (n === p ? np : n));
      this.paths.set(np, obj);
    }
    const self = this.paths.get(dst)!;
    // Moving a directory rewrites its "..": whether that updates its mtime is the
    // filesystem's choice, so an explicit mtime is no longer compared.
    if (parent(src) !== parent(dst)) self.mtimeExplicit = false;
    this.touchDir(parent(src));
    this.touchDir(parent(dst));
    return victim ? 'replaced:dir' : 'ok';
  }

  private maxDepthBelow(dir: string): number {
    let m = 0;
    for (const [p, o] of this.paths) if (o.kind === 'dir' && inSubtree(p, dir)) m = Math.max(m, depth(p) - depth(dir));
    return m;
  }

  private link(): string {
    const src = this.pick(this.nonDirs());
    const o = this.paths.get(src)!;
    const dst = this.chance(0.05) ? this.pick([...this.paths.keys()].filter((p) => p !== '')) : this.freshPath(this.pick(this.dirs()), 'l');
    this.say(`${src} -> ${dst}`);
    fs.linkSync(this.abs(src), this.abs(dst));
    o.names.push(dst);
    this.paths.set(dst, o);
    this.touchDir(parent(dst));
    return 'ok';
  }

  private symlink(): string {
    const dir = this.pick(this.dirs());
    const rel = this.freshPath(dir, 's');
    const r = this.prng.float();
    let target: string;
    const others = [...this.paths.keys()].filter((p) => p !== '');
    if (r < 0.4 && others.length > 0) target = path.posix.relative(dir || '.', this.pick(others)) || '.';
    else if (r < 0.6) target = `nowhere/${this.prng.int(0, 1e6)}`;
    else if (r < 0.7) target = `/nonexistent/o2fs/${this.prng.int(0, 1e6)}`;
    else if (r < 0.9) target = `${'../'.repeat(this.prng.int(0, 4))}t${this.prng.int(0, 100)}`;
    else target = 'ab/'.repeat(this.prng.int(30, 1300)).slice(0, this.prng.int(100, 4000));
    this.say(`${rel} -> ${target.length > 60 ? `${target.slice(0, 20)}...(${target.length})` : target}`);
    fs.symlinkSync(target, this.abs(rel));
    this.addObj('symlink', rel, Buffer.byteLength(target));
    this.touchDir(dir);
    const back = fs.readlinkSync(this.abs(rel));
    if (back !== target) this.mismatch(`${rel}: readlink gave ${back.length} bytes, wrote ${target.length}`);
    return `ok len=${Buffer.byteLength(target)}`;
  }

  private unlink(): string {
    const probeDir = this.chance(0.04);
    const rel = probeDir ? this.pick(this.dirs()) : this.pick(this.nonDirs());
    this.say(rel || '.');
    fs.unlinkSync(this.abs(rel));
    const o = this.paths.get(rel)!;
    this.dropName(o, rel);
    this.touchDir(parent(rel));
    return o.opens > 0 && o.names.length === 0 ? 'ok open-orphan' : 'ok';
  }

  private openKeep(): string {
    if (this.fds.length >= OPEN_FDS_MAX) return this.close();
    const rel = this.pick(this.files());
    const o = this.paths.get(rel)!;
    this.say(rel);
    const fd = fs.openSync(this.abs(rel), 'r+');
    this.fds.push({ fd, obj: o });
    o.opens++;
    return `ok fd:${o.id}`;
  }

  /** Unlinks every name of an open file, then keeps using it through the descriptor. */
  private unlinkOpen(): string {
    const named = this.fds.filter((f) => f.obj.names.length > 0);
    if (named.length === 0) {
      if (this.fds.length >= OPEN_FDS_MAX) return this.close();
      this.openKeep();
      return this.unlinkOpen();
    }
    const f = this.pick(named);
    const names = [...f.obj.names];
    this.say(`fd:${f.obj.id} ${names.join(',')}`);
    for (const rel of names) {
      fs.unlinkSync(this.abs(rel));
      this.dropName(f.obj, rel);
      this.touchDir(parent(rel));
    }
    const st = fs.fstatSync(f.fd, { bigint: true });
    if (st.nlink !== 0n) this.mismatch(`fd:${f.obj.id}: nlink ${st.nlink} after unlinking every name`);
    return `nlink=${st.nlink} ${this.readAt(f.fd, f.obj)}`;
  }

  private fdOp(): string {
    if (this.fds.length === 0) return this.openKeep();
    const f = this.pick(this.fds);
    const o = f.obj;
    const r = this.prng.float();
    if (r < 0.4) {
      this.say(`read fd:${o.id}`);
      return this.readAt(f.fd, o);
    }
    if (r < 0.7) return `write ${this.writeAt(o, f, '')}`;
    if (r < 0.8) {
      const len = this.truncLen(o);
      this.say(`ftruncate fd:${o.id} ${o.size}->${len}`);
      fs.ftruncateSync(f.fd, len);
      o.size = len;
      o.mtimeExplicit = false;
      return 'ok';
    }
    if (r < 0.9) {
      this.say(`fstat fd:${o.id}`);
      const st = fs.fstatSync(f.fd, { bigint: true });
      this.checkStat(`fd:${o.id}`, st, o);
      return this.statLine(st, o);
    }
    const data = this.chance(0.5);
    this.say(`${data ? 'fdatasync' : 'fsync'} fd:${o.id}`);
    if (data) fs.fdatasyncSync(f.fd);
    else fs.fsyncSync(f.fd);
    return 'ok';
  }

  private close(): string {
    if (this.fds.length === 0) return 'none';
    const f = this.pick(this.fds);
    this.say(`fd:${f.obj.id}`);
    this.closeFd(f);
    return f.obj.names.length === 0 && f.obj.opens === 0 ? 'ok freed' : 'ok';
  }

  private mkdir(): string {
    const dir = this.pick(this.dirs().filter((d) => depth(d) < DIR_DEPTH_MAX));
    const rel = this.freshPath(dir, 'd');
    const mode = this.pick([0o755, 0o700, 0o775, 0o2775, 0o1777, 0o750]);
    this.say(`${rel} mode=${mode.toString(8)}`);
    fs.mkdirSync(this.abs(rel), { mode });
    this.addObj('dir', rel, 0);
    this.touchDir(dir);
    return 'ok';
  }

  private rmdir(): string {
    const dirs = this.dirs().filter((d) => d !== '');
    const empty = dirs.filter((d) => this.children(d).length === 0);
    const full = dirs.filter((d) => this.children(d).length > 0);
    if (empty.length === 0 && full.length === 0) return this.mkdir();
    // Mostly empty ones; sometimes a non-empty one (ENOTEMPTY).
    const rel = empty.length > 0 && (full.length === 0 || this.chance(0.85)) ? this.pick(empty) : this.pick(full);
    this.say(rel);
    fs.rmdirSync(this.abs(rel));
    this.paths.delete(rel);
    this.touchDir(parent(rel));
    return 'ok';
  }

  private chmod(): string {
    const targets = [...this.paths].filter(([, o]) => o.kind !== 'symlink').map(([p]) => p);
    const rel = this.pick(targets);
    const o = this.paths.get(rel)!;
    const mode = this.chance(0.7) ? this.pick([0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o777]) : this.prng.int(0, 0o10000);
    const f = o.kind === 'file' && this.chance(0.3) ? this.fdFor(o) : undefined;
    this.say(`${f ? `fd:${o.id}` : rel || '.'} ${mode.toString(8)}`);
    if (f) fs.fchmodSync(f.fd, mode);
    else fs.chmodSync(this.abs(rel), mode);
    return 'ok';
  }

  private chown(): string {
    const rel = this.pick([...this.paths.keys()]);
    const uid = this.pick([0, 1000, 1001, 65534]);
    const gid = this.pick([0, 100, 1000, 65534]);
    this.say(`${rel || '.'} ${uid}:${gid}`);
    fs.lchownSync(this.abs(rel), uid, gid);
    return 'ok';
  }

  private utimes(): string {
    const rel = this.pick([...this.paths.keys()]);
    const o = this.paths.get(rel)!;
    // Dates, not numbers: Node turns a negative number of seconds into "now".
    const when = (): Date => {
      const r = this.prng.float();
      const ms = this.prng.int(0, 1000);
      if (r < 0.8) return new Date(this.prng.int(1_000_000_000, 2_000_000_000) * 1000 + ms);
      if (r < 0.9) return new Date(-this.prng.int(1, 2_000_000_000) * 1000 + ms); // before 1970
      return new Date(this.prng.int(2_200_000_000, 6_000_000_000) * 1000 + ms); // after 2038
    };
    const atime = when();
    const mtime = when();
    this.say(`${rel || '.'} a=${atime.getTime()} m=${mtime.getTime()}`);
    if (o.kind === 'symlink') fs.lutimesSync(this.abs(rel), atime, mtime);
    else fs.utimesSync(this.abs(rel), atime, mtime);
    o.mtimeExplicit = true;
    const st = fs.lstatSync(this.abs(rel), { bigint: true });
    return `mtime=${st.mtimeNs}`;
  }

  /** setfattr(1): Node has no xattr calls. Its error text is strerror(errno). */
  private setfattr(args: string[]): string {
    const r = spawnSync('setfattr', ['-h', ...args], { timeout: SETFATTR_TIMEOUT_MS, encoding: 'utf8' });
    if (r.error) throw r.error;
    if (r.status === 0) return 'ok';
    const why = (r.stderr.trim().split('\n').pop() ?? '').split(': ').pop() ?? '';
    const e = new Error(`setfattr: ${why}`) as NodeJS.ErrnoException;
    e.code = `xattr:${why}`;
    throw e;
  }

  private setxattr(): string {
    const targets = [...this.paths].filter(([, o]) => o.kind !== 'symlink').map(([p]) => p);
    const rel = this.pick(targets);
    const o = this.paths.get(rel)!;
    const name = o.xattrs.length >= XATTRS_PER_OBJ_MAX || (o.xattrs.length > 0 && this.chance(0.4)) ? this.pick(o.xattrs) : `user.k${this.prng.int(0, 20)}`;
    const r = this.prng.float();
    const len = r < 0.1 ? 0 : r < 0.7 ? this.prng.int(1, 64) : r < 0.95 ? this.prng.int(64, 300) : this.prng.int(300, XATTR_VALUE_BYTES_MAX + 1);
    const value = this.data(len);
    this.say(`${rel || '.'} ${name} len=${len}`);
    const res = this.setfattr(len > 0 ? ['-n', name, '-v', `0x${value.toString('hex')}`, this.abs(rel)] : ['-n', name, this.abs(rel)]);
    if (!o.xattrs.includes(name)) o.xattrs.push(name);
    return res;
  }

  private removexattr(): string {
    const withX = [...this.paths].filter(([, o]) => o.xattrs.length > 0).map(([p]) => p);
    if (withX.length === 0) return this.setxattr();
    const rel = this.pick(withX);
    const o = this.paths.get(rel)!;
    // Sometimes a name that is not there: ENODATA.
    const name = this.chance(0.1) ? `user.absent${this.prng.int(0, 100)}` : this.pick(o.xattrs);
    this.say(`${rel || '.'} ${name}`);
    const res = this.setfattr(['-x', name, this.abs(rel)]);
    o.xattrs = o.xattrs.filter((n) => n !== name);
    return res;
  }

  private fsyncPath(): string {
    const isDir = this.chance(0.3);
    const rel = isDir ? this.pick(this.dirs()) : this.pick(this.files());
    this.say(rel || '.');
    const fd = fs.openSync(this.abs(rel), 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return 'ok';
  }

  private readdir(): string {
    const rel = this.pick(this.dirs());
    this.say(rel || '.');
    const got = fs.readdirSync(this.abs(rel)).sort();
    const want = this.children(rel);
    if (got.join('/') !== want.join('/')) this.mismatch(`readdir ${rel || '.'}: ${JSON.stringify(got)} vs model ${JSON.stringify(want)}`);
    return `n=${got.length} sha=${sha(got.join('\0'))}`;
  }

  // --- driver ---------------------------------------------------------------------------------

  private mismatch(what: string): void {
    this.mismatches++;
    this.lines.push(`MISMATCH ${what}`);
  }

  private readonly table: [number, string, () => string][] = [
    [8, 'create', () => this.create()],
    [13, 'write', () => this.write()],
    [5, 'append', () => this.append()],
    [6, 'truncate', () => this.truncate()],
    [6, 'read', () => this.read()],
    [5, 'stat', () => this.stat()],
    [6, 'rename', () => this.renameNonDir()],
    [3, 'renamedir', () => this.renameDir()],
    [4, 'link', () => this.link()],
    [3, 'symlink', () => this.symlink()],
    [6, 'unlink', () => this.unlink()],
    [2, 'open', () => this.openKeep()],
    [3, 'unlinkopen', () => this.unlinkOpen()],
    [7, 'fdop', () => this.fdOp()],
    [2, 'close', () => this.close()],
    [4, 'mkdir', () => this.mkdir()],
    [2, 'rmdir', () => this.rmdir()],
    [3, 'chmod', () => this.chmod()],
    [2, 'chown', () => this.chown()],
    [3, 'utimes', () => this.utimes()],
    [3, 'setxattr', () => this.setxattr()],
    [2, 'removexattr', () => this.removexattr()],
    [2, 'fsync', () => this.fsyncPath()],
    [2, 'readdir', () => this.readdir()],
  ];

  private choose(): [string, () => string] {
    const total = this.table.reduce((s, [w]) => s + w, 0);
    let x = this.prng.int(0, total);
    for (const [w, name, fn] of this.table) {
      if (x < w) {
        // Operations on files need a file: create one first.
        if (this.files().length === 0 && !['create', 'mkdir', 'symlink', 'stat', 'readdir', 'chmod', 'chown', 'utimes', 'setxattr', 'rmdir', 'fsync'].includes(name)) return ['create', () => this.create()];
        if (name === 'fsync' && this.files().length === 0) return ['create', () => this.create()];
        return [name, fn];
      }
      x -= w;
    }
    assert.fail('weights');
  }

  run(ops: number): void {
    process.umask(0o022);
    fs.mkdirSync(this.base);
    this.paths.set('', { id: 0, kind: 'dir', names: [''], size: 0, opens: 0, mtimeExplicit: false, xattrs: [] });
    for (const d of ['a', 'b', 'c']) {
      fs.mkdirSync(this.abs(d));
      this.addObj('dir', d, 0);
    }
    for (let i = 0; i < ops; i++) {
      const [name, fn] = this.choose();
      this.note = '';
      let outcome: string;
      try {
        outcome = fn();
      } catch (e) {
        const ee = e as NodeJS.ErrnoException;
        // Only errors of the filesystem are outcomes; anything else is a bug of the worker.
        // (Node names some errnos "Unknown system error -N": ESTALE is -116.)
        const code = typeof ee.code === 'string' && /^(E[A-Z0-9]+|xattr:.*)$/.test(ee.code) ? ee.code : typeof ee.errno === 'number' ? `errno${-ee.errno}` : undefined;
        if (code === undefined) throw e;
        // POSIX lets a non-empty directory fail rmdir and rename with either errno.
        outcome = `ERR ${(name === 'rmdir' || name === 'renamedir') && code === 'EEXIST' ? 'ENOTEMPTY' : code}`;
        this.errCounts[code] = (this.errCounts[code] ?? 0) + 1;
      }
      this.opCounts[name] = (this.opCounts[name] ?? 0) + 1;
      this.lines.push(`${i} ${name} ${this.note} => ${outcome}`);
    }
    while (this.fds.length > 0) {
      const f = this.fds[0] as OpenFd;
      try {
        this.closeFd(f);
        this.lines.push(`end close fd:${f.obj.id} => ok`);
      } catch (e) {
        this.lines.push(`end close fd:${f.obj.id} => ERR ${(e as NodeJS.ErrnoException).code}`);
      }
    }
    this.finalCheck();
  }

  /** Every model name exists with its type, size and link count; every listing matches. */
  private finalCheck(): void {
    for (const [rel, o] of this.paths) {
      try {
        const st = fs.lstatSync(this.abs(rel), { bigint: true });
        this.checkStat(`final ${rel || '.'}`, st, o, rel);
        if (o.kind === 'dir') {
          const got = fs.readdirSync(this.abs(rel)).sort();
          if (got.join('/') !== this.children(rel).join('/')) this.mismatch(`final readdir ${rel || '.'}: ${JSON.stringify(got)} vs model ${JSON.stringify(this.children(rel))}`);
        }
      } catch (e) {
        this.mismatch(`final ${rel || '.'}: ${(e as Error).message}`);
      }
    }
  }

  log(): string {
    return `${this.lines.join('\n')}\n`;
  }

  /** Paths (relative to the workload root) whose mtime was set explicitly and still holds. */
  explicitMtimes(worker: number): string[] {
    return [...this.paths].filter(([, o]) => o.mtimeExplicit).map(([p]) => path.posix.join(`w${worker}`, p));
  }
}

function main(): number {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        seed: { type: 'string' },
        worker: { type: 'string' },
        root: { type: 'string' },
        ops: { type: 'string' },
        log: { type: 'string' },
        manifest: { type: 'string' },
      },
    }));
    for (const k of ['seed', 'worker', 'root', 'ops'] as const) if (values[k] === undefined) throw new WorkloadError(`--${k} is required`);
  } catch (e) {
    process.stderr.write(`workload-runner: ${(e as Error).message}\nusage: workload-runner --seed S --worker K --root DIR --ops N [--log FILE] [--manifest FILE]\n`);
    return 2;
  }
  const seed = Number(values.seed);
  const worker = Number(values.worker);
  const ops = Number(values.ops);
  const w = new Worker(seed, worker, values.root!);
  w.run(ops);
  const manifest = { seed, worker, ops, mismatches: w.mismatches, explicitMtimes: w.explicitMtimes(worker), opCounts: w.opCounts, errCounts: w.errCounts };
  if (values.log) fs.writeFileSync(values.log, w.log());
  else process.stdout.write(w.log());
  if (values.manifest) fs.writeFileSync(values.manifest, JSON.stringify(manifest));
  else process.stdout.write(`${JSON.stringify(manifest)}\n`);
  return 0;
}

if (require.main === module) process.exitCode = main();
