#!/usr/bin/env node
// o2cb: the cluster configuration and cluster services tool, after OCFS2's o2cb(8)
// (reference/ocfs2.md §5.3). Configuration commands edit cluster.conf (dlm/o2cb/o2nm.ts
// owns the format and its rules; every change is validated whole, then written
// atomically under a lock). Runtime commands start and stop this node's cluster services
// daemon, o2cbd, and ask it for its status.
//
// The o2cbd contract this file relies on: `node o2cbd.js --config-dir DIR --run-dir DIR
// --cluster NAME --node NAME` writes its pid to RUNDIR/NAME.pid, listens on the unix
// socket RUNDIR/NAME.sock, answers the line {"op":"status"} with one JSON line, and exits
// on SIGTERM.
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp, openSync, closeSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  CLUSTER_NAME_LENGTH_MAX, ClusterConf, ClusterStanza, DEFAULT_IP_PORT, DEFAULT_KEY_FILE_NAME, DEFAULT_TIMEOUTS, HeartbeatMode,
  NODE_NUMBER_MAX, NodeStanza, O2nmError, TIMEOUT_LIMITS, Timeouts, clusterKeyPath, clusterTimeouts,
  configDirFromEnv, configFilePath, createClusterKey, heartbeatDeadMs, loadConfig, logFilePath, pidFilePath, processAlive,
  readConfFile, runDirFromEnv, selectCluster, selectLocalNode, serializeClusterConf, socketPath, validate, withConfigLock,
  withoutSources, writeConfFile,
} from '../dlm/o2cb/o2nm';
import { FsError } from '../fs/errors';
import { Tool, UsageError, main, umbrellaBasics, parseCommandLine, parseInteger, writeOut } from './cli';

const NAME = 'o2cb';
export const EXIT_OK = 0;
export const EXIT_USAGE = 1;
/** cluster-status: the configuration is fine but no daemon runs (LSB "program is not running"). */
export const EXIT_NOT_RUNNING = 3;
export const EXIT_ERROR = 8;

/** register-cluster waits this long for the daemon's socket and pid file. */
export const DAEMON_START_TIMEOUT_MS = 10_000;
/** unregister-cluster waits this long for the daemon to exit after SIGTERM. */
export const DAEMON_STOP_TIMEOUT_MS = 10_000;
/** cluster-status waits this long for the daemon's answer. */
export const DAEMON_STATUS_TIMEOUT_MS = 2000;
const POLL_MS = 50;
/** sun_path is 108 bytes including the terminating NUL. */
const UNIX_SOCKET_PATH_BYTES_MAX = 107;
const STATUS_LINE_BYTES_MAX = 1 << 20;
const LOG_TAIL_LINES = 10;

const COMMON_HELP = `Common options:
      --config-dir DIR   configuration directory (default $O2CB_CONFIG_DIR, else /etc/o2fs);
                         holds cluster.conf and the cluster key
      --run-dir DIR      runtime directory for pid files, sockets and logs
                         (default $O2CB_RUN_DIR, else /run/o2cb)
  -h, --help             show this help`;

const HELP = `Usage: ${NAME} COMMAND [ARGS...] [OPTIONS]

Configures o2fs clusters (cluster.conf, in OCFS2's format) and starts and stops this
node's cluster services daemon (o2cbd).

Configuration:
  add-cluster CLUSTER              define a cluster and create its key
  remove-cluster CLUSTER           remove a cluster and its nodes
  add-node CLUSTER NODE --ip IP    add a node (--port, --number)
  remove-node CLUSTER NODE         remove a node
  heartbeat-mode CLUSTER local|global
  set-timeouts CLUSTER [OPTIONS]   heartbeat and network timeouts
Listing:
  list-clusters                    configured clusters
  list-cluster CLUSTER             a cluster's configuration
  list-nodes CLUSTER               a cluster's nodes
Runtime:
  register-cluster CLUSTER         start this node's o2cbd for CLUSTER
  unregister-cluster CLUSTER       stop it
  cluster-status [CLUSTER]         configuration and daemon state

${COMMON_HELP}
      --version          print the o2fs version

"${NAME} COMMAND --help" shows a command's arguments and options. The file must be the
same on every node: copy cluster.conf and the key file to each of them.

Environment:
  O2CB_CONFIG_DIR, O2CB_RUN_DIR  defaults for --config-dir, --run-dir
  O2CB_BOOTCLUSTER               the active cluster when several are configured
  O2CB_NODE_NAME                 this node's name, when it is not the host name
  O2CBD_PATH                     the daemon script to start (default: o2cbd.js of this
                                 installation; for testing)

Exit status:
  ${EXIT_OK}  success
  ${EXIT_USAGE}  bad usage, or refused: unknown cluster or node, a change that would make
     the configuration invalid (nothing is written), an invalid cluster.conf,
     a daemon already running
  ${EXIT_NOT_RUNNING}  cluster-status: no daemon is running for the cluster
  ${EXIT_ERROR}  operational error: files cannot be read or written, the daemon does not
     start, stop or answer
`;

