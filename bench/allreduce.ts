/**
 * All-reduce cost of a data-parallel step's gradients over MPI, for the parameter shapes of a
 * ViT preset (the encoder's trainable parameters; timm's layout):
 *   raw     one MPI all-reduce of the whole gradient as one float32 buffer (communication alone)
 *   bucket  allreduceGradients: read the gradient tensors back (await t.data()), bucket
 *           (25 MiB), all-reduce, upload the mean (what a training step pays)
 * Reports ms per step and the algorithm bandwidth (gradient bytes / time), median of --reps.
 *
 *   mpirun --allow-run-as-root -np 2 npx ts-node bench/allreduce.ts --models vit-micro-p4,vit-base-p16 --reps 5
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { allreduceGradients, runOnAllRanks } from '../runtime/collective';
import { parseFlags } from '../runtime/cli';
import { VIT_PRESETS, VisionTransformer } from '../models/vit';

const FLAGS = {
  models: { description: 'ViT presets, comma-separated', default: 'vit-micro-p4,vit-base-p16' },
  reps: { description: 'timed repetitions (after one warm-up)', default: '5' },
  'bucket-mb': { description: 'bucket size in MiB', default: '25' },
} as const;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

void runOnAllRanks(async (c) => {
  const flags = parseFlags('All-reduce cost of ViT gradients over MPI.\n  mpirun -np 2 npx ts-node bench/allreduce.ts [options]', FLAGS);
  await initBackend(() => undefined);
  const reps = Number(flags.reps);
  const bucketBytes = Number(flags['bucket-mb']) * 2 ** 20;
  for (const name of flags.models!.split(',')) {
    const preset = VIT_PRESETS[name];
    if (!preset) throw new Error(`--models: unknown preset '${name}' (${Object.keys(VIT_PRESETS).join(', ')})`);
    const model = new VisionTransformer({ ...preset, act: 'gelu', posEmbed: 'sincos' });
    const shapes = model.params.trainable().map((p) => ({ name: p.name, shape: p.variable.shape }));
    model.params.dispose();
    const grads = Object.fromEntries(shapes.map((s) => [s.name, tf.randomNormal(s.shape, 0, 1, 'float32', 1)]));
    const elems = shapes.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    const mb = (elems * 4) / 1e6;
    const raw: number[] = [];
    const bucketed: number[] = [];
    const buf = new Float32Array(elems);
    for (let rep = 0; rep <= reps; rep++) {
      await c.barrier();
      let t0 = performance.now();
      await c.allreduce(buf, 'sum');
      if (rep > 0) raw.push(performance.now() - t0);
      await c.barrier();
      t0 = performance.now();
      const reduced = await allreduceGradients(c, grads, { op: 'mean', bucketBytes });
      await Promise.all(Object.values(reduced).map((t) => t.data())); // uploads done
      if (rep > 0) bucketed.push(performance.now() - t0);
      tf.dispose(Object.values(reduced));
    }
    tf.dispose(Object.values(grads));
    if (c.rank === 0) {
      const r = median(raw);
      const b = median(bucketed);
      console.log(
        `${name}: ${(elems / 1e6).toFixed(2)} M params, ${mb.toFixed(1)} MB gradient, ${c.worldSize} ranks (${tf.getBackend()}): ` +
          `raw all-reduce ${r.toFixed(1)} ms/step (${(mb / (r / 1000)).toFixed(0)} MB/s), ` +
          `bucketed readback + all-reduce + upload ${b.toFixed(1)} ms/step (${(mb / (b / 1000)).toFixed(0)} MB/s)`,
      );
    }
  }
});
