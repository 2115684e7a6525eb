// o2nm, the node manager: which clusters exist, which nodes belong to them, and how a node
// finds itself among them. OCFS2 keeps this in /etc/ocfs2/cluster.conf and pushes it into
// configfs (reference/ocfs2.md §5.1, §5.2); o2fs keeps the same file format in its own
// config directory and hands the result to o2hb/o2net/o2dlm as a ResolvedCluster.
//
// File format (OCFS2's cluster.conf, read leniently, written canonically):
//
//   cluster:                         <- stanza header: column 0, ends with ':'
//   <TAB>name = web                  <- parameters: indented (TAB when written), key = value
//   <TAB>heartbeat_mode = local
//   <TAB>node_count = 2
//                                    <- a blank line between stanzas
//   node:
//   <TAB>name = alpha
//   <TAB>cluster = web
//   <TAB>number = 0
//   <TAB>ip_address = 10.0.0.1
//   <TAB>ip_port = 7777
//
// Stanzas: `cluster:` (name, node_count, heartbeat_mode), `node:` (name, cluster, number,
// ip_address, ip_port) and `heartbeat:` (region, cluster). Lines starting with '#' are
// comments (dropped on write). One file may describe several clusters; one is active.
// o2fs extensions, all in the cluster stanza and all optional: the timeouts under OCFS2's
// sysconfig names in lowercase (heartbeat_threshold, heartbeat_interval_ms,
// idle_timeout_ms, keepalive_delay_ms, reconnect_delay_ms) and cluster_key_file, the
// shared HMAC key o2net's handshake challenge uses (relative paths are relative to the
// config directory).
//
// parseClusterConf checks syntax and value types (with file:line); validate checks ranges,
// formats and the relations between stanzas and between timeouts; loadConfig does both,
// reads the key and resolves the active cluster and the local node.
import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsConstants, readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const DEFAULT_CONFIG_DIR = '/etc/o2fs';
export const DEFAULT_RUN_DIR = '/run/o2cb';
export const CONFIG_FILE_NAME = 'cluster.conf';
export const DEFAULT_KEY_FILE_NAME = 'cluster.key';
export const CLUSTER_KEY_BYTES = 32;
/** Shorter keys are refused: HMAC with a short secret is guessable. */
export const CLUSTER_KEY_BYTES_MIN = 16;
export const DEFAULT_IP_PORT = 7777;
/** O2NM_MAX_NODES is 255; number 255 means "invalid/unknown node". */
export const NODE_NUMBER_MAX = 254;
export const CLUSTER_NAME_LENGTH_MAX = 16;
export const NODE_NAME_BYTES_MAX = 64;
/** O2NM_MAX_REGIONS: global heartbeat regions per cluster. */
export const HEARTBEAT_REGIONS_MAX = 32;

export type HeartbeatMode = 'local' | 'global';

/** The timeouts every node of a cluster must agree on (o2net checks them at handshake). */
export interface Timeouts {
  /** How often o2hb writes its block and samples the others (OCFS2: fixed 2000 ms). */
  heartbeatIntervalMs: number;
  /** Consecutive unchanged samples before a node is dead (OCFS2: dead_threshold, 31). */
  heartbeatDeadThreshold: number;
  /** o2net closes a connection that has been silent this long (OCFS2: 30000). */
  idleTimeoutMs: number;
  /** o2net sends a keepalive after this much silence (OCFS2: 2000). */
  keepaliveDelayMs: number;
  /** o2net retries a connection at most this often (OCFS2: 2000). */
  reconnectDelayMs: number;
}

// Defaults. OCFS2's (2 s × 31 samples ≈ 60 s dead time, 30 s idle) are sized for SANs with
// multipath failover; o2fs targets local and iSCSI storage and must fail over in under
// 10 s. A crashed node is declared dead after threshold × interval = 12 × 500 ms = 6 s of
// unchanged samples (plus up to one interval before the first missed sample is seen).
// A node whose own heartbeat write hangs fences itself after (threshold − 1) × interval =
// 5.5 s, before the others can reach 6 s: the self-fence always wins the race.
// The network idle timeout (5 s) is below the dead time (6 s); see TIMEOUT_RELATIONS.
export const DEFAULT_TIMEOUTS: Readonly<Timeouts> = Object.freeze({
  heartbeatIntervalMs: 500,
  heartbeatDeadThreshold: 12,
  idleTimeoutMs: 5000,
  keepaliveDelayMs: 1000,
  reconnectDelayMs: 1000,
});

/**
 * Bounds per timeout. OCFS2's init script refuses values under a floor (keepalive ≥ 1000,
 * idle ≥ 5000, reconnect ≥ 2000, threshold ≥ 2) because smaller ones turn ordinary
 * scheduling jitter into false deaths. o2fs runs every timer a few times faster, so its
 * floors are scaled down the same way; the threshold floor is OCFS2's own. The ceilings
 * keep every value inside the u32 fields of the o2net handshake with room to spare.
 */
