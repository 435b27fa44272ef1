/**
 * The live dashboard's HTTP server (node:http): the page and its scripts, the runs below one
 * folder (view/runs.ts), and per run a server-sent-event stream of its metrics.jsonl and
 * memory.jsonl rows as they are written (view/jsonl-tail.ts), the first screenful min/max
 * downsampled for long runs (view/downsample.ts).
 *
 * Read-only and closed by default: it listens on 127.0.0.1 and answers only requests whose
 * Host header names a loopback address (so a web page elsewhere cannot reach it through DNS
 * rebinding); bound to another address, every request needs the random token of the printed
 * URL (kept in a cookie after the first visit, as Jupyter does). Only GET and HEAD are
 * answered, nothing is written or run, and only files below the runs folder are served: a path
 * with '..', '.', an empty or encoded separator, a NUL or a symbolic link leading out is refused.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { JsonlTail, JsonRow } from './jsonl-tail';
import { MinMaxDownsampler } from './downsample';
import { findRuns, MEMORY_FILE, METRICS_FILE, runDetail, runSummary } from './runs';
import { siblingModule, spawnWorker } from '../lib/worker';

export interface ServeRunsOptions {
  runsDir: string;
  port: number;
  /** Address to listen on (default 127.0.0.1); any other than loopback requires the URL's token. */
  host?: string;
  log?: (line: string) => void;
}

export interface RunsServer {
  /** The page's address (with ?token=... where one is required). */
  url: string;
  close(): Promise<void>;
}

/** Rows drawn per series when a stream opens, at most (min/max pairs of 2000 buckets). */
const SNAPSHOT_BUCKETS = 2000;
/** How often a stream looks at the run's status, kNN and checkpoint files. */
const DETAIL_MS = 1000;
/** A client this far behind (bytes queued) is dropped; its EventSource reconnects to a fresh snapshot. */
const MAX_QUEUED = 32 << 20;
const ASSETS_DIR = path.join(__dirname, 'assets');

