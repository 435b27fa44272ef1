/**
 * What the dashboard knows about the runs below a folder, read from the files the pipelines
 * write and never written to: a run is a folder holding metrics.jsonl or a checkpoint
 * (checkpoint/, checkpoint.tmp, checkpoint.step-<n>), found at any depth (fine-tuning nests
 * <share>/lr-<lr>/seed-<s>/). Every file may be missing, half written or foreign: what cannot
 * be read is left out of the answer (and said so in `problems`), never an exception.
 *
 * Status, from the most certain sign to the least:
 * Identity (pipeline, start, ranks, backend) from status.json, else run.json (train/run.ts).
 * A run folder with neither status.json nor run.lock nor run.json (fine-tuning's per-seed runs)
 * takes them from the nearest folder above it that has them (the sweep's), except that its own
 * result.json makes it finished while the sweep goes on.
 *
 *   running   run.lock (runtime/run-lock.ts) held by a live process
 *   finished / failed / stopped   status.json (runtime/run-status.ts) where the pipeline wrote one
 *   stopped   a lock or status.json 'running' left by a process that is gone (killed)
 *   finished  result.json or summary.json beside the metrics (pipelines that write no status.json)
 *   stopped   a checkpoint and nothing that says finished: resumable
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensorsHeader } from '../models/safetensors';
import { readRunStatus } from '../runtime/run-status';
import type { JsonRow } from './jsonl-tail';

export const METRICS_FILE = 'metrics.jsonl';
/** What sinks/memory-jsonl.ts writes (not imported: the server thread loads no tfjs). */
export const MEMORY_FILE = 'memory.jsonl';
const LOCK_FILE = 'run.lock';
const CHECKPOINT_DIR = /^checkpoint(\.tmp|\.step-\d+)?$/;
/** Folders not looked into: a run's checkpoints, and what is never a run. */
const NOT_SEARCHED = /^(checkpoint(\..*)?|node_modules|\..*)$/;
const MAX_DEPTH = 8;
/** Folders looked at per search at most, so a runs folder pointed at a huge tree stays cheap. */
const MAX_FOLDERS = 20_000;

export interface RunSummary {
  /** The run's folder relative to the runs folder, '/'-separated ('refine', 'finetune/mae/1%/lr-0.001/seed-0'). */
  id: string;
  pipeline: string;
  status: 'running' | 'finished' | 'stopped' | 'failed' | 'unknown';
  /** Why it failed, or how it stopped. */
  message?: string;
  /** The command that continues it (stopped, failed with a checkpoint). */
  resume?: string;
  backend?: string;
  adapter?: string;
  ranks?: number;
  started?: string;
  /** The last step in metrics.jsonl. */
  step?: number;
  totalSteps?: number;
  /** Steps per second over the last rows. */
  stepsPerSecond?: number;
  /** Seconds left at that rate (running runs with a known total). */
  etaSeconds?: number;
  /** When the last metrics row was written (ISO 8601). */
  lastRowTime?: string;
  /** The newest complete checkpoint's step. */
  checkpointStep?: number;
  /** Last modification of the run's files, ms since the epoch (the list is sorted by it). */
  modified: number;
  /** What could not be read (a half-written file, a foreign status.json). */
  problems: string[];
}

export interface KnnCurvePoint {
  step: number;
  blocks: number[];
  top1: number[];
}

export interface RunDetail extends RunSummary {
  flags?: Record<string, unknown>;
  /** knn-during.json: per-block kNN top-1 of the EMA encoder over the steps. */
  knnDuring?: KnnCurvePoint[];
  /** summary.json / knn.json: per-block kNN reports (before and after refinement, or one model). */
  knnReports?: { file: string; reports: { label: string; blocks: number[]; top1: number[]; valTop1?: number[] }[] }[];
  /** Fine-tuning: validation top-1 at each evaluation (result.json, or the checkpoint while it runs). */
  valCurve?: { step: number; epoch: number; val: number }[];
  /** Image and report files of the run folder, for links. */
  files: string[];
}

/**
 * The runs below `runsDir`, newest first. Symbolic links are not followed (a link cannot take
 * the dashboard outside the runs folder).
 */
