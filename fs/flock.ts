// flock(2) locks, cluster-wide (issue 6 item 5; OCFS2 keeps them node-local on o2cb, o2fs
// does not). Two levels of arbitration:
//   - between open files on this node: a table per inode (owner = the open file, as FUSE
//     passes it), shared or exclusive, FIFO waiters;
//   - between nodes: the inode's F lock in the DLM, held at PR while some open file here has
//     it shared and at EX while one has it exclusive. The dlmglue handle is kept for as
//     long as the flock is held, so another node's request waits (its BAST cannot
//     downconvert a lock with holders) until we unlock.
// A local mount runs the same code on the `local` stack, where the DLM part is free.
// Converting shared <-> exclusive drops the old lock first, as Linux's flock does.
// SETLKW is interruptible: the waiter gives up with EINTR; a DLM request already sent is
// let complete in the background and released at once.
import type { DlmGlue, LockHandle } from './dlmglue';
import { FsError } from './errors';
import { LOCK_TYPE, lockName } from './lock-names';

export type FlockMode = 'sh' | 'ex';

interface Held {
  mode: FlockMode;
  handle: LockHandle;
}

interface InodeFlocks {
  held: Map<bigint, Held>;
  /** Local waiters, woken whenever a holder goes; each re-checks. */
  wake: Array<() => void>;
}

/** Bound on how long one SETLKW waits (a stuck holder elsewhere must not pin a request forever). */
const WAIT_MS_MAX = 24 * 60 * 60_000;

export class FlockTable {
  private readonly inodes = new Map<number, InodeFlocks>();

  constructor(private readonly glue: DlmGlue) {}

  /** flock(LOCK_SH / LOCK_EX [| LOCK_NB]) by open file `owner`. */
  async lock(blkno: number, owner: bigint, mode: FlockMode, wait: boolean, signal?: AbortSignal): Promise<void> {
    const st = this.state(blkno);
    const mine = st.held.get(owner);
    if (mine?.mode === mode) return;
    if (mine) this.unlockHeld(blkno, st, owner, mine);
    const deadline = Date.now() + WAIT_MS_MAX;
    // Local arbitration first: another open file here holding a conflicting flock.
    while (this.conflictsLocally(st, owner, mode)) {
      if (!wait) throw new FsError('EAGAIN', 'flock held by another open file on this node');
      await this.waitLocal(st, signal, deadline);
    }
    const res = this.glue.resource(lockName(LOCK_TYPE.flock, blkno));
    const request = this.glue.lock(res, mode === 'ex' ? 'EX' : 'PR', { noqueue: !wait });
    let handle: LockHandle;
    if (signal) {
      const aborted = new Promise<never>((_, reject) => {
        if (signal.aborted) reject(new FsError('EINTR'));
        signal.addEventListener('abort', () => reject(new FsError('EINTR')), { once: true });
      });
      try {
        handle = await Promise.race([request, aborted]);
      } catch (e) {
        // Interrupted: whatever the DLM answers later is given straight back.
        void request.then((h) => h.release(), () => undefined);
        throw e;
      }
    } else {
      handle = await request;
    }
    // Another local owner may have taken a conflicting flock while we waited for the DLM.
    if (this.conflictsLocally(st, owner, mode)) {
      handle.release();
      if (!wait) throw new FsError('EAGAIN');
      return this.lock(blkno, owner, mode, wait, signal);
    }
    st.held.set(owner, { mode, handle });
  }

  /** flock(LOCK_UN), or the open file's release. */
  unlock(blkno: number, owner: bigint): void {
    const st = this.inodes.get(blkno);
    const mine = st?.held.get(owner);
    if (!st || !mine) return;
    this.unlockHeld(blkno, st, owner, mine);
  }

  private unlockHeld(blkno: number, st: InodeFlocks, owner: bigint, h: Held): void {
    st.held.delete(owner);
    h.handle.release();
    for (const w of st.wake.splice(0)) w();
    if (st.held.size === 0 && st.wake.length === 0) this.inodes.delete(blkno);
  }

  private conflictsLocally(st: InodeFlocks, owner: bigint, mode: FlockMode): boolean {
    for (const [o, h] of st.held) if (o !== owner && (mode === 'ex' || h.mode === 'ex')) return true;
    return false;
  }

  private state(blkno: number): InodeFlocks {
    let st = this.inodes.get(blkno);
    if (!st) {
      st = { held: new Map(), wake: [] };
      this.inodes.set(blkno, st);
    }
    return st;
  }

  private waitLocal(st: InodeFlocks, signal: AbortSignal | undefined, deadline: number): Promise<void> {
    if (signal?.aborted) return Promise.reject(new FsError('EINTR'));
    if (Date.now() > deadline) return Promise.reject(new FsError('ETIMEDOUT', 'flock wait bound reached'));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(new FsError('EINTR'));
      st.wake.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
