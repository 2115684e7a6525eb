// o2nm in-process: cluster.conf parse/serialize round trips, every parse and validation
// error with its file:line, timeout rules, config files, the lock, and loadConfig's choice
// of cluster and local node.
import t from 'tap';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import {
  ClusterConf, DEFAULT_TIMEOUTS, O2nmError, clusterTimeouts, configDirFromEnv, createClusterKey, heartbeatDeadMs,
  heartbeatWriteTimeoutMs, loadConfig, parseClusterConf, quorumDelayMs, readClusterKey, readConfFile, runDirFromEnv,
  serializeClusterConf, shortHostname, timeoutRelationProblems, validate, validationProblems, withConfigLock,
  withoutSources, writeConfFile,
} from '../../dlm/o2cb/o2nm';
import { tempDir as tmp } from '../tools/run';


// The layout OCFS2's documentation shows for a global-heartbeat cluster (cluster stanza,
// then nodes, then heartbeat regions), followed by a second cluster in the older o2cb_ctl
// layout (nodes before their cluster, keys in another order, spaces for indentation), with
// comments and CRLF line ends that a hand-edited file may have.
const MULTI = [
  '# two clusters; web is the active one on its nodes',
  'cluster:',
  '\tname = web',
  '\theartbeat_mode = global',
  '\tnode_count = 3',
  '\theartbeat_threshold = 20',
  '\tidle_timeout_ms = 8000',
  '\tcluster_key_file = keys/web.key',
  '',
  'node:',
  '\tname = www7',
  '\tcluster = web',
  '\tnumber = 7',
  '\tip_address = 192.168.10.107',
  '\tip_port = 7777',
  '',
  'node:',
  '\tname = www2',
  '\tcluster = web',
  '\tnumber = 2',
  '\tip_address = 192.168.10.102',
  '\tip_port = 7777',
  '',
  'node:',
  '\tname = www3',
  '\tcluster = web',
  '\tnumber = 3',
  '\tip_address = 192.168.10.103',
  '\tip_port = 7778',
  '',
  'heartbeat:',
  '\tregion = 5A3D9F1C0B2E4D6F8A1B3C5D7E9F0A2B',
  '\tcluster = web',
  '',
  'node:\r',
  '        ip_port = 7777\r',
  '        ip_address = 10.1.0.1\r',
  '        number = 0\r',
  '        name = db1\r',
  '        cluster = db\r',
  '\r',
  'node:',
  '    ip_address = 10.1.0.2',
  '    number = 1',
  '    name = db2',
  '    cluster = db',
  '',
  'cluster:',
  '    node_count = 2',
  '    name = db',
  '',
].join('\n');