export function findRuns(runsDir: string): string[] {
  const found: { id: string; modified: number }[] = [];
  let visited = 0;
  const walk = (dir: string, rel: string, depth: number) => {
    if (depth > MAX_DEPTH || visited++ > MAX_FOLDERS) return;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    const isRun = entries.some((e) => (e.isFile() && e.name === METRICS_FILE) || (e.isDirectory() && CHECKPOINT_DIR.test(e.name)));
    if (isRun && rel !== '') found.push({ id: rel, modified: modifiedAt(dir) });
    for (const e of entries) {
      if (e.isDirectory() && !NOT_SEARCHED.test(e.name)) walk(path.join(dir, e.name), rel ? `${rel}/${e.name}` : e.name, depth + 1);
    }
  };
  walk(runsDir, '', 0);
  // the runs folder itself may be a run (--runs runs/refine)
  if (isRunFolder(runsDir)) found.push({ id: '.', modified: modifiedAt(runsDir) });
  return found.sort((a, b) => b.modified - a.modified || a.id.localeCompare(b.id)).map((r) => r.id);
}

function isRunFolder(dir: string): boolean {
  try {
    return fs.readdirSync(dir, { withFileTypes: true }).some((e) => (e.isFile() && e.name === METRICS_FILE) || (e.isDirectory() && CHECKPOINT_DIR.test(e.name)));
  } catch {
    return false;
  }
}

/** The newest modification among the run's metrics, status and lock (cheap: three stats). */
function modifiedAt(dir: string): number {
  let newest = 0;
  for (const name of [METRICS_FILE, 'status.json', LOCK_FILE, 'checkpoint']) {
    try {
      newest = Math.max(newest, fs.statSync(path.join(dir, name)).mtimeMs);
    } catch {
      // not there
    }
  }
  return newest;
}

interface LockOwner {
  pid: number;
  host: string;
  started: string;
  command: string;
}

/** The summary of the run in `dir` (id: its name in the list). */
export function runSummary(dir: string, id: string, runsDir?: string): RunSummary {
  const problems: string[] = [];
  // a run inside a sweep (fine-tuning's seeds) takes the sweep's status.json and lock
  const owner = runsDir ? statusFolder(dir, runsDir) : dir;
  const status = readRunStatus(owner);
  if (!status && fs.existsSync(path.join(owner, 'status.json'))) problems.push('status.json is not a run status (half written or foreign)');
  const lock = readJson<LockOwner>(path.join(owner, LOCK_FILE));
  const lockLive = lock !== undefined && isLive(lock);
  const checkpointStep = newestCheckpointStep(dir);
  const metrics = metricsEnds(path.join(dir, METRICS_FILE));
  if (metrics.cutOff) problems.push('metrics.jsonl ends in a cut-off line (a write in progress, or a run killed mid-line)');
  // run.json (train/run.ts): the pipeline that owns the folder, how and when it started
  const identity = readJson<{ pipeline?: string; script?: string; started?: string; ranks?: number; backend?: string }>(path.join(dir, 'run.json'));
  const pipeline = status?.pipeline ?? identity?.pipeline ?? pipelineOf(lock?.command) ?? pipelineOf(status?.command) ?? 'unknown';
  const script = identity?.script ?? (pipeline === 'unknown' ? 'pipelines/<pipeline>.ts' : `pipelines/${pipeline}.ts`);
  const resume = status?.resume ?? (checkpointStep !== undefined ? resumeCommandFor(script, dir) : undefined);
  const finishedFiles = ['result.json', 'summary.json', 'knn.json'].some((f) => fs.existsSync(path.join(dir, f)));

  let state: RunSummary['status'];
  let message: string | undefined;
  if (owner !== dir && finishedFiles) state = 'finished';
  else if (lockLive) state = 'running';
  else if (status && status.state !== 'running') {
    state = status.state;
    message = status.message;
  } else if (status?.state === 'running' || lock) {
    state = 'stopped';
    message = `the process (${lock?.pid ?? status?.pid}) ended without saying how: killed?`;
  } else if (finishedFiles) state = 'finished';
  else if (checkpointStep !== undefined) state = 'stopped';
  else state = 'unknown';
  if (state === 'running' && lock && lock.host !== os.hostname()) message = `on host ${lock.host} (pid ${lock.pid}); not checked from here`;

  const totalSteps = status?.totalSteps;
  const step = typeof metrics.last?.step === 'number' ? metrics.last.step : undefined;
  const stepsPerSecond = metrics.stepsPerSecond;
  return {
    id,
    pipeline,
    status: state,
    ...(message ? { message } : {}),
    ...(resume && (state === 'stopped' || state === 'failed') ? { resume } : {}),
    backend: status?.backend ?? identity?.backend,
    adapter: status?.adapter,
    ranks: status?.ranks ?? identity?.ranks,
    started: status?.started ?? identity?.started ?? lock?.started ?? (typeof metrics.first?.time === 'string' ? metrics.first.time : undefined),
    step,
    totalSteps,
    stepsPerSecond,
    etaSeconds: state === 'running' && totalSteps !== undefined && step !== undefined && stepsPerSecond ? Math.max(0, (totalSteps - step) / stepsPerSecond) : undefined,
    lastRowTime: typeof metrics.last?.time === 'string' ? metrics.last.time : undefined,
    checkpointStep,
    modified: modifiedAt(dir),
    problems,
  };
}