const COMMON_OPTIONS = {
  'config-dir': { type: 'string' },
  'run-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;
const JSON_OPTION = { json: { type: 'boolean' } } as const;

interface Context {
  configDir: string;
  runDir: string;
}

function contextFrom(v: { 'config-dir'?: string; 'run-dir'?: string }): Context {
  return {
    configDir: path.resolve(v['config-dir'] ?? configDirFromEnv()),
    runDir: path.resolve(v['run-dir'] ?? runDirFromEnv()),
  };
}

function positionalArgs(positionals: string[], names: string[], optional = 0): string[] {
  const min = names.length - optional;
  if (positionals.length < min) throw new UsageError(`missing ${names.slice(positionals.length).join(' ')}; see --help`);
  if (positionals.length > names.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[names.length])}; see --help`);
  return positionals;
}

function checkClusterName(name: string): void {
  if (!/^[0-9A-Za-z]+$/.test(name) || name.length > CLUSTER_NAME_LENGTH_MAX) {
    throw new UsageError(`cluster name ${JSON.stringify(name)} must be 1-${CLUSTER_NAME_LENGTH_MAX} characters of 0-9 A-Z a-z`);
  }
}

/**
 * An operational failure (the daemon does not start, stop or answer): reported as a plain
 * message with exit status EXIT_ERROR, not as an internal error.
 */
export class O2cbError extends FsError {
  constructor(message: string) {
    super('EIO', message);
    this.name = 'O2cbError';
  }
}

const EMPTY_CONF: ClusterConf = { clusters: [], nodes: [], heartbeats: [] };

/** The current configuration, validated (an invalid file is refused with its lines). */
async function readValid(ctx: Context): Promise<ClusterConf> {
  const conf = (await readConfFile(ctx.configDir)) ?? EMPTY_CONF;
  validate(conf);
  return conf;
}

function findCluster(conf: ClusterConf, name: string): ClusterStanza {
  const c = conf.clusters.find((x) => x.name === name);
  if (!c) {
    const names = conf.clusters.map((x) => x.name);
    throw new UsageError(`unknown cluster "${name}"; configured: ${names.length ? names.join(', ') : 'none'}`);
  }
  return c;
}

/**
 * Read-change-write under the config lock. `change` gets a copy it may modify. The result
 * is validated whole before anything is written; when it is invalid, nothing changes and
 * the error says why.
 */
async function changeConfig(ctx: Context, change: (conf: ClusterConf) => void | Promise<void>): Promise<ClusterConf> {
  return withConfigLock(ctx.configDir, async () => {
    const next = withoutSources(await readValid(ctx));
    await change(next);
    try {
      validate(next);
    } catch (err) {
      if (err instanceof O2nmError) {
        throw new UsageError(`refused, ${configFilePath(ctx.configDir)} is unchanged: ${err.problems.join('; ')}`);
      }
      throw err;
    }
    await writeConfFile(ctx.configDir, next);
    return next;
  });
}

// ----------------------------------------------------------------------------------------
// Daemon process handling

function daemonScript(): string {
  return process.env.O2CBD_PATH ? path.resolve(process.env.O2CBD_PATH) : path.resolve(__dirname, '../dlm/o2cb/o2cbd.js');
}

/** Whether `pid` is an o2cbd (or the daemon O2CBD_PATH names): never signal a reused pid. */
function isO2cbd(pid: number): boolean {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.some((a) => a.endsWith('o2cbd.js') || a === daemonScript());
  } catch {
    return false;
  }
}

interface DaemonState {
  /** The pid of a live o2cbd for the cluster, or null. */
  pid: number | null;
  /** A pid file exists but names no live o2cbd. */
  stale: boolean;
}

async function daemonState(runDir: string, cluster: string): Promise<DaemonState> {
  let text: string;
  try {
    text = await fsp.readFile(pidFilePath(runDir, cluster), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pid: null, stale: false };
    throw err;
  }
  const pid = Number(text.trim());
  if (Number.isSafeInteger(pid) && pid > 1 && processAlive(pid) && isO2cbd(pid)) return { pid, stale: false };
  return { pid: null, stale: true };
}

async function removeRuntimeFiles(runDir: string, cluster: string): Promise<void> {
  await fsp.rm(pidFilePath(runDir, cluster), { force: true });
  await fsp.rm(socketPath(runDir, cluster), { force: true });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function logTail(file: string): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  const lines = text.trimEnd().split('\n').slice(-LOG_TAIL_LINES);
  return lines.join('\n').trim() === '' ? '' : `\n${lines.map((l) => `  | ${l}`).join('\n')}`;
}

/** Sends {"op":"status"} and resolves with the one line the daemon answers. */
export function queryDaemon(sock: string, timeoutMs = DAEMON_STATUS_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let settled = false;
    const s = net.connect(sock);
    const finish = (err: Error | null, line?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(line as string);
    };
    const timer = setTimeout(() => finish(new Error(`no answer from ${sock} within ${timeoutMs} ms`)), timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write('{"op":"status"}\n'));
    s.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(null, buf.slice(0, nl));
      else if (buf.length > STATUS_LINE_BYTES_MAX) finish(new Error(`the answer from ${sock} is longer than ${STATUS_LINE_BYTES_MAX} bytes without a newline`));
    });
    s.on('error', (err) => finish(new Error(`cannot ask ${sock}: ${err.message}`)));
    s.on('close', () => finish(new Error(`${sock} closed the connection without answering`)));
  });
}

// ----------------------------------------------------------------------------------------
// Commands

interface Command {
  usage: string;
  help: string;
  run(argv: string[]): Promise<number>;
}

function helpText(c: Command): string {
  return `Usage: ${NAME} ${c.usage}\n\n${c.help.trimEnd()}\n\n${COMMON_HELP}\n`;
}

/** Parses a command's argv; null means --help was printed. */
async function parse<O extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
  c: Command,
  argv: string[],
  options: O,
): Promise<ReturnType<typeof parseCommandLine<O & typeof COMMON_OPTIONS>> | null> {
  const parsed = parseCommandLine(argv, { ...COMMON_OPTIONS, ...options } as O & typeof COMMON_OPTIONS);
  if ((parsed.values as { help?: boolean }).help) {
    await writeOut(process.stdout, helpText(c));
    return null;
  }
  return parsed;
}

async function say(text: string): Promise<void> {
  await writeOut(process.stdout, text.endsWith('\n') ? text : `${text}\n`);
}

const addCluster: Command = {
  usage: 'add-cluster CLUSTER [--heartbeat-mode local|global] [--key-file PATH]',
  help: `Defines CLUSTER (1-16 characters of 0-9 A-Z a-z) with no nodes and default timeouts,
and creates its cluster key: ${32} random bytes, mode 0600, in the config directory
(${DEFAULT_KEY_FILE_NAME}, or CLUSTER.key when another cluster uses that name). An existing
key file is kept: it may be the copy the other nodes share.

Options:
      --heartbeat-mode MODE  local (default) or global
      --key-file PATH        the key file (relative to the config directory)`,
  async run(argv) {
    const p = await parse(this, argv, { 'heartbeat-mode': { type: 'string' }, 'key-file': { type: 'string' } });
    if (!p) return EXIT_OK;
    const [name] = positionalArgs(p.positionals, ['CLUSTER']);
    checkClusterName(name);
    const ctx = contextFrom(p.values);
    const mode = p.values['heartbeat-mode'] ?? 'local';
    if (mode !== 'local' && mode !== 'global') throw new UsageError(`--heartbeat-mode must be local or global, got ${JSON.stringify(mode)}`);
    let keyPath = '';
    let keyCreated = false;
    try {
      await changeConfig(ctx, async (conf) => {
        if (conf.clusters.some((c) => c.name === name)) throw new UsageError(`cluster "${name}" already exists`);
        const usedKeys = new Set(conf.clusters.map((c) => clusterKeyPath(ctx.configDir, c)));
        let keyFile = p.values['key-file'];
        if (keyFile === undefined) keyFile = usedKeys.has(path.resolve(ctx.configDir, DEFAULT_KEY_FILE_NAME)) ? `${name}.key` : DEFAULT_KEY_FILE_NAME;
        conf.clusters.push({ name, nodeCount: 0, heartbeatMode: mode, timeouts: {}, clusterKeyFile: keyFile });
        // The key exists before the file that names it, so no reader finds a dangling name.
        validate(conf);
        keyPath = clusterKeyPath(ctx.configDir, { clusterKeyFile: keyFile });
        keyCreated = await createClusterKey(keyPath);
      });
    } catch (err) {
      if (keyCreated) await fsp.rm(keyPath, { force: true });
      throw err;
    }
    await say(`added cluster ${name} (heartbeat ${mode}); key ${keyPath}${keyCreated ? ' created' : ' (existing, kept)'}`);
    return EXIT_OK;
  },
};

const removeCluster: Command = {
  usage: 'remove-cluster CLUSTER',
  help: `Removes CLUSTER, its nodes and its heartbeat regions from cluster.conf, and its key
file when the key lives in the config directory and no other cluster uses it. Refused
while this node's o2cbd runs for CLUSTER (unregister-cluster first).`,
  async run(argv) {
    const p = await parse(this, argv, {});
    if (!p) return EXIT_OK;
    const [name] = positionalArgs(p.positionals, ['CLUSTER']);
    const ctx = contextFrom(p.values);
    let keyPath = '';
    let removeKey = false;
    await changeConfig(ctx, async (conf) => {
      const c = findCluster(conf, name);
      const state = await daemonState(ctx.runDir, name);
      if (state.pid !== null) throw new UsageError(`cluster "${name}" is registered (o2cbd pid ${state.pid} is running); run ${NAME} unregister-cluster ${name} first`);
      keyPath = clusterKeyPath(ctx.configDir, c);
      conf.clusters = conf.clusters.filter((x) => x !== c);
      conf.nodes = conf.nodes.filter((n) => n.cluster !== name);
      conf.heartbeats = conf.heartbeats.filter((h) => h.cluster !== name);
      // Only a key this tool made (inside the config dir) that nobody else uses.
      const inside = !path.relative(ctx.configDir, keyPath).startsWith('..') && !path.isAbsolute(c.clusterKeyFile ?? DEFAULT_KEY_FILE_NAME);
      removeKey = inside && !conf.clusters.some((x) => clusterKeyPath(ctx.configDir, x) === keyPath);
    });
    if (removeKey) await fsp.rm(keyPath, { force: true });
    await say(`removed cluster ${name}${removeKey ? ` and its key ${keyPath}` : ''}`);
    return EXIT_OK;
  },
};