export const TIMEOUT_LIMITS: Readonly<Record<keyof Timeouts, { min: number; max: number }>> = Object.freeze({
  heartbeatIntervalMs: { min: 100, max: 60_000 },
  heartbeatDeadThreshold: { min: 2, max: 1000 },
  idleTimeoutMs: { min: 1000, max: 3_600_000 },
  keepaliveDelayMs: { min: 100, max: 3_600_000 },
  reconnectDelayMs: { min: 100, max: 3_600_000 },
});

/** The config-file key of each timeout (OCFS2's O2CB_* name, lowercased). */
export const TIMEOUT_KEYS: Readonly<Record<keyof Timeouts, string>> = Object.freeze({
  heartbeatIntervalMs: 'heartbeat_interval_ms',
  heartbeatDeadThreshold: 'heartbeat_threshold',
  idleTimeoutMs: 'idle_timeout_ms',
  keepaliveDelayMs: 'keepalive_delay_ms',
  reconnectDelayMs: 'reconnect_delay_ms',
});

const TIMEOUT_FIELDS = Object.keys(TIMEOUT_KEYS) as Array<keyof Timeouts>;

/** How long a node's heartbeat must stay unchanged before it is dead (OCFS2's hb_dead_ms). */
export function heartbeatDeadMs(t: Timeouts): number {
  return t.heartbeatDeadThreshold * t.heartbeatIntervalMs;
}

/** o2hb self-fences when its own write has not completed in this long (O2HB_MAX_WRITE_TIMEOUT_MS). */
export function heartbeatWriteTimeoutMs(t: Timeouts): number {
  return (t.heartbeatDeadThreshold - 1) * t.heartbeatIntervalMs;
}

/** After a connection is lost, how long o2net waits for the heartbeat before quorum decides (O2NET_QUORUM_DELAY_MS). */
export function quorumDelayMs(t: Timeouts): number {
  return (t.heartbeatDeadThreshold + 2) * t.heartbeatIntervalMs;
}

/**
 * Relations between timeouts; a violation is described, or null.
 * - keepalive < idle: OCFS2's configfs refuses otherwise; a peer must get at least one
 *   keepalive request before the silence counts as a dead connection.
 * - reconnect < idle: o2net gives up connecting when nothing succeeds within the idle
 *   timeout, so a reconnect delay as long as that leaves a single attempt.
 * - idle < heartbeat dead time: the network must notice a silent peer (and raise its
 *   quorum hold) before the heartbeat can finish a dead verdict. Otherwise a node cut off
 *   from the network but still writing its heartbeat could be declared dead by nobody
 *   while lock traffic to it hangs for longer than a real death would take to handle, and
 *   the failover bound (dead time) would no longer be the bound.
 */
export function timeoutRelationProblems(t: Timeouts): string[] {
  const problems: string[] = [];
  if (t.keepaliveDelayMs >= t.idleTimeoutMs) {
    problems.push(`keepalive_delay_ms (${t.keepaliveDelayMs}) must be less than idle_timeout_ms (${t.idleTimeoutMs})`);
  }
  if (t.reconnectDelayMs >= t.idleTimeoutMs) {
    problems.push(`reconnect_delay_ms (${t.reconnectDelayMs}) must be less than idle_timeout_ms (${t.idleTimeoutMs})`);
  }
  const deadMs = heartbeatDeadMs(t);
  if (t.idleTimeoutMs >= deadMs) {
    problems.push(
      `idle_timeout_ms (${t.idleTimeoutMs}) must be less than the heartbeat dead time, ` +
        `heartbeat_threshold × heartbeat_interval_ms = ${t.heartbeatDeadThreshold} × ${t.heartbeatIntervalMs} = ${deadMs} ms`,
    );
  }
  return problems;
}

// ----------------------------------------------------------------------------------------
// The file model

/** Where a stanza came from, for messages: the header line and each key's line. */
export interface StanzaSource {
  file: string;
  line: number;
  keyLines: Readonly<Record<string, number>>;
}

export interface ClusterStanza {
  name: string;
  nodeCount: number;
  heartbeatMode: HeartbeatMode;
  /** Only the timeouts the file sets; the rest take DEFAULT_TIMEOUTS. */
  timeouts: Partial<Timeouts>;
  /** As written in the file; undefined means DEFAULT_KEY_FILE_NAME. */
  clusterKeyFile?: string;
  source?: StanzaSource;
}

export interface NodeStanza {
  name: string;
  cluster: string;
  number: number;
  ipAddress: string;
  ipPort: number;
  source?: StanzaSource;
}

