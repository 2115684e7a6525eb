// The filesystem library alone, without FUSE: how much CPU one create, lookup, getattr,
// release and unlink cost in PosixFs over a file-backed volume. Prints operations per
// CPU-second (process.cpuUsage, so a busy machine does not skew it) and per wall second.
//   node dist/bench/lib-meta.js [FILES] [--prof]      (run after npx tsc -p .)
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { openFileDevice } from '../blockdev/file';
import { mkfs } from '../fs/mkfs';
import { PosixFs } from '../fs/posix';
import { MountedVolume } from '../fs/super';
import type { RequestContext } from '../fs/fuse/ops';

const FILES = Number(process.argv[2] ?? 5000);

async function main(): Promise<void> {
  const dir = mkdtempSync('/tmp/o2fs-libmeta-');
  try {
    const dev = await openFileDevice(path.join(dir, 'vol.img'), { create: { sizeBytes: 2 * 1024 ** 3 } });
    await mkfs(dev, { label: 'bench' });
    const m = await MountedVolume.mount(dev, { log: () => undefined });
    const fs = new PosixFs(m, { entryTimeoutMs: 1000, attrTimeoutMs: 1000, keepCache: true });
    const ctx = { unique: 1n, uid: 0, gid: 0, pid: 1, signal: new AbortController().signal } as RequestContext;
    const d = await fs.mkdir(ctx, { parent: 1, name: Buffer.from('d'), mode: 0o755, umask: 0o22 });
    const names = Array.from({ length: FILES }, (_, i) => Buffer.from(`file-${i}`));
    const phase = async (label: string, fn: (i: number) => Promise<unknown>): Promise<void> => {
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < FILES; i++) await fn(i);
      const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
      const c = process.cpuUsage(cpu0);
      const cpuS = (c.user + c.system) / 1e6;
      console.log(`${label.padEnd(8)} ${(FILES / cpuS).toFixed(0).padStart(7)} /cpu-s ${(FILES / wallS).toFixed(0).padStart(7)} /s  ${((cpuS / FILES) * 1e6).toFixed(0)} us cpu each`);
    };
    const inos: number[] = [];
    const fhs: number[] = [];
    await phase('create', async (i) => {
      const r = await fs.create(ctx, { parent: d.ino, name: names[i], mode: 0o100644, umask: 0o22, flags: 0o1 | 0o100, openFlags: 0 });
      inos.push(r.entry.ino);
      fhs.push(r.open.fh);
    });
    await phase('release', async (i) => fs.release(ctx, { ino: inos[i], fh: fhs[i], flags: 0, flush: false, flockUnlock: false, lockOwner: 0n }));
    await phase('lookup', async (i) => fs.lookup(ctx, { parent: d.ino, name: names[i] }));
    await phase('getattr', async (i) => fs.getattr(ctx, { ino: inos[i] }));
    await phase('forget', async (i) => fs.forget?.(inos[i], 2));
    await phase('unlink', async (i) => fs.unlink(ctx, { parent: d.ino, name: names[i] }));
    await m.unmount();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