/** The page's files, resolved when a server starts (a process that never serves, a bundled pipeline among them, needs no uplot). */
const assetFiles = (): Record<string, { file: string; type: string }> => ({
  '/': { file: path.join(ASSETS_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/assets/app.js': { file: path.join(ASSETS_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/app.css': { file: path.join(ASSETS_DIR, 'app.css'), type: 'text/css; charset=utf-8' },
  // uPlot from the installed package, as it ships (no bundling, no CDN)
  '/assets/uPlot.iife.min.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uPlot.min.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
});

const PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/** Run files (an SVG may hold scripts): nothing runs, nothing loads. */
const FILE_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox";
const FILE_TYPES: Record<string, string> = {
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.json': 'application/json; charset=utf-8',
  '.jsonl': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

/**
 * Starts the dashboard over `runsDir` on a worker thread of its own, so a training step that
 * holds the main thread (tfjs's wasm kernels run on it) never holds up a page or a metrics row;
 * resolves once it listens. `port` 0 takes a free port. For the training pipelines' --view.
 */
export function serveRuns(opts: ServeRunsOptions): Promise<RunsServer> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const worker = spawnWorker(siblingModule(__dirname, 'server-worker', __filename), { runsDir: opts.runsDir, port: opts.port, host: opts.host });
  return new Promise<RunsServer>((resolve, reject) => {
    let closed: (() => void) | undefined;
    const close = () =>
      new Promise<void>((done) => {
        closed = done;
        worker.ref();
        worker.postMessage('close');
      });
    worker.on('message', (m: WorkerMessage) => {
      if (m.kind === 'log') log(m.line);
      else if (m.kind === 'listening') {
        // once it listens, the dashboard never keeps a finished run's process alive
        worker.unref();
        resolve({ url: m.url, close });
      }
      else if (m.kind === 'failed') reject(new Error(m.message));
    });
    worker.on('error', (err) => reject(new Error(`the dashboard's thread failed: ${err.message}`)));
    worker.on('exit', () => {
      closed?.();
      reject(new Error("the dashboard's thread ended before it listened"));
    });
  });
}

/** What the dashboard's thread (view/server-worker.ts) tells the thread that started it. */
export type WorkerMessage = { kind: 'log'; line: string } | { kind: 'listening'; url: string } | { kind: 'failed'; message: string };

/** Starts the dashboard over `runsDir` on this thread (`npm run view`, where nothing else runs); resolves once it listens. */
export async function serveRunsHere(opts: ServeRunsOptions): Promise<RunsServer> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const host = opts.host ?? '127.0.0.1';
  const runsDir = path.resolve(opts.runsDir);
  const loopback = isLoopback(host);
  const token = loopback ? undefined : crypto.randomBytes(24).toString('hex');
  const assets = new Map(Object.entries(assetFiles()).map(([route, a]) => [route, { body: fs.readFileSync(a.file), type: a.type }]));
  const streams = new Set<http.ServerResponse>();
  let port = opts.port;
  const cookieName = () => `mimview_token_${port}`;

  const server = http.createServer((req, res) => {
    try {
      handle(req, res);
    } catch (err) {
      // nothing a request does may stop the server
      log(`[view] ${req.method} ${req.url}: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    }
  });

  function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-store');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', `${req.method}: this dashboard is read-only (GET and HEAD only)\n`);
    }
    const raw = req.url ?? '/';
    const q = raw.indexOf('?');
    const rawPath = q < 0 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    if (loopback && !hostAllowed(req.headers.host, port)) {
      return send(res, 403, 'text/plain; charset=utf-8', `Host '${req.headers.host ?? ''}': this dashboard answers only to localhost addresses\n`);
    }
    if (token) {
      const given = query.get('token') ?? cookies(req.headers.cookie)[cookieName()];
      if (!given || !sameToken(given, token)) return send(res, 403, 'text/plain; charset=utf-8', 'a token is required: open the URL the dashboard printed (it ends in ?token=...)\n');
      if (query.has('token')) {
        res.setHeader('Set-Cookie', `${cookieName()}=${token}; HttpOnly; SameSite=Strict; Path=/`);
        if (rawPath === '/') {
          // the token leaves the address bar (and the history) once the cookie holds it
          res.setHeader('Location', '/');
          return send(res, 302, 'text/plain; charset=utf-8', '');
        }
      }
    }

    const asset = assets.get(rawPath);
    if (asset) {
      if (rawPath === '/') res.setHeader('Content-Security-Policy', PAGE_POLICY);
      return send(res, 200, asset.type, asset.body, req.method === 'HEAD');
    }
    if (rawPath === '/api/runs') return sendJson(res, listRuns());
    if (rawPath === '/api/run' || rawPath === '/api/stream') {
      const id = query.get('id') ?? '';
      const dir = resolveBelow(runsDir, id === '.' ? [] : id.split('/'));
      if ('error' in dir) return send(res, dir.status, 'text/plain; charset=utf-8', `run '${id}': ${dir.error}\n`);
      if (!fs.statSync(dir.path).isDirectory()) return send(res, 404, 'text/plain; charset=utf-8', `run '${id}': not a folder\n`);
      if (rawPath === '/api/run') return sendJson(res, runDetail(dir.path, id, runsDir));
      return stream(req, res, dir.path, id);
    }
    if (rawPath.startsWith('/files/')) {
      const segments = decodeSegments(rawPath.slice('/files/'.length));
      if ('error' in segments) return send(res, 400, 'text/plain; charset=utf-8', `${segments.error}\n`);
      const file = resolveBelow(runsDir, segments.list);
      if ('error' in file) return send(res, file.status, 'text/plain; charset=utf-8', `${file.error}\n`);
      const type = FILE_TYPES[path.extname(file.path).toLowerCase()];
      const st = fs.statSync(file.path);
      if (!st.isFile() || !type) return send(res, 404, 'text/plain; charset=utf-8', 'only the image and report files of a run are served\n');
      res.writeHead(200, { 'Content-Type': type, 'Content-Length': st.size, 'Content-Security-Policy': FILE_POLICY });
      if (req.method === 'HEAD') return void res.end();
      fs.createReadStream(file.path).on('error', () => res.destroy()).pipe(res);
      return;
    }
    send(res, 404, 'text/plain; charset=utf-8', `${rawPath}: not found\n`);
  }

  function listRuns() {
    let exists = false;
    try {
      exists = fs.statSync(runsDir).isDirectory();
    } catch {
      exists = false;
    }
    const runs = exists ? findRuns(runsDir).map((id) => runSummary(id === '.' ? runsDir : path.join(runsDir, ...id.split('/')), id, runsDir)) : [];
    return { runsDir, exists, runs };
  }

  /** One run's live stream: `metrics` events (snapshot, then appended rows) per file, `detail` when the run's files say something new. */
  function stream(req: http.IncomingMessage, res: http.ServerResponse, dir: string, id: string): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.write('retry: 1000\n\n');
    streams.add(res);
    // a client gone (or dropped) between its close and our clean-up is written to no more
    res.on('error', () => res.destroy());
    const write = (text: string) => {
      if (res.destroyed || res.writableEnded) return;
      if (res.writableLength > MAX_QUEUED) return void res.destroy();
      res.write(text);
    };
    const event = (name: string, data: unknown) => write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
    const tails = [METRICS_FILE, MEMORY_FILE].map((name) => {
      const file = name === METRICS_FILE ? 'metrics' : 'memory';
      let snapshot: MinMaxDownsampler | undefined = new MinMaxDownsampler(SNAPSHOT_BUCKETS);
      const tail = new JsonlTail(path.join(dir, name), {
        rows: (rows: JsonRow[], reset: boolean) => {
          if (reset) snapshot = new MinMaxDownsampler(SNAPSHOT_BUCKETS);
          if (snapshot) rows.forEach((r) => snapshot!.add(r));
          else if (rows.length > 0) event('metrics', { file, kind: 'append', rows });
        },
        polled: () => {
          if (!snapshot) return;
          const rows = snapshot.rows();
          event('metrics', { file, kind: 'snapshot', rows, total: snapshot.count, downsampled: rows.length !== snapshot.count, badLines: tail.badLines });
          snapshot = undefined;
        },
        error: (err) => log(`[view] ${path.join(dir, name)}: ${err.message}`),
      });
      tail.start();
      return tail;
    });
    let lastDetail = '';
    const sendDetail = () => {
      try {
        const detail = JSON.stringify(runDetail(dir, id, runsDir));
        if (detail !== lastDetail) write(`event: detail\ndata: ${detail}\n\n`);
        lastDetail = detail;
      } catch (err) {
        log(`[view] ${dir}: ${(err as Error).message}`);
      }
    };
    sendDetail();
    const detailTimer = setInterval(sendDetail, DETAIL_MS);
    const pingTimer = setInterval(() => write(': ping\n\n'), 15_000);
    const end = () => {
      clearInterval(detailTimer);
      clearInterval(pingTimer);
      tails.forEach((t) => t.close());
      streams.delete(res);
    };
    req.on('close', end);
    res.on('close', end);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `--port ${opts.port}: ${host}:${opts.port} is in use (another dashboard or program); choose another --port, or 0 for any free one` : `--host ${host} --port ${opts.port}: cannot listen: ${err.message}`)),
    );
    server.listen(opts.port, host, () => resolve());
  });
  port = (server.address() as net.AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? os.hostname() : host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${port}/${token ? `?token=${token}` : ''}`;
  log(`[view] ${runsDir}: dashboard at ${url}${token ? ' (the token is required: the server listens beyond this machine)' : ''}`);
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        streams.forEach((res) => res.destroy());
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer, headOnly = false): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': bytes.length });
  res.end(headOnly ? undefined : bytes);
}

function sendJson(res: http.ServerResponse, value: unknown): void {
  send(res, 200, 'application/json; charset=utf-8', JSON.stringify(value));
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The Host header of a loopback server: a loopback name or address, with this port or none. */
function hostAllowed(header: string | undefined, port: number): boolean {
  if (!header) return false;
  const m = header.match(/^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/);
  if (!m || (m[2] !== undefined && Number(m[2]) !== port)) return false;
  const name = m[1].replace(/^\[|\]$/g, '').toLowerCase();
  return name === 'localhost' || isLoopback(name);
}

function cookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/** The percent-decoded segments of a URL path, each refused if it could name anything but a plain name. */
function decodeSegments(rawPath: string): { list: string[] } | { error: string } {
  const list: string[] = [];
  for (const raw of rawPath.split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return { error: `'${raw}': not a valid percent-encoded path segment` };
    }
    list.push(segment);
  }
  return { list };
}

/**
 * `segments` joined below `root`, refused (with an HTTP status) where a segment is empty, '.',
 * '..', or holds a separator or NUL, or where the real path (symbolic links resolved) is not
 * below the root's real path, or nothing is there.
 */
export function resolveBelow(root: string, segments: string[]): { path: string } | { status: number; error: string } {
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..' || /[/\\\0]/.test(s)) return { status: 400, error: `path segment '${s}' refused: only plain names below the runs folder are served` };
  }
  let realRoot: string;
  let real: string;
  try {
    realRoot = fs.realpathSync(root);
  } catch {
    return { status: 404, error: `${root}: the runs folder does not exist` };
  }
  try {
    real = fs.realpathSync(path.join(root, ...segments));
  } catch {
    return { status: 404, error: 'not found' };
  }
  if (real !== realRoot && !real.startsWith(realRoot + path.sep)) return { status: 403, error: 'refused: it leads outside the runs folder (a symbolic link)' };
  return { path: real };
}
