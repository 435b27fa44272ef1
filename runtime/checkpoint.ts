/**
 * Checkpoints. An encoder is one safetensors file with timm's key names and nothing else, so
 * it loads in PyTorch/timm as it is; its ViT config rides in the safetensors metadata. The
 * training state (decoder or heads, optimiser moments, queues, step, RNG) sits beside it in
 * state.safetensors. A checkpoint directory is written under a temporary name and swapped in
 * by rename, so a crash mid-write never leaves a half checkpoint in place of the last good one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
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
 * without it (for example converted from PyTorch) needs `fallback` (a preset or flags).
 * Every key and shape is checked before any weight is loaded.
 */
export function loadEncoder(file: string, fallback?: VitConfig): VisionTransformer {
  if (!fs.existsSync(file)) throw new Error(`${file}: checkpoint not found`);
  const { tensors, metadata } = readSafetensors(file);
  let cfg: VitConfig | undefined = fallback;
  if (metadata.vit) {
    try {
      cfg = { ...JSON.parse(metadata.vit) } as VitConfig;
    } catch {
      throw new Error(`${file}: metadata 'vit' is not valid JSON`);
    }
  }
  if (!cfg) throw new Error(`${file}: no ViT config in the file's metadata; pass --preset (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
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

/**
 * Writes `dir` atomically: files go to `dir.tmp`, which then replaces `dir`.
 * `files` maps file names to their tensors and metadata.
 */
export function writeCheckpointDir(
  dir: string,
  files: Record<string, { tensors: Record<string, TensorToWrite | HostTensor>; metadata?: Record<string, string> }>,
): void {
  const tmp = `${dir}.tmp`;
  const old = `${dir}.old`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const [name, f] of Object.entries(files)) writeSafetensors(path.join(tmp, name), f.tensors, f.metadata);
  fs.rmSync(old, { recursive: true, force: true });
  if (fs.existsSync(dir)) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  fs.rmSync(old, { recursive: true, force: true });
}

/** Reads state.safetensors of a checkpoint dir: tensors plus the JSON in metadata 'state'. */
export function readTrainState(dir: string): { tensors: Map<string, LoadedTensor>; meta: Record<string, unknown> } {
  const file = path.join(dir, 'state.safetensors');
  if (!fs.existsSync(file)) throw new Error(`${dir}: no state.safetensors to resume from`);
  const { tensors, metadata } = readSafetensors(file);
  if (!metadata.state) throw new Error(`${file}: metadata 'state' missing`);
  return { tensors, meta: JSON.parse(metadata.state) };
}

/** Record keys with a prefix, to keep several parameter sets in one file. */
export function prefixKeys<T>(prefix: string, record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [prefix + k, v]));
}

/** The entries under a prefix, with the prefix removed. */
export function withoutPrefix<T>(map: Map<string, T>, prefix: string): Map<string, T> {
  return new Map([...map].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
}