async function noteIfRunning(ctx: Context, cluster: string): Promise<void> {
  const state = await daemonState(ctx.runDir, cluster);
  if (state.pid !== null) {
    process.stderr.write(`${NAME}: note: o2cbd (pid ${state.pid}) keeps its configuration until ${cluster} is registered again; change every node's copy\n`);
  }
}

const addNode: Command = {
  usage: `add-node CLUSTER NODE --ip IP [--port PORT] [--number N]`,
  help: `Adds node NODE (its host name without the domain) to CLUSTER and updates node_count.

Options:
      --ip IP        the node's IPv4 address on the cluster interconnect (required)
      --port PORT    its o2net port (default ${DEFAULT_IP_PORT})
      --number N     its node number, 0..${NODE_NUMBER_MAX} (default: the lowest free one)`,
  async run(argv) {
    const p = await parse(this, argv, { ip: { type: 'string' }, port: { type: 'string' }, number: { type: 'string' } });
    if (!p) return EXIT_OK;
    const [cluster, node] = positionalArgs(p.positionals, ['CLUSTER', 'NODE']);
    const ctx = contextFrom(p.values);
    if (p.values.ip === undefined) throw new UsageError('--ip IP is required; see --help');
    const port = p.values.port === undefined ? DEFAULT_IP_PORT : parseInteger(p.values.port, '--port', 1, 65535);
    const wanted = p.values.number === undefined ? undefined : parseInteger(p.values.number, '--number', 0, NODE_NUMBER_MAX);
    let added: NodeStanza | undefined;
    await changeConfig(ctx, (conf) => {
      const c = findCluster(conf, cluster);
      const members = conf.nodes.filter((n) => n.cluster === cluster);
      const used = new Set(members.map((n) => n.number));
      let number = wanted;
      if (number === undefined) {
        number = 0;
        while (used.has(number) && number <= NODE_NUMBER_MAX) number++;
        if (number > NODE_NUMBER_MAX) throw new UsageError(`cluster "${cluster}" has no free node number (all of 0..${NODE_NUMBER_MAX} are used)`);
      }
      added = { name: node, cluster, number, ipAddress: p.values.ip as string, ipPort: port };
      conf.nodes.push(added);
      // OCFS2 keeps node_count equal to the number of nodes; so do we.
      c.nodeCount = members.length + 1;
    });
    const n = added as NodeStanza;
    await say(`added node ${n.name} to cluster ${cluster}: number ${n.number}, ${n.ipAddress}:${n.ipPort}`);
    await noteIfRunning(ctx, cluster);
    return EXIT_OK;
  },
};

