/**
 * Follows a JSON Lines file that another process appends to (metrics.jsonl, memory.jsonl), as
 * `tail -F` does: fs.watch on its folder wakes it within milliseconds of a write, and a poll
 * every `pollMs` covers file systems where watching does not work (network mounts, some
 * containers). Only whole lines are passed on: a last line without its newline (a write in
 * progress, or a run killed mid-line) is held back until it is complete. A file that shrinks
 * or is replaced (another inode: a resumed run's metrics.jsonl is cut back to its checkpoint's
 * step by an atomic rename) is read again from its start, announced by `reset`. A line that is
 * not a JSON object is counted and skipped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export type JsonRow = Record<string, unknown>;

export interface TailEvents {
  /** Rows appended since the last call. `reset`: the file was cut back or replaced, these rows start it anew. */
  rows: (rows: JsonRow[], reset: boolean) => void;
  /** After each look at the file, whether or not it had grown. */
  polled?: () => void;
  /** A read that failed for another reason than the file not existing (it is retried at the next poll). */
  error?: (err: Error) => void;
}

/** Bytes read per poll at most, so a huge file is read over several polls with bounded memory. */
const READ_CHUNK = 4 << 20;

export class JsonlTail {
  private offset = 0;
  private ino: number | undefined;
  private pending = Buffer.alloc(0);
  private timer: NodeJS.Timeout | undefined;
  private watcher: fs.FSWatcher | undefined;
  private polling = false;
  private again = false;
  private closed = false;
  /** Lines skipped because they were not JSON objects. */
  badLines = 0;

  constructor(
    readonly file: string,
    private readonly events: TailEvents,
    private readonly opts: { pollMs?: number } = {},
  ) {}

  /** Reads what the file holds now, then follows it. */
  start(): void {
    this.watchFolder();
    this.poll();
    this.timer = setInterval(() => this.poll(), this.opts.pollMs ?? 1000);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
  }

  /** Watches the folder, not the file: the file may not exist yet, and an atomic rewrite replaces it. */
  private watchFolder(): void {
    try {
      const name = path.basename(this.file);
      this.watcher = fs.watch(path.dirname(this.file), { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name) this.poll();
      });
      this.watcher.on('error', () => {
        // the folder went away or cannot be watched: the poll carries on alone
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      // no watching here (missing folder, no inotify): the poll carries on alone
    }
  }

  /** One read of what was appended; calls during a read run once more after it. */
  poll(): void {
    if (this.closed) return;
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = true;
    try {
      do {
        this.again = false;
        this.readAppended();
      } while (this.again && !this.closed);
      this.events.polled?.();
    } catch (err) {
      this.events.error?.(err as Error);
    } finally {
      this.polling = false;
    }
  }

  private readAppended(): void {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // gone (or not there yet): whatever was shown no longer exists
      if (this.ino !== undefined) this.restart([]);
      return;
    }
    if (!st.isFile()) return;
    let reset = false;
    if (this.ino !== undefined && (st.ino !== this.ino || st.size < this.offset)) {
      this.offset = 0;
      this.pending = Buffer.alloc(0);
      reset = true;
    }
    this.ino = st.ino;
    const rows: JsonRow[] = [];
    const fd = fs.openSync(this.file, 'r');
    try {
      while (this.offset < st.size) {
        const chunk = Buffer.alloc(Math.min(READ_CHUNK, st.size - this.offset));
        const n = fs.readSync(fd, chunk, 0, chunk.length, this.offset);
        if (n === 0) break;
        this.offset += n;
        this.splitLines(Buffer.concat([this.pending, chunk.subarray(0, n)]), rows);
        if (rows.length > 0 && this.offset < st.size) {
          // pass on what is read, so a large file streams without being held whole
          this.events.rows(rows.splice(0), reset);
          reset = false;
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    if (rows.length > 0 || reset) this.events.rows(rows, reset);
  }

  private restart(rows: JsonRow[]): void {
    this.offset = 0;
    this.ino = undefined;
    this.pending = Buffer.alloc(0);
    this.events.rows(rows, true);
  }

  /** Whole lines of `bytes` into `rows`; the bytes after the last newline wait in `pending`. */
  private splitLines(bytes: Buffer, rows: JsonRow[]): void {
    let start = 0;
    for (let nl = bytes.indexOf(10, start); nl >= 0; nl = bytes.indexOf(10, start)) {
      const line = bytes.toString('utf8', start, nl).trim();
      start = nl + 1;
      if (line === '') continue;
      try {
        const row = JSON.parse(line) as unknown;
        if (row && typeof row === 'object' && !Array.isArray(row)) rows.push(row as JsonRow);
        else this.badLines++;
      } catch {
        this.badLines++;
      }
    }
    this.pending = Buffer.from(bytes.subarray(start));
  }
}
