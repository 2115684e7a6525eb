#!/usr/bin/env node
// o2fs: the umbrella command. `o2fs mkfs ...` is mkfs.o2fs and `o2fs debugfs ...` is
// debugfs.o2fs: the same Tool objects, run in this process. `o2fs fsck ...` requires
// fsck.o2fs (dist/tools/fsck.js, built from tools/fsck.ts) when it exists and runs the Tool
// it exports (`tool` or default export; its main must be guarded by require.main ===
// module, as every tool's is); a module without one is run as a child process instead.
// mount and umount serve and stop FUSE mounts (tools/mount.ts).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { Tool, UsageError, main, umbrellaBasics, runTool, writeOut } from './cli';
import { tool as debugfsTool } from './debugfs';
import { tool as mkfsTool } from './mkfs';
import { mountTool, umountTool } from './mount';

const NAME = 'o2fs';
export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
export const EXIT_ERROR = 8;

const HELP = `Usage: ${NAME} COMMAND [ARGS...]

Commands:
  mkfs       create a volume (mkfs.o2fs)
  debugfs    look inside a volume, read-only (debugfs.o2fs)
  fsck       check and repair a volume (fsck.o2fs)
  mount      mount a volume (o2fs mount --help)
  umount     unmount a volume and wait until it is released
  help [COMMAND]
             this help, or COMMAND's help

Options:
  -h, --help     show this help
      --version  print the o2fs version

"${NAME} COMMAND --help" shows a command's options and exit statuses.

Exit status: the command's own; ${EXIT_USAGE} for an unknown command or one not
implemented yet; ${EXIT_ERROR} when a command cannot be started.
`;

/** fsck.o2fs lives next to this file once built (tools/fsck.ts, compiled to dist/tools). */
function fsckPath(): string {
  return path.join(__dirname, 'fsck.js');
}

function isTool(x: unknown): x is Tool {
  const t = x as Partial<Tool> | null;
  return typeof t === 'object' && t !== null && typeof t.name === 'string' && typeof t.run === 'function' && typeof t.exitError === 'number' && typeof t.exitUsage === 'number';
}

async function runFsck(args: string[]): Promise<number> {
  const script = fsckPath();
  if (!existsSync(script)) throw new UsageError(`fsck: fsck.o2fs is not built (${script} is missing)`);
  const mod = require(script) as { tool?: unknown; default?: unknown };
  const fsckTool = isTool(mod.tool) ? mod.tool : isTool(mod.default) ? mod.default : null;
  if (fsckTool) return runTool(fsckTool, args);
  return runChild(script, args);
}

/** Runs a tool script as a child with our terminal; its exit status becomes ours. */
async function runChild(script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [script, ...args], { stdio: 'inherit' });
  // A signal sent to us alone (kill PID) must reach the child too.
  const forward = (sig: NodeJS.Signals): void => {
    child.kill(sig);
  };
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGINT'];
  for (const s of signals) process.on(s, forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (err) => reject(new Error(`fsck: cannot start ${script}: ${err.message}`)));
      child.once('exit', (code, signal) => {
        resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : EXIT_ERROR));
      });
    });
  } finally {
    for (const s of signals) process.off(s, forward);
  }
}

const TOOLS: Record<string, Tool> = { mkfs: mkfsTool, debugfs: debugfsTool, mount: mountTool, umount: umountTool };
const LATER = new Set<string>([]);

async function dispatch(command: string, args: string[]): Promise<number> {
  const t = TOOLS[command];
  if (t) return runTool(t, args);
  if (command === 'fsck') return runFsck(args);
  if (LATER.has(command)) throw new UsageError(`${command}: not implemented yet`);
  throw new UsageError(`unknown command ${JSON.stringify(command)}; see ${NAME} --help`);
}

async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  const basic = await umbrellaBasics(first, NAME, HELP, { ok: EXIT_OK, usage: EXIT_USAGE });
  if (basic !== null || first === undefined) return basic ?? EXIT_USAGE;
  if (first === 'help') {
    if (rest.length === 0) {
      await writeOut(process.stdout, HELP);
      return EXIT_OK;
    }
    return dispatch(rest[0], ['--help']);
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option ${first}; see --help`);
  return dispatch(first, rest);
}

export const tool: Tool = { name: NAME, exitUsage: EXIT_USAGE, exitError: EXIT_ERROR, run };

if (require.main === module) main(tool);
