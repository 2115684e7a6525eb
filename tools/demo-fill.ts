#!/usr/bin/env node
// Used by scripts/demo.sh until the FUSE mount lands: writes a few files onto a volume
// through the filesystem library, the same code a mount runs.
import { openDevice } from '../blockdev/open';
import { writeFile } from '../fs/file-data';
import { S_IFDIR, S_IFREG, SYSFILE, slotFileName } from '../fs/format/constants';
import { createNode, resolvePath } from '../fs/namei';
import { Transaction } from '../fs/transaction';
import { Volume } from '../fs/volume';

async function main(img: string): Promise<void> {
  const dev = await openDevice(img);
  try {
    const vol = await Volume.open(dev);
    const ctx = { slot: 0, inodeAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.inodeAlloc, 0)), extentAllocBlkno: await vol.systemInode(slotFileName(SYSFILE.extentAlloc, 0)) };
    const tx = new Transaction(vol);
    const root = await resolvePath(tx, '/');
    const hello = await createNode(tx, ctx, root, Buffer.from('hello.txt'), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
    await writeFile(tx, ctx, hello, 0, Buffer.from('hello from o2fs\n'));
    const dir = await createNode(tx, ctx, root, Buffer.from('data'), { mode: S_IFDIR | 0o755, uid: 0, gid: 0 });
    for (let i = 0; i < 100; i++) {
      const f = await createNode(tx, ctx, dir, Buffer.from(`file-${i}`), { mode: S_IFREG | 0o644, uid: 0, gid: 0 });
      await writeFile(tx, ctx, f, 0, Buffer.alloc(10_000 + i, i));
    }
    await tx.commit();
    console.log(`wrote /hello.txt and 100 files in /data to ${img}`);
  } finally {
    await dev.close();
  }
}

main(process.argv[2]).catch((e) => {
  console.error(`demo-fill: ${(e as Error).message}`);
  process.exit(1);
});
