// Loading the project's N-API addons (built by scripts/setup.sh with node-gyp into
// <dir>/build/Release/<name>.node). Each addon is optional: when it is missing, fails to
// load, or its environment switch disables it, the caller falls back to plain Node and can
// say why (`error`).
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface LoadedAddon<T> {
  /** The addon, or null when it is not available. */
  addon: T | null;
  /** Why it is not available ('' when it is). */
  error: string;
}

/**
 * Loads `<dir>/build/Release/<name>.node`, `dir` relative to the repository root, found by
 * walking up from `fromDir` (the caller's __dirname: under dist/ or the sources). Setting the
 * environment variable `disableEnv` to 1 disables it.
 */
export function loadNativeAddon<T>(fromDir: string, dir: string, name: string, disableEnv: string): LoadedAddon<T> {
  if (process.env[disableEnv] === '1') return { addon: null, error: `disabled by ${disableEnv}=1` };
  const rel = path.join(dir, 'build/Release', `${name}.node`);
  try {
    for (let at = fromDir, i = 0; i < 6; i++, at = path.dirname(at)) {
      const candidate = path.join(at, rel);
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      if (fs.existsSync(candidate)) return { addon: require(candidate) as T, error: '' };
    }
    return { addon: null, error: `${rel} not built (run scripts/setup.sh)` };
  } catch (err) {
    return { addon: null, error: (err as Error).message };
  }
}