const removeNode: Command = {
  usage: 'remove-node CLUSTER NODE',
  help: 'Removes node NODE from CLUSTER and updates node_count.',
  async run(argv) {
    const p = await parse(this, argv, {});
    if (!p) return EXIT_OK;
    const [cluster, node] = positionalArgs(p.positionals, ['CLUSTER', 'NODE']);
    const ctx = contextFrom(p.values);
    await changeConfig(ctx, (conf) => {
      const c = findCluster(conf, cluster);
      const target = conf.nodes.find((n) => n.cluster === cluster && n.name === node);
      if (!target) {
        const names = conf.nodes.filter((n) => n.cluster === cluster).map((n) => n.name);
        throw new UsageError(`cluster "${cluster}" has no node "${node}"; its nodes: ${names.length ? names.join(', ') : 'none'}`);
      }
      conf.nodes = conf.nodes.filter((n) => n !== target);
      c.nodeCount = conf.nodes.filter((n) => n.cluster === cluster).length;
    });
    await say(`removed node ${node} from cluster ${cluster}`);
    await noteIfRunning(ctx, cluster);
    return EXIT_OK;
  },
};

const heartbeatMode: Command = {
  usage: 'heartbeat-mode CLUSTER local|global',
  help: `Sets CLUSTER's heartbeat mode. local: one heartbeat region per mounted volume, started
at mount. global: the regions listed in cluster.conf, run while the cluster is registered.`,
  async run(argv) {
    const p = await parse(this, argv, {});
    if (!p) return EXIT_OK;
    const [cluster, mode] = positionalArgs(p.positionals, ['CLUSTER', 'MODE']);
    if (mode !== 'local' && mode !== 'global') throw new UsageError(`heartbeat mode must be local or global, got ${JSON.stringify(mode)}`);
    const ctx = contextFrom(p.values);
    await changeConfig(ctx, (conf) => {
      findCluster(conf, cluster).heartbeatMode = mode as HeartbeatMode;
    });
    await say(`cluster ${cluster}: heartbeat mode ${mode}`);
    await noteIfRunning(ctx, cluster);
    return EXIT_OK;
  },
};

