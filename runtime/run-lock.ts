/**
 * One run at a time per run directory. The lock is `run.lock` in the directory, holding the
 * owner's pid, host and command; it is created whole (written to a private temporary file,
 * then hard-linked to its name, which fails if the name exists: O_EXCL semantics without a
 * window in which the file exists half written). A lock whose process is gone (a run killed
 * with kill -9 or by the machine) is taken over with a message; a live one is a clear error.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const LOCK_FILE = 'run.lock';

interface LockOwner {
  pid: number;
  host: string;
  started: string;
  command: string;
}

/** Releases the lock; also a Disposable, so `using lock = lockRunDir(dir)` releases it on any exit. */
export type RunLockRelease = (() => void) & Disposable;

/**
 * Takes the run directory's lock (creating the directory). Throws, naming the directory and
 * the holder, when a live process holds it; takes over a lock whose process is dead.
 */
export function lockRunDir(dir: string, log: (line: string) => void = console.log): RunLockRelease {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: os.hostname(), started: new Date().toISOString(), command: process.argv.slice(1).join(' ') };
  const tmp = path.join(dir, `.${LOCK_FILE}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, JSON.stringify(me) + '\n');
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(tmp, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw lockError(dir, file, err as Error);
      }
      const owner = readOwner(file);
      if (owner && (owner.host !== me.host || isAlive(owner.pid))) {
        const where = owner.host === me.host ? `process ${owner.pid}` : `process ${owner.pid} on host ${owner.host}`;
        throw new Error(
          `${dir}: another run is writing this directory (${where}, started ${owner.started}: ${owner.command}); ` +
            `wait for it, stop it, or choose another --out (if no such run is going on, its pid taken by another process, delete ${file})`,
        );
      }
      log(`[run-lock] ${dir}: taking over the lock of ${owner ? `process ${owner.pid}, which is gone` : 'a run that left it unreadable'}`);
      fs.rmSync(file, { force: true });
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.off('exit', release);
    // only our own lock: a run that took over a lock we lost is not disturbed
    if (readOwner(file)?.pid === me.pid && readOwner(file)?.host === me.host) fs.rmSync(file, { force: true });
  };
  process.on('exit', release);
  return Object.assign(release, { [Symbol.dispose]: release });
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
    return Number.isInteger(owner.pid) && typeof owner.host === 'string' ? owner : undefined;
  } catch {
    return undefined;
  }
}

/** Signal 0 checks that a process exists; EPERM means it exists under another user. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockError(dir: string, file: string, err: Error): Error {
  return new Error(`${dir}: cannot take the run lock ${file}: ${err.message}`);
}