export interface HeartbeatStanza {
  /** A global heartbeat region: the volume UUID, 32 hex digits. */
  region: string;
  cluster: string;
  source?: StanzaSource;
}

export interface ClusterConf {
  clusters: ClusterStanza[];
  nodes: NodeStanza[];
  heartbeats: HeartbeatStanza[];
}

export type O2nmErrorCode =
  | 'EPARSE' // the file is not cluster.conf syntax
  | 'EINVAL' // it parses but breaks a rule
  | 'ENOENT' // no config file, unknown cluster, no key file
  | 'ENOLOCAL' // no node of the cluster is this host
  | 'EAMBIGUOUS' // several clusters and none chosen
  | 'EKEY' // the key file is unusable
  | 'EBUSY'; // another o2cb holds the config lock

/** A configuration problem a person must fix; `problems` has one line per problem. */
export class O2nmError extends Error {
  constructor(
    readonly code: O2nmErrorCode,
    message: string,
    readonly problems: readonly string[] = [message],
  ) {
    super(message);
    this.name = 'O2nmError';
  }
}

// ----------------------------------------------------------------------------------------
// Parse

type StanzaKind = 'cluster' | 'node' | 'heartbeat';

interface RawStanza {
  kind: StanzaKind;
  line: number;
  values: Map<string, { value: string; line: number }>;
}

const KEYS: Readonly<Record<StanzaKind, readonly string[]>> = {
  cluster: ['name', 'node_count', 'heartbeat_mode', ...Object.values(TIMEOUT_KEYS), 'cluster_key_file'],
  node: ['name', 'cluster', 'number', 'ip_address', 'ip_port'],
  heartbeat: ['region', 'cluster'],
};
const REQUIRED: Readonly<Record<StanzaKind, readonly string[]>> = {
  cluster: ['name', 'node_count'],
  node: ['name', 'cluster', 'number', 'ip_address'],
  heartbeat: ['region', 'cluster'],
};

const HEADER_RE = /^([A-Za-z_][A-Za-z0-9_]*):\s*$/;
const PARAM_RE = /^[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)[ \t]*$/;

/**
 * Parses cluster.conf text. Throws O2nmError('EPARSE') at the first syntax error, naming
 * `fileName:line`. Values are type-checked (integers, heartbeat_mode); ranges and
 * cross-stanza rules are validate()'s.
 */
export function parseClusterConf(text: string, fileName = CONFIG_FILE_NAME): ClusterConf {
  const fail = (line: number, msg: string): never => {
    throw new O2nmError('EPARSE', `${fileName}:${line}: ${msg}`);
  };
  const raws: RawStanza[] = [];
  let current: RawStanza | null = null;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '' || /^\s*#/.test(line)) continue;
    const header = HEADER_RE.exec(line);
    if (header) {
      const kind = header[1];
      if (kind !== 'cluster' && kind !== 'node' && kind !== 'heartbeat') {
        fail(lineNo, `unknown stanza "${kind}:" (expected cluster:, node: or heartbeat:)`);
      }
      current = { kind: kind as StanzaKind, line: lineNo, values: new Map() };
      raws.push(current);
      continue;
    }
    if (!/^[ \t]/.test(line)) {
      fail(lineNo, `expected a stanza header such as "cluster:" at column 0, or an indented "key = value" line; got ${JSON.stringify(line)}`);
    }
    const param = PARAM_RE.exec(line);
    if (!param) fail(lineNo, `expected "key = value", got ${JSON.stringify(line.trim())}`);
    const [, key, value] = param as RegExpExecArray;
    if (current === null) return fail(lineNo, `parameter "${key}" before any stanza header`);
    if (!KEYS[current.kind].includes(key)) {
      fail(lineNo, `unknown parameter "${key}" in a ${current.kind}: stanza (known: ${KEYS[current.kind].join(', ')})`);
    }
    const prev = current.values.get(key);
    if (prev) fail(lineNo, `parameter "${key}" given twice in one stanza (first at line ${prev.line})`);
    if (value === '') fail(lineNo, `parameter "${key}" has no value`);
    current.values.set(key, { value, line: lineNo });
  }

  const conf: ClusterConf = { clusters: [], nodes: [], heartbeats: [] };
  for (const raw of raws) {
    for (const key of REQUIRED[raw.kind]) {
      if (!raw.values.has(key)) fail(raw.line, `${raw.kind}: stanza has no ${key}`);
    }
    const keyLines: Record<string, number> = {};
    for (const [k, v] of raw.values) keyLines[k] = v.line;
    const source: StanzaSource = { file: fileName, line: raw.line, keyLines };
    const str = (key: string): string => (raw.values.get(key) as { value: string }).value;
    const int = (key: string): number => {
      const v = raw.values.get(key) as { value: string; line: number };
      if (!/^\d{1,15}$/.test(v.value)) fail(v.line, `${key} must be a whole decimal number, got ${JSON.stringify(v.value)}`);
      return Number(v.value);
    };
    if (raw.kind === 'cluster') {
      let heartbeatMode: HeartbeatMode = 'local';
      if (raw.values.has('heartbeat_mode')) {
        const m = str('heartbeat_mode');
        if (m !== 'local' && m !== 'global') fail(keyLines.heartbeat_mode, `heartbeat_mode must be local or global, got ${JSON.stringify(m)}`);
        heartbeatMode = m as HeartbeatMode;
      }
      const timeouts: Partial<Timeouts> = {};
      for (const field of TIMEOUT_FIELDS) {
        if (raw.values.has(TIMEOUT_KEYS[field])) timeouts[field] = int(TIMEOUT_KEYS[field]);
      }
      const c: ClusterStanza = { name: str('name'), nodeCount: int('node_count'), heartbeatMode, timeouts, source };
      if (raw.values.has('cluster_key_file')) c.clusterKeyFile = str('cluster_key_file');
      conf.clusters.push(c);
    } else if (raw.kind === 'node') {
      conf.nodes.push({
        name: str('name'),
        cluster: str('cluster'),
        number: int('number'),
        ipAddress: str('ip_address'),
        ipPort: raw.values.has('ip_port') ? int('ip_port') : DEFAULT_IP_PORT,
        source,
      });
    } else {
      conf.heartbeats.push({ region: str('region'), cluster: str('cluster'), source });
    }
  }
  return conf;
}

