// The o2cb command end to end, as a person or a script runs it (node dist/tools/o2cb.js):
// configuration commands in a temp config dir, refusals that leave cluster.conf
// untouched, and register/unregister/cluster-status against the fake daemon
// (test/o2nm/fake-o2cbd.ts, a test double for o2cbd's process contract) in a temp run dir.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { tool as o2cbTool } from '../../tools/o2cb';
import { STACK_LINE, TOOLS_DIR, runInProcess, tempDir } from '../tools/run';

const O2CB = path.join(TOOLS_DIR, 'o2cb.js');
const FAKE_DAEMON = path.join(__dirname, 'fake-o2cbd.js');
const RUN_TIMEOUT_MS = 30_000;

interface Result {
  status: number | null;
  out: string;
  err: string;
}

/** Runs o2cb with a clean O2CB_* environment plus `env`, the fake daemon as o2cbd. */
function o2cb(args: string[], env: Record<string, string> = {}): Result {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(base)) if (k.startsWith('O2CB') || k.startsWith('FAKE_O2CBD') || k === 'O2FS_DEBUG') delete base[k];
  // tap's loaders (NODE_OPTIONS=--import ...) would make every run several times slower.
  delete base.NODE_OPTIONS;
  const r = spawnSync(process.execPath, [O2CB, ...args], {
    env: { ...base, O2CBD_PATH: FAKE_DAEMON, ...env },
    timeout: RUN_TIMEOUT_MS,
    encoding: 'utf8',
  });
  if (r.error) throw r.error;
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Kills, by pid, any fake daemon whose pid file is in runDir: tests clean up even when they fail. */
function reapDaemons(t: { teardown(fn: () => unknown): void }, runDir: string): void {
  t.teardown(async () => {
    const files = await fsp.readdir(runDir).catch(() => [] as string[]);
    for (const f of files.filter((x) => x.endsWith('.pid'))) {
      const pid = Number(readFileSync(path.join(runDir, f), 'utf8').trim());
      if (!(pid > 1) || !alive(pid)) continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes('fake-o2cbd.js')) process.kill(pid, 'SIGKILL');
    }
  });
}

t.test('help and usage', async (t) => {
  const h = o2cb(['--help']);
  t.equal(h.status, 0);
  t.match(h.out, /^Usage: o2cb COMMAND/);
  for (const c of ['add-cluster', 'remove-cluster', 'add-node', 'remove-node', 'list-clusters', 'list-cluster', 'list-nodes', 'heartbeat-mode', 'set-timeouts', 'register-cluster', 'unregister-cluster', 'cluster-status']) {
    t.match(h.out, new RegExp(`\\n  ${c}\\b`), `${c} listed`);
    const sub = o2cb([c, '--help']);
    t.equal(sub.status, 0, `${c} --help`);
    t.match(sub.out, new RegExp(`^Usage: o2cb ${c}\\b[^]*--config-dir DIR`), `${c} --help text`);
  }
  t.equal(o2cb(['help', 'add-node']).out, o2cb(['add-node', '--help']).out);
  const none = o2cb([]);
  t.equal(none.status, 1);
  t.match(none.err, /^Usage: o2cb/);
  const unknown = o2cb(['frob']);
  t.equal(unknown.status, 1);
  t.equal(unknown.err, 'o2cb: unknown command "frob"; see o2cb --help\n');
  const opt = o2cb(['list-clusters', '--bogus']);
  t.equal(opt.status, 1);
  t.equal(opt.err, 'o2cb: list-clusters: unknown option --bogus; see --help\n');
  const missing = o2cb(['add-node', 'web']);
  t.equal(missing.status, 1);
  t.match(missing.err, /add-node: missing NODE/);
});