t.test('a realistic multi-cluster file parses, validates and round-trips', async (t) => {
  const conf = parseClusterConf(MULTI, '/etc/o2fs/cluster.conf');
  validate(conf);
  t.same(conf.clusters.map((c) => [c.name, c.heartbeatMode, c.nodeCount]), [['web', 'global', 3], ['db', 'local', 2]]);
  t.same(conf.clusters[0].timeouts, { heartbeatDeadThreshold: 20, idleTimeoutMs: 8000 });
  t.equal(conf.clusters[0].clusterKeyFile, 'keys/web.key');
  t.equal(conf.clusters[1].clusterKeyFile, undefined);
  t.same(clusterTimeouts(conf.clusters[1]), DEFAULT_TIMEOUTS, 'no timeouts in the file: defaults');
  const db2 = conf.nodes.find((n) => n.name === 'db2');
  t.equal(db2?.ipPort, 7777, 'ip_port defaults to 7777');
  t.same(db2?.source?.keyLines.ip_address, 43, 'key lines recorded');
  t.same(conf.heartbeats, [{ region: '5A3D9F1C0B2E4D6F8A1B3C5D7E9F0A2B', cluster: 'web', source: conf.heartbeats[0].source }]);

  const text = serializeClusterConf(conf);
  const again = parseClusterConf(text);
  t.same(withoutSources(again), {
    ...withoutSources(conf),
    // canonical order: each cluster's nodes by number right after it
    nodes: withoutSources(conf).nodes.sort((a, b) => (a.cluster === b.cluster ? a.number - b.number : a.cluster === 'web' ? -1 : 1)),
  });
  t.equal(serializeClusterConf(again), text, 'the canonical form is a fixed point');
  t.match(text, /^cluster:\n\tname = web\n\theartbeat_mode = global\n\tnode_count = 3\n\theartbeat_threshold = 20\n\tidle_timeout_ms = 8000\n\tcluster_key_file = keys\/web.key\n\nnode:\n\tname = www2\n/);
  t.notMatch(text, /#|\r| {2}/, 'comments, CRs and space indentation are not written back');
  t.match(text, /\n\nheartbeat:\n\tregion = 5A3D9F1C0B2E4D6F8A1B3C5D7E9F0A2B\n\tcluster = web\n\ncluster:\n\tname = db\n/);
});

t.test('parse errors name the file and line', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['cluster:\n\tname = a\n\tnode_count = 0\n\nfrob:\n', /^f\.conf:5: unknown stanza "frob:"/],
    ['\tname = a\n', /^f\.conf:1: parameter "name" before any stanza header/],
    ['cluster:\nname = a\n', /^f\.conf:2: expected a stanza header .* at column 0, or an indented "key = value" line/],
    ['cluster:\n\tname a\n', /^f\.conf:2: expected "key = value", got "name a"/],
    ['cluster:\n\tname = a\n\tnode_count = 0\n\tcolour = red\n', /^f\.conf:4: unknown parameter "colour" in a cluster: stanza/],
    ['cluster:\n\tname = a\n\tname = b\n', /^f\.conf:3: parameter "name" given twice in one stanza \(first at line 2\)/],
    ['cluster:\n\tname =\n', /^f\.conf:2: parameter "name" has no value/],
    ['cluster:\n\tname = a\n\tnode_count = 1\n\nnode:\n\tname = n\n\tcluster = a\n\tip_address = 10.0.0.1\n', /^f\.conf:5: node: stanza has no number/],
    ['cluster:\n\tname = a\n', /^f\.conf:1: cluster: stanza has no node_count/],
    ['cluster:\n\tname = a\n\tnode_count = two\n', /^f\.conf:3: node_count must be a whole decimal number, got "two"/],
    ['cluster:\n\tname = a\n\tnode_count = -1\n', /^f\.conf:3: node_count must be a whole decimal number/],
    ['cluster:\n\tname = a\n\tnode_count = 0\n\theartbeat_mode = disk\n', /^f\.conf:4: heartbeat_mode must be local or global, got "disk"/],
    ['cluster:\n\tname = a\n\tnode_count = 0\n\tidle_timeout_ms = 5s\n', /^f\.conf:4: idle_timeout_ms must be a whole decimal number/],
  ];
  for (const [text, re] of cases) {
    let caught: unknown;
    try {
      parseClusterConf(text, 'f.conf');
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof O2nmError, `O2nmError for ${JSON.stringify(text)}`);
    t.equal((caught as O2nmError).code, 'EPARSE');
    t.match((caught as O2nmError).message, re);
  }
});

/** A valid two-node cluster "c" to break one rule at a time. */
function base(): string {
  return [
    'cluster:', '\tname = c', '\tnode_count = 2', '',
    'node:', '\tname = n0', '\tcluster = c', '\tnumber = 0', '\tip_address = 10.0.0.1', '\tip_port = 7777', '',
    'node:', '\tname = n1', '\tcluster = c', '\tnumber = 1', '\tip_address = 10.0.0.2', '\tip_port = 7777', '',
  ].join('\n');
}

function problemsOf(text: string): string[] {
  return validationProblems(parseClusterConf(text, 'c.conf'));
}