// ----------------------------------------------------------------------------------------
// Serialize

/**
 * Writes the canonical form: for each cluster in order, its cluster: stanza, then its
 * nodes by number, then its heartbeat regions; TAB-indented parameters, a blank line
 * between stanzas. Stanzas of clusters the file does not define are kept at the end (so
 * that validate() can still report them). parseClusterConf reads it back to the same model.
 */
export function serializeClusterConf(conf: ClusterConf): string {
  const stanzas: string[] = [];
  const stanza = (kind: StanzaKind, params: Array<[string, string | number]>): void => {
    for (const [k, v] of params) {
      // Anything else would not read back as the same value.
      assert(!/[\n\r]/.test(String(v)) && String(v).trim() === String(v) && String(v) !== '', `cannot write ${k} = ${JSON.stringify(v)}`);
    }
    stanzas.push(`${kind}:\n${params.map(([k, v]) => `\t${k} = ${v}\n`).join('')}`);
  };
  const writeNodes = (nodes: NodeStanza[]): void => {
    for (const n of [...nodes].sort((a, b) => a.number - b.number)) {
      stanza('node', [['name', n.name], ['cluster', n.cluster], ['number', n.number], ['ip_address', n.ipAddress], ['ip_port', n.ipPort]]);
    }
  };
  const writeHeartbeats = (hbs: HeartbeatStanza[]): void => {
    for (const h of hbs) stanza('heartbeat', [['region', h.region], ['cluster', h.cluster]]);
  };
  const known = new Set(conf.clusters.map((c) => c.name));
  for (const c of conf.clusters) {
    const params: Array<[string, string | number]> = [['name', c.name], ['heartbeat_mode', c.heartbeatMode], ['node_count', c.nodeCount]];
    for (const field of TIMEOUT_FIELDS) {
      const v = c.timeouts[field];
      if (v !== undefined) params.push([TIMEOUT_KEYS[field], v]);
    }
    if (c.clusterKeyFile !== undefined) params.push(['cluster_key_file', c.clusterKeyFile]);
    stanza('cluster', params);
    writeNodes(conf.nodes.filter((n) => n.cluster === c.name));
    writeHeartbeats(conf.heartbeats.filter((h) => h.cluster === c.name));
  }
  writeNodes(conf.nodes.filter((n) => !known.has(n.cluster)));
  writeHeartbeats(conf.heartbeats.filter((h) => !known.has(h.cluster)));
  return stanzas.join('\n');
}

/** A copy without source locations (for a model the program changed: old lines mislead). */
export function withoutSources(conf: ClusterConf): ClusterConf {
  return {
    clusters: conf.clusters.map(({ source: _s, ...c }) => ({ ...c, timeouts: { ...c.timeouts } })),
    nodes: conf.nodes.map(({ source: _s, ...n }) => ({ ...n })),
    heartbeats: conf.heartbeats.map(({ source: _s, ...h }) => ({ ...h })),
  };
}

// ----------------------------------------------------------------------------------------
// Validate

