// A test process that dies badly on purpose, for harness.test.ts: it builds a 2-node world
// with processes (one that ignores SIGTERM, one a daemon no longer our child) and iptables
// rules, prints what it made as one JSON line, then, by argv[2]:
//   throw   - throws from a timer (uncaught exception)
//   reject  - leaves a promise rejection unhandled
//   wait    - waits (at most WAIT_MS) to be killed by the test with a signal
import { ClusterWorld, keepWorlds } from './harness';
import { NETNS_DIR } from './netns';
import { statSync } from 'node:fs';

export interface CrashInfo {
  pid: number;
  world: string;
  tag: string;
  namespaces: string[];
  /** nsfs inode of each namespace: a process still holding one shows net:[inode]. */
  inodes: number[];
  tmpDir: string;
  pids: number[];
}

const WAIT_MS = 120_000;
const STUBBORN_SCRIPT = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000);";

async function main(): Promise<void> {
  const mode = process.argv[2];
  if (mode !== 'throw' && mode !== 'reject' && mode !== 'wait') throw new Error(`usage: crash-child throw|reject|wait`);
  if (keepWorlds()) throw new Error('O2FS_KEEP_WORLD=1 would defeat this fixture');
  const world = await ClusterWorld.create({ nodes: 2 });
  const stubborn = world.spawn(0, process.execPath, ['-e', STUBBORN_SCRIPT], { label: 'stubborn' });
  await stubborn.waitForLine(/^ready$/, 15_000);
  // The shell exits at once; its background sleep lives on in node 1's namespace only.
  const daemon = await world.run(1, 'sh', ['-c', 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!']);
  world.partition([[0], [1]]);
  const info: CrashInfo = {
    pid: process.pid,
    world: world.ns,
    tag: world.tag,
    namespaces: [world.ns, ...world.nodes.map((n) => n.ns)],
    inodes: [world.ns, ...world.nodes.map((n) => n.ns)].map((ns) => statSync(`${NETNS_DIR}/${ns}`).ino),
    tmpDir: world.tmpDir,
    pids: [stubborn.pid, Number(daemon.stdout.trim())],
  };
  process.stdout.write(`${JSON.stringify(info)}\n`);
  if (mode === 'throw') {
    setTimeout(() => {
      throw new Error('crash-child: deliberate uncaught exception');
    }, 10);
  } else if (mode === 'reject') {
    void Promise.reject(new Error('crash-child: deliberate unhandled rejection'));
  } else {
    setTimeout(() => process.exit(3), WAIT_MS);
  }
}

main().catch((e) => {
  process.stderr.write(`crash-child: setup failed: ${(e as Error).stack}\n`);
  process.exit(2);
});
