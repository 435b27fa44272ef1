/**
 * Checkpoints. An encoder is one safetensors file with timm's key names and nothing else, so
 * it loads in PyTorch/timm as it is; its ViT config rides in the safetensors metadata. The
 * training state (decoder or heads, optimiser moments, queues, step, RNG) sits beside it in
 * state.safetensors. A run's checkpoint folder is written under a temporary name, marked
 * complete by a manifest written last and swapped in by rename; the previous ones stay beside
 * it, so a kill at any moment leaves a complete checkpoint to resume from.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { fsyncDir, writeFileAtomic } from '../lib/atomic-file';
import { readSafetensors, writeSafetensors, TensorToWrite, LoadedTensor } from '../models/safetensors';
import { VisionTransformer, VitConfig, VIT_PRESETS } from '../models/vit';
import { HostTensor } from '../models/params';

/** Keys a timm/MAE checkpoint may carry that the encoder does not use. */
const FOREIGN_KEYS = /^(head\.|fc_norm\.|decoder|mask_token)/;

export async function writeEncoder(file: string, model: VisionTransformer, extra: Record<string, string> = {}): Promise<void> {
  writeSafetensors(file, await model.params.exportTimm(), { format: 'pt', vit: JSON.stringify(model.cfg), ...extra });
}

/** Float tensors of a file as HostTensors. */
export function hostTensors(tensors: Map<string, LoadedTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [k, t] of tensors) out.set(k, { shape: t.shape, data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data) });
  return out;
}

/**
 * Builds a ViT from an encoder file. The config comes from the file's metadata; a file
 * without it (for example converted from PyTorch) needs `fallback` (a preset or flags), and
 * the error without one names `fallbackFlag`, the pipeline's flag that gives it.
 * Every key and shape is checked before any weight is loaded.
 */