const CLUSTER_NAME_RE = /^[0-9A-Za-z]{1,16}$/;
const NODE_NAME_RE = /^[0-9A-Za-z_.-]+$/;
const REGION_RE = /^[0-9A-Fa-f]{32}$/;

/** The effective timeouts of a cluster stanza: its own, defaults for the rest. */
export function clusterTimeouts(c: ClusterStanza): Timeouts {
  return { ...DEFAULT_TIMEOUTS, ...c.timeouts };
}

/** Every rule the configuration breaks, one line each ("file:line: what"); [] when valid. */
export function validationProblems(conf: ClusterConf): string[] {
  const problems: string[] = [];
  const at = (s: { source?: StanzaSource }, key?: string): string => {
    if (!s.source) return '';
    const line = (key !== undefined ? s.source.keyLines[key] : undefined) ?? s.source.line;
    return `${s.source.file}:${line}: `;
  };

  const clusters = new Map<string, ClusterStanza>();
  for (const c of conf.clusters) {
    const what = `cluster "${c.name}"`;
    if (!CLUSTER_NAME_RE.test(c.name)) {
      problems.push(`${at(c, 'name')}${what}: a cluster name is 1-${CLUSTER_NAME_LENGTH_MAX} characters of 0-9 A-Z a-z`);
    }
    const first = clusters.get(c.name);
    if (first) problems.push(`${at(c, 'name')}${what} is defined twice${first.source ? ` (first at line ${first.source.line})` : ''}`);
    else clusters.set(c.name, c);
    if (c.heartbeatMode !== 'local' && c.heartbeatMode !== 'global') {
      problems.push(`${at(c, 'heartbeat_mode')}${what}: heartbeat_mode must be local or global, got ${JSON.stringify(c.heartbeatMode)}`);
    }
    const nodeCount = conf.nodes.filter((n) => n.cluster === c.name).length;
    if (c.nodeCount !== nodeCount) {
      problems.push(`${at(c, 'node_count')}${what}: node_count is ${c.nodeCount} but the file has ${nodeCount} node stanza${nodeCount === 1 ? '' : 's'} for it`);
    }
    let timeoutsInRange = true;
    for (const field of TIMEOUT_FIELDS) {
      const v = c.timeouts[field];
      if (v === undefined) continue;
      const { min, max } = TIMEOUT_LIMITS[field];
      if (!Number.isSafeInteger(v) || v < min || v > max) {
        timeoutsInRange = false;
        problems.push(`${at(c, TIMEOUT_KEYS[field])}${what}: ${TIMEOUT_KEYS[field]} must be ${min}..${max}, got ${v}`);
      }
    }
    if (timeoutsInRange) {
      for (const p of timeoutRelationProblems(clusterTimeouts(c))) problems.push(`${at(c)}${what}: ${p}`);
    }
    if (c.clusterKeyFile !== undefined && (c.clusterKeyFile.trim() !== c.clusterKeyFile || c.clusterKeyFile === '' || /[\n\r]/.test(c.clusterKeyFile))) {
      problems.push(`${at(c, 'cluster_key_file')}${what}: cluster_key_file ${JSON.stringify(c.clusterKeyFile)} is not a usable path`);
    }
  }

  // Uniqueness is per cluster: each cluster is its own o2nm namespace.
  const seen = { number: new Map<string, NodeStanza>(), name: new Map<string, NodeStanza>(), addr: new Map<string, NodeStanza>() };
  const firstAt = (n: NodeStanza): string => (n.source ? ` (line ${n.source.line})` : '');
  for (const n of conf.nodes) {
    const what = `node "${n.name}"`;
    if (!clusters.has(n.cluster)) {
      problems.push(`${at(n, 'cluster')}${what} belongs to cluster "${n.cluster}", which has no cluster: stanza`);
    }
    if (!NODE_NAME_RE.test(n.name) || Buffer.byteLength(n.name) > NODE_NAME_BYTES_MAX) {
      problems.push(`${at(n, 'name')}${what}: a node name is its host name, 1-${NODE_NAME_BYTES_MAX} characters of 0-9 A-Z a-z . _ -`);
    }
    if (!Number.isSafeInteger(n.number) || n.number < 0 || n.number > NODE_NUMBER_MAX) {
      problems.push(`${at(n, 'number')}${what}: number must be 0..${NODE_NUMBER_MAX}, got ${n.number}`);
    }
    if (!isUsableIPv4(n.ipAddress)) {
      problems.push(`${at(n, 'ip_address')}${what}: ip_address ${JSON.stringify(n.ipAddress)} is not a unicast IPv4 address (a.b.c.d)`);
    }
    if (!Number.isSafeInteger(n.ipPort) || n.ipPort < 1 || n.ipPort > 65535) {
      problems.push(`${at(n, 'ip_port')}${what}: ip_port must be 1..65535, got ${n.ipPort}`);
    }
    const checks: Array<[keyof typeof seen, string, string]> = [
      ['number', `${n.cluster}\0${n.number}`, `number ${n.number}`],
      ['name', `${n.cluster}\0${n.name}`, `name "${n.name}"`],
      ['addr', `${n.cluster}\0${n.ipAddress}:${n.ipPort}`, `address ${n.ipAddress}:${n.ipPort}`],
    ];
    for (const [kind, key, desc] of checks) {
      const other = seen[kind].get(key);
      if (other) problems.push(`${at(n, kind === 'addr' ? 'ip_address' : kind)}${what} has the same ${desc} as node "${other.name}"${firstAt(other)} in cluster "${n.cluster}"`);
      else seen[kind].set(key, n);
    }
  }

  const regions = new Map<string, HeartbeatStanza>();
  const regionCount = new Map<string, number>();
  for (const h of conf.heartbeats) {
    const what = `heartbeat region "${h.region}"`;
    if (!clusters.has(h.cluster)) problems.push(`${at(h, 'cluster')}${what} belongs to cluster "${h.cluster}", which has no cluster: stanza`);
    if (!REGION_RE.test(h.region)) problems.push(`${at(h, 'region')}${what}: a region is a volume UUID, 32 hex digits`);
    const key = `${h.cluster}\0${h.region.toLowerCase()}`;
    if (regions.has(key)) problems.push(`${at(h, 'region')}${what} is listed twice for cluster "${h.cluster}"`);
    regions.set(key, h);
    const count = (regionCount.get(h.cluster) ?? 0) + 1;
    regionCount.set(h.cluster, count);
    if (count === HEARTBEAT_REGIONS_MAX + 1) problems.push(`${at(h)}cluster "${h.cluster}" has more than ${HEARTBEAT_REGIONS_MAX} heartbeat regions`);
  }
  return problems;
}