/**
 * The folder whose status.json and run.lock speak for the run in `dir`: `dir` where it has
 * either (or run.json), else the nearest folder above it, within the runs folder, that has one.
 */
function statusFolder(dir: string, runsDir: string): string {
  const has = (d: string, names: string[]) => names.some((n) => fs.existsSync(path.join(d, n)));
  if (has(dir, ['status.json', LOCK_FILE, 'run.json'])) return dir;
  const root = path.resolve(runsDir);
  for (let d = path.dirname(path.resolve(dir)); d.startsWith(root); d = path.dirname(d)) {
    if (has(d, ['status.json', LOCK_FILE])) return d;
    if (d === root) break;
  }
  return dir;
}

/** The summary plus flags, kNN and validation curves, and the run's files. */
export function runDetail(dir: string, id: string, runsDir: string): RunDetail {
  const summary = runSummary(dir, id, runsDir);
  const status = readRunStatus(statusFolder(dir, runsDir));
  const state = checkpointState(dir);
  const flags = status?.flags ?? (state?.flags as Record<string, unknown> | undefined) ?? flagsJsonAbove(dir, runsDir);
  const detail: RunDetail = { ...summary, files: listFiles(dir) };
  if (flags && typeof flags === 'object') detail.flags = flags;

  const during = readJson<{ points?: { step: number; report: { blocks: number[]; top1: number[] } }[] }>(path.join(dir, 'knn-during.json'));
  if (during && Array.isArray(during.points)) {
    detail.knnDuring = during.points
      .filter((p) => p && typeof p.step === 'number' && Array.isArray(p.report?.blocks) && Array.isArray(p.report?.top1))
      .map((p) => ({ step: p.step, blocks: p.report.blocks, top1: p.report.top1 }));
  } else if (fs.existsSync(path.join(dir, 'knn-during.json'))) summary.problems.push('knn-during.json is unreadable');

  for (const file of ['summary.json', 'knn.json']) {
    const report = readJson<{ knn?: { label?: string; blocks?: number[]; top1?: number[]; val?: { top1?: number[] } }[] }>(path.join(dir, file));
    if (!report || !Array.isArray(report.knn)) continue;
    const reports = report.knn
      .filter((r) => r && Array.isArray(r.blocks) && Array.isArray(r.top1))
      .map((r) => ({ label: String(r.label ?? file), blocks: r.blocks!, top1: r.top1!, ...(Array.isArray(r.val?.top1) ? { valTop1: r.val!.top1 } : {}) }));
    if (reports.length > 0) (detail.knnReports ??= []).push({ file, reports });
  }

  const result = readJson<{ curve?: RunDetail['valCurve'] }>(path.join(dir, 'result.json'));
  const curve = result?.curve ?? (state?.curve as RunDetail['valCurve'] | undefined);
  if (Array.isArray(curve)) detail.valCurve = curve.filter((c) => c && typeof c.step === 'number' && typeof c.val === 'number');
  return detail;
}

/**
 * The first row and the last rows of a metrics file, read from its two ends only (a few tens
 * of KB whatever its length): the start time, the last step, and the rate over the last rows.
 */
