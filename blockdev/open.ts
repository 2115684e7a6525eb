// openDevice: turns a device spec from the command line or fstab into a BlockDevice.
//   /path/to/file-or-device, ./relative, file:///abs/path  -> FileBlockDevice (file.ts)
//   iscsi://host[:port]/<iqn>/<lun>                          -> not supported yet (the userspace
//                                                              initiator comes in a later issue)
import { fileURLToPath } from 'node:url';
import { FileDeviceOptions, openFileDevice } from './file';
import { BlockDevice, BlockDeviceError } from './types';

export type OpenDeviceOptions = FileDeviceOptions;

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

export async function openDevice(spec: string, opts: OpenDeviceOptions = {}): Promise<BlockDevice> {
  if (typeof spec !== 'string' || spec.length === 0) throw new BlockDeviceError('EINVAL', 'device spec must be a non-empty string');
  const scheme = SCHEME.exec(spec)?.[1]?.toLowerCase();
  if (scheme === undefined) return openFileDevice(spec, opts);
  switch (scheme) {
    case 'file': {
      let path: string;
      try {
        path = fileURLToPath(spec);
      } catch (err) {
        throw new BlockDeviceError('EINVAL', `${spec}: bad file URL: ${(err as Error).message}`, { cause: err });
      }
      return openFileDevice(path, opts);
    }
    case 'iscsi':
      throw new BlockDeviceError('EINVAL', `${spec}: iscsi:// devices are not supported yet (the userspace iSCSI initiator is not built); use a file or block-device path`);
    default:
      throw new BlockDeviceError('EINVAL', `${spec}: unknown device scheme '${scheme}://' (expected a path, file:// or iscsi://)`);
  }
}