/** Throws O2nmError('EINVAL') listing every problem, or returns. */
export function validate(conf: ClusterConf): void {
  const problems = validationProblems(conf);
  if (problems.length > 0) {
    throw new O2nmError('EINVAL', `invalid cluster configuration:\n  ${problems.join('\n  ')}`, problems);
  }
}

/** A dotted-quad IPv4 address a node can bind to and be dialled at. */
export function isUsableIPv4(ip: string): boolean {
  if (!isIPv4(ip)) return false;
  const first = Number(ip.split('.')[0]);
  // 0.x is "this network", 224-239 multicast, 240+ reserved and broadcast.
  return first !== 0 && first < 224;
}

// ----------------------------------------------------------------------------------------
// Locations, environment, local node

/** The config directory: $O2CB_CONFIG_DIR, else /etc/o2fs. */
export function configDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.O2CB_CONFIG_DIR || DEFAULT_CONFIG_DIR;
}

/** The runtime directory for pid files, sockets and logs: $O2CB_RUN_DIR, else /run/o2cb. */
export function runDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.O2CB_RUN_DIR || DEFAULT_RUN_DIR;
}

export function configFilePath(configDir: string): string {
  return path.join(configDir, CONFIG_FILE_NAME);
}

/** The daemon's pid file, unix socket and log, by cluster (the o2cbd contract). */
export function pidFilePath(runDir: string, cluster: string): string {
  return path.join(runDir, `${cluster}.pid`);
}
export function socketPath(runDir: string, cluster: string): string {
  return path.join(runDir, `${cluster}.sock`);
}
export function logFilePath(runDir: string, cluster: string): string {
  return path.join(runDir, `${cluster}.log`);
}

/** This host's node name: the host name without its domain. */
export function shortHostname(): string {
  return os.hostname().split('.')[0];
}

/** The key file of a cluster stanza as an absolute path. */
export function clusterKeyPath(configDir: string, c: Pick<ClusterStanza, 'clusterKeyFile'>): string {
  return path.resolve(configDir, c.clusterKeyFile ?? DEFAULT_KEY_FILE_NAME);
}

/**
 * The active cluster: `clusterName`, else $O2CB_BOOTCLUSTER, else the only one. Throws
 * when it is unknown or when several exist and none is named.
 */
export function selectCluster(conf: ClusterConf, clusterName?: string, env: NodeJS.ProcessEnv = process.env): ClusterStanza {
  const names = conf.clusters.map((c) => c.name);
  const wanted = clusterName ?? (env.O2CB_BOOTCLUSTER || undefined);
  if (wanted !== undefined) {
    const c = conf.clusters.find((x) => x.name === wanted);
    if (!c) {
      const from = clusterName !== undefined ? '' : ' (from O2CB_BOOTCLUSTER)';
      throw new O2nmError('ENOENT', `unknown cluster "${wanted}"${from}; configured: ${names.length ? names.join(', ') : 'none'}`);
    }
    return c;
  }
  if (conf.clusters.length === 1) return conf.clusters[0];
  if (conf.clusters.length === 0) throw new O2nmError('ENOENT', 'no cluster is configured (create one with o2cb add-cluster)');
  throw new O2nmError('EAMBIGUOUS', `several clusters are configured (${names.join(', ')}); name one with --cluster NAME or O2CB_BOOTCLUSTER`);
}

