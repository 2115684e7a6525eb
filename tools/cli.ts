// Plumbing every o2fs command-line tool shares (STYLE.md §5): option parsing with readable
// errors, size arguments, one error-to-message-and-exit-status policy, a progress bar that
// only a person at a terminal sees, and stdout writes that respect back-pressure.
//
// A tool is a `Tool` object: a name for messages, the exit statuses it documents for bad
// usage and for operational errors, and run(argv) -> exit status. A tool file ends with
// `if (require.main === module) main(tool)`, so the umbrella `o2fs` can run the same
// object in-process.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { getSystemErrorMap, parseArgs, type ParseArgsConfig } from 'node:util';
import { BlockDeviceError } from '../blockdev/types';
import { CorruptionError, FsError } from '../fs/errors';

export interface Tool {
  /** Name used as the prefix of every message: "mkfs.o2fs". */
  readonly name: string;
  /** Exit status for bad usage and refusals (see each tool's --help). */
  readonly exitUsage: number;
  /** Exit status for operational errors: I/O errors, corrupt metadata, internal errors. */
  readonly exitError: number;
  /** Runs the tool; resolves with its exit status. Throws only errors main() reports. */
  run(argv: string[]): Promise<number>;
}

/** Bad command line or a refusal: printed as "tool: message", exit status Tool.exitUsage. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;
type Parsed<O extends OptionsConfig> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/**
 * node:util parseArgs in strict mode with positionals allowed, whose errors become
 * UsageErrors a person can read: "unknown option --foo; see --help".
 */
export function parseCommandLine<O extends OptionsConfig>(argv: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw toUsageError(err);
  }
}

function toUsageError(err: unknown): Error {
  const code = (err as { code?: unknown }).code;
  const message = (err as Error).message ?? String(err);
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const name = /Unknown option '([^']+)'/.exec(message)?.[1] ?? '?';
    return new UsageError(`unknown option ${name}; see --help`);
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const m = /Option '(?:-\w, )?(-[^ ']+)(?: <value>)?' (argument missing|does not take an argument)/.exec(message);
    if (m) return new UsageError(m[2] === 'argument missing' ? `option ${m[1]} needs a value; see --help` : `option ${m[1]} does not take a value; see --help`);
    return new UsageError(`${message}; see --help`);
  }
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) return new UsageError(`${message}; see --help`);
  return err as Error;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };
const SIZE_RE = /^(\d+(?:\.\d+)?)([kmgtp]?)(?:i?b)?$/i;

/**
 * A byte count: plain bytes ("65536") or a number with a binary unit ("4K", "512M", "1.5G",
 * "2TiB"). `what` names the argument in the error: "bad size "12Q" for --size ...".
 */
export function parseSize(text: string, what: string): number {
  const m = SIZE_RE.exec(text.trim());
  const bad = (): never => {
    throw new UsageError(`bad size ${JSON.stringify(text)} for ${what} (use bytes, or a number with K, M, G, T or P)`);
  };
  if (!m) return bad();
  const bytes = Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes)) {
    if (Number.isFinite(bytes) && bytes < Number.MAX_SAFE_INTEGER) throw new UsageError(`size ${JSON.stringify(text)} for ${what} is not a whole number of bytes`);
    throw new UsageError(`size ${JSON.stringify(text)} for ${what} is too large`);
  }
  return bytes;
}

/** A decimal integer in [min, max]. */
export function parseInteger(text: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`bad number ${JSON.stringify(text)} for ${what}`);
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${what} must be ${min}..${max}, got ${text}`);
  return n;
}

const systemErrors = getSystemErrorMap();

/** "no such file or directory" for "ENOENT". */
export function errnoText(errno: string): string {
  for (const [, [name, text]] of systemErrors) if (name === errno) return text;
  return errno;
}

/** The one-line message for an error, without the errno clutter where a sentence says it. */
export function errorText(err: unknown): string {
  if (err instanceof CorruptionError) return err.message.replace(/^EIO: /, '');
  if (err instanceof FsError) {
    const prefix = `${err.errno}: `;
    const detail = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message === err.errno ? '' : err.message;
    if (detail === '') return errnoText(err.errno);
    // A bare name or path gets the errno's text ("/a/b: no such file or directory"); a
    // sentence already says what went wrong.
    return /\s/.test(detail) ? detail : `${detail}: ${errnoText(err.errno)}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Errors the tools expect (bad input, bad disks): reported without a stack trace. */
export function isExpectedError(err: unknown): boolean {
  if (err instanceof UsageError || err instanceof FsError || err instanceof BlockDeviceError) return true;
  // Node's own system errors (a host file that cannot be written, ...).
  const e = err as { code?: unknown; syscall?: unknown } | null;
  return typeof e?.code === 'string' && typeof e.syscall === 'string';
}

export function debugEnabled(): boolean {
  return process.env.O2FS_DEBUG === '1';
}

