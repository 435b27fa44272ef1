/**
 * The bytes of one shard as a stream, wherever it lives: a local file, an `http(s)://` URL or
 * a `pipe:COMMAND`. Streamed, never downloaded whole: the tar parser pulls, and a paused pull
 * pauses the file read, the TCP connection or the command's stdout.
 *
 * HTTP: a dropped connection, a stalled one (no byte for idleTimeoutMs), a 5xx, 408 or 429 is
 * retried, with exponential backoff while tries deliver nothing. The stream goes on where it stopped: the next request asks
 * for `Range: bytes=<offset>-`; a server that answers 206 sends the rest, one that ignores the
 * range (200) sends the whole shard again and the bytes already delivered are dropped. The
 * parser therefore sees exactly the bytes of the file, so no sample is lost or read twice and
 * the sample order is the one of the same shard on disk. Every response must carry the same
 * ETag, Last-Modified and length as the first: a shard replaced on the server mid-read is an
 * error, not a splice of two files.
 *
 * Fatal (ShardFetchError, thrown to the pipeline): 4xx other than 408/429 (404, 403, ...), too
 * many failed tries in a row without progress, a `pipe:` command that exits non-zero (with the
 * tail of its stderr). A `pipe:` command is not retried: it cannot be resumed mid-stream.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import { spawn } from 'child_process';

export interface RemoteOptions {
  /** Retries of tries that deliver no byte, in a row, before a URL is given up (default 8). */
  retries?: number;
  /**
   * Wait before retrying a try that delivered nothing, in ms, doubled for each further one in a
   * row (default 500, at most 30 s). A try cut off after delivering bytes is resumed at once.
   */
  backoffMs?: number;
  /** A connection that delivers no byte for this long is dropped and retried (default 60 s). */
  idleTimeoutMs?: number;
}

/** A shard that cannot be read at all: the run stops with this message (it names the shard). */
export class ShardFetchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShardFetchError';
  }
}

/**
 * The shard's bytes, in order; a local file's errors (EISDIR, EACCES, ...) surface as they are.
 * onIdentity: called with an http shard's version (ETag, Last-Modified, length) once known;
 * a ShardFetchError it throws ends the read.
 */
export function shardBytes(shard: string, opts: RemoteOptions = {}, onIdentity?: (identity: string) => void): AsyncGenerator<Buffer> {
  if (/^https?:\/\//i.test(shard)) return httpBytes(shard, opts, onIdentity);
  if (shard.startsWith('pipe:')) return pipeBytes(shard);
  return fileBytes(shard);
}

async function* fileBytes(file: string): AsyncGenerator<Buffer> {
  const stream = fs.createReadStream(file);
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } finally {
    stream.destroy();
  }
}

const REDIRECTS = [301, 302, 303, 307, 308];
const MAX_REDIRECTS = 5;

/** Failures worth another try: they say nothing about the shard itself. */
class Retryable extends Error {}

async function* httpBytes(url: string, opts: RemoteOptions, onIdentity?: (identity: string) => void): AsyncGenerator<Buffer> {
  const retries = opts.retries ?? 8;
  const backoffMs = opts.backoffMs ?? 500;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
  let offset = 0;
  let failures = 0;
  let identity: string | undefined;
  let total: number | undefined;
  // An error thrown in at the yield (the reader's stream was destroyed) ends the read; only
  // the connection's own failures are retried.
  let yielding = false;
  for (;;) {
    let res: http.IncomingMessage | undefined;
    let progressed = false;
    try {
      res = await request(url, offset > 0 ? `bytes=${offset}-` : undefined, idleTimeoutMs);
      const status = res.statusCode ?? 0;
      if (status === 416 && total !== undefined && offset === total) return; // the drop came after the last byte
      if (status !== 200 && status !== 206) {
        const what = `HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}`;
        if (status >= 500 || status === 408 || status === 429) throw new Retryable(what);
        const hint = status === 404 ? ' (no such shard: check the URL and the brace range)' : status === 401 || status === 403 ? ' (access denied: the URL needs credentials, or a signed URL has expired)' : '';
        throw new ShardFetchError(`${url}: ${what}${hint}`);
      }
      const range = status === 206 ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '') : null;
      if (status === 206 && !range) throw new ShardFetchError(`${url}: a 206 answer without a usable Content-Range (${res.headers['content-range']})`);
      const length = range ? (range[2] === '*' ? undefined : Number(range[2])) : res.headers['content-length'] !== undefined ? Number(res.headers['content-length']) : undefined;
      const id = versionOf(res, length);
      if (identity !== undefined && id !== identity) {
        throw new ShardFetchError(`${url} changed while it was being read (first ${identity}; after a retry ${id}): read it again from the start`);
      }
      if (identity === undefined) onIdentity?.(id);
      identity = id;
      total = length;
      // 206: the rest from where it asked; 200 after a drop: the server ignores Range, so drop what was delivered
      const from = range ? Number(range[1]) : 0;
      if (from > offset) throw new ShardFetchError(`${url}: asked for the bytes from ${offset}, the server sent them from ${from}`);
      let skip = offset - from;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        let bytes = chunk;
        if (skip > 0) {
          if (bytes.length <= skip) {
            skip -= bytes.length;
            continue;
          }
          bytes = bytes.subarray(skip);
          skip = 0;
        }
        offset += bytes.length;
        progressed = true;
        yielding = true;
        yield bytes;
        yielding = false;
      }
      if (!res.complete) throw new Retryable('the connection closed before the end of the response');
      if (skip > 0) throw new Retryable(`the response ended ${skip} bytes before the offset already read`);
      return;
    } catch (err) {
      if (yielding || err instanceof ShardFetchError) throw err;
      // A try that delivered bytes before it failed is resumed at once; tries that deliver
      // nothing back off, and too many of them in a row end the shard.
      failures = progressed ? 0 : failures + 1;
      if (failures > retries) {
        throw new ShardFetchError(`${url}: gave up after ${failures} failed tries in a row without data, at byte ${offset} (last: ${(err as Error).message})`);
      }
      if (failures > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, backoffMs * 2 ** (failures - 1))));
    } finally {
      if (res && !res.complete) res.destroy(); // also when the reader stops early
    }
  }
}

