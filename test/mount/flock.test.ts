// flock(2) through a real mount: served by o2fs (FUSE_FLOCK_LOCKS, fs/flock.ts) rather than
// the kernel, so the same code makes it cluster-wide on a cluster stack. Separate processes
// hold and test locks, as flock's owner is the open file.
import t from 'tap';
import { fsckClean, mountFresh, py, tempDir } from './harness';

t.test('flock: shared and exclusive, LOCK_NB, blocking waits, signals, release on close', async (t) => {
  const dir = tempDir(t, 'o2fs-flock-');
  const m = await mountFresh(t, dir);
  const r = py(`
import fcntl, json, os, signal, subprocess, sys, time
R = {}
open('f', 'w').close()
def child(code):
    return subprocess.Popen([sys.executable, '-c', 'import fcntl, os, signal, sys, time\\n' + code], cwd=os.getcwd())
def try_lock(op):
    fd = os.open('f', os.O_RDWR)
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB); return 'granted'
    except BlockingIOError: return 'EWOULDBLOCK'
    finally: os.close(fd)
# A holder in another process, exclusive.
h = child("fd = os.open('f', os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); open('held', 'w').close(); time.sleep(1.5); os.close(fd)")
while not os.path.exists('held'): time.sleep(0.02)
R['ex vs ex NB'] = try_lock(fcntl.LOCK_EX)
R['ex vs sh NB'] = try_lock(fcntl.LOCK_SH)
# A blocking request waits until the holder closes its file (about 1.5 s).
t0 = time.time(); fd = os.open('f', os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); R['waited'] = round(time.time() - t0, 1) >= 0.5; os.close(fd)
h.wait(); os.unlink('held')
# Shared with shared.
h = child("fd = os.open('f', os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_SH); open('held', 'w').close(); time.sleep(1.5)")
while not os.path.exists('held'): time.sleep(0.02)
R['sh vs sh NB'] = try_lock(fcntl.LOCK_SH)
R['sh vs ex NB'] = try_lock(fcntl.LOCK_EX)
# A blocked waiter is interrupted by a signal (Python retries EINTR unless the handler
# raises, so it raises): control comes back while the holder still holds the lock.
class Alarm(Exception): pass
def on_alarm(*a): raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.3)
fd = os.open('f', os.O_RDWR); t0 = time.time()
try:
    fcntl.flock(fd, fcntl.LOCK_EX); R['interrupted'] = 'granted'
except Alarm: R['interrupted'] = 'EINTR' if time.time() - t0 < 1.0 else 'late'
os.close(fd)
h.wait(); os.unlink('held')
# The holder's exit released everything.
R['after exit'] = try_lock(fcntl.LOCK_EX)
# Conversion within one open file.
fd = os.open('f', os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_SH); fcntl.flock(fd, fcntl.LOCK_EX); fcntl.flock(fd, fcntl.LOCK_UN)
R['converted and unlocked'] = try_lock(fcntl.LOCK_EX); os.close(fd)
print(json.dumps(R))`, { cwd: m.mp }) as Record<string, unknown>;
  t.equal(r['ex vs ex NB'], 'EWOULDBLOCK');
  t.equal(r['ex vs sh NB'], 'EWOULDBLOCK');
  t.equal(r.waited, true, 'LOCK_EX waited for the holder');
  t.equal(r['sh vs sh NB'], 'granted');
  t.equal(r['sh vs ex NB'], 'EWOULDBLOCK');
  t.equal(r.interrupted, 'EINTR', 'a signal interrupts a blocked flock');
  t.equal(r['after exit'], 'granted', 'a process exit releases its flock');
  t.equal(r['converted and unlocked'], 'granted');
  t.equal(m.umount().status, 0);
  t.equal(fsckClean(m.img).status, 0);
});