/** Prints "tool: message" (plus the stack with O2FS_DEBUG=1) and returns the exit status. */
export function reportError(tool: Pick<Tool, 'name' | 'exitUsage' | 'exitError'>, err: unknown): number {
  const expected = isExpectedError(err);
  const text = expected ? errorText(err) : `internal error: ${errorText(err)}${debugEnabled() ? '' : ' (run with O2FS_DEBUG=1 for a stack trace)'}`;
  process.stderr.write(`${tool.name}: ${text}\n`);
  if (debugEnabled() && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
  return err instanceof UsageError ? tool.exitUsage : tool.exitError;
}

/** Runs a tool and turns whatever it throws into a message and its exit status. */
export async function runTool(tool: Tool, argv: string[]): Promise<number> {
  try {
    return await tool.run(argv);
  } catch (err) {
    return reportError(tool, err);
  }
}

let stdoutGuarded = false;

/**
 * Entry point of a tool's executable: runs it on process.argv and sets the exit status
 * (without process.exit, so buffered output drains). A reader that goes away (`| head`)
 * ends the process quietly instead of with an EPIPE stack.
 */
export function main(tool: Tool, argv: string[] = process.argv.slice(2)): void {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
      process.stderr.write(`${tool.name}: cannot write to standard output: ${err.message}\n`);
      process.exit(tool.exitError);
    });
  }
  void runTool(tool, argv).then((code) => {
    process.exitCode = code;
  });
}

/** Writes to a stream and waits for it to drain when its buffer is full. */
export async function writeOut(stream: NodeJS.WritableStream, data: string | Buffer): Promise<void> {
  if (!stream.write(data)) await once(stream, 'drain');
}

/** The version in package.json ("0.1.0"), or "unknown". */
/**
 * What an umbrella command (o2fs, o2cb) does with its first argument before looking for a
 * subcommand: none prints the help to stderr (usage exit), -h/--help prints it, --version
 * the version. Returns the exit code, or null when `first` should name a subcommand.
 */
export async function umbrellaBasics(first: string | undefined, name: string, help: string, exit: { ok: number; usage: number }): Promise<number | null> {
  if (first === undefined) {
    process.stderr.write(help);
    return exit.usage;
  }
  if (first === '-h' || first === '--help') {
    await writeOut(process.stdout, help);
    return exit.ok;
  }
  if (first === '--version') {
    await writeOut(process.stdout, `${name} ${packageVersion()}\n`);
    return exit.ok;
  }
  return null;
}

export function packageVersion(): string {
  // dist/tools/cli.js -> package.json two levels up (tools/cli.ts under ts-node: one level).
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(__dirname, rel), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'o2fs' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
}

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): boolean;
}

export interface ProgressOptions {
  /** Draw at all; use progressWanted() for the usual rule. */
  enabled: boolean;
  stream?: ProgressStream;
  /** Work that finishes sooner than this never draws a bar (no flicker on small volumes). */
  delayMs?: number;
  /** Redraw at most this often. */
  intervalMs?: number;
  now?: () => number;
}

/** The usual rule: a bar on stderr when it is a terminal, not with -q, not with O2FS_NO_PROGRESS. */
export function progressWanted(quiet: boolean, stream: ProgressStream = process.stderr): boolean {
  return !quiet && stream.isTTY === true && !process.env.O2FS_NO_PROGRESS;
}

const BAR_WIDTH_MAX = 40;
const PHASE_WIDTH = 16;

/** A one-line progress bar ("system files   [########........]  50%") redrawn in place. */
export class Progress {
  private readonly enabled: boolean;
  private readonly stream: ProgressStream;
  private readonly delayMs: number;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly startMs: number;
  private lastDrawMs = -Infinity;
  private drawn = false;
  private lastLine = '';

  constructor(o: ProgressOptions) {
    this.enabled = o.enabled;
    this.stream = o.stream ?? process.stderr;
    this.delayMs = o.delayMs ?? 250;
    this.intervalMs = o.intervalMs ?? 100;
    this.now = o.now ?? (() => Date.now());
    this.startMs = this.now();
  }

  update(phase: string, done: number, total: number): void {
    if (!this.enabled) return;
    const t = this.now();
    const finished = total > 0 && done >= total;
    if (t - this.startMs < this.delayMs) return;
    if (!finished && t - this.lastDrawMs < this.intervalMs) return;
    this.lastDrawMs = t;
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
    const columns = this.stream.columns ?? 80;
    const width = Math.max(10, Math.min(BAR_WIDTH_MAX, columns - PHASE_WIDTH - 10));
    const filled = Math.round(fraction * width);
    const line = `${phase.slice(0, PHASE_WIDTH).padEnd(PHASE_WIDTH)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(fraction * 100)).padStart(3)}%`;
    if (line === this.lastLine) return;
    this.lastLine = line;
    this.stream.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  /** Erases the bar (if one was drawn) so the next output starts on a clean line. */
  finish(): void {
    if (this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