t.test('every validation rule, with file:line', async (t) => {
  t.same(problemsOf(base()), [], 'the base file is valid');
  const edit = (from: string, to: string): string => {
    const b = base();
    if (!b.includes(from)) throw new Error(`base has no ${from}`);
    return b.replace(from, to);
  };
  const cases: Array<[string, string, RegExp]> = [
    ['cluster name too long', edit('name = c\n', 'name = c1234567890abcdefg\n').replace(/cluster = c\n/g, 'cluster = c1234567890abcdefg\n'), /^c\.conf:2: cluster "c1234567890abcdefg": a cluster name is 1-16 characters of 0-9 A-Z a-z$/],
    ['cluster name not alphanumeric', edit('name = c\n', 'name = c_x\n').replace(/cluster = c\n/g, 'cluster = c_x\n'), /^c\.conf:2: cluster "c_x": a cluster name is 1-16/],
    ['node_count disagrees', edit('node_count = 2', 'node_count = 3'), /^c\.conf:3: cluster "c": node_count is 3 but the file has 2 node stanzas for it$/],
    ['node of a missing cluster', edit('cluster = c\n\tnumber = 1', 'cluster = d\n\tnumber = 1'), /^c\.conf:14: node "n1" belongs to cluster "d", which has no cluster: stanza$/],
    ['number out of range', edit('number = 1', 'number = 255'), /^c\.conf:15: node "n1": number must be 0\.\.254, got 255$/],
    ['bad IP', edit('10.0.0.2', '10.0.0'), /^c\.conf:16: node "n1": ip_address "10\.0\.0" is not a unicast IPv4 address/],
    ['IP octet too large', edit('10.0.0.2', '10.0.0.256'), /^c\.conf:16: node "n1": ip_address "10\.0\.0\.256"/],
    ['unspecified IP', edit('10.0.0.2', '0.0.0.0'), /^c\.conf:16: node "n1": ip_address "0\.0\.0\.0"/],
    ['multicast IP', edit('10.0.0.2', '224.0.0.1'), /^c\.conf:16: node "n1": ip_address "224\.0\.0\.1"/],
    ['IPv6', edit('10.0.0.2', 'fe80::1'), /^c\.conf:16: node "n1": ip_address "fe80::1"/],
    ['port 0', edit('10.0.0.2\n\tip_port = 7777', '10.0.0.2\n\tip_port = 0'), /^c\.conf:17: node "n1": ip_port must be 1\.\.65535, got 0$/],
    ['port too large', edit('10.0.0.2\n\tip_port = 7777', '10.0.0.2\n\tip_port = 65536'), /^c\.conf:17: node "n1": ip_port must be 1\.\.65535, got 65536$/],
    ['bad node name', edit('name = n1', 'name = n 1'), /^c\.conf:13: node "n 1": a node name is its host name/],
    ['duplicate number', edit('number = 1', 'number = 0'), /^c\.conf:15: node "n1" has the same number 0 as node "n0" \(line 5\) in cluster "c"$/],
    ['duplicate name', edit('name = n1', 'name = n0'), /^c\.conf:13: node "n0" has the same name "n0" as node "n0" \(line 5\) in cluster "c"$/],
    ['duplicate ip:port', edit('10.0.0.2', '10.0.0.1'), /^c\.conf:16: node "n1" has the same address 10\.0\.0\.1:7777 as node "n0" \(line 5\)/],
    ['duplicate cluster', `${base()}\ncluster:\n\tname = c\n\tnode_count = 2\n`, /^c\.conf:20: cluster "c" is defined twice \(first at line 1\)$/],
    ['bad region', `${base()}\nheartbeat:\n\tregion = 1234\n\tcluster = c\n`, /^c\.conf:20: heartbeat region "1234": a region is a volume UUID, 32 hex digits$/],
    ['region of a missing cluster', `${base()}\nheartbeat:\n\tregion = ${'ab'.repeat(16)}\n\tcluster = z\n`, /^c\.conf:21: heartbeat region "a+b.*" belongs to cluster "z"/],
    ['interval too short', edit('node_count = 2', 'node_count = 2\n\theartbeat_interval_ms = 50'), /^c\.conf:4: cluster "c": heartbeat_interval_ms must be 100\.\.60000, got 50$/],
    ['threshold below OCFS2 minimum', edit('node_count = 2', 'node_count = 2\n\theartbeat_threshold = 1'), /^c\.conf:4: cluster "c": heartbeat_threshold must be 2\.\.1000, got 1$/],
    ['idle timeout below minimum', edit('node_count = 2', 'node_count = 2\n\tidle_timeout_ms = 999'), /idle_timeout_ms must be 1000\.\.3600000, got 999$/],
    ['keepalive not below idle', edit('node_count = 2', 'node_count = 2\n\tkeepalive_delay_ms = 5000'), /^c\.conf:1: cluster "c": keepalive_delay_ms \(5000\) must be less than idle_timeout_ms \(5000\)$/],
    ['reconnect not below idle', edit('node_count = 2', 'node_count = 2\n\treconnect_delay_ms = 6000'), /^c\.conf:1: cluster "c": reconnect_delay_ms \(6000\) must be less than idle_timeout_ms \(5000\)$/],
    ['idle not below heartbeat dead time', edit('node_count = 2', 'node_count = 2\n\theartbeat_threshold = 10'), /^c\.conf:1: cluster "c": idle_timeout_ms \(5000\) must be less than the heartbeat dead time, heartbeat_threshold × heartbeat_interval_ms = 10 × 500 = 5000 ms$/],
  ];
  for (const [what, text, re] of cases) {
    const problems = problemsOf(text);
    t.ok(problems.some((p) => re.test(p)), `${what}: ${JSON.stringify(problems)}`);
    t.throws(() => validate(parseClusterConf(text, 'c.conf')), { code: 'EINVAL' }, `${what}: validate throws`);
  }
  // One rule, one cluster: the same numbers and names in another cluster are fine.
  const other = base().replace(/\bc\b/g, 'd');
  t.same(problemsOf(`${base()}\n${other}`), [], 'two clusters may reuse node numbers, names and addresses');
  // A program-built model has no lines; its messages still say which stanza.
  const conf = parseClusterConf(base());
  const clean = withoutSources(conf);
  clean.nodes[1].ipAddress = 'nope';
  t.same(validationProblems(clean), ['node "n1": ip_address "nope" is not a unicast IPv4 address (a.b.c.d)']);
  // Several problems are all reported.
  const many = problemsOf(edit('node_count = 2', 'node_count = 5').replace('10.0.0.2', 'x'));
  t.equal(many.length, 2);
  try {
    validate(parseClusterConf(edit('node_count = 2', 'node_count = 5').replace('10.0.0.2', 'x'), 'c.conf'));
    t.fail('validate should throw');
  } catch (err) {
    t.match((err as Error).message, /^invalid cluster configuration:\n {2}c\.conf:3: .*node_count is 5.*\n {2}c\.conf:16: .*ip_address "x"/);
  }
});

