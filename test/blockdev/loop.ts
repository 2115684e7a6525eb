// Loop devices for tests that need a real block device: a sparse file attached with losetup.
// Needs root and /dev/loop-control; loopUnavailableReason() says why not, for an explicit skip.
// Every attach is undone by detach() of that exact device (never "losetup -D").
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const LOSETUP_TIMEOUT_MS = 10_000;

export interface LoopDevice {
  path: string;
  detach(): Promise<void>;
}

export async function attachLoop(file: string, opts: { readOnly?: boolean; sectorSize?: number } = {}): Promise<LoopDevice> {
  const args = ['--find', '--show'];
  if (opts.readOnly) args.push('--read-only');
  if (opts.sectorSize !== undefined) args.push('--sector-size', String(opts.sectorSize));
  args.push(file);
  const { stdout } = await run('losetup', args, { timeout: LOSETUP_TIMEOUT_MS });
  const devPath = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(devPath)) throw new Error(`losetup printed ${JSON.stringify(stdout)}, expected /dev/loopN`);
  let detached = false;
  return {
    path: devPath,
    async detach() {
      if (detached) return;
      detached = true;
      await run('losetup', ['--detach', devPath], { timeout: LOSETUP_TIMEOUT_MS });
    },
  };
}

/** null when loop devices work here; otherwise the reason to skip. Attaches one to be sure. */
export async function loopUnavailableReason(scratchDir: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'loop devices need root';
  try {
    await fsp.access('/dev/loop-control');
  } catch {
    return 'no /dev/loop-control';
  }
  const file = path.join(scratchDir, 'loop-probe.img');
  try {
    await fsp.writeFile(file, Buffer.alloc(0));
    await fsp.truncate(file, 1 << 20);
    const loop = await attachLoop(file);
    await loop.detach();
    return null;
  } catch (err) {
    return `cannot attach a loop device: ${(err as Error).message.split('\n')[0]}`;
  } finally {
    await fsp.rm(file, { force: true });
  }
}
