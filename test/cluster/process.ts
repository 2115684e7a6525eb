// A process started by the cluster harness inside a node's network namespace: its output is
// kept in memory (for waitForLine) and appended synchronously to files in the world's tmp
// dir (so it survives a crash of the test for post-mortem reading).
import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { NETNS_DIR, isAlive, signalPid } from './netns';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type StreamName = 'stdout' | 'stderr';

export interface WaitLineOptions {
  /** Which output to search; both by default. */
  stream?: StreamName | 'any';
  /** Only lines printed after the call: to wait for the next occurrence of a repeated line. */
  fresh?: boolean;
}

export interface SpawnOptions {
  /** nodeEnv() by default. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** 'ignore' by default: a node process waiting on a stdin nobody closes would hang. */
  stdin?: 'ignore' | 'pipe';
  /** Short name used in log file names and error messages. */
  label?: string;
}

/**
 * The default environment of a node's processes: ours without NODE_OPTIONS, which under tap
 * carries its process-info loader; a node is its own machine, not part of the test run.
 */
export function nodeEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

// Bounds memory for chatty processes; the log files hold everything.
const LINES_MAX = 100_000;
// After 'exit', output still in the pipe arrives shortly; a waiter gives it this long.
const EXIT_DRAIN_MS = 200;
// How long a SIGKILLed process may take to die before we call it stuck (D state on a hung mount).
const KILL_WAIT_MS = 10_000;

interface LineWaiter {
  re: RegExp;
  stream: StreamName | 'any';
  resolve(m: RegExpMatchArray): void;
  reject(e: Error): void;
}