t.test('default timeouts fail over in under 10 s and obey the relations', async (t) => {
  t.same(timeoutRelationProblems(DEFAULT_TIMEOUTS), []);
  t.equal(heartbeatDeadMs(DEFAULT_TIMEOUTS), 6000);
  t.ok(heartbeatDeadMs(DEFAULT_TIMEOUTS) + DEFAULT_TIMEOUTS.heartbeatIntervalMs < 10_000, 'dead time plus one sample under 10 s');
  t.ok(heartbeatWriteTimeoutMs(DEFAULT_TIMEOUTS) < heartbeatDeadMs(DEFAULT_TIMEOUTS), 'a hung writer fences before others declare it dead');
  t.equal(quorumDelayMs(DEFAULT_TIMEOUTS), 7000);
  t.ok(Object.isFrozen(DEFAULT_TIMEOUTS));
});

t.test('environment defaults for the directories', async (t) => {
  t.equal(configDirFromEnv({}), '/etc/o2fs');
  t.equal(configDirFromEnv({ O2CB_CONFIG_DIR: '/x/y' }), '/x/y');
  t.equal(runDirFromEnv({}), '/run/o2cb');
  t.equal(runDirFromEnv({ O2CB_RUN_DIR: '/r' }), '/r');
});

async function writeSetup(dir: string, text: string, keyMode = 0o600): Promise<void> {
  await fsp.writeFile(path.join(dir, 'cluster.conf'), text);
  await fsp.writeFile(path.join(dir, 'cluster.key'), Buffer.alloc(32, 7), { mode: keyMode });
  await fsp.chmod(path.join(dir, 'cluster.key'), keyMode);
}