export function metricsEnds(file: string): { first?: JsonRow; last?: JsonRow; stepsPerSecond?: number; cutOff: boolean } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return { cutOff: false };
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return { cutOff: false };
    const read = (start: number, length: number) => {
      const buf = Buffer.alloc(length);
      const n = fs.readSync(fd, buf, 0, length, start);
      return buf.toString('utf8', 0, n);
    };
    const headText = read(0, Math.min(size, 64 << 10));
    const first = parseRow(headText.split('\n')[0]);
    const tailStart = Math.max(0, size - (64 << 10));
    const tailText = read(tailStart, size - tailStart);
    const cutOff = !tailText.endsWith('\n');
    const lines = tailText.split('\n');
    if (tailStart > 0) lines.shift(); // the first piece may be the end of a line
    if (cutOff) lines.pop();
    const rows = lines.map(parseRow).filter((r): r is JsonRow => r !== undefined && typeof r.step === 'number' && typeof r.time === 'string');
    const last = rows[rows.length - 1];
    // rows are written in bursts (one per --log-every steps, at the device read): a window
    // within one burst says nothing of the rate, so it reaches back to the first row then
    const rateFrom = (a: JsonRow | undefined) => {
      if (!a || !last || typeof a.step !== 'number' || typeof a.time !== 'string') return undefined;
      const seconds = (Date.parse(last.time as string) - Date.parse(a.time)) / 1000;
      const steps = (last.step as number) - a.step;
      return seconds >= 1 && steps > 0 ? steps / seconds : undefined;
    };
    const stepsPerSecond = rateFrom(rows[0]) ?? rateFrom(first);
    return { first, last, stepsPerSecond, cutOff };
  } finally {
    fs.closeSync(fd);
  }
}

function parseRow(line: string | undefined): JsonRow | undefined {
  if (!line) return undefined;
  try {
    const row = JSON.parse(line) as unknown;
    return row && typeof row === 'object' && !Array.isArray(row) ? (row as JsonRow) : undefined;
  } catch {
    return undefined;
  }
}

/** The step of the run's newest checkpoint with a readable manifest. */
function newestCheckpointStep(dir: string): number | undefined {
  let best: number | undefined;
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => /^checkpoint(\.step-\d+)?$/.test(n));
  } catch {
    return undefined;
  }
  for (const n of names) {
    const step = readJson<{ step?: number }>(path.join(dir, n, 'manifest.json'))?.step;
    if (Number.isInteger(step) && (best === undefined || step! > best)) best = step;
  }
  return best;
}

const stateCache = new Map<string, { key: string; state: Record<string, unknown> | undefined }>();

/** The JSON 'state' metadata of checkpoint/state.safetensors (flags, fine-tuning's curve), from its header only; cached per file version. */
function checkpointState(dir: string): Record<string, unknown> | undefined {
  const file = path.join(dir, 'checkpoint', 'state.safetensors');
  let key: string;
  try {
    const st = fs.statSync(file);
    key = `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
  const cached = stateCache.get(file);
  if (cached?.key === key) return cached.state;
  let state: Record<string, unknown> | undefined;
  try {
    const meta = readSafetensorsHeader(file).metadata.state;
    state = meta ? (JSON.parse(meta) as Record<string, unknown>) : undefined;
  } catch {
    state = undefined; // a checkpoint being swapped in: read again at the next look
  }
  if (stateCache.size > 1000) stateCache.clear();
  stateCache.set(file, { key, state });
  return state;
}

/** flags.json in the run folder or a folder above it within the runs folder (fine-tuning keeps one per sweep). */
function flagsJsonAbove(dir: string, runsDir: string): Record<string, unknown> | undefined {
  const real = (p: string) => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  const root = real(runsDir);
  for (let d = real(dir); d.startsWith(root); d = path.dirname(d)) {
    const flags = readJson<Record<string, unknown>>(path.join(d, 'flags.json'));
    if (flags && typeof flags === 'object') return flags;
    if (d === root) break;
  }
  return undefined;
}

function listFiles(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isFile() && /\.(png|svg|json|jsonl|md)$/.test(e.name) && !e.name.endsWith('.tmp'))
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Signal 0 checks that a process exists (EPERM: it does, under another user); another host's lock is taken as live. */
function isLive(lock: LockOwner): boolean {
  if (!Number.isInteger(lock.pid)) return false;
  if (lock.host !== os.hostname()) return true;
  try {
    process.kill(lock.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** 'refine' from a command line naming pipelines/refine.ts. */
function pipelineOf(command: string | undefined): string | undefined {
  return command?.match(/pipelines\/([\w-]+)\.ts/)?.[1];
}

function resumeCommandFor(script: string, dir: string): string {
  const quoted = /^[\w@%+=:,./-]+$/.test(dir) ? dir : `'${dir.replace(/'/g, `'\\''`)}'`;
  return `npx ts-node ${script} --resume ${quoted}`;
}