t.test('configuring a cluster end to end', async (t) => {
  const dir = tempDir(t, 'o2cb-conf-');
  const cd = ['--config-dir', dir];
  const conf = path.join(dir, 'cluster.conf');

  const add = o2cb(['add-cluster', 'web', ...cd]);
  t.equal(add.status, 0, add.err);
  t.match(add.out, new RegExp(`added cluster web \\(heartbeat local\\); key ${dir}/cluster\\.key created`));
  t.equal(statSync(path.join(dir, 'cluster.key')).mode & 0o777, 0o600);
  t.equal(statSync(path.join(dir, 'cluster.key')).size, 32);

  for (const [name, ip] of [['alpha', '10.0.0.1'], ['beta', '10.0.0.2'], ['gamma', '10.0.0.3']]) {
    const r = o2cb(['add-node', 'web', name, '--ip', ip, ...cd]);
    t.equal(r.status, 0, r.err);
  }
  const nums = (): Array<[number, string]> => (JSON.parse(o2cb(['list-nodes', 'web', '--json', ...cd]).out) as Array<{ num: number; name: string }>).map((n) => [n.num, n.name]);
  t.same(nums(), [[0, 'alpha'], [1, 'beta'], [2, 'gamma']], 'lowest free numbers in order');
  t.equal(o2cb(['remove-node', 'web', 'beta', ...cd]).status, 0);
  t.same(nums(), [[0, 'alpha'], [2, 'gamma']]);
  const delta = o2cb(['add-node', 'web', 'delta', '--ip', '10.0.0.4', '--port', '7001', ...cd]);
  t.equal(delta.out, 'added node delta to cluster web: number 1, 10.0.0.4:7001\n', 'the freed number is reused');
  t.equal(o2cb(['add-node', 'web', 'eps', '--ip', '10.0.0.5', '--number', '9', ...cd]).status, 0);
  t.same(nums(), [[0, 'alpha'], [1, 'delta'], [2, 'gamma'], [9, 'eps']]);

  const text = readFileSync(conf, 'utf8');
  t.match(text, /^cluster:\n\tname = web\n\theartbeat_mode = local\n\tnode_count = 4\n\tcluster_key_file = cluster\.key\n\nnode:\n\tname = alpha\n\tcluster = web\n\tnumber = 0\n\tip_address = 10\.0\.0\.1\n\tip_port = 7777\n/);

  const listNodes = o2cb(['list-nodes', 'web', ...cd]);
  t.equal(listNodes.out, [
    'NUMBER  NAME   IP_ADDRESS  PORT',
    '0       alpha  10.0.0.1    7777',
    '1       delta  10.0.0.4    7001',
    '2       gamma  10.0.0.3    7777',
    '9       eps    10.0.0.5    7777',
    '',
  ].join('\n'));

  t.equal(o2cb(['heartbeat-mode', 'web', 'global', ...cd]).status, 0);
  const st = o2cb(['set-timeouts', 'web', '--heartbeat-threshold', '20', '--idle-timeout-ms', '8000', ...cd]);
  t.equal(st.status, 0, st.err);
  t.match(st.out, /heartbeat_threshold {3}= 20\nheartbeat_interval_ms = 500 {2}\(dead after 10000 ms\)\nidle_timeout_ms {7}= 8000/);
  const lc = JSON.parse(o2cb(['list-cluster', 'web', '--json', ...cd]).out) as Record<string, unknown>;
  t.same(lc, {
    name: 'web',
    heartbeatMode: 'global',
    nodeCount: 4,
    timeouts: { heartbeatIntervalMs: 500, heartbeatDeadThreshold: 20, idleTimeoutMs: 8000, keepaliveDelayMs: 1000, reconnectDelayMs: 1000 },
    clusterKeyFile: path.join(dir, 'cluster.key'),
    nodes: [
      { num: 0, name: 'alpha', ip: '10.0.0.1', port: 7777 },
      { num: 1, name: 'delta', ip: '10.0.0.4', port: 7001 },
      { num: 2, name: 'gamma', ip: '10.0.0.3', port: 7777 },
      { num: 9, name: 'eps', ip: '10.0.0.5', port: 7777 },
    ],
    heartbeatRegions: [],
  });
  t.equal(o2cb(['list-cluster', 'web', ...cd]).out, `${readFileSync(conf, 'utf8')}\n`.replace(/\n\n$/, '\n'), 'text form is the stanzas');
  // "default" drops a setting again.
  t.equal(o2cb(['set-timeouts', 'web', '--idle-timeout-ms', 'default', ...cd]).status, 0);
  t.notMatch(readFileSync(conf, 'utf8'), /idle_timeout_ms/);
  t.match(readFileSync(conf, 'utf8'), /heartbeat_threshold = 20/);

  // A second cluster gets its own key; the environment names the config dir.
  const add2 = o2cb(['add-cluster', 'db', '--heartbeat-mode', 'global'], { O2CB_CONFIG_DIR: dir });
  t.equal(add2.status, 0, add2.err);
  t.ok(existsSync(path.join(dir, 'db.key')));
  t.equal(o2cb(['add-node', 'db', 'alpha', '--ip', '10.0.0.1', ...cd]).status, 0, 'same node in two clusters');
  t.same(JSON.parse(o2cb(['list-clusters', '--json', ...cd]).out), [
    { name: 'web', heartbeatMode: 'global', nodeCount: 4 },
    { name: 'db', heartbeatMode: 'global', nodeCount: 1 },
  ]);
  t.equal(o2cb(['list-clusters', ...cd]).out, 'web\ndb\n');
  const rm = o2cb(['remove-cluster', 'db', ...cd]);
  t.equal(rm.status, 0, rm.err);
  t.match(rm.out, /removed cluster db and its key/);
  t.notOk(existsSync(path.join(dir, 'db.key')));
  t.notMatch(readFileSync(conf, 'utf8'), /db/);
  t.same((await fsp.readdir(dir)).sort(), ['cluster.conf', 'cluster.key'], 'no temp or lock files left');
});

