/**
 * Per-block kNN evaluation of a checkpoint (eval/per-block-knn.ts, as MIM-Refiner computes it):
 * one kNN per block on validation and test, printed, written as JSON and drawn as per-block
 * curves, leading with the last block and the block chosen on validation.
 *
 *   npx ts-node pipelines/knn.ts --checkpoint checkpoints/mae-vit-micro-p4/encoder.safetensors
 *   npx ts-node pipelines/knn.ts --random-init --preset vit-micro-p4     # the baseline
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { initBackend } from '../runtime/backend';
import { num, parseFlags, runMain } from '../runtime/cli';
import { checkOutDir } from '../runtime/out-dir';
import { evalClassCount } from '../sources/open';
import { LABEL_LIMIT } from '../sources/tar-shards';
import { loadEncoder } from '../runtime/checkpoint';
import { VisionTransformer, VIT_PRESETS } from '../models/vit';
import { checkpointKey, randomInitKey } from '../eval/feature-cache';
import { KNN_DEFAULTS, onOff } from '../eval/knn';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';

const USAGE = 'Per-block kNN top-1 of a ViT checkpoint.\n  npx ts-node pipelines/knn.ts --checkpoint FILE [options]';
const FLAGS = {
  checkpoint: { description: 'encoder safetensors (timm names)', default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  'random-init': { description: 'evaluate a randomly initialised ViT of --preset instead', boolean: true },
  preset: { description: `ViT size for --random-init or a checkpoint without config: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  train: { description: 'train (memory) images', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'held-out images', default: 'data/cifar10-mini/test-*.tar.gz' },
  'train-limit': { description: 'use the first N train images (0: all)', default: '0' },
  'test-limit': { description: 'use the first N test images (0: all)', default: '0' },
  val: { description: "validation images, training images held out from training (default: the val-* shards beside --train; 'none': no validation)" },
  'val-limit': { description: 'use the first N validation images (0: as --test-limit)', default: '0' },
  k: { description: 'neighbours (reference 20; 10 is the other setting its paper reports)', default: String(KNN_DEFAULTS.k) },
  temperature: { description: 'vote temperature (reference 0.07)', default: String(KNN_DEFAULTS.temperature) },
  standardise: { description: "'on': standardise features with the train set's per-dimension mean and std before L2 normalisation (the reference's kNN); 'off': L2 only (DINO's, this project's earlier kNN)", default: 'on' },
  pooling: { description: "'cls' or 'avg' (mean of patch tokens)", default: 'cls' },
  seed: { description: 'seed of the random init', default: '0' },
  'num-classes': { description: 'class count of tar shards without classes.txt beside them (labels outside it are skipped and counted)' },
  out: { description: 'directory for knn.json and knn-knn.png', default: 'runs/knn' },
} as const;

async function main() {
  const f = parseFlags(USAGE, FLAGS);
  // Every flag and input is checked before the (slow) backend start and model load.
  if (f.pooling !== 'cls' && f.pooling !== 'avg') throw new Error(`--pooling: expected cls or avg, got '${f.pooling}'`);
  const standardise = onOff('standardise', f.standardise!);
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  const seed = num('seed', f.seed, { integer: true, min: 0 });
  const trainLimit = num('train-limit', f['train-limit'], { integer: true, min: 0 }) || undefined;
  const testLimit = num('test-limit', f['test-limit'], { integer: true, min: 0 }) || undefined;
  const valLimit = num('val-limit', f['val-limit'], { integer: true, min: 0 }) || undefined;
  const k = num('k', f.k, { integer: true, min: 1, max: 10_000 });
  const temperature = num('temperature', f.temperature, { min: 1e-6, max: 1e6 });
  // the data's own class count (classes.txt, class folders, CIFAR) needs no flag; the flag's is checked against it
  const numClasses = f['num-classes'] === undefined ? undefined : num('num-classes', f['num-classes'], { integer: true, min: 1, max: LABEL_LIMIT });
  evalClassCount(f.train!, f.test!, numClasses);
  if (!f['random-init'] && !fs.statSync(f.checkpoint!, { throwIfNoEntry: false })?.isFile()) throw new Error(`--checkpoint ${f.checkpoint}: no such file`);
  checkOutDir(f.out!);
  const modelKey = f['random-init'] ? randomInitKey(f.preset!, seed) : checkpointKey(f.checkpoint!);
  await initBackend();
  const fallback = { ...preset, act: 'gelu' as const, posEmbed: 'sincos' as const };
  const model = f['random-init'] ? new VisionTransformer(fallback, seed) : loadEncoder(f.checkpoint!, fallback);
  const label = f['random-init'] ? `random init (${f.preset})` : path.basename(path.dirname(path.resolve(f.checkpoint!)));
  const report = await perBlockKnn(model, {
    train: f.train!,
    test: f.test!,
    label,
    trainLimit,
    testLimit,
    val: f.val === 'none' ? null : f.val,
    valLimit,
    k,
    temperature,
    standardise,
    pooling: f.pooling,
    cacheKey: modelKey,
    numClasses,
  });
  await writeKnnSummary(f.out!, [report], { title: `Per-block kNN top-1: ${label}`, name: 'knn', extra: { checkpoint: f['random-init'] ? null : f.checkpoint } });
}

if (require.main === module) runMain(main);
