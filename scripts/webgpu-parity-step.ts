/**
 * One MIM-Refiner training step of a small ViT, as pipelines/refine.ts takes it (stage 3:
 * encoder forward to several blocks, NNA heads, NN lookup in a filled queue, NNA loss,
 * backward, AdamW, EMA), from fixed weights and a fixed batch, on whatever backend
 * TFJS_BACKEND picks. Prints one JSON line: the loss, the weights before the step, every
 * gradient, the weights after it and the EMA weights (names as the optimiser's groups). scripts/check-webgpu.ts runs it on webgpu and on wasm in
 * separate processes (tfjs holds one backend per process) and compares.
 *   TFJS_BACKEND=webgpu npx ts-node scripts/webgpu-parity-step.ts
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { Rng } from '../lib/rng';
import { VisionTransformer } from '../models/vit';
import { HEAD_PRESETS, NnaHead } from '../models/nna-head';
import { NnQueue } from '../models/nn-queue';
import { AdamW } from '../models/adamw';
import { Ema } from '../models/ema';
import { nnaRefineObjective } from '../objectives/nna-refine';

const CFG = { imgSize: 16, patchSize: 4, embedDim: 32, depth: 3, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' } as const;
const BLOCKS = [1, 2];
const BATCH = 8;
const LOCAL_SIZE = 8;
const QUEUE = 48;

/** Host values of named tensors, read asynchronously. */
async function hostValues(entries: [string, tf.Tensor][]): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [name, t] of entries) out[name] = Array.from(await t.data());
  return out;
}

async function main() {
  const backend = await initBackend(() => undefined);
  const rng = new Rng(11);
  const uniform = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
  const encoder = new VisionTransformer(CFG, 1);
  const emaEncoder = new VisionTransformer(CFG, 2);
  const heads = BLOCKS.map((_, i) => new NnaHead(CFG.embedDim, HEAD_PRESETS.tiny, CFG.act, 3 + i));
  const out = HEAD_PRESETS.tiny.out;
  // queues filled with host-made entries of other samples (indices 100..), plus one entry of sample 0
  const queues = BLOCKS.map((_, i) => new NnQueue(QUEUE, out, 20 + i));
  for (const q of queues) {
    const n = QUEUE - 8;
    const indices = Int32Array.from({ length: n }, (_, j) => (j === 0 ? 0 : 100 + j));
    q.push(tf.tensor2d(uniform(n * out), [n, out]), indices, Int32Array.from(indices, (j) => j % 10));
  }
  // two global and two local views of BATCH samples, as the data path delivers them
  const viewSizes = [CFG.imgSize, CFG.imgSize, LOCAL_SIZE, LOCAL_SIZE];
  const batch = {
    indices: Int32Array.from({ length: BATCH }, (_, i) => i),
    labels: Int32Array.from({ length: BATCH }, (_, i) => i % 10),
    views: viewSizes.map((size) => uniform(BATCH * size ** 2 * 3)),
    viewSizes,
  };

  const groups = [
    ...encoder.params.trainable().map((p) => ({ ...p, name: `encoder.${p.name}`, lrScale: 0.8, weightDecay: p.decay ? 0.05 : 0 })),
    ...heads.flatMap((h, i) => h.params.trainable().map((p) => ({ ...p, name: `heads.${i}.${p.name}`, lrScale: 1, weightDecay: p.decay ? 1e-5 : 0 }))),
  ];
  const optimiser = new AdamW(groups, { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm: 3 });
  const ema = new Ema(emaEncoder.params, encoder.params, 0.5);
  // the step refine's stage 3 takes (objectives/nna-refine.ts), top-k 2, NN picks seeded 5
  const objective = nnaRefineObjective({
    encoder, headBlocks: BLOCKS, heads, queues, globalSize: CFG.imgSize, localSize: LOCAL_SIZE, numLocal: 2, topK: 2, temperature: 0.2, trainEncoder: true, seed: 5,
  });
  const before = await hostValues(groups.map((g) => [g.name, g.variable]));

  const prepared = objective.prepare(batch, 0);
  const { value: loss, grads } = tf.variableGrads(() => objective.loss(prepared, 0).loss, groups.map((g) => g.variable));
  // lr 1e-2: updates are compared as differences of float32 weights (see scripts/check-webgpu.ts)
  const gradNorm = optimiser.apply(grads, 1e-2);
  ema.update();

  const byVariable = new Map(groups.map((g) => [g.variable.name, g.name]));
  const result = {
    backend: backend.tfBackend,
    adapter: backend.adapter,
    fusedWgsl: backend.fusedWgsl ?? false,
    wgslMatMul: backend.wgslMatMul ?? false,
    loss: Array.from(await loss.data()),
    gradNorm: Array.from(await gradNorm.data()),
    before,
    grads: await hostValues(Object.entries(grads).map(([v, t]) => [byVariable.get(v)!, t])),
    after: await hostValues(groups.map((g) => [g.name, g.variable])),
    // the EMA started as a copy of the encoder: its names here are the encoder's group names
    ema: await hostValues(emaEncoder.params.trainable().map((p) => [`encoder.${p.name}`, p.variable])),
  };
  console.log(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
