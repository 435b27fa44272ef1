/**
 * Output folders are checked before any work, so a run never trains for an hour and then
 * fails to write, and a bad path gets a sentence instead of a raw EEXIST or a hang:
 *   - the path, or the nearest part of it that exists, must be a directory (not a file);
 *   - it must not lie on a kernel pseudo file system (/proc, /sys, ...): there recursive mkdir
 *     can spin forever (`--out /proc/x` did, at 100% CPU), so such paths are refused by the
 *     file system's type (statfs) before anything is created;
 *   - it must be creatable and writable: a probe file is written to, and removed from, the
 *     nearest existing folder; the folder itself is made by the pipeline when it writes.
 * The work is bounded: one stat per path component, one statfs, one small file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** statfs f_type of file systems that hold kernel objects, not files (linux/magic.h). */
const PSEUDO_FILE_SYSTEMS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x1cd1: 'devpts',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x73636673: 'securityfs',
  0xcafe4a11: 'bpf',
  0x62656570: 'configfs',
  0x6165676c: 'pstore',
  0xf97cff8c: 'selinuxfs',
  0x42494e4d: 'binfmt_misc',
  0x50495045: 'pipefs',
  0x534f434b: 'sockfs',
  0x19800202: 'mqueue',
  0x958458f6: 'hugetlbfs',
  0x65735546: 'fusectl',
  0xde5e81e4: 'efivarfs',
};

/** Why `dir` cannot be an output folder, or undefined when it is one or can be made one. */
export function outDirProblem(dir: string): string | undefined {
  if (dir.trim() === '') return 'the path is empty';
  const full = path.resolve(dir);
  let existing = full;
  let stat: fs.Stats | undefined;
  for (;;) {
    stat = statOrUndefined(existing);
    if (stat) break;
    const parent = path.dirname(existing);
    if (parent === existing) return 'no part of the path exists';
    existing = parent;
  }
  if (!stat.isDirectory()) {
    return existing === full ? 'it exists and is not a folder' : `${existing} exists and is not a folder`;
  }
  const type = fsType(existing);
  if (type !== undefined && PSEUDO_FILE_SYSTEMS[type]) {
    return `${existing} is on a ${PSEUDO_FILE_SYSTEMS[type]} file system (kernel objects, not files), where nothing can be written`;
  }
  try {
    fs.accessSync(existing, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    return `${existing} is not writable by this user`;
  }
  // Nothing is created here (a run refused for another reason leaves no folder behind): a
  // probe file in the nearest existing folder shows that the rest can be made and written
  // (access() says yes to root on a read-only mount).
  const probe = path.join(existing, `.write-probe-${process.pid}`);
  try {
    fs.writeFileSync(probe, '');
    fs.rmSync(probe);
  } catch (err) {
    return `nothing can be written in ${existing} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  return undefined;
}

/** Throws, naming the flag and the path, unless `dir` is a folder or can be made one, and is writable. */
export function checkOutDir(dir: string, flag = '--out'): void {
  const problem = outDirProblem(dir);
  if (problem) throw new Error(`${flag} ${JSON.stringify(dir)}: ${problem}`);
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p);
  } catch {
    return undefined;
  }
}

function fsType(p: string): number | undefined {
  try {
    return Number(fs.statfsSync(p).type);
  } catch {
    return undefined;
  }
}