const versionOf = (res: http.IncomingMessage, length: number | undefined) =>
  `etag ${res.headers.etag ?? '-'}, last-modified ${res.headers['last-modified'] ?? '-'}, length ${length ?? '-'}`;

/**
 * An http shard's version (ETag, Last-Modified, length, as a read sees them) without reading
 * it: a one-byte ranged GET (a URL signed for GET may refuse HEAD). Undefined where the server
 * names no ETag or Last-Modified (a length alone does not tell versions apart) or the request
 * fails: the caller then reads the shard.
 */
export async function httpVersion(url: string, opts: RemoteOptions = {}): Promise<string | undefined> {
  let res: http.IncomingMessage | undefined;
  try {
    res = await request(url, 'bytes=0-0', opts.idleTimeoutMs ?? 60_000);
    if (!res.headers.etag && !res.headers['last-modified']) return undefined;
    if (res.statusCode === 206) {
      const total = /\/(\d+)$/.exec(res.headers['content-range'] ?? '');
      return total ? versionOf(res, Number(total[1])) : undefined;
    }
    if (res.statusCode === 200 && res.headers['content-length'] !== undefined) return versionOf(res, Number(res.headers['content-length']));
    return undefined;
  } catch {
    return undefined;
  } finally {
    res?.destroy();
  }
}

/** GET (from `range` where given), following redirects; resolves with the response head (body unread). */
function request(url: string, range: string | undefined, idleTimeoutMs: number, redirects = 0): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const get = url.toLowerCase().startsWith('https:') ? https.get : http.get;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (range) headers.range = range;
    const req = get(url, { headers }, (res) => {
      if (REDIRECTS.includes(res.statusCode ?? 0) && res.headers.location) {
        res.resume();
        if (redirects >= MAX_REDIRECTS) return reject(new ShardFetchError(`${url}: more than ${MAX_REDIRECTS} redirects`));
        return resolve(request(new URL(res.headers.location, url).toString(), range, idleTimeoutMs, redirects + 1));
      }
      resolve(res);
    });
    // The socket's idle timer covers the wait for the head and every gap in the body.
    req.setTimeout(idleTimeoutMs, () => req.destroy(new Retryable(`no data for ${idleTimeoutMs / 1000} s`)));
    req.on('error', (err) => reject(err instanceof Retryable ? err : new Retryable(err.message)));
  });
}

/** Bytes of stderr kept for the error message. */
const STDERR_TAIL = 2000;

/** `pipe:COMMAND`: run through the shell (as webdataset does); stdout is the shard. */
async function* pipeBytes(shard: string): AsyncGenerator<Buffer> {
  const command = shard.slice('pipe:'.length);
  // Its own process group, so that stopping early stops the whole pipeline (`curl ... | zcat`),
  // not only the shell; a reader killed outright leaves the commands to die of SIGPIPE.
  const child = spawn(command, { shell: true, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stderr = Buffer.alloc(0);
  child.stderr.on('data', (chunk: Buffer) => {
    stderr = Buffer.concat([stderr, chunk]);
    if (stderr.length > 2 * STDERR_TAIL) stderr = stderr.subarray(stderr.length - STDERR_TAIL);
  });
  let spawnError: Error | undefined;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      spawnError = err;
      resolve({ code: null, signal: null });
    });
  });
  let finished = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const { code, signal } = await closed;
    finished = true;
    if (spawnError) throw new ShardFetchError(`${shard}: the command could not be started (${spawnError.message})`);
    if (code !== 0) {
      const tail = stderr.subarray(Math.max(0, stderr.length - STDERR_TAIL)).toString('utf8').trim();
      const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      throw new ShardFetchError(`${shard}: the command ${how}${tail ? `; its stderr ends: ${tail}` : ' (nothing on stderr)'}`);
    }
  } finally {
    // The reader stopped early (or the shard ended before the command): no zombie, no error.
    if (!finished && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // the group has exited already
      }
    }
    child.stdout.destroy();
    child.stderr.destroy();
  }
}
