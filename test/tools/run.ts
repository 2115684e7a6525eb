// Runs the compiled tools (dist/tools/*.js) as child processes, the way a person or a
// script does, and keeps their temp files in one directory removed at teardown.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tool, runTool as runToolInProcess } from '../../tools/cli';

/** dist/test/tools -> dist/tools. */
export const TOOLS_DIR = path.resolve(__dirname, '../../tools');
const RUN_TIMEOUT_MS = 30_000;

export interface RunResult {
  status: number | null;
  stdout: Buffer;
  /** stdout as UTF-8. */
  out: string;
  err: string;
}

export function runTool(script: 'mkfs' | 'debugfs' | 'fsck' | 'o2fs', args: string[], opts: { input?: string | Buffer; env?: Record<string, string> } = {}): RunResult {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (!opts.env?.O2FS_DEBUG) delete env.O2FS_DEBUG;
  const r = spawnSync(process.execPath, [path.join(TOOLS_DIR, `${script}.js`), ...args], {
    input: opts.input ?? '',
    env,
    timeout: RUN_TIMEOUT_MS,
    maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8') };
}

/** A line of a stack trace ("    at foo (file.js:1:2)"). */
export const STACK_LINE = /^\s+at .+/m;

/** A fresh temp directory, removed when the test file ends. */
export function tempDir(t: { teardown(fn: () => unknown): void }, prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Runs a Tool in this process (for long tables of error cases, where a process per case
 * costs seconds): the exit status runTool would give main(), and what went to stderr.
 * Only for runs that print nothing to stdout: the test's own TAP stream is stdout.
 */
export async function runInProcess(tool: Tool, args: string[]): Promise<{ status: number; err: string }> {
  const chunks: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array): boolean => {
    chunks.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  }) as typeof process.stderr.write;
  try {
    const status = await runToolInProcess(tool, args);
    return { status, err: chunks.join('') };
  } finally {
    process.stderr.write = write;
  }
}
