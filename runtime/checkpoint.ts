/**
 * Checkpoints. An encoder is one safetensors file with timm's key names and nothing else, so
 * it loads in PyTorch/timm as it is; its ViT config rides in the safetensors metadata. Encoders
 * from elsewhere (timm or Hugging Face safetensors, PyTorch .pth) load too (loadEncoder). The
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
import { VisionTransformer, VitConfig, VIT_PRESETS, resamplePosEmbed, sincosDistance, sincosPosEmbed } from '../models/vit';
import { HF_LAYER_NORM_EPS, inferVitConfig, mappedShape, mapToTimmNames, openCheckpoint, parseVitMetadata, readHfConfig, sincosTolerance } from '../models/checkpoint-formats';
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

export interface LoadEncoderOptions {
  /**
   * Architecture for a file without a 'vit' config in its metadata (a preset flag's value): it
   * wins over the config inferred from the tensors; the position embedding's kind (learned or
   * fixed sin-cos) is still read from the file.
   */
  preset?: VitConfig;
  /** The pipeline's flag that gives `preset`, named in errors (default '--preset'). */
  presetFlag?: string;
  /** Image size to run at (default: the config's); a file made at another size has its position embedding resampled. */
  imgSize?: number;
  /**
   * Resampling a learned position embedding: bicubic with antialiasing, as timm does when it
   * loads pretrained weights at another image size (default true); false as timm's older resize_pos_embed.
   */
  antialias?: boolean;
  /** Receives the line that says what was read, inferred and resampled (default console.log). */
  log?: (line: string) => void;
}

/**
 * Builds a ViT from an encoder checkpoint: safetensors or a torch.save .pth/.pt/.bin (weights
 * at the top level or under 'model' / 'state_dict' / ...), with timm or Hugging Face ViT /
 * ViTMAE key names (see models/checkpoint-formats). The config comes from the file's metadata
 * 'vit', else `preset`, else the tensors' shapes (heads by width as timm's presets; a
 * Hugging Face config.json beside the file gives them when present). A position embedding made
 * for another grid than the run's image size is resampled: a learned one bicubically as timm's
 * resample_abs_pos_embed (it stays learned), MAE's fixed 2-D sin-cos (recognised by comparison
 * with the table) regenerated exactly at the new grid. Every key and shape is checked before
 * any weight is loaded. The positional form loadEncoder(file, fallback, fallbackFlag) is kept.
 */