t.test('loadConfig: the local node by host name, by --node, by O2CB_NODE_NAME', async (t) => {
  const dir = tmp(t, 'o2nm-load-');
  const host = shortHostname();
  t.notOk(host.includes('.'), 'short host name has no domain');
  const text = base().replace('name = n1', `name = ${host}`).replace('node_count = 2', 'node_count = 2\n\tidle_timeout_ms = 4000');
  await writeSetup(dir, text);

  const r = await loadConfig({ configDir: dir, env: { O2CB_RUN_DIR: '/tmp/o2cb-run-x' } });
  t.equal(r.name, 'c');
  t.same(r.localNode, { num: 1, name: host, ip: '10.0.0.2', port: 7777 });
  t.same(r.nodes.map((n) => n.num), [0, 1]);
  t.same(r.timeouts, { ...DEFAULT_TIMEOUTS, idleTimeoutMs: 4000 });
  t.same(r.clusterKey, Buffer.alloc(32, 7));
  t.equal(r.configDir, dir);
  t.equal(r.configFile, path.join(dir, 'cluster.conf'));
  t.equal(r.runDir, '/tmp/o2cb-run-x');
  t.equal(r.heartbeatMode, 'local');

  const byName = await loadConfig({ configDir: dir, nodeName: 'n0', env: { O2CB_NODE_NAME: host } });
  t.equal(byName.localNode.num, 0, 'nodeName wins over the environment');
  const byEnv = await loadConfig({ configDir: dir, env: { O2CB_NODE_NAME: 'n0' } });
  t.equal(byEnv.localNode.num, 0, 'O2CB_NODE_NAME wins over the host name');
  t.equal(byEnv.runDir, '/run/o2cb');
  const byEnvDir = await loadConfig({ env: { O2CB_CONFIG_DIR: dir, O2CB_NODE_NAME: 'n0' } });
  t.equal(byEnvDir.configDir, dir, 'O2CB_CONFIG_DIR');

  await t.rejects(loadConfig({ configDir: dir, nodeName: 'zz', env: {} }), {
    code: 'ENOLOCAL',
    message: new RegExp(`^no node of cluster "c" is called "zz" \\(named\\); its nodes are: n0, ${host}\\.`),
  });
  await writeSetup(dir, base());
  await t.rejects(loadConfig({ configDir: dir, env: {} }), {
    code: 'ENOLOCAL',
    message: new RegExp(`is called "${host}" \\(this host name\\); its nodes are: n0, n1`),
  });
});