export class ManagedProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  /** Resolves when its output has ended: pipes closed, or EXIT_DRAIN_MS after exit. */
  readonly outputEnded: Promise<void>;
  private resolveOutputEnded: () => void = () => undefined;
  private exitStatusValue: ExitStatus | null = null;
  private readonly lines: Record<StreamName, string[]> = { stdout: [], stderr: [] };
  private readonly partial: Record<StreamName, string> = { stdout: '', stderr: '' };
  private readonly fds: Record<StreamName, number | null>;
  private waiters: LineWaiter[] = [];
  private outputDone = false;
  /** A failure to signal the process, kept for post-mortem rather than thrown from an event. */
  spawnError: Error | null = null;

  constructor(
    readonly node: number,
    netns: string,
    cmd: string,
    args: string[],
    readonly label: string,
    readonly stdoutPath: string,
    readonly stderrPath: string,
    opts: SpawnOptions = {},
  ) {
    this.outputEnded = new Promise<void>((resolve) => {
      this.resolveOutputEnded = resolve;
    });
    this.fds = { stdout: openSync(stdoutPath, 'a'), stderr: openSync(stderrPath, 'a') };
    // nsenter --net enters only the network namespace and then execs the command, so the pid
    // is the command's own and the mount namespace is the test's: a FUSE mount made by a node
    // is visible to (and can be cleaned up by) the test. `ip netns exec` would unshare the
    // mount namespace and hide it. detached: its own process group, so kill() reaches the
    // children it forks and a ^C on the terminal reaches only the test, which cleans up.
    this.child = spawn('nsenter', [`--net=${NETNS_DIR}/${netns}`, '--', cmd, ...args], {
      env: opts.env ?? nodeEnv(),
      cwd: opts.cwd,
      detached: true,
      stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    });
    if (this.child.pid === undefined) {
      this.closeFds();
      throw new Error(`spawn ${label} in ${netns} failed`);
    }
    this.pid = this.child.pid;
    this.child.on('error', (e) => {
      // Only signalling can fail after a successful spawn; the exit status tells the story.
      this.spawnError = e;
    });
    this.child.stdout?.on('data', (b: Buffer) => this.onData('stdout', b));
    this.child.stderr?.on('data', (b: Buffer) => this.onData('stderr', b));
    this.child.stdin?.on('error', () => undefined); // EPIPE once the process has exited
    this.exited = new Promise<ExitStatus>((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitStatusValue = { code, signal };
        resolve(this.exitStatusValue);
        setTimeout(() => this.endOutput(), EXIT_DRAIN_MS);
      });
    });
    // A grandchild may hold the pipes open after 'exit'; 'close' is when the output is done.
    this.child.on('close', () => this.endOutput());
  }

  /** Null while running. */
  get exitStatus(): ExitStatus | null {
    return this.exitStatusValue;
  }

  /** True until the kernel has reaped or zombied the process. */
  get running(): boolean {
    return this.exitStatusValue === null && isAlive(this.pid);
  }

  stdout(): string {
    return this.text('stdout');
  }

  stderr(): string {
    return this.text('stderr');
  }

  private text(stream: StreamName): string {
    const done = this.lines[stream].join('\n');
    const rest = this.partial[stream];
    return done === '' ? rest : rest === '' ? `${done}\n` : `${done}\n${rest}`;
  }

  /**
   * Resolves with the first line (complete, without its newline; already printed or, with
   * `fresh`, printed from now on) that matches `re`. Rejects after `timeoutMs`, or when the
   * process ends without one.
   */
  waitForLine(re: RegExp, timeoutMs: number, opts: WaitLineOptions = {}): Promise<RegExpMatchArray> {
    const stream = opts.stream ?? 'any';
    for (const s of opts.fresh ? [] : (['stdout', 'stderr'] as const)) {
      if (stream !== 'any' && stream !== s) continue;
      for (const line of this.lines[s]) {
        const m = line.match(re);
        if (m) return Promise.resolve(m);
      }
    }
    if (this.outputDone) return Promise.reject(this.endedError(re));
    return new Promise<RegExpMatchArray>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${this.label} (pid ${this.pid}): no line matching ${re} within ${timeoutMs} ms; stderr: ${this.tail('stderr')}`));
      }, timeoutMs);
      const waiter: LineWaiter = {
        re,
        stream,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /** Signals the process group (the process and what it forked). No-op once it exited. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    // Only while our child has not been reaped: after that its pid may belong to a stranger.
    if (this.exitStatusValue !== null) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      signalPid(this.pid, signal); // the group is gone but the leader is not (yet)
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`; resolves on exit. */
  async stop(graceMs = 3_000): Promise<ExitStatus> {
    this.kill('SIGTERM');
    const status = await within(this.exited, graceMs);
    if (status) return status;
    this.kill('SIGKILL');
    const killed = await within(this.exited, KILL_WAIT_MS);
    if (!killed) throw new Error(`${this.label} (pid ${this.pid}) survived SIGKILL for ${KILL_WAIT_MS} ms (stuck in the kernel?)`);
    return killed;
  }

  /** Closes the log files; called by the world on destroy (output after this is dropped). */
  closeFds(): void {
    for (const s of ['stdout', 'stderr'] as const) {
      const fd = this.fds[s];
      if (fd !== null) closeSync(fd);
      this.fds[s] = null;
    }
  }

  private onData(stream: StreamName, b: Buffer): void {
    const fd = this.fds[stream];
    if (fd !== null) writeSync(fd, b);
    const parts = (this.partial[stream] + b.toString()).split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const line of parts) this.addLine(stream, line);
  }

  private addLine(stream: StreamName, line: string): void {
    const lines = this.lines[stream];
    lines.push(line);
    if (lines.length > LINES_MAX) lines.splice(0, lines.length - LINES_MAX);
    for (const w of [...this.waiters]) {
      if (w.stream !== 'any' && w.stream !== stream) continue;
      const m = line.match(w.re);
      if (!m) continue;
      this.waiters = this.waiters.filter((x) => x !== w);
      w.resolve(m);
    }
  }

  private endOutput(): void {
    if (this.outputDone) return;
    this.outputDone = true;
    this.resolveOutputEnded();
    // An unterminated last line still counts as a line.
    for (const s of ['stdout', 'stderr'] as const) {
      if (this.partial[s] !== '') this.addLine(s, this.partial[s]);
      this.partial[s] = '';
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(this.endedError(w.re));
  }

  private endedError(re: RegExp): Error {
    const how = this.exitStatusValue ? `exited (${this.exitStatusValue.code ?? this.exitStatusValue.signal})` : 'closed its output';
    return new Error(`${this.label} (pid ${this.pid}) ${how} with no line matching ${re}; stderr: ${this.tail('stderr')}`);
  }

  private tail(stream: StreamName): string {
    return JSON.stringify(this.text(stream).slice(-500));
  }
}

/** `p`, or null after `ms`; the timer is cleared either way so it never holds the loop open. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
