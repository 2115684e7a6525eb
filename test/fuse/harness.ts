// Test harness for real-FUSE tests: forks memfs-server.js (which mounts and serves), lets
// the test process use the mount, and always cleans up -- unmount, abort if the server hangs,
// kill the child by pid, remove the mountpoint.
//
// Why a child server: the process serving a FUSE mount must never touch that mount (its own
// event loop would be the one blocked waiting for the answer). The test process only uses
// async fs calls or spawned tools, each with a time limit, so a hung server cannot hang the
// test either: the teardown aborts the connection, which fails every stuck call.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { abortFuse, isFuseMounted, unmountFuse } from '../../fs/fuse/mount';
import type { ServerCommand, ServerConfig } from './memfs-server';

const SERVER_JS = path.join(__dirname, 'memfs-server.js');
const START_TIMEOUT_MS = 10_000;
const CALL_TIMEOUT_MS = 10_000;
const EXIT_WAIT_MS = 5_000;

interface Teardownable {
  teardown(fn: () => unknown): void;
}

export interface ServerEvent {
  name: string;
  detail: Record<string, unknown>;
}

export interface MemfsServer {
  mountpoint: string;
  pid: number;
  init: { protocolMinor: number; flags: string; maxWriteBytes: number };
  events: ServerEvent[];
  call<T = unknown>(command: ServerCommand): Promise<T>;
  waitEvent(name: string, timeoutMs: number): Promise<ServerEvent>;
  /** Resolves with the child's exit code (unmount first to end it cleanly). */
  exited: Promise<number | null>;
  closedReason(): string | undefined;
  stderr(): string;
}

export function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function startMemfsServer(
  t: Teardownable, config: Omit<ServerConfig, 'mountpoint'> = {}, mountpointPrefix = 'o2fs-fuse-',
): Promise<MemfsServer> {
  const mountpoint = fs.mkdtempSync(path.join(os.tmpdir(), mountpointPrefix));
  const child: ChildProcess = fork(SERVER_JS, [JSON.stringify({ ...config, mountpoint })], {
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    env: { ...process.env, UV_THREADPOOL_SIZE: '8' },
    execArgv: [],
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('fork of memfs-server failed');
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < 256 * 1024) stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const events: ServerEvent[] = [];
  const eventWaiters: { name: string; resolve: (e: ServerEvent) => void }[] = [];
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let closedReason: string | undefined;
  let readyResolve!: (init: MemfsServer['init']) => void;
  const ready = new Promise<MemfsServer['init']>((resolve) => (readyResolve = resolve));

  child.on('message', (m: { type: string; [k: string]: unknown }) => {
    if (m.type === 'ready') readyResolve(m.init as MemfsServer['init']);
    else if (m.type === 'closed') closedReason = String(m.reason);
    else if (m.type === 'event') {
      const e = { name: String(m.name), detail: m.detail as Record<string, unknown> };
      events.push(e);
      for (const w of eventWaiters.filter((x) => x.name === e.name)) {
        eventWaiters.splice(eventWaiters.indexOf(w), 1);
        w.resolve(e);
      }
    } else if (m.type === 'reply') {
      const p = pending.get(m.id as number);
      pending.delete(m.id as number);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new Error(String(m.error)));
    }
  });

  t.teardown(async () => {
    // Unmount cleanly; if the server does not exit, abort the connection and kill it.
    await unmountFuse(mountpoint, { lazy: true, timeoutMs: EXIT_WAIT_MS }).catch(() => undefined);
    const code = await withTimeout(exited, EXIT_WAIT_MS, 'server exit').catch(() => 'timeout' as const);
    if (code === 'timeout' || isFuseMounted(mountpoint)) {
      await abortFuse(mountpoint).catch((err: Error) => process.stderr.write(`abortFuse: ${err.message}\n`));
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
      await withTimeout(exited, EXIT_WAIT_MS, 'server exit after kill').catch(() => undefined);
    }
    try {
      fs.rmdirSync(mountpoint);
    } catch {
      // already gone
    }
  });

  const init = await withTimeout(Promise.race([
    ready,
    exited.then((code) => {
      throw new Error(`memfs-server exited (${code}) before ready: ${stderr}`);
    }),
  ]), START_TIMEOUT_MS, 'memfs-server start');

  return {
    mountpoint, pid, init, events,
    exited,
    closedReason: () => closedReason,
    stderr: () => stderr,
    call<T>(command: ServerCommand): Promise<T> {
      const id = nextId++;
      const p = new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      });
      child.send({ id, ...command });
      return withTimeout(p, CALL_TIMEOUT_MS, `server ${command.cmd}`);
    },
    waitEvent(name: string, timeoutMs: number): Promise<ServerEvent> {
      const seen = events.find((e) => e.name === name);
      if (seen) return Promise.resolve(seen);
      return withTimeout(new Promise<ServerEvent>((resolve) => eventWaiters.push({ name, resolve })), timeoutMs, `event ${name}`);
    },
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command (never in this process) with a time limit; kills it by pid on timeout. */
export function runTool(command: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')}: timed out; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 10_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // The tool may exit before reading its stdin: EPIPE on it is not a failure.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** A long-running helper process whose stdout lines can be awaited. */
export interface Helper {
  child: ChildProcess;
  lines: string[];
  waitLine(prefix: string, timeoutMs: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startHelper(t: Teardownable, command: string, args: string[]): Helper {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => undefined); // EPIPE once the helper has exited
  const lines: string[] = [];
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  let partial = '';
  child.stdout.on('data', (c: Buffer) => {
    partial += c.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const w of waiters.filter((x) => line.startsWith(x.prefix))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr.on('data', (c: Buffer) => process.stderr.write(`[helper ${child.pid}] ${c.toString()}`));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  });
  return {
    child, lines, exited,
    waitLine(prefix: string, timeoutMs: number): Promise<string> {
      const seen = lines.find((l) => l.startsWith(prefix));
      if (seen !== undefined) return Promise.resolve(seen);
      return withTimeout(new Promise<string>((resolve) => waiters.push({ prefix, resolve })), timeoutMs, `line ${prefix}`);
    },
  };
}
