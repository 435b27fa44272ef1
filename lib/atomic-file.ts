/**
 * Durable file replacement: the data goes to a temporary file in the same folder, is fsynced,
 * then renamed over the target, and the folder is fsynced, so a reader or a crash (process or
 * machine) sees the old file or the new one, never a part.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(path.resolve(file)));
}

/** Makes renames and creations in `dir` durable; a no-op where folders cannot be fsynced (Windows). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // not possible everywhere; the renames themselves are done
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
