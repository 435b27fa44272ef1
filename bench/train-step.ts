/**
 * Train-step speed: images/s and effective TFLOP/s of forward + backward + AdamW for the
 * project's ViT, forward-only (feature extraction) images/s, per-kernel profile, and tensor
 * count / RSS over many steps (both must stay flat). Reads are asynchronous (`await
 * t.data()`, once per step, which also waits for the device), so it runs on every backend,
 * WebGPU included. The same model and batch then run in PyTorch (bench/train_step_torch.py):
 * on the CPU with the same thread count, or on the GPU (fp32 and bf16 autocast) when the
 * backend is WebGPU and that Python has CUDA; the ratios are printed.
 *   npx ts-node bench/train-step.ts [--preset vit-micro-p4] [--batch 32] [--steps 20] [--profile] [--memory-steps 1000]
 *   TFJS_BACKEND=webgpu npx ts-node bench/train-step.ts --preset vit-base-p16 --batch 64 --python python3
 * FUSED_KERNELS=0 runs the wasm backend without the fused kernels (models/kernels), for comparison.
 * The last line is one JSON object with everything measured.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
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
    /** Python with torch for the peer (Debian's /usr/bin/python3 here; the GPU machine's python3). */
    python: { type: 'string', default: fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3' },
    /** Stop each timed loop after this many seconds (the steps done so far count). */
    'max-seconds': { type: 'string', default: '0' },
  },
});

/** Forward FLOPs of one image (matMuls only, 2 per multiply-add). */
function forwardFlops(cfg: VitConfig): number {
  const t = (cfg.imgSize / cfg.patchSize) ** 2 + 1;
  const d = cfg.embedDim;
  const perBlock = 2 * t * d * (3 * d + d + 2 * cfg.mlpRatio * d) + 2 * 2 * t * t * d;
  return cfg.depth * perBlock + 2 * (t - 1) * cfg.patchSize ** 2 * 3 * d;
}

/** Runs `step` (which awaits its own read) `steps` times or until the time budget ends; images/s. */
async function timed(step: () => Promise<void>, steps: number, batch: number, maxSeconds: number): Promise<{ imagesPerS: number; steps: number }> {
  const t0 = performance.now();
  let done = 0;
  while (done < steps) {
    await step();
    done++;
    if (maxSeconds > 0 && performance.now() - t0 > maxSeconds * 1000) break;
  }
  return { imagesPerS: (batch * done) / ((performance.now() - t0) / 1000), steps: done };
}

async function main() {
  const backend = await initBackend();
  const cfg: VitConfig = { ...VIT_PRESETS[args.preset!], act: args.act as VitConfig['act'], posEmbed: 'sincos' };
  const batch = Number(args.batch);
  const steps = Number(args.steps);
  const maxSeconds = Number(args['max-seconds']);
  const model = new VisionTransformer(cfg, 0);
  const opt = new AdamW(model.params.trainable().map((p) => ({ ...p, lrScale: 1, weightDecay: p.decay ? 0.05 : 0 })));
  const images = tf.randomNormal([batch, cfg.imgSize, cfg.imgSize, 3]) as tf.Tensor4D;
  const lastBlock = cfg.depth - 1;
  const trainStepQueued = () => {
    const { value, grads } = tf.variableGrads(() =>
      tf.mean(tf.square(model.getIntermediateLayers(images, { blocks: [lastBlock], norm: true })[0])) as tf.Scalar,
    );
    tf.dispose([opt.apply(grads, 1e-4), grads]);
    return value;
  };
  // the loss is read after the update was queued, so the read waits for the whole step
  const trainStep = async () => {
    const value = trainStepQueued();
    await value.data();
    value.dispose();
  };
  const forward = async () => {
    const cls = tf.tidy(() => model.clsFeatures(images, [lastBlock], true)[0]);
    await cls.data();
    cls.dispose();
  };

  const tStart = performance.now();
  for (let i = 0; i < 2; i++) await trainStep();
  const warmupS = (performance.now() - tStart) / 1000;
  const tensorsBefore = tf.memory().numTensors;
  const train = await timed(trainStep, steps, batch, maxSeconds);
  const flops = forwardFlops(cfg);
  const ours = {
    backend: backend.tfBackend, adapter: backend.adapter, preset: args.preset, act: cfg.act, batch,
    warmupS: +warmupS.toFixed(1), trainSteps: train.steps, forwardSteps: 0,
    trainImagesPerS: +train.imagesPerS.toFixed(2),
    trainTflops: +((train.imagesPerS * 3 * flops) / 1e12).toFixed(4),
    forwardImagesPerS: NaN,
    forwardTflops: NaN,
    tensorsBefore, tensorsAfter: tf.memory().numTensors,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  };
  // the train numbers first, in case a time limit stops the run during the forward timing
  console.log(JSON.stringify(ours));
  await forward();
  const fwd = await timed(forward, steps, batch, maxSeconds);
  Object.assign(ours, {
    forwardSteps: fwd.steps,
    forwardImagesPerS: +fwd.imagesPerS.toFixed(2),
    forwardTflops: +((fwd.imagesPerS * flops) / 1e12).toFixed(4),
    tensorsAfter: tf.memory().numTensors,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  });
  console.log(JSON.stringify(ours));
  const summary: Record<string, unknown> = { ours };
  if (!args['no-torch']) {
    // on WebGPU the peer runs on the same machine's GPU (where its torch has CUDA); else on the same CPU threads
    const device = backend.tfBackend === 'webgpu' ? 'auto' : 'cpu';
    const dtypes = device === 'cpu' ? ['fp32'] : ['fp32', 'bf16'];
    for (const dtype of dtypes) {
      try {
        const out = execFileSync(args.python!, [
          path.join(__dirname, 'train_step_torch.py'), '--preset', args.preset!, '--batch', String(batch), '--steps', String(steps),
          '--threads', String(Math.max(1, backend.threads)), '--device', device, '--dtype', dtype, '--max-seconds', String(maxSeconds),
        ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
        const torch = JSON.parse(out.trim().split('\n').pop()!);
        torch.trainTflops = +((torch.trainImagesPerS * 3 * flops) / 1e12).toFixed(4);
        torch.forwardTflops = +((torch.forwardImagesPerS * flops) / 1e12).toFixed(4);
        const line = { torch, trainRatio: +(ours.trainImagesPerS / torch.trainImagesPerS).toFixed(3), forwardRatio: +(ours.forwardImagesPerS / torch.forwardImagesPerS).toFixed(3) };
        console.log(JSON.stringify(line));
        summary[`torch_${dtype}`] = line;
      } catch (err) {
        console.log(`[bench] PyTorch peer (${dtype}) not run: ${(err as Error).message.split('\n')[0]}`);
      }
    }
  }
  const memorySteps = Number(args['memory-steps']);
  if (memorySteps > 0) {
    // tensor count and RSS sampled over many steps: both must stay flat after warm-up
    const samples: { step: number; tensors: number; rssMiB: number }[] = [];
    for (let i = 1; i <= memorySteps; i++) {
      await trainStep();
      if (i % Math.max(1, Math.floor(memorySteps / 10)) === 0) {
        samples.push({ step: i, tensors: tf.memory().numTensors, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) });
      }
    }
    console.log(JSON.stringify({ memory: samples }));
  }
  if (args.profile) {
    const info = await tf.profile(() => trainStepQueued());
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
  console.log(JSON.stringify(summary));
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