/**
 * This host's node in `cluster`: the node named `nodeName`, else $O2CB_NODE_NAME, else
 * the short host name. Throws listing the cluster's node names when none matches.
 */
export function selectLocalNode(conf: ClusterConf, cluster: string, nodeName?: string, env: NodeJS.ProcessEnv = process.env): NodeStanza {
  const nodes = conf.nodes.filter((n) => n.cluster === cluster);
  let wanted: string;
  let from: string;
  if (nodeName !== undefined) {
    wanted = nodeName;
    from = 'named';
  } else if (env.O2CB_NODE_NAME) {
    wanted = env.O2CB_NODE_NAME;
    from = 'named by O2CB_NODE_NAME';
  } else {
    wanted = shortHostname();
    from = 'this host name';
  }
  const n = nodes.find((x) => x.name === wanted);
  if (!n) {
    const list = nodes.length ? nodes.map((x) => x.name).join(', ') : 'none';
    throw new O2nmError(
      'ENOLOCAL',
      `no node of cluster "${cluster}" is called "${wanted}" (${from}); its nodes are: ${list}. ` +
        'Add this host with o2cb add-node, or pick a node with --node NAME or O2CB_NODE_NAME',
    );
  }
  return n;
}

// ----------------------------------------------------------------------------------------
// Files

/** Reads and parses DIR/cluster.conf; null when the file does not exist. */
export async function readConfFile(configDir: string): Promise<ClusterConf | null> {
  const file = configFilePath(configDir);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseClusterConf(text, file);
}

/**
 * Replaces DIR/cluster.conf atomically: the new text goes to a temp file in the same
 * directory, is flushed, and is renamed over the old one, so a reader (or a crash) sees
 * the old file or the new one, never half of either. The model is validated first and
 * the text is checked to read back as the same model.
 */