const TIMEOUT_OPTIONS = {
  'heartbeat-threshold': { type: 'string' },
  'heartbeat-interval-ms': { type: 'string' },
  'idle-timeout-ms': { type: 'string' },
  'keepalive-delay-ms': { type: 'string' },
  'reconnect-delay-ms': { type: 'string' },
} as const;
const TIMEOUT_OPTION_FIELDS: ReadonlyArray<[keyof typeof TIMEOUT_OPTIONS, keyof Timeouts]> = [
  ['heartbeat-threshold', 'heartbeatDeadThreshold'],
  ['heartbeat-interval-ms', 'heartbeatIntervalMs'],
  ['idle-timeout-ms', 'idleTimeoutMs'],
  ['keepalive-delay-ms', 'keepaliveDelayMs'],
  ['reconnect-delay-ms', 'reconnectDelayMs'],
];

function timeoutsText(t: Timeouts): string {
  return [
    `heartbeat_threshold   = ${t.heartbeatDeadThreshold}`,
    `heartbeat_interval_ms = ${t.heartbeatIntervalMs}  (dead after ${heartbeatDeadMs(t)} ms)`,
    `idle_timeout_ms       = ${t.idleTimeoutMs}`,
    `keepalive_delay_ms    = ${t.keepaliveDelayMs}`,
    `reconnect_delay_ms    = ${t.reconnectDelayMs}`,
  ].join('\n');
}

const limit = (f: keyof Timeouts): string => `${TIMEOUT_LIMITS[f].min}..${TIMEOUT_LIMITS[f].max}, default ${DEFAULT_TIMEOUTS[f]}`;

const setTimeouts: Command = {
  usage: 'set-timeouts CLUSTER [OPTIONS]',
  help: `Sets CLUSTER's timeouts (every node must use the same; o2net refuses a peer that
differs). A node is dead after heartbeat-threshold × heartbeat-interval-ms of unchanged
heartbeats. Rules: keepalive delay < idle timeout; reconnect delay < idle timeout;
idle timeout < the heartbeat dead time. The value "default" removes a setting.

Options:
      --heartbeat-threshold N     samples before a node is dead (${limit('heartbeatDeadThreshold')})
      --heartbeat-interval-ms N   heartbeat period (${limit('heartbeatIntervalMs')})
      --idle-timeout-ms N         silent connection is closed after (${limit('idleTimeoutMs')})
      --keepalive-delay-ms N      keepalive after silence of (${limit('keepaliveDelayMs')})
      --reconnect-delay-ms N      reconnect attempts at most every (${limit('reconnectDelayMs')})`,
  async run(argv) {
    const p = await parse(this, argv, TIMEOUT_OPTIONS);
    if (!p) return EXIT_OK;
    const [cluster] = positionalArgs(p.positionals, ['CLUSTER']);
    const ctx = contextFrom(p.values);
    const updates: Array<[keyof Timeouts, number | undefined]> = [];
    for (const [opt, field] of TIMEOUT_OPTION_FIELDS) {
      const text = p.values[opt];
      if (text === undefined) continue;
      updates.push([field, text === 'default' ? undefined : parseInteger(text, `--${opt}`, TIMEOUT_LIMITS[field].min, TIMEOUT_LIMITS[field].max)]);
    }
    if (updates.length === 0) throw new UsageError('nothing to set; give at least one timeout option (see --help)');
    let result: Timeouts | undefined;
    await changeConfig(ctx, (conf) => {
      const c = findCluster(conf, cluster);
      for (const [field, value] of updates) {
        if (value === undefined) delete c.timeouts[field];
        else c.timeouts[field] = value;
      }
      result = clusterTimeouts(c);
    });
    await say(`cluster ${cluster} timeouts:\n${timeoutsText(result as Timeouts)}`);
    await noteIfRunning(ctx, cluster);
    return EXIT_OK;
  },
};

