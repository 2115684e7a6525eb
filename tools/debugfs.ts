#!/usr/bin/env node
// debugfs.o2fs: looks inside an o2fs volume without changing it. Opens the device
// read-only, then runs the commands given with -R, or reads commands from standard input
// (a prompt at a terminal, one command per line from a pipe). A command that fails (a
// corrupt block, a bad path) prints its error and the session goes on. The commands
// themselves are in debugfs-commands.ts.
import readline from 'node:readline';
import { openDevice } from '../blockdev/open';
import type { BlockDevice } from '../blockdev/types';
import { FsError } from '../fs/errors';
import { BACKUP_SUPER_OFFSETS, BLOCK_SIZES, MAX_BACKUP_SUPERS, SIG } from '../fs/format/constants';
import { checkSuperblock, unsupportedIncompat } from '../fs/format/superblock';
import { Transaction } from '../fs/transaction';
import { Volume, findBackupSuper, findPrimarySuper } from '../fs/volume';
import {
  Tool, UsageError, debugEnabled, errorText, isExpectedError, main, parseCommandLine, parseInteger, writeOut,
} from './cli';
import { COMMANDS, Session, findCommand } from './debugfs-commands';

const NAME = 'debugfs.o2fs';
export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
export const EXIT_COMMAND_FAILED = 4;
export const EXIT_ERROR = 8;
const PROMPT = 'debugfs.o2fs: ';
const QUIT_WORDS = new Set(['quit', 'q', 'exit']);