export async function writeConfFile(configDir: string, conf: ClusterConf): Promise<void> {
  const clean = withoutSources(conf);
  validate(clean);
  const text = serializeClusterConf(clean);
  assert(deepEqualJson(parseModel(text), clean), 'serialized cluster.conf does not read back as the same configuration');
  await fsp.mkdir(configDir, { recursive: true, mode: 0o755 });
  const file = configFilePath(configDir);
  const tmp = `${file}.tmp.${process.pid}`;
  const fh = await fsp.open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  // The rename itself is durable only once the directory is.
  const dh = await fsp.open(configDir, fsConstants.O_RDONLY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

function parseModel(text: string): ClusterConf {
  return withoutSources(parseClusterConf(text, '<serialized>'));
}

function deepEqualJson(a: unknown, b: unknown): boolean {
  const canon = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(canon);
    if (x && typeof x === 'object') {
      return Object.fromEntries(Object.keys(x).filter((k) => (x as Record<string, unknown>)[k] !== undefined).sort().map((k) => [k, canon((x as Record<string, unknown>)[k])]));
    }
    return x;
  };
  const sortNodes = (c: ClusterConf): ClusterConf => ({ ...c, nodes: [...c.nodes].sort((p, q) => (p.cluster === q.cluster ? p.number - q.number : p.cluster < q.cluster ? -1 : 1)) });
  const prep = (x: unknown): unknown => canon(sortNodes(x as ClusterConf));
  return JSON.stringify(prep(a)) === JSON.stringify(prep(b));
}

const LOCK_WAIT_MS_MAX = 5000;
const LOCK_POLL_MS = 50;

/**
 * Runs `fn` holding DIR/cluster.conf.lock, so two o2cb commands changing the file at once
 * cannot lose one another's change. A lock left by a process that no longer exists is
 * taken over; a live holder is waited for, at most LOCK_WAIT_MS_MAX.
 */
export async function withConfigLock<T>(configDir: string, fn: () => Promise<T>): Promise<T> {
  await fsp.mkdir(configDir, { recursive: true, mode: 0o755 });
  const lockFile = `${configFilePath(configDir)}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS_MAX;
  for (;;) {
    try {
      const fh = await fsp.open(lockFile, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number((await fsp.readFile(lockFile, 'utf8').catch(() => '')).trim());
    if (!Number.isSafeInteger(holder) || holder <= 0 || !processAlive(holder)) {
      // Stale (or being written right now: the retry sorts that out).
      await fsp.rm(lockFile, { force: true });
      continue;
    }
    if (Date.now() >= deadline) throw new O2nmError('EBUSY', `${lockFile} is held by process ${holder}, another o2cb changing the configuration`);
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
  try {
    return await fn();
  } finally {
    await fsp.rm(lockFile, { force: true });
  }
}

/** True when a process with this pid exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // "pid (comm) S ..."; comm may hold spaces and parentheses, the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Creates a new random cluster key (mode 0600) unless the file exists; an existing key is
 * kept (it may be the copy every other node shares) and checked. Returns true if created.
 */
export async function createClusterKey(keyPath: string): Promise<boolean> {
  await fsp.mkdir(path.dirname(keyPath), { recursive: true, mode: 0o755 });
  try {
    const fh = await fsp.open(keyPath, 'wx', 0o600);
    try {
      await fh.writeFile(randomBytes(CLUSTER_KEY_BYTES));
      await fh.sync();
    } finally {
      await fh.close();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await readClusterKey(keyPath);
  return false;
}

/** Reads a cluster key, refusing one that is short or readable by others than its owner. */
export async function readClusterKey(keyPath: string): Promise<Buffer> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(keyPath, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new O2nmError('ENOENT', `cluster key ${keyPath} does not exist; copy it from a node of the cluster (every node needs the same key), or create it with o2cb add-cluster`);
    }
    throw new O2nmError('EKEY', `cannot read cluster key ${keyPath}: ${(err as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new O2nmError('EKEY', `cluster key ${keyPath} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new O2nmError('EKEY', `cluster key ${keyPath} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: others could read the cluster secret; chmod 600 it`);
    }
    const key = await fh.readFile();
    if (key.length < CLUSTER_KEY_BYTES_MIN || key.length > 4096) {
      throw new O2nmError('EKEY', `cluster key ${keyPath} is ${key.length} bytes; expected ${CLUSTER_KEY_BYTES} random bytes`);
    }
    return key;
  } finally {
    await fh.close();
  }
}

// ----------------------------------------------------------------------------------------
// Resolved configuration

export interface ClusterNode {
  num: number;
  name: string;
  ip: string;
  port: number;
}

/** What a node needs to join its cluster: everything checked, the key read. */
export interface ResolvedCluster {
  name: string;
  heartbeatMode: HeartbeatMode;
  /** By node number. */
  nodes: ClusterNode[];
  localNode: ClusterNode;
  timeouts: Timeouts;
  /** Global heartbeat regions (volume UUIDs, lowercase), in file order. */
  heartbeatRegions: string[];
  clusterKey: Buffer;
  configDir: string;
  configFile: string;
  runDir: string;
}

export interface LoadConfigOptions {
  configDir?: string;
  runDir?: string;
  clusterName?: string;
  nodeName?: string;
  env?: NodeJS.ProcessEnv;
}

function toClusterNode(n: NodeStanza): ClusterNode {
  return { num: n.number, name: n.name, ip: n.ipAddress, port: n.ipPort };
}

/**
 * Reads, parses and validates the configuration, picks the active cluster and this
 * node, and reads the cluster key. Every failure is an O2nmError a person can act on.
 */
export async function loadConfig(opts: LoadConfigOptions = {}): Promise<ResolvedCluster> {
  const env = opts.env ?? process.env;
  const configDir = path.resolve(opts.configDir ?? configDirFromEnv(env));
  const runDir = path.resolve(opts.runDir ?? runDirFromEnv(env));
  const conf = await readConfFile(configDir);
  if (conf === null) {
    throw new O2nmError('ENOENT', `no cluster configuration: ${configFilePath(configDir)} does not exist (create it with o2cb add-cluster, or use --config-dir / O2CB_CONFIG_DIR)`);
  }
  validate(conf);
  const c = selectCluster(conf, opts.clusterName, env);
  const local = selectLocalNode(conf, c.name, opts.nodeName, env);
  const clusterKey = await readClusterKey(clusterKeyPath(configDir, c));
  const nodes = conf.nodes.filter((n) => n.cluster === c.name).sort((a, b) => a.number - b.number).map(toClusterNode);
  assert(nodes.length === c.nodeCount && nodes.length <= NODE_NUMBER_MAX + 1, 'validated node_count');
  return {
    name: c.name,
    heartbeatMode: c.heartbeatMode,
    nodes,
    localNode: toClusterNode(local),
    timeouts: clusterTimeouts(c),
    heartbeatRegions: conf.heartbeats.filter((h) => h.cluster === c.name).map((h) => h.region.toLowerCase()),
    clusterKey,
    configDir,
    configFile: configFilePath(configDir),
    runDir,
  };
}

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`o2nm: assertion failed: ${msg}`);
}
