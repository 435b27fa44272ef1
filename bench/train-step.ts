/**
 * Train-step speed: images/s and effective TFLOP/s of forward + backward + AdamW for the
 * project's ViT, forward-only (feature extraction) images/s, per-kernel profile, and tensor
 * count / RSS over many steps (both must stay flat). Reads are asynchronous (`await
 * t.data()`, once per step, which also waits for the device), so it runs on every backend,
 * WebGPU included. The same model and batch then run in PyTorch (bench/train_step_torch.py):
 * on the CPU with the same thread count, or on the GPU (fp32, TF32 and bf16 autocast) when the
 * backend is WebGPU and that Python has CUDA; the ratios are printed.
 *   npx ts-node bench/train-step.ts [--preset vit-micro-p4] [--batch 32] [--steps 20] [--profile] [--memory-steps 1000]
 *   TFJS_BACKEND=webgpu npx ts-node bench/train-step.ts --preset vit-base-p16 --batch 64 --python python3
 * FUSED_KERNELS=0 runs the wasm backend without the fused kernels (models/kernels), for comparison;
 * WEBGPU_FUSED=1 runs webgpu with the fused WGSL kernels, WEBGPU_MATMUL=1 with the tiled WGSL
 * matMul (models/kernels-webgpu), WEBGPU_PRECISION=mixed with f16 matMul operands; on webgpu the
 * report has the peak GPU memory of tfjs's buffers (live, and live + pooled). --profile ends
 * with a per-kernel profile of one train step (the ten most expensive kernels and shapes).
 * The last line is one JSON object with everything measured.
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BackendInfo, initBackend } from '../runtime/backend';
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

/**
 * One train step under tf.profile: time per kernel (on webgpu the GPU's own timestamps, each
 * program in its own pass, where the device has timestamp-query; on wasm wall time), summed by
 * kernel and input shapes; the ten most expensive with their share of the step and, for
 * matMuls, the TFLOP/s they reach. Custom gradients and op wrappers ('forward', 'fusedMatMul__op')
 * show up as kernels too, timed around the real kernels they run: only kernels the backend
 * registers count.
 */
async function profileStep(step: () => tf.Scalar) {
  const info = await tf.profile(() => step());
  const rows = new Map<string, { kernel: string; shapes: string; ms: number; calls: number; flops: number }>();
  for (const k of info.kernels) {
    if (tf.getKernel(k.name, tf.getBackend()) === undefined) continue;
    const shapes = k.inputShapes.filter(Boolean).map((sh) => `[${sh}]`).join(' ');
    const key = `${k.name} ${shapes}`;
    const row = rows.get(key) ?? { kernel: k.name, shapes, ms: 0, calls: 0, flops: 0 };
    row.ms += k.kernelTimeMs as number;
    row.calls++;
    // a matMul's output [.., M, N] holds batch M N elements and its first input batch M K, whatever the transposes
    if (/MatMul/.test(k.name)) {
      const out = tf.util.sizeFromShape(k.outputShapes[0]);
      const rowsOut = out / k.outputShapes[0][k.outputShapes[0].length - 1];
      row.flops += (2 * out * tf.util.sizeFromShape(k.inputShapes[0])) / rowsOut;
    }
    rows.set(key, row);
  }
  const totalMs = [...rows.values()].reduce((a, r) => a + r.ms, 0);
  const top = [...rows.values()].sort((a, b) => b.ms - a.ms).slice(0, 10).map((r) => ({
    kernel: r.kernel, shapes: r.shapes, calls: r.calls, ms: +r.ms.toFixed(3), share: +(r.ms / totalMs).toFixed(4),
    ...(r.flops > 0 && r.ms > 0 && { tflops: +(r.flops / (r.ms / 1000) / 1e12).toFixed(3) }),
  }));
  console.log(`profile of one train step: ${totalMs.toFixed(1)} ms in ${info.kernels.length} kernel calls; the ten most expensive (kernel, input shapes):`);
  for (const r of top) {
    console.log(`  ${r.ms.toFixed(2).padStart(9)} ms ${(100 * r.share).toFixed(1).padStart(5)}%  ${String(r.calls).padStart(4)}x  ${r.kernel} ${r.shapes}${r.tflops !== undefined ? `  ${r.tflops} TFLOP/s` : ''}`);
  }
  const profile = { totalMs: +totalMs.toFixed(2), kernelCalls: info.kernels.length, top };
  console.log(JSON.stringify({ profile }));
  return profile;
}

/** WebGPU: the peaks of tfjs's GPU buffers so far (live tensors; live and pooled), MiB. */
function gpuMemory(pool: BackendInfo['pool']) {
  if (!pool) return {};
  const p = pool();
  return { gpuPeakUsedMiB: Math.round(p.peakUsedBytes / 2 ** 20), gpuPeakAllocatedMiB: Math.round(p.peakAllocatedBytes / 2 ** 20), poolCapMiB: Math.round(p.capBytes / 2 ** 20) };
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
    backend: backend.tfBackend, adapter: backend.adapter, fusedWgsl: backend.fusedWgsl ?? false, wgslMatMul: backend.wgslMatMul ?? false,
    flashAttention: backend.flashAttention ?? false, precision: backend.precision?.matMul ?? 'fp32', preset: args.preset, act: cfg.act, batch,
    warmupS: +warmupS.toFixed(1), trainSteps: train.steps, forwardSteps: 0,
    trainImagesPerS: +train.imagesPerS.toFixed(2),
    trainTflops: +((train.imagesPerS * 3 * flops) / 1e12).toFixed(4),
    forwardImagesPerS: NaN,
    forwardTflops: NaN,
    tensorsBefore, tensorsAfter: tf.memory().numTensors,
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
    ...gpuMemory(backend.pool),
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
    ...gpuMemory(backend.pool),
  });
  console.log(JSON.stringify(ours));
  const summary: Record<string, unknown> = { ours };
  if (!args['no-torch']) {
    // on WebGPU the peer runs on the same machine's GPU (where its torch has CUDA); else on the same CPU threads
    const device = backend.tfBackend === 'webgpu' ? 'auto' : 'cpu';
    const dtypes = device === 'cpu' ? ['fp32'] : ['fp32', 'tf32', 'bf16'];
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
  if (args.profile) summary.profile = await profileStep(trainStepQueued);
  console.log(JSON.stringify(summary));
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