t.test('refused changes leave cluster.conf byte for byte as it was', async (t) => {
  const dir = tempDir(t, 'o2cb-refuse-');
  const cd = ['--config-dir', dir];
  const conf = path.join(dir, 'cluster.conf');
  t.equal(o2cb(['add-cluster', 'web', ...cd]).status, 0);
  t.equal(o2cb(['add-node', 'web', 'alpha', '--ip', '10.0.0.1', ...cd]).status, 0);
  t.equal(o2cb(['add-node', 'web', 'beta', '--ip', '10.0.0.2', ...cd]).status, 0);
  const before = readFileSync(conf);
  const cases: Array<[string[], RegExp]> = [
    [['add-node', 'web', 'alpha', '--ip', '10.0.0.9'], /add-node: refused, .*cluster\.conf is unchanged: node "alpha" has the same name "alpha" as node "alpha" in cluster "web"$/m],
    [['add-node', 'web', 'gamma', '--ip', '10.0.0.1'], /has the same address 10\.0\.0\.1:7777 as node "alpha"/],
    [['add-node', 'web', 'gamma', '--ip', '10.0.0.3', '--number', '1'], /node "gamma" has the same number 1 as node "beta"/],
    [['add-node', 'web', 'gamma', '--ip', '10.0.300.3'], /ip_address "10\.0\.300\.3" is not a unicast IPv4 address/],
    [['add-node', 'web', 'gamma', '--ip', '10.0.0.3', '--number', '255'], /--number must be 0\.\.254, got 255/],
    [['add-node', 'web', 'gamma', '--ip', '10.0.0.3', '--port', '0'], /--port must be 1\.\.65535, got 0/],
    [['add-node', 'web', 'gamma'], /--ip IP is required/],
    [['add-node', 'web', 'bad name', '--ip', '10.0.0.3'], /a node name is its host name/],
    [['add-node', 'nosuch', 'gamma', '--ip', '10.0.0.3'], /unknown cluster "nosuch"; configured: web/],
    [['add-cluster', 'web'], /cluster "web" already exists/],
    [['add-cluster', 'way_too_long_name_x'], /cluster name "way_too_long_name_x" must be 1-16 characters/],
    [['remove-node', 'web', 'zeta'], /cluster "web" has no node "zeta"; its nodes: alpha, beta/],
    [['remove-cluster', 'nosuch'], /unknown cluster "nosuch"/],
    [['heartbeat-mode', 'web', 'disk'], /heartbeat mode must be local or global, got "disk"/],
    [['set-timeouts', 'web', '--idle-timeout-ms', '7000'], /idle_timeout_ms \(7000\) must be less than the heartbeat dead time, .* = 6000 ms/],
    [['set-timeouts', 'web', '--keepalive-delay-ms', '5000'], /keepalive_delay_ms \(5000\) must be less than idle_timeout_ms \(5000\)/],
    [['set-timeouts', 'web', '--heartbeat-interval-ms', '99'], /--heartbeat-interval-ms must be 100\.\.60000, got 99/],
    [['set-timeouts', 'web'], /nothing to set/],
  ];
  // In this process (a child per case costs seconds on a loaded machine); refusals print
  // only to stderr, which runInProcess captures.
  for (const k of Object.keys(process.env)) if (k.startsWith('O2CB')) delete process.env[k];
  for (const [args, re] of cases) {
    const r = await runInProcess(o2cbTool, [...args, ...cd]);
    t.equal(r.status, 1, `${args.join(' ')}: exit 1`);
    t.match(r.err, re, args.join(' '));
    t.notMatch(r.err, STACK_LINE);
    t.same(readFileSync(conf), before, `${args.join(' ')}: file unchanged`);
  }
  t.same((await fsp.readdir(dir)).sort(), ['cluster.conf', 'cluster.key'], 'no key, temp or lock files left by refusals');
});