t.test('loadConfig: choosing the cluster, and what it refuses', async (t) => {
  const dir = tmp(t, 'o2nm-load2-');
  const two = `${base()}\n${base().replace(/\bc\b/g, 'd')}`;
  await writeSetup(dir, two);
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: {} }), { code: 'EAMBIGUOUS', message: /several clusters are configured \(c, d\); name one with --cluster NAME or O2CB_BOOTCLUSTER/ });
  t.equal((await loadConfig({ configDir: dir, nodeName: 'n0', clusterName: 'd', env: { O2CB_BOOTCLUSTER: 'c' } })).name, 'd', 'clusterName wins');
  t.equal((await loadConfig({ configDir: dir, nodeName: 'n0', env: { O2CB_BOOTCLUSTER: 'd' } })).name, 'd', 'O2CB_BOOTCLUSTER');
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', clusterName: 'q', env: {} }), { code: 'ENOENT', message: 'unknown cluster "q"; configured: c, d' });
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: { O2CB_BOOTCLUSTER: 'q' } }), { message: 'unknown cluster "q" (from O2CB_BOOTCLUSTER); configured: c, d' });

  // Invalid and unparsable files: loadConfig says where.
  await writeSetup(dir, base().replace('node_count = 2', 'node_count = 1'));
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: {} }), { code: 'EINVAL', message: new RegExp(`${dir}/cluster\\.conf:3: cluster "c": node_count is 1`) });
  await writeSetup(dir, base().replace('\tnumber = 1', 'number = 1'));
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: {} }), { code: 'EPARSE', message: new RegExp(`^${dir}/cluster\\.conf:15: `) });

  // The key: missing, readable by others, too short.
  await writeSetup(dir, base(), 0o644);
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: {} }), { code: 'EKEY', message: /has mode 0644: others could read the cluster secret; chmod 600 it/ });
  await fsp.rm(path.join(dir, 'cluster.key'));
  await t.rejects(loadConfig({ configDir: dir, nodeName: 'n0', env: {} }), { code: 'ENOENT', message: /cluster key .*cluster\.key does not exist; copy it from a node/ });
  await fsp.writeFile(path.join(dir, 'cluster.key'), Buffer.alloc(8), { mode: 0o600 });
  await t.rejects(readClusterKey(path.join(dir, 'cluster.key')), { code: 'EKEY', message: /is 8 bytes; expected 32 random bytes/ });

  await fsp.rm(path.join(dir, 'cluster.conf'));
  await t.rejects(loadConfig({ configDir: dir, env: {} }), { code: 'ENOENT', message: /no cluster configuration: .*cluster\.conf does not exist/ });
  t.equal(await readConfFile(dir), null);
});

t.test('writeConfFile validates first and replaces the file atomically', async (t) => {
  const dir = tmp(t, 'o2nm-write-');
  const conf = parseClusterConf(base());
  await writeConfFile(dir, conf);
  const first = await fsp.readFile(path.join(dir, 'cluster.conf'), 'utf8');
  t.equal(first, serializeClusterConf(withoutSources(conf)));
  const bad: ClusterConf = withoutSources(conf);
  bad.clusters[0].nodeCount = 9;
  await t.rejects(writeConfFile(dir, bad), { code: 'EINVAL' });
  t.equal(await fsp.readFile(path.join(dir, 'cluster.conf'), 'utf8'), first, 'unchanged after a refused write');
  t.same((await fsp.readdir(dir)).sort(), ['cluster.conf'], 'no temp files left behind');
});

t.test('the config lock serialises writers and takes over a dead holder', async (t) => {
  const dir = tmp(t, 'o2nm-lock-');
  const order: string[] = [];
  const a = withConfigLock(dir, async () => {
    order.push('a+');
    await new Promise((r) => setTimeout(r, 200));
    order.push('a-');
  });
  await new Promise((r) => setTimeout(r, 20));
  const b = withConfigLock(dir, async () => {
    order.push('b+');
  });
  await Promise.all([a, b]);
  t.same(order, ['a+', 'a-', 'b+']);
  // A lock file naming a pid that does not exist (pid_max is at most 2^22).
  await fsp.writeFile(path.join(dir, 'cluster.conf.lock'), `${2 ** 22 + 5}\n`);
  t.equal(await withConfigLock(dir, async () => 'ok'), 'ok');
  t.same(await fsp.readdir(dir), [], 'lock released');
});

t.test('createClusterKey makes a private random key and keeps an existing one', async (t) => {
  const dir = tmp(t, 'o2nm-key-');
  const p = path.join(dir, 'sub', 'k.key');
  t.equal(await createClusterKey(p), true);
  const st = await fsp.stat(p);
  t.equal(st.mode & 0o777, 0o600);
  const key = await fsp.readFile(p);
  t.equal(key.length, 32);
  t.notSame(key, Buffer.alloc(32));
  t.equal(await createClusterKey(p), false);
  t.same(await fsp.readFile(p), key, 'not overwritten');
});
