// Which stack serves a volume: chosen by the label in its superblock ("local", "o2cb",
// "user") and checked against the running cluster's name. Stacks register themselves here;
// stackglue knows nothing else about them.
import { FsError } from '../fs/errors';
import { localStack } from './local/index';
import { o2cbStack } from './o2cb/index';
import type { StackPlugin } from './types';

const plugins = new Map<string, StackPlugin>([[localStack.name, localStack], [o2cbStack.name, o2cbStack]]);

export function registerStack(plugin: StackPlugin): void {
  plugins.set(plugin.name, plugin);
}

export function registeredStacks(): string[] {
  return [...plugins.keys()];
}

export interface StackChoice {
  plugin: StackPlugin;
  /** True when a clustered volume is mounted without its stack (-o nocluster). */
  nocluster: boolean;
}

/**
 * The stack a mount uses. A volume formatted for a cluster stack mounts only on that stack,
 * on a cluster of the same name, unless `nocluster` is asked for (single-node use only).
 */
export function chooseStack(label: string, onDiskCluster: string, o: { nocluster?: boolean; runningCluster?: string } = {}): StackChoice {
  if (label === 'local') return { plugin: localStack, nocluster: false };
  if (o.nocluster) return { plugin: localStack, nocluster: true };
  const plugin = plugins.get(label);
  if (!plugin) {
    throw new FsError('EINVAL', `volume is formatted for the ${label} cluster stack (cluster "${onDiskCluster}"), which is not running here; start it, or mount with -o nocluster if no other node can have it mounted`);
  }
  if (o.runningCluster !== undefined && o.runningCluster !== onDiskCluster) {
    throw new FsError('EINVAL', `cluster name on disk ("${onDiskCluster}") does not match the running cluster ("${o.runningCluster}")`);
  }
  return { plugin, nocluster: false };
}
