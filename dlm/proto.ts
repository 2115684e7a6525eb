// Loads the wire schemas (.proto files) kept next to the code that speaks them. The
// compiled JavaScript runs from dist/, the schemas stay in the source tree, so a path is
// resolved against the repository root whichever of the two we run from.
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as protobuf from 'protobufjs';

const cache = new Map<string, protobuf.Root>();

function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find the repository root above ${__dirname}`);
}

/** The schema at `relPath` (relative to the repository root, e.g. "dlm/o2cb/o2net.proto"). */
export function loadProto(relPath: string): protobuf.Root {
  let root = cache.get(relPath);
  if (!root) {
    root = protobuf.loadSync(path.join(repoRoot(), relPath));
    cache.set(relPath, root);
  }
  return root;
}