const listClusters: Command = {
  usage: 'list-clusters [--json]',
  help: `Prints the configured clusters, one name a line.

Options:
      --json             an array of {name, heartbeatMode, nodeCount}`,
  async run(argv) {
    const p = await parse(this, argv, JSON_OPTION);
    if (!p) return EXIT_OK;
    positionalArgs(p.positionals, []);
    const conf = await readValid(contextFrom(p.values));
    if (p.values.json) await say(JSON.stringify(conf.clusters.map((c) => ({ name: c.name, heartbeatMode: c.heartbeatMode, nodeCount: c.nodeCount }))));
    else if (conf.clusters.length) await say(conf.clusters.map((c) => c.name).join('\n'));
    return EXIT_OK;
  },
};

interface NodeJson {
  num: number;
  name: string;
  ip: string;
  port: number;
}

function nodesOf(conf: ClusterConf, cluster: string): NodeJson[] {
  return conf.nodes
    .filter((n) => n.cluster === cluster)
    .sort((a, b) => a.number - b.number)
    .map((n) => ({ num: n.number, name: n.name, ip: n.ipAddress, port: n.ipPort }));
}

const listCluster: Command = {
  usage: 'list-cluster CLUSTER [--json]',
  help: `Prints CLUSTER's stanzas as they stand in cluster.conf.

Options:
      --json             {name, heartbeatMode, nodeCount, timeouts (effective),
                         clusterKeyFile, nodes: [{num, name, ip, port}], heartbeatRegions}`,
  async run(argv) {
    const p = await parse(this, argv, JSON_OPTION);
    if (!p) return EXIT_OK;
    const [cluster] = positionalArgs(p.positionals, ['CLUSTER']);
    const ctx = contextFrom(p.values);
    const conf = await readValid(ctx);
    const c = findCluster(conf, cluster);
    if (p.values.json) {
      await say(JSON.stringify({
        name: c.name,
        heartbeatMode: c.heartbeatMode,
        nodeCount: c.nodeCount,
        timeouts: clusterTimeouts(c),
        clusterKeyFile: clusterKeyPath(ctx.configDir, c),
        nodes: nodesOf(conf, cluster),
        heartbeatRegions: conf.heartbeats.filter((h) => h.cluster === cluster).map((h) => h.region),
      }));
    } else {
      const only: ClusterConf = {
        clusters: [c],
        nodes: conf.nodes.filter((n) => n.cluster === cluster),
        heartbeats: conf.heartbeats.filter((h) => h.cluster === cluster),
      };
      await say(serializeClusterConf(only));
    }
    return EXIT_OK;
  },
};