export function loadEncoder(file: string, options?: LoadEncoderOptions): VisionTransformer;
export function loadEncoder(file: string, fallback?: VitConfig, fallbackFlag?: string): VisionTransformer;
export function loadEncoder(file: string, second?: LoadEncoderOptions | VitConfig, fallbackFlag?: string): VisionTransformer {
  const opts: LoadEncoderOptions = second && 'embedDim' in second ? { preset: second } : { ...(second as LoadEncoderOptions | undefined) };
  if (fallbackFlag !== undefined) opts.presetFlag = fallbackFlag;
  const presetFlag = opts.presetFlag ?? '--preset';
  const log = opts.log ?? ((line: string) => console.log(line));
  const fail = (detail: string): never => {
    throw new Error(`${file}: ${detail}`);
  };

  const { source, metadata, found } = openCheckpoint(file);
  const mapping = mapToTimmNames([...source.entries.keys()], file);
  if (mapping.sources.has('fc_norm.weight') && !mapping.sources.has('norm.weight')) {
    // timm's global_pool 'avg' models (MAE fine-tuned) have fc_norm in place of the final norm
    for (const p of ['weight', 'bias']) {
      mapping.sources.set(`norm.${p}`, mapping.sources.get(`fc_norm.${p}`)!);
      mapping.sources.delete(`fc_norm.${p}`);
    }
  }
  const names = [...mapping.sources.keys()];
  const inferred = inferVitConfig((n) => mappedShape(mapping, source, n), names, file);
  const notes = [found, mapping.layout === 'timm' ? "timm's key names" : "Hugging Face ViT key names mapped to timm's (query, key, value fused into qkv)"];
  if (mapping.sources.get('norm.weight')?.[0].endsWith('fc_norm.weight')) {
    notes.push("no final norm but fc_norm (a timm global_pool 'avg' model): fc_norm taken as the final norm");
  }

  // the tensors this encoder uses, read and (q, k, v) concatenated
  const wanted = names.filter((n) => !FOREIGN_KEYS.test(n));
  const ignored = [...mapping.ignored, ...names.filter((n) => FOREIGN_KEYS.test(n)).flatMap((n) => mapping.sources.get(n)!)];
  const read = source.read([...new Set(wanted.flatMap((n) => mapping.sources.get(n)!))]);
  const tensors = new Map<string, LoadedTensor>();
  for (const name of wanted) {
    const parts = mapping.sources.get(name)!.map((k) => read.get(k)!);
    tensors.set(name, parts.length === 1 ? parts[0] : concatRows(parts));
  }
  assertFinite(tensors, file);

  // position embedding: its kind, its CLS row, its grid
  const d = inferred.cfg.embedDim;
  const pos = tensors.get('pos_embed')!;
  let posData = pos.data instanceof Float32Array ? pos.data : Float32Array.from(pos.data);
  if (inferred.posEmbedWithoutCls) {
    // timm's no_embed_class: the class token is added without a position, the same as a zero row
    const withCls = new Float32Array(posData.length + d);
    withCls.set(posData, d);
    posData = withCls;
    notes.push('pos_embed has no class-token row (no_embed_class): a zero row put first');
  }
  const distance = sincosDistance(posData, d, inferred.grid);
  const detected: VitConfig['posEmbed'] = distance <= sincosTolerance(pos.dtype) ? 'sincos' : 'learned';
  const posNote =
    detected === 'sincos'
      ? `fixed 2-D sin-cos position embedding (pos_embed within ${distance.toExponential(1)} of the table)`
      : 'learned position embedding (pos_embed is not the 2-D sin-cos table)';

  const hf = mapping.layout === 'Hugging Face' ? readHfConfig(file, d) : undefined;
  let cfg: VitConfig;
  if (metadata.vit !== undefined) {
    cfg = parseVitMetadata(metadata.vit, file);
    notes.push(`config from its metadata 'vit'`);
  } else if (opts.preset) {
    cfg = { ...opts.preset, posEmbed: detected };
    notes.push(`config from ${presetFlag}; ${posNote}`);
  } else {
    const numHeads =
      hf?.numHeads ??
      inferred.cfg.numHeads ??
      fail(`no 'vit' config in its metadata, and width ${d} has no timm default head count (not a multiple of 64): pass ${presetFlag} (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
    cfg = { ...inferred.cfg, numHeads, act: hf?.act ?? inferred.cfg.act, posEmbed: detected };
    notes.push(`no 'vit' metadata: config inferred from the tensors: ${[...inferred.notes, hf?.note ?? inferred.headsNote].join(', ')}; ${posNote}`);
  }
  if (mapping.layout === 'Hugging Face' && cfg.normEps === undefined) {
    // the file's model normalised with Hugging Face's eps, not timm's
    cfg = { ...cfg, normEps: hf?.normEps ?? HF_LAYER_NORM_EPS };
    notes.push(`LayerNorm eps ${cfg.normEps} (Hugging Face's${hf?.normEps ? ', from config.json' : ' default'})`);
  }

  const imgSize = opts.imgSize ?? cfg.imgSize;
  if (!Number.isInteger(imgSize) || imgSize <= 0 || imgSize % cfg.patchSize !== 0) {
    fail(`image size ${imgSize} is not a positive multiple of the checkpoint's patch size ${cfg.patchSize}`);
  }
  const grid = imgSize / cfg.patchSize;
  if (grid !== inferred.grid) {
    posData = cfg.posEmbed === 'sincos' ? sincosPosEmbed(d, grid) : resamplePosEmbed(posData, d, inferred.grid, grid, opts.antialias ?? true);
    notes.push(
      cfg.posEmbed === 'sincos'
        ? `sin-cos position embedding regenerated for ${grid}x${grid} patches (image size ${imgSize}; the file's is ${inferred.grid * cfg.patchSize})`
        : `learned position embedding resampled bicubically from ${inferred.grid}x${inferred.grid} to ${grid}x${grid} patches (image size ${imgSize}${opts.antialias === false ? ', no antialiasing' : ', antialiased'}), as timm's resample_abs_pos_embed`,
    );
  }
  tensors.set('pos_embed', { dtype: 'F32', shape: [1, 1 + grid * grid, d], data: posData });
  if (ignored.length > 0) notes.push(`left out ${ignored.length} tensor(s) the encoder does not use (${ignored.slice(0, 4).join(', ')}${ignored.length > 4 ? ', ...' : ''})`);

  const model = new VisionTransformer({ ...cfg, imgSize });
  try {
    model.params.importTimm(hostTensors(tensors), file, FOREIGN_KEYS);
  } catch (err) {
    model.dispose();
    throw err;
  }
  log(`[checkpoint] ${file}: ${notes.join('; ')}`);
  return model;
}

/** Tensors [n_i, ...rest] stacked on dim 0 (Hugging Face's query, key, value into timm's qkv). */
function concatRows(parts: LoadedTensor[]): LoadedTensor {
  const data = new Float32Array(parts.reduce((a, p) => a + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { dtype: parts[0].dtype, shape: [parts.reduce((a, p) => a + p.shape[0], 0), ...parts[0].shape.slice(1)], data };
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
