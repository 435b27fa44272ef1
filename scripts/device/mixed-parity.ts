/**
 * Device kit: the mixed-precision path against fp32 on the same device (WEBGPU_PRECISION=mixed;
 * the fp32 side with the WGSL kernels switched off: tfjs-webgpu's own matMul). A ViT's train
 * step from fixed weights and images, both ways: the loss, the CLS features of a forward pass
 * and every gradient, each as max |mixed - fp32| / max |fp32|; the worst gradient and the
 * global norms. Then a loss-scaled step from 2^16 (finite here, or skipped and backed off).
 * One JSON line.
 *   TFJS_BACKEND=webgpu WEBGPU_PRECISION=mixed npx ts-node scripts/device/mixed-parity.ts [--preset vit-base-p16] [--batch 8]
 */
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { setFusedKernels } from '../../models/kernels';
import { DynamicLossScale } from '../../models/loss-scale';
import { VisionTransformer, VIT_PRESETS, VitConfig } from '../../models/vit';
import { initBackend } from '../../runtime/backend';
import { maxRelativeDifference } from '../../lib/relative-difference';

const { values: args } = parseArgs({ options: { preset: { type: 'string', default: 'vit-base-p16' }, batch: { type: 'string', default: '8' } } });

async function main() {
  const backend = await initBackend();
  const cfg: VitConfig = { ...VIT_PRESETS[args.preset!], act: 'gelu', posEmbed: 'sincos' };
  const batch = Number(args.batch);
  const model = new VisionTransformer(cfg, 0);
  const images = tf.randomUniform([batch, cfg.imgSize, cfg.imgSize, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
  const last = cfg.depth - 1;
  // a fixed random projection of the last block's tokens (the mean square after the final norm is ~1 whatever the weights: no gradient)
  const tokens = (cfg.imgSize / cfg.patchSize) ** 2 + 1;
  const weights = tf.randomNormal([batch, tokens, cfg.embedDim], 0, 1, 'float32', 7);
  const loss = () => tf.mean(tf.mul(model.getIntermediateLayers(images, { blocks: [last], norm: true })[0], weights)) as tf.Scalar;
  const run = async () => {
    const cls = tf.tidy(() => model.clsFeatures(images, [last], true)[0]);
    const { value, grads } = tf.variableGrads(loss);
    const out = { loss: (await value.data()) as Float32Array, cls: (await cls.data()) as Float32Array, grads: {} as Record<string, Float32Array> };
    for (const [k, g] of Object.entries(grads)) out.grads[k] = (await g.data()) as Float32Array;
    tf.dispose([cls, value, ...Object.values(grads)]);
    return out;
  };
  const mixed = await run();
  setFusedKernels(false);
  const fp32 = await run();
  setFusedKernels(true);
  const grads = Object.keys(fp32.grads).map((k) => ({ name: k, relative: maxRelativeDifference(mixed.grads[k], fp32.grads[k]) })).sort((x, y) => y.relative - x.relative);
  const norm = (g: Record<string, Float32Array>) => Math.sqrt(Object.values(g).reduce((s, v) => s + v.reduce((a, x) => a + x * x, 0), 0));
  // a loss-scaled step: the scaled backward through the mixed matMuls, unscaled and checked
  const scaler = new DynamicLossScale();
  const { grads: scaled } = tf.variableGrads(() => scaler.scaleLoss(loss()));
  const outcome = await scaler.unscale(scaled);
  if (outcome.finite) tf.dispose(Object.values(outcome.grads));
  tf.dispose(Object.values(scaled));
  console.log(JSON.stringify({
    preset: args.preset, batch, precision: backend.precision,
    loss: { mixed: mixed.loss[0], fp32: fp32.loss[0], relative: maxRelativeDifference(mixed.loss, fp32.loss) },
    clsRelative: maxRelativeDifference(mixed.cls, fp32.cls),
    gradNorm: { mixed: norm(mixed.grads), fp32: norm(fp32.grads) },
    worstGradients: grads.slice(0, 5),
    medianGradientRelative: grads[Math.floor(grads.length / 2)].relative,
    lossScaledStep: { finite: outcome.finite, scale: outcome.scale, unscaledNorm: outcome.norm },
  }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