export function loadEncoder(file: string, fallback?: VitConfig, fallbackFlag = '--preset'): VisionTransformer {
  if (!fs.existsSync(file)) throw new Error(`${file}: checkpoint not found`);
  const { tensors, metadata } = readSafetensors(file);
  assertFinite(tensors, file);
  let cfg: VitConfig | undefined = fallback;
  if (metadata.vit) {
    try {
      cfg = { ...JSON.parse(metadata.vit) } as VitConfig;
    } catch {
      throw new Error(`${file}: metadata 'vit' is not valid JSON`);
    }
  }
  if (!cfg) throw new Error(`${file}: no ViT config in the file's metadata; pass ${fallbackFlag} (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const model = new VisionTransformer(cfg);
  try {
    model.params.importTimm(hostTensors(tensors), file, FOREIGN_KEYS);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

export interface TrainState {
  tensors: Record<string, TensorToWrite>;
  meta: Record<string, unknown>;
}

export type CheckpointFiles = Record<string, { tensors: Record<string, TensorToWrite | HostTensor>; metadata?: Record<string, string> }>;

/** Written last into a checkpoint folder: its step and each file's size and SHA-256. */
const MANIFEST = 'manifest.json';
interface Manifest {
  step: number;
  files: Record<string, { bytes: number; sha256: string }>;
}

/** Keeps the checkpoints of the last `keep` distinct steps (`--keep-checkpoints`). */
export const DEFAULT_KEEP_CHECKPOINTS = 2;

/**
 * Writes a checkpoint of `step` into `runDir`: the files go to `checkpoint.tmp`, then the
 * manifest (last, so its presence marks the folder complete), then `checkpoint` (the latest,
 * which users read) moves aside to `checkpoint.step-<its step>` and `checkpoint.tmp` takes its
 * name. Older `checkpoint.step-*` beyond the newest `keep` checkpoints are removed. A kill at any
 * point leaves at least one complete checkpoint that `readTrainState` finds; a kill between the
 * two renames (no `checkpoint`, a complete `checkpoint.tmp`) is settled here first.
 */
export function writeCheckpoint(runDir: string, files: CheckpointFiles, opts: { step: number; keep?: number }): void {
  const keep = opts.keep ?? DEFAULT_KEEP_CHECKPOINTS;
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`--keep-checkpoints: expected an integer >= 1, got ${keep}`);
  const latest = path.join(runDir, 'checkpoint');
  const tmp = `${latest}.tmp`;
  settleCheckpoints(runDir);
  fs.rmSync(tmp, { recursive: true, force: true }); // an earlier write that did not finish
  fs.mkdirSync(tmp, { recursive: true });
  const manifest: Manifest = { step: opts.step, files: {} };
  for (const [name, f] of Object.entries(files)) {
    const file = path.join(tmp, name);
    writeSafetensors(file, f.tensors, f.metadata);
    manifest.files[name] = fileDigest(file);
  }
  writeFileAtomic(path.join(tmp, MANIFEST), JSON.stringify(manifest, null, 1));
  if (fs.existsSync(latest)) {
    const previous = readManifest(latest)?.step;
    // the same step written again (a final checkpoint right after a periodic one) replaces it
    const aside = previous === undefined || previous === opts.step ? `${latest}.old` : `${latest}.step-${previous}`;
    fs.rmSync(aside, { recursive: true, force: true });
    fs.renameSync(latest, aside);
  }
  fs.renameSync(tmp, latest);
  fsyncDir(runDir);
  fs.rmSync(`${latest}.old`, { recursive: true, force: true });
  const older = listCheckpoints(runDir).filter((c) => c.name.startsWith('checkpoint.step-'));
  for (const c of older.slice(keep - 1)) fs.rmSync(c.dir, { recursive: true, force: true });
}

/** A complete `checkpoint.tmp` left by a kill between the two renames becomes `checkpoint`. */
function settleCheckpoints(runDir: string): void {
  const latest = path.join(runDir, 'checkpoint');
  const tmp = `${latest}.tmp`;
  if (fs.existsSync(latest) || !fs.existsSync(tmp) || checkDir(tmp) !== undefined) return;
  fs.renameSync(tmp, latest);
  fsyncDir(runDir);
}

interface Candidate {
  name: string;
  dir: string;
  step: number;
}

/** The run's complete checkpoints, newest step first (`checkpoint` first among equals). */
function listCheckpoints(runDir: string): Candidate[] {
  const names = fs.readdirSync(runDir).filter((n) => /^checkpoint(\.tmp|\.old|\.step-\d+)?$/.test(n));
  const rank = (n: string) => (n === 'checkpoint' ? 0 : n === 'checkpoint.tmp' ? 1 : 2);
  return names
    .map((name) => ({ name, dir: path.join(runDir, name), step: readManifest(path.join(runDir, name))?.step }))
    .filter((c): c is Candidate => c.step !== undefined && checkDir(c.dir) === undefined)
    .sort((a, b) => b.step - a.step || rank(a.name) - rank(b.name));
}

/**
 * The folder of the newest complete checkpoint of a run, for --resume. A checkpoint that was
 * renamed into place but no longer matches its manifest is corrupt: that is an error naming it
 * (and the older complete ones), never a silent fall-back, and nothing is removed.
 */
export function latestCheckpoint(runDir: string): string {
  if (!fs.existsSync(runDir)) throw new Error(`${runDir}: no such run directory`);
  if (!fs.statSync(runDir).isDirectory()) throw new Error(`${runDir}: not a run directory (a file, not a folder)`);
  const latest = path.join(runDir, 'checkpoint');
  const complete = listCheckpoints(runDir);
  // written before manifests existed: state.safetensors alone (checked when it is read)
  if (complete.length === 0 && fs.existsSync(latest) && !fs.existsSync(path.join(latest, MANIFEST))) return latest;
  const newest = complete[0];
  const damaged = ['checkpoint', ...fs.readdirSync(runDir).filter((n) => /^checkpoint\.step-\d+$/.test(n))]
    .map((n) => path.join(runDir, n))
    .filter((d) => fs.existsSync(d) && checkDir(d) !== undefined && (newest === undefined || (readManifest(d)?.step ?? Infinity) >= newest.step));
  if (damaged.length > 0) {
    const fallback = newest ? ` The newest complete one is ${newest.dir} (step ${newest.step}); move the damaged one aside to resume from it.` : '';
    throw new Error(`${damaged[0]}: corrupt checkpoint: ${checkDir(damaged[0])}.${fallback}`);
  }
  if (newest) return newest.dir;
  if (fs.existsSync(`${latest}.tmp`)) throw new Error(`${runDir}: its only checkpoint (checkpoint.tmp) is incomplete: the run was stopped while writing its first checkpoint; start it anew`);
  throw new Error(`${runDir}: not a run directory (no checkpoint/ inside)`);
}

/** undefined if `dir` holds its manifest's files at their sizes (a cheap completeness check), else what is wrong. */
function checkDir(dir: string): string | undefined {
  const manifest = readManifest(dir);
  if (!manifest) return `no valid ${MANIFEST}`;
  for (const [name, want] of Object.entries(manifest.files)) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) return `${name} missing`;
    const bytes = fs.statSync(file).size;
    if (bytes !== want.bytes) return `${name} has ${bytes} bytes, the manifest says ${want.bytes}`;
  }
  return undefined;
}

function readManifest(dir: string): Manifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as Manifest;
    return Number.isInteger(m.step) && typeof m.files === 'object' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Size and SHA-256 of a file, read in chunks (a large model's state exceeds one Buffer). */
function fileDigest(file: string): { bytes: number; sha256: string } {
  const hash = createHash('sha256');
  const chunk = Buffer.alloc(1 << 24);
  const fd = fs.openSync(file, 'r');
  let bytes = 0;
  try {
    for (let n; (n = fs.readSync(fd, chunk, 0, chunk.length, null)) > 0; bytes += n) hash.update(chunk.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * The training state of a run's newest complete checkpoint (`latestCheckpoint`): the tensors
 * of its state.safetensors, checked against the manifest's digest and for NaN/Inf, plus the
 * JSON in its metadata 'state'.
 */
export function readTrainState(runDir: string): { dir: string; file: string; tensors: Map<string, LoadedTensor>; meta: Record<string, unknown> } {
  const dir = latestCheckpoint(runDir);
  const file = path.join(dir, 'state.safetensors');
  if (!fs.existsSync(file)) throw new Error(`${dir}: no state.safetensors to resume from`);
  const want = readManifest(dir)?.files['state.safetensors'];
  if (want && fileDigest(file).sha256 !== want.sha256) throw new Error(`${file}: corrupt checkpoint: its SHA-256 does not match ${path.join(dir, MANIFEST)}`);
  const { tensors, metadata } = readSafetensors(file);
  assertFinite(tensors, file);
  if (!metadata.state) throw new Error(`${file}: metadata 'state' missing`);
  return { dir, file, tensors, meta: JSON.parse(metadata.state) };
}

/**
 * Refuses weights holding NaN or Inf, naming the file and the tensor: a diverged run's
 * checkpoint would otherwise start a run that fails a few steps in, seemingly from its lr.
 */
export function assertFinite(tensors: ReadonlyMap<string, LoadedTensor>, file: string): void {
  for (const [key, t] of tensors) {
    if (!(t.data instanceof Float32Array)) continue;
    const first = t.data.findIndex((v) => !Number.isFinite(v));
    if (first < 0) continue;
    let count = 0;
    for (const v of t.data) if (!Number.isFinite(v)) count++;
    throw new Error(
      `${file}: tensor "${key}" holds ${count} non-finite value(s) (first: ${t.data[first]} at index ${first} of ${t.data.length}); ` +
        'these weights diverged: load an earlier checkpoint (a run keeps its last ones as checkpoint.step-<n>)',
    );
  }
}

/** Record keys with a prefix, to keep several parameter sets in one file. */
export function prefixKeys<T>(prefix: string, record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [prefix + k, v]));
}

/** The entries under a prefix, with the prefix removed. */
export function withoutPrefix<T>(map: Map<string, T>, prefix: string): Map<string, T> {
  return new Map([...map].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
}