const listNodes: Command = {
  usage: 'list-nodes CLUSTER [--json]',
  help: `Prints CLUSTER's nodes by number: number, name, address, port.

Options:
      --json             an array of {num, name, ip, port}`,
  async run(argv) {
    const p = await parse(this, argv, JSON_OPTION);
    if (!p) return EXIT_OK;
    const [cluster] = positionalArgs(p.positionals, ['CLUSTER']);
    const conf = await readValid(contextFrom(p.values));
    findCluster(conf, cluster);
    const nodes = nodesOf(conf, cluster);
    if (p.values.json) {
      await say(JSON.stringify(nodes));
    } else {
      const rows = [['NUMBER', 'NAME', 'IP_ADDRESS', 'PORT'], ...nodes.map((n) => [String(n.num), n.name, n.ip, String(n.port)])];
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      await say(rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n'));
    }
    return EXIT_OK;
  },
};

const registerCluster: Command = {
  usage: 'register-cluster CLUSTER [--node NAME]',
  help: `Starts this node's cluster services daemon (o2cbd) for CLUSTER, detached, once the
whole configuration checks out (this node in it, the key readable). Waits up to
${DAEMON_START_TIMEOUT_MS / 1000} s for its socket. Its output goes to RUNDIR/CLUSTER.log. Refused when an o2cbd
already runs for CLUSTER.

Options:
      --node NAME        this node's name in cluster.conf (default $O2CB_NODE_NAME, else
                         the host name without its domain)`,
  async run(argv) {
    const p = await parse(this, argv, { node: { type: 'string' } });
    if (!p) return EXIT_OK;
    const [cluster] = positionalArgs(p.positionals, ['CLUSTER']);
    checkClusterName(cluster);
    const ctx = contextFrom(p.values);
    const resolved = await loadConfig({ configDir: ctx.configDir, runDir: ctx.runDir, clusterName: cluster, nodeName: p.values.node });
    const script = daemonScript();
    if (!existsSync(script)) throw new O2cbError(`cannot start o2cbd: ${script} does not exist (not built?)`);
    const sock = socketPath(ctx.runDir, cluster);
    if (Buffer.byteLength(sock) > UNIX_SOCKET_PATH_BYTES_MAX) {
      throw new UsageError(`socket path ${sock} is longer than ${UNIX_SOCKET_PATH_BYTES_MAX} bytes; use a shorter --run-dir`);
    }
    await fsp.mkdir(ctx.runDir, { recursive: true, mode: 0o755 });
    const state = await daemonState(ctx.runDir, cluster);
    if (state.pid !== null) throw new UsageError(`cluster "${cluster}" is already registered: o2cbd pid ${state.pid} is running (${NAME} unregister-cluster ${cluster} first)`);
    // Leftovers of a daemon that died: a stale socket would look like a ready one.
    await removeRuntimeFiles(ctx.runDir, cluster);
    const log = logFilePath(ctx.runDir, cluster);
    const logFd = openSync(log, 'a', 0o644);
    let child;
    try {
      child = spawn(process.execPath, [script, '--config-dir', ctx.configDir, '--run-dir', ctx.runDir, '--cluster', cluster, '--node', resolved.localNode.name], {
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
    } finally {
      closeSync(logFd);
    }
    let exited: string | null = null;
    let spawnError: Error | null = null;
    child.once('exit', (code, signal) => {
      exited = signal ? `was killed by ${signal}` : `exited with status ${code}`;
    });
    child.once('error', (err) => {
      spawnError = err;
    });
    const pid = child.pid;
    const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
    for (;;) {
      if (spawnError) throw new O2cbError(`cannot start o2cbd: ${(spawnError as Error).message}`);
      if (exited !== null) throw new O2cbError(`o2cbd ${exited} before it was ready; see ${log}${await logTail(log)}`);
      if (pid !== undefined && existsSync(sock)) {
        const pidText = await fsp.readFile(pidFilePath(ctx.runDir, cluster), 'utf8').catch(() => '');
        if (Number(pidText.trim()) === pid) break;
      }
      if (Date.now() >= deadline) {
        // Ours, by pid: a daemon that never became ready must not linger.
        if (pid !== undefined) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        throw new O2cbError(`o2cbd did not become ready within ${DAEMON_START_TIMEOUT_MS} ms (no ${sock} and pid file); stopped it; see ${log}${await logTail(log)}`);
      }
      await sleep(POLL_MS);
    }
    child.unref();
    const n = resolved.localNode;
    await say(`registered cluster ${cluster}: o2cbd pid ${pid} on node ${n.name} (number ${n.num}, ${n.ip}:${n.port}); log ${log}`);
    return EXIT_OK;
  },
};

const unregisterCluster: Command = {
  usage: 'unregister-cluster CLUSTER',
  help: `Stops this node's o2cbd for CLUSTER: SIGTERM, then waits up to ${DAEMON_STOP_TIMEOUT_MS / 1000} s for it to exit.
Removes stale pid and socket files. Succeeds (and says so) when no o2cbd is running.`,
  async run(argv) {
    const p = await parse(this, argv, {});
    if (!p) return EXIT_OK;
    const [cluster] = positionalArgs(p.positionals, ['CLUSTER']);
    // The daemon may outlive its configuration, so only the name's shape is checked.
    checkClusterName(cluster);
    const ctx = contextFrom(p.values);
    const state = await daemonState(ctx.runDir, cluster);
    if (state.pid === null) {
      await removeRuntimeFiles(ctx.runDir, cluster);
      await say(`cluster ${cluster} is not registered (no o2cbd running)${state.stale ? '; removed a stale pid file' : ''}`);
      return EXIT_OK;
    }
    const pid = state.pid;
    try {
      process.kill(pid, 'SIGTERM');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
    const deadline = Date.now() + DAEMON_STOP_TIMEOUT_MS;
    while (processAlive(pid)) {
      if (Date.now() >= deadline) throw new O2cbError(`o2cbd pid ${pid} is still running ${DAEMON_STOP_TIMEOUT_MS} ms after SIGTERM; see ${logFilePath(ctx.runDir, cluster)}`);
      await sleep(POLL_MS);
    }
    // The daemon removes its files on a clean exit; after a crash they are ours to remove,
    // unless a new daemon has already written its own.
    const pidText = await fsp.readFile(pidFilePath(ctx.runDir, cluster), 'utf8').catch(() => '');
    if (pidText === '' || Number(pidText.trim()) === pid) await removeRuntimeFiles(ctx.runDir, cluster);
    await say(`unregistered cluster ${cluster} (o2cbd pid ${pid} stopped)`);
    return EXIT_OK;
  },
};

const clusterStatus: Command = {
  usage: 'cluster-status [CLUSTER] [--node NAME] [--json]',
  help: `Prints the cluster (CLUSTER, else $O2CB_BOOTCLUSTER, else the only one), this node in it,
and whether its o2cbd runs; a running daemon is asked for its status (${DAEMON_STATUS_TIMEOUT_MS / 1000} s limit).
Exit status 0 when the daemon runs and answers, ${EXIT_NOT_RUNNING} when it does not run, ${EXIT_ERROR} when it
does not answer.

Options:
      --node NAME        this node's name (default $O2CB_NODE_NAME, else the host name)
      --json             {cluster, heartbeatMode, nodeCount, localNode, localNodeError,
                         running, pid, status, statusError}`,
  async run(argv) {
    const p = await parse(this, argv, { node: { type: 'string' }, ...JSON_OPTION });
    if (!p) return EXIT_OK;
    const [wanted] = positionalArgs(p.positionals, ['CLUSTER'], 1);
    const ctx = contextFrom(p.values);
    const conf = await readValid(ctx);
    const c = selectCluster(conf, wanted);
    let localNode: NodeJson | null = null;
    let localNodeError: string | null = null;
    try {
      const n = selectLocalNode(conf, c.name, p.values.node);
      localNode = { num: n.number, name: n.name, ip: n.ipAddress, port: n.ipPort };
    } catch (err) {
      if (!(err instanceof O2nmError)) throw err;
      localNodeError = err.message;
    }
    const state = await daemonState(ctx.runDir, c.name);
    let status: unknown = null;
    let statusError: string | null = null;
    if (state.pid !== null) {
      try {
        const line = await queryDaemon(socketPath(ctx.runDir, c.name));
        try {
          status = JSON.parse(line) as unknown;
        } catch {
          statusError = `o2cbd answered something that is not JSON: ${JSON.stringify(line.slice(0, 200))}`;
        }
      } catch (err) {
        statusError = (err as Error).message;
      }
    }
    if (p.values.json) {
      await say(JSON.stringify({
        cluster: c.name,
        heartbeatMode: c.heartbeatMode,
        nodeCount: c.nodeCount,
        localNode,
        localNodeError,
        running: state.pid !== null,
        pid: state.pid,
        status,
        statusError,
      }));
    } else {
      const lines = [
        `Cluster: ${c.name}`,
        `Heartbeat mode: ${c.heartbeatMode}`,
        `Nodes: ${c.nodeCount}`,
        localNode ? `Local node: ${localNode.name} (number ${localNode.num}, ${localNode.ip}:${localNode.port})` : `Local node: none: ${localNodeError}`,
        state.pid !== null ? `Daemon: running (pid ${state.pid})` : 'Daemon: not running',
      ];
      if (state.pid !== null) lines.push(statusError === null ? `Daemon status: ${JSON.stringify(status)}` : `Daemon status: ${statusError}`);
      await say(lines.join('\n'));
    }
    if (state.pid === null) return EXIT_NOT_RUNNING;
    return statusError === null ? EXIT_OK : EXIT_ERROR;
  },
};

const COMMANDS: Record<string, Command> = {
  'add-cluster': addCluster,
  'remove-cluster': removeCluster,
  'add-node': addNode,
  'remove-node': removeNode,
  'heartbeat-mode': heartbeatMode,
  'set-timeouts': setTimeouts,
  'list-clusters': listClusters,
  'list-cluster': listCluster,
  'list-nodes': listNodes,
  'register-cluster': registerCluster,
  'unregister-cluster': unregisterCluster,
  'cluster-status': clusterStatus,
};

async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  const basic = await umbrellaBasics(first, NAME, HELP, { ok: EXIT_OK, usage: EXIT_USAGE });
  if (basic !== null || first === undefined) return basic ?? EXIT_USAGE;
  if (first === 'help') {
    const c = rest[0] === undefined ? undefined : COMMANDS[rest[0]];
    if (rest[0] !== undefined && !c) throw new UsageError(`unknown command ${JSON.stringify(rest[0])}; see ${NAME} --help`);
    await writeOut(process.stdout, c ? helpText(c) : HELP);
    return EXIT_OK;
  }
  if (first.startsWith('-')) throw new UsageError(`the command comes first, before ${first}; see ${NAME} --help`);
  const command = COMMANDS[first];
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(first)}; see ${NAME} --help`);
  try {
    return await command.run(rest);
  } catch (err) {
    // Configuration problems are the user's to fix, not internal errors.
    if (err instanceof O2nmError) throw new UsageError(`${first}: ${err.message}`);
    if (err instanceof UsageError) throw new UsageError(`${first}: ${err.message}`);
    throw err;
  }
}

export const tool: Tool = { name: NAME, exitUsage: EXIT_USAGE, exitError: EXIT_ERROR, run };

if (require.main === module) main(tool);
