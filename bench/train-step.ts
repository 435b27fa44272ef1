/**
 * Train-step speed: images/s and effective GFLOP/s of forward + backward + AdamW for the
 * project's ViT, forward-only (feature extraction) images/s, per-kernel profile, and tensor
 * count / RSS over many steps (both must stay flat).
 * With Debian's python3-torch present, the same model and batch run in PyTorch
 * (bench/train_step_torch.py, same thread count) right after, and the ratios are printed.
 *   npx ts-node bench/train-step.ts [--preset vit-micro-p4] [--batch 32] [--steps 20] [--profile] [--memory-steps 1000]
 * FUSED_KERNELS=0 runs the wasm backend without the fused kernels (models/kernels), for comparison.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { initBackend } from '../runtime/backend';
import { VisionTransformer, VIT_PRESETS, VitConfig } from '../models/vit';
import { AdamW } from '../models/adamw';

const { values: args } = parseArgs({
  options: {
    preset: { type: 'string', default: 'vit-micro-p4' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '20' },
    act: { type: 'string', default: 'gelu' },
    profile: { type: 'boolean', default: false },
    'memory-steps': { type: 'string', default: '0' },
    'no-torch': { type: 'boolean', default: false },
  },
});

/** Forward FLOPs of one image (matMuls only, 2 per multiply-add). */
function forwardFlops(cfg: VitConfig): number {
  const t = (cfg.imgSize / cfg.patchSize) ** 2 + 1;
  const d = cfg.embedDim;
  const perBlock = 2 * t * d * (3 * d + d + 2 * cfg.mlpRatio * d) + 2 * 2 * t * t * d;
  return cfg.depth * perBlock + 2 * (t - 1) * cfg.patchSize ** 2 * 3 * d;
}

async function main() {
  const backend = await initBackend();
  const cfg: VitConfig = { ...VIT_PRESETS[args.preset!], act: args.act as VitConfig['act'], posEmbed: 'sincos' };
  const batch = Number(args.batch);
  const steps = Number(args.steps);
  const model = new VisionTransformer(cfg, 0);
  const opt = new AdamW(model.params.trainable().map((p) => ({ ...p, lrScale: 1, weightDecay: p.decay ? 0.05 : 0 })));
  const images = tf.randomNormal([batch, cfg.imgSize, cfg.imgSize, 3]) as tf.Tensor4D;
  const lastBlock = cfg.depth - 1;
  const trainStep = () => {
    const { value, grads } = tf.variableGrads(() =>
      tf.mean(tf.square(model.getIntermediateLayers(images, { blocks: [lastBlock], norm: true })[0])) as tf.Scalar,
    );
    tf.dispose(opt.apply(grads, 1e-4));
    value.dataSync();
    tf.dispose([value, grads]);
  };
  const forward = () => tf.tidy(() => model.clsFeatures(images, [lastBlock], true)[0].dataSync());

  for (let i = 0; i < 2; i++) trainStep();
  const tensorsBefore = tf.memory().numTensors;
  let t0 = performance.now();
  for (let i = 0; i < steps; i++) trainStep();
  const trainS = (performance.now() - t0) / 1000;
  const trainRate = (batch * steps) / trainS;
  forward();
  t0 = performance.now();
  for (let i = 0; i < steps; i++) forward();
  const fwdRate = (batch * steps) / ((performance.now() - t0) / 1000);
  const flops = forwardFlops(cfg);
  const ours = {
    preset: args.preset, act: cfg.act, batch, steps,
    trainImagesPerS: +trainRate.toFixed(2),
    trainGflops: +((trainRate * 3 * flops) / 1e9).toFixed(2),
    forwardImagesPerS: +fwdRate.toFixed(2),
    forwardGflops: +((fwdRate * flops) / 1e9).toFixed(2),
    tensorsBefore, tensorsAfter: tf.memory().numTensors,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  };
  console.log(JSON.stringify(ours));
  if (!args['no-torch'] && fs.existsSync('/usr/bin/python3')) {
    try {
      const out = execFileSync('/usr/bin/python3', ['bench/train_step_torch.py', '--preset', args.preset!, '--batch', String(batch), '--steps', String(steps), '--threads', String(Math.max(1, backend.threads))], { encoding: 'utf8' });
      const torch = JSON.parse(out.trim().split('\n').pop()!);
      console.log(JSON.stringify({ torch, trainRatio: +(ours.trainImagesPerS / torch.trainImagesPerS).toFixed(3), forwardRatio: +(ours.forwardImagesPerS / torch.forwardImagesPerS).toFixed(3) }));
    } catch (err) {
      console.log(`[bench] PyTorch peer not run: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  const memorySteps = Number(args['memory-steps']);
  if (memorySteps > 0) {
    // tensor count and RSS sampled over many steps: both must stay flat after warm-up
    const samples: { step: number; tensors: number; rssMiB: number }[] = [];
    for (let i = 1; i <= memorySteps; i++) {
      trainStep();
      if (i % Math.max(1, Math.floor(memorySteps / 10)) === 0) {
        samples.push({ step: i, tensors: tf.memory().numTensors, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) });
      }
    }
    console.log(JSON.stringify({ memory: samples }));
  }
  if (args.profile) {
    const info = await tf.profile(() => trainStep());
    const byKernel = new Map<string, number>();
    // custom gradients and op wrappers ('forward', 'fusedMatMul__op') show up as kernels too,
    // timed around the real kernels they run: count only kernels the backend registers
    for (const k of info.kernels) {
      if (tf.getKernel(k.name, tf.getBackend()) === undefined) continue;
      byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + (k.kernelTimeMs as number));
    }
    const total = [...byKernel.values()].reduce((a, b) => a + b, 0);
    console.log(`profile of one train step: ${total.toFixed(0)} ms in kernels`);
    for (const [name, ms] of [...byKernel].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
      console.log(`  ${name.padEnd(20)} ${ms.toFixed(1).padStart(8)} ms  ${((100 * ms) / total).toFixed(1)}%`);
    }
  }
}
main();
