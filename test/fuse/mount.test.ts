// mount.ts: the mount(8) option string, read-only mounts, and finding a mount (and its
// fusectl connection) through /proc/self/mountinfo, escaped path included.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import t from 'tap';
import { fuseConnectionId, fuseMountOptions, isFuseMounted, readMountInfo } from '../../fs/fuse/mount';
import { startMemfsServer } from './harness';

t.test('mount option string', async (t) => {
  t.equal(fuseMountOptions({ fsName: 'v' }, 0, 0), 'fd=3,rootmode=40000,user_id=0,group_id=0');
  t.equal(
    fuseMountOptions({ fsName: 'v', allowOther: true, defaultPermissions: true, readOnly: true, maxReadBytes: 131072, extraOptions: ['nosuid'] }, 1000, 100),
    'fd=3,rootmode=40000,user_id=1000,group_id=100,allow_other,default_permissions,ro,max_read=131072,nosuid',
  );
  t.throws(() => fuseMountOptions({ fsName: 'v', extraOptions: ['a,b'] }, 0, 0), RangeError, 'no smuggled options');
  t.throws(() => fuseMountOptions({ fsName: 'v', maxReadBytes: -1 }, 0, 0), RangeError);
});

t.test('read-only mount at a path with a space: found in mountinfo, writes refused', async (t) => {
  const server = await startMemfsServer(t, { readOnly: true }, 'o2fs fuse ro-');
  const mp = server.mountpoint;
  t.ok(mp.includes(' '), 'mountpoint has a space (mountinfo escapes it as \\040)');
  t.ok(isFuseMounted(mp), 'found through the escaped mountinfo entry');
  const entry = readMountInfo().find((m) => m.mountpoint === mp);
  t.equal(entry?.fstype, 'fuse.o2fs', 'type fuse.<subtype>');
  const id = fuseConnectionId(mp);
  t.ok(id !== undefined && id > 0, `connection id ${id} (the minor of st_dev; fuse-interrupt.test aborts through it)`);
  await t.rejects(fsp.writeFile(path.join(mp, 'nope'), 'x'), { code: 'EROFS' }, 'ro mount refuses writes');
  t.same(await fsp.readdir(mp), [], 'reads still work');
});
