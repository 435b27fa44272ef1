/**
 * A loopback HTTP server for the remote-source specs and bench: serves the files of one folder
 * the way real servers fail. The first path segment picks the behaviour:
 *   /ok/F          200, or 206 for `Range: bytes=N-` (ETag and Last-Modified set); so does
 *                  any other first segment not listed here
 *   /drop/F        every response is cut off (socket destroyed) after `dropAfter` bytes
 *   /flaky/F       the first request for F answers 500, the next ones as /ok
 *   /slow/F        16 KiB every `slowMs` ms
 *   /norange/F     ignores Range (always 200 with the whole file); the first response is cut off
 *   /cut/F         the first half of F, as a complete response (a truncated file on the server)
 *   /changing/F    as /drop, but the ETag changes after the first response
 *   /versioned/F   as /ok, but each request sees a new version (ETag "v1", "v2", ...)
 *   /stall/F       sends `dropAfter` bytes, then nothing more (the connection stays open)
 *   /status/NNN/F  always answers NNN
 */
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';

export interface ShardServer {
  base: string;
  /** Requests seen, by path, with their Range header: what the client asked for. */
  requests: { path: string; range?: string }[];
  close(): Promise<void>;
}

export async function startShardServer(dir: string, opts: { dropAfter?: number; slowMs?: number } = {}): Promise<ShardServer> {
  const dropAfter = opts.dropAfter ?? 256 * 1024;
  const slowMs = opts.slowMs ?? 2;
  const seen = new Map<string, number>();
  const requests: ShardServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0]);
    requests.push({ path: url, range: req.headers.range });
    const parts = url.split('/').filter(Boolean);
    const mode = parts.shift() ?? '';
    const status = mode === 'status' ? Number(parts.shift()) : 0;
    const file = path.join(dir, ...parts);
    if (status) {
      res.writeHead(status, { 'content-type': 'text/plain' }).end(`status ${status}\n`);
      return;
    }
    if (!file.startsWith(dir) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found\n');
      return;
    }
    const count = (seen.get(url) ?? 0) + 1;
    seen.set(url, count);
    if (mode === 'flaky' && count === 1) {
      res.writeHead(500).end('try again\n');
      return;
    }
    let body = fs.readFileSync(file);
    if (mode === 'cut') body = body.subarray(0, Math.floor(body.length / 2));
    const etag = mode === 'versioned' ? `"v${count}"` : mode === 'changing' && count > 1 ? '"v2"' : '"v1"';
    const headers: http.OutgoingHttpHeaders = { etag, 'last-modified': new Date(0).toUTCString(), 'accept-ranges': mode === 'norange' ? 'none' : 'bytes' };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (range && mode !== 'norange') {
      start = Number(range[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else res.writeHead(200, { ...headers, 'content-length': body.length });
    const rest = body.subarray(start);
    if (mode === 'stall') {
      res.write(rest.subarray(0, Math.min(rest.length, count === 1 ? dropAfter : 0)));
      return;
    }
    const cutAt = mode === 'drop' || mode === 'changing' || (mode === 'norange' && count === 1) ? dropAfter : Infinity;
    if (rest.length > cutAt) {
      res.write(rest.subarray(0, cutAt), () => res.socket?.destroy());
      return;
    }
    if (mode !== 'slow') {
      res.end(rest);
      return;
    }
    let at = 0;
    const tick = () => {
      if (res.destroyed) return;
      const next = Math.min(rest.length, at + 16 * 1024);
      res.write(rest.subarray(at, next));
      at = next;
      if (at < rest.length) setTimeout(tick, slowMs);
      else res.end();
    };
    tick();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