t.test('a broken cluster.conf is reported with its line, and nothing is written', async (t) => {
  const dir = tempDir(t, 'o2cb-bad-');
  const cd = ['--config-dir', dir];
  const conf = path.join(dir, 'cluster.conf');
  const broken = 'cluster:\n\tname = web\n\tnode_count = 0\n\nnode:\n\tname = a\n\tcluster = web\n\tnumber = x\n\tip_address = 10.0.0.1\n';
  await fsp.writeFile(conf, broken);
  const r = o2cb(['list-clusters', ...cd]);
  t.equal(r.status, 1);
  t.equal(r.err, `o2cb: list-clusters: ${conf}:8: number must be a whole decimal number, got "x"\n`);
  const w = o2cb(['add-node', 'web', 'b', '--ip', '10.0.0.2', ...cd]);
  t.equal(w.status, 1);
  t.match(w.err, /cluster\.conf:8:/);
  t.equal(readFileSync(conf, 'utf8'), broken);

  const invalid = 'cluster:\n\tname = web\n\tnode_count = 2\n\nnode:\n\tname = a\n\tcluster = web\n\tnumber = 0\n\tip_address = 10.0.0.1\n';
  await fsp.writeFile(conf, invalid);
  const v = o2cb(['list-nodes', 'web', ...cd]);
  t.equal(v.status, 1);
  t.equal(v.err, `o2cb: list-nodes: invalid cluster configuration:\n  ${conf}:3: cluster "web": node_count is 2 but the file has 1 node stanza for it\n`);

  await fsp.rm(conf);
  const empty = o2cb(['list-clusters', '--json', ...cd]);
  t.equal(empty.status, 0, 'no file: no clusters');
  t.equal(empty.out, '[]\n');
  const st = o2cb(['cluster-status', ...cd]);
  t.equal(st.status, 1);
  t.match(st.err, /no cluster is configured/);
});