function commandTable(): string {
  const width = Math.max(...COMMANDS.map((c) => c.usage.length), 4);
  return COMMANDS.map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`).join('\n') + `\n  ${'quit'.padEnd(width)}  leave (also q, exit, end of input)`;
}

const HELP = `Usage: ${NAME} [options] DEVICE

Looks inside an o2fs volume without changing it: DEVICE is opened read-only.
Runs the commands given with -R; without -R reads commands from standard input,
with a prompt at a terminal, or one command per line from a pipe.

Options:
  -R, --request COMMAND   run COMMAND, then exit; repeat -R for several commands
  -s, --superblock N      use backup superblock N (1..${MAX_BACKUP_SUPERS}) instead of the primary
      --json              print one JSON document per command, one per line:
                          {"command","args","result"} or {"command","args","error"}
  -h, --help              show this help

Commands:
${commandTable()}

PATH is a path from the root ("." and ".." work, symlinks are not followed),
//NAME is a system file (//journal:0000), and <N> is the inode at block N.
Quote arguments with spaces: ls -l "/my dir".

Exit status:
  ${EXIT_OK}  every command succeeded
  ${EXIT_USAGE}  bad usage
  ${EXIT_COMMAND_FAILED}  one or more commands failed (the others still ran)
  ${EXIT_ERROR}  DEVICE could not be opened, or holds no readable o2fs volume

Examples:
  ${NAME} -R stats disk.img
  ${NAME} --json -R "ls -l /" -R "stat <1234>" disk.img
  echo "cat /etc/motd" | ${NAME} disk.img > motd
`;

const OPTIONS = {
  request: { type: 'string', short: 'R', multiple: true },
  superblock: { type: 'string', short: 's' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Splits a command line into words: whitespace separates, '...' and "..." quote, and a
 * backslash escapes the next character (outside single quotes).
 */
export function tokenize(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new UsageError(`unterminated ${quote} quote`);
  if (inWord) words.push(cur);
  return words;
}

interface Opened {
  vol: Volume;
  superblockOffsetBytes: number;
}

/** Opens the volume on backup superblock n (1-based) instead of the primary. */
async function openOnBackup(dev: BlockDevice, n: number): Promise<Opened> {
  const off = BACKUP_SUPER_OFFSETS[n - 1];
  for (const bs of [...BLOCK_SIZES].reverse()) {
    if (off + bs > dev.sizeBytes || bs % dev.sectorSize !== 0 || off % bs !== 0) continue;
    const buf = await dev.read(off, bs);
    if (buf.toString('latin1', 0, 8) !== SIG.super) continue;
    const sb = checkSuperblock(buf, off / bs, bs);
    const unsupported = unsupportedIncompat(sb);
    if (unsupported) throw new FsError('EINVAL', `volume uses unsupported incompatible features 0x${unsupported.toString(16)}`);
    return { vol: new Volume(dev, sb, true), superblockOffsetBytes: off };
  }
  throw new FsError('EINVAL', `no backup superblock ${n} at byte ${off} of ${dev.name}`);
}

async function openVolume(dev: BlockDevice, backup: number | undefined): Promise<Opened> {
  if (backup !== undefined) return openOnBackup(dev, backup);
  const vol = await Volume.open(dev, { readOnly: true });
  const { offsetBytes } = await findPrimarySuper(dev);
  return { vol, superblockOffsetBytes: offsetBytes };
}

interface Outcome {
  ok: boolean;
  quit: boolean;
}

function printCommandError(s: Session, name: string, args: string[], err: unknown): Promise<void> {
  const expected = isExpectedError(err);
  let text = errorText(err);
  if (!expected) text = `internal error: ${text}${debugEnabled() ? '' : ' (run with O2FS_DEBUG=1 for a stack trace)'}`;
  const prefixed = text.startsWith(`${name}: `) ? text : `${name}: ${text}`;
  process.stderr.write(prefixed + '\n');
  if (debugEnabled() && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  if (!s.json) return Promise.resolve();
  const errno = err instanceof FsError ? err.errno : err instanceof UsageError ? 'EINVAL' : ((err as { code?: unknown })?.code ?? 'EIO');
  return writeOut(process.stdout, JSON.stringify({ command: name, args, error: { errno, message: text } }) + '\n');
}

/** Runs one command line; never throws for a command's own failure. */
async function execute(s: Session, line: string): Promise<Outcome> {
  let words: string[];
  try {
    words = tokenize(line.trim());
  } catch (err) {
    await printCommandError(s, '?', [], err);
    return { ok: false, quit: false };
  }
  if (words.length === 0 || words[0].startsWith('#')) return { ok: true, quit: false };
  const [name, ...args] = words;
  if (QUIT_WORDS.has(name)) return { ok: true, quit: true };
  const cmd = findCommand(name);
  if (!cmd) {
    await printCommandError(s, name, args, new UsageError(`unknown command; "help" lists the commands`));
    return { ok: false, quit: false };
  }
  // Every command reads the disk as it is now: another node may be writing the volume.
  s.vol.dropCaches();
  const tx = new Transaction(s.vol);
  try {
    const report = await cmd.run(s, tx, args);
    if (s.json) await writeOut(process.stdout, JSON.stringify({ command: name, args, result: report.data }) + '\n');
    else if (report.text) await writeOut(process.stdout, report.text);
    return { ok: true, quit: false };
  } catch (err) {
    await printCommandError(s, name, args, err);
    return { ok: false, quit: false };
  } finally {
    tx.abort();
  }
}

/** Reads commands from standard input until quit or end of input; returns the failures. */
async function interactive(s: Session): Promise<number> {
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = readline.createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty, prompt: PROMPT });
  // ^C drops the line being typed, as a shell does; ^D or quit leaves.
  rl.on('SIGINT', () => {
    rl.write(null, { ctrl: true, name: 'u' });
    process.stdout.write('^C\n');
    rl.prompt();
  });
  let failures = 0;
  try {
    if (tty) rl.prompt();
    for await (const line of rl) {
      const outcome = await execute(s, line);
      if (!outcome.ok) failures++;
      if (outcome.quit) break;
      if (tty) rl.prompt();
    }
  } finally {
    rl.close();
  }
  if (tty) process.stdout.write('\n');
  return failures;
}

async function run(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommandLine(argv, OPTIONS);
  if (v.help) {
    await writeOut(process.stdout, HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new UsageError('no DEVICE given; see --help');
  if (positionals.length > 1) throw new UsageError(`one DEVICE expected, got ${positionals.length}: ${positionals.join(' ')} (quote a command with spaces: -R "ls -l /"); see --help`);
  const spec = positionals[0];
  const backup = v.superblock !== undefined ? parseInteger(v.superblock, '--superblock', 1, MAX_BACKUP_SUPERS) : undefined;

  const dev = await openDevice(spec, { readOnly: true });
  try {
    let opened: Opened;
    try {
      opened = await openVolume(dev, backup);
    } catch (err) {
      if (!isExpectedError(err)) throw err;
      const text = errorText(err);
      process.stderr.write(`${NAME}: ${text.includes(spec) ? text : `${spec}: ${text}`}\n`);
      if (backup === undefined) {
        const found = await findBackupSuper(dev).catch(() => null);
        if (found) {
          const n = BACKUP_SUPER_OFFSETS.indexOf(found.offsetBytes) + 1;
          process.stderr.write(`${NAME}: backup superblock ${n} (at byte ${found.offsetBytes}) is valid: try -s ${n}, or repair with fsck.o2fs\n`);
        }
      }
      return EXIT_ERROR;
    }
    const session: Session = {
      vol: opened.vol,
      json: v.json === true,
      superblockOffsetBytes: opened.superblockOffsetBytes,
      writeRaw: (data) => writeOut(process.stdout, data),
    };
    let failures = 0;
    if (v.request !== undefined) {
      for (const line of v.request) {
        const outcome = await execute(session, line);
        if (!outcome.ok) failures++;
        if (outcome.quit) break;
      }
    } else {
      failures = await interactive(session);
    }
    return failures > 0 ? EXIT_COMMAND_FAILED : EXIT_OK;
  } finally {
    await dev.close();
  }
}

export const tool: Tool = { name: NAME, exitUsage: EXIT_USAGE, exitError: EXIT_ERROR, run };

if (require.main === module) main(tool);