t.test('register, status and unregister against the fake daemon', async (t) => {
  const dir = tempDir(t, 'o2cb-reg-');
  const runDir = tempDir(t, 'o2cb-run-');
  reapDaemons(t, runDir);
  const cd = ['--config-dir', dir, '--run-dir', runDir];
  t.equal(o2cb(['add-cluster', 'web', ...cd]).status, 0);
  t.equal(o2cb(['add-node', 'web', 'alpha', '--ip', '127.0.0.1', '--port', '17777', ...cd]).status, 0);
  t.equal(o2cb(['add-node', 'web', 'beta', '--ip', '127.0.0.1', '--port', '17778', ...cd]).status, 0);
  const pidFile = path.join(runDir, 'web.pid');
  const sock = path.join(runDir, 'web.sock');

  const noLocal = o2cb(['register-cluster', 'web', ...cd, '--node', 'zeta']);
  t.equal(noLocal.status, 1);
  t.match(noLocal.err, /no node of cluster "web" is called "zeta" \(named\); its nodes are: alpha, beta/);
  t.notOk(existsSync(pidFile), 'nothing started');

  const before = o2cb(['cluster-status', 'web', ...cd], { O2CB_NODE_NAME: 'beta' });
  t.equal(before.status, 3, 'not running: exit 3');
  t.equal(before.out, 'Cluster: web\nHeartbeat mode: local\nNodes: 2\nLocal node: beta (number 1, 127.0.0.1:17778)\nDaemon: not running\n');

  const reg = o2cb(['register-cluster', 'web', '--node', 'alpha', ...cd]);
  t.equal(reg.status, 0, reg.err);
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  t.match(reg.out, new RegExp(`^registered cluster web: o2cbd pid ${pid} on node alpha \\(number 0, 127\\.0\\.0\\.1:17777\\); log ${runDir}/web\\.log\\n$`));
  t.ok(alive(pid), 'daemon runs after o2cb exited');
  t.ok(existsSync(sock));
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  t.same(cmdline.slice(1, 10), [FAKE_DAEMON, '--config-dir', dir, '--run-dir', runDir, '--cluster', 'web', '--node', 'alpha']);
  t.match(readFileSync(path.join(runDir, 'web.log'), 'utf8'), /^ready\n/, 'daemon output goes to the log');

  const again = o2cb(['register-cluster', 'web', '--node', 'alpha', ...cd]);
  t.equal(again.status, 1);
  t.match(again.err, new RegExp(`cluster "web" is already registered: o2cbd pid ${pid} is running`));
  t.equal(Number(readFileSync(pidFile, 'utf8')), pid, 'the running daemon is untouched');

  const status = o2cb(['cluster-status', ...cd], { O2CB_NODE_NAME: 'alpha' });
  t.equal(status.status, 0, status.err);
  t.match(status.out, new RegExp(`Local node: alpha \\(number 0, 127\\.0\\.0\\.1:17777\\)\\nDaemon: running \\(pid ${pid}\\)\\nDaemon status: \\{"fake":true,"cluster":"web","node":"alpha","pid":${pid}\\}\\n$`));
  const js = o2cb(['cluster-status', 'web', '--json', '--node', 'nobody', ...cd]);
  t.equal(js.status, 0, js.err);
  const j = JSON.parse(js.out) as Record<string, unknown>;
  t.match(j, { cluster: 'web', heartbeatMode: 'local', nodeCount: 2, localNode: null, running: true, pid, status: { fake: true, node: 'alpha' }, statusError: null });
  t.match(j.localNodeError, /no node of cluster "web" is called "nobody"/);

  const rmc = o2cb(['remove-cluster', 'web', ...cd]);
  t.equal(rmc.status, 1);
  t.match(rmc.err, new RegExp(`cluster "web" is registered \\(o2cbd pid ${pid} is running\\); run o2cb unregister-cluster web first`));

  const note = o2cb(['add-node', 'web', 'gamma', '--ip', '127.0.0.1', '--port', '17779', ...cd]);
  t.equal(note.status, 0);
  t.match(note.err, new RegExp(`note: o2cbd \\(pid ${pid}\\) keeps its configuration until web is registered again`));

  const un = o2cb(['unregister-cluster', 'web', ...cd]);
  t.equal(un.status, 0, un.err);
  t.equal(un.out, `unregistered cluster web (o2cbd pid ${pid} stopped)\n`);
  t.notOk(alive(pid), 'daemon gone');
  t.notOk(existsSync(pidFile));
  t.notOk(existsSync(sock));
  const un2 = o2cb(['unregister-cluster', 'web', ...cd]);
  t.equal(un2.status, 0);
  t.equal(un2.out, 'cluster web is not registered (no o2cbd running)\n');

  // A stale pid file (a pid no process has) and socket: not running; register cleans up.
  await fsp.writeFile(pidFile, `${2 ** 22 + 7}\n`);
  await fsp.writeFile(sock, '');
  t.equal(o2cb(['cluster-status', 'web', '--node', 'alpha', ...cd]).status, 3);
  const reg2 = o2cb(['register-cluster', 'web', ...cd], { O2CB_NODE_NAME: 'beta' });
  t.equal(reg2.status, 0, reg2.err);
  t.match(reg2.out, /on node beta \(number 1/);
  const pid2 = Number(readFileSync(pidFile, 'utf8').trim());
  t.not(pid2, 2 ** 22 + 7);
  t.equal(o2cb(['unregister-cluster', 'web', ...cd]).status, 0);
  t.notOk(alive(pid2));
  // A pid file naming a live process that is not an o2cbd (ours) is never signalled.
  await fsp.writeFile(pidFile, `${process.pid}\n`);
  const notOurs = o2cb(['unregister-cluster', 'web', ...cd]);
  t.equal(notOurs.status, 0);
  t.match(notOurs.out, /not registered .*removed a stale pid file/);
  t.ok(alive(process.pid));
  t.notOk(existsSync(pidFile));
});

t.test('daemons that fail to start, hang, or never get ready', async (t) => {
  const dir = tempDir(t, 'o2cb-fail-');
  const runDir = tempDir(t, 'o2cb-frun-');
  reapDaemons(t, runDir);
  const cd = ['--config-dir', dir, '--run-dir', runDir, '--node', 'alpha'];
  t.equal(o2cb(['add-cluster', 'web', '--config-dir', dir]).status, 0);
  t.equal(o2cb(['add-node', 'web', 'alpha', '--ip', '127.0.0.1', '--config-dir', dir]).status, 0);

  const fail = o2cb(['register-cluster', 'web', ...cd], { FAKE_O2CBD_MODE: 'fail' });
  t.equal(fail.status, 8);
  t.match(fail.err, /^o2cb: o2cbd exited with status 1 before it was ready; see .*web\.log\n {2}\| fake-o2cbd: simulated start failure for cluster web\n$/);
  t.notMatch(fail.err, /internal error/);

  const mute = o2cb(['register-cluster', 'web', ...cd], { FAKE_O2CBD_MODE: 'mute' });
  t.equal(mute.status, 0, mute.err);
  const started = Date.now();
  const st = o2cb(['cluster-status', 'web', ...cd]);
  t.equal(st.status, 8, 'running but not answering');
  t.match(st.out, /Daemon: running \(pid \d+\)\nDaemon status: no answer from .*web\.sock within 2000 ms\n$/);
  t.ok(Date.now() - started < 8000, 'bounded wait');
  t.equal(o2cb(['unregister-cluster', 'web', ...cd.slice(0, 4)]).status, 0);

  const noDaemon = o2cb(['register-cluster', 'web', ...cd], { O2CBD_PATH: path.join(dir, 'missing-o2cbd.js') });
  t.equal(noDaemon.status, 8);
  t.match(noDaemon.err, /cannot start o2cbd: .*missing-o2cbd\.js does not exist/);

  const slow = o2cb(['register-cluster', 'web', ...cd], { FAKE_O2CBD_MODE: 'slow' });
  t.equal(slow.status, 8);
  t.match(slow.err, /o2cbd did not become ready within 10000 ms .*; stopped it/);
  t.notOk(existsSync(path.join(runDir, 'web.pid')));
  // Whatever it started is gone: no fake daemon with this run dir is left.
  const left = spawnSync('pgrep', ['-f', `fake-o2cbd.js.*${runDir}`], { encoding: 'utf8' }).stdout.trim();
  t.equal(left, '', 'the daemon that never got ready was killed');
});
