/**
 * Why a model's features are not finite: when extraction finds a NaN or an infinity in a block's
 * features (eval/extract-features.ts checks every batch it reads back), this runs the offending
 * batch once more, up to that block, and finds the first stage whose output is not finite (the
 * patch embedding or a block) and the largest weight of that stage. A checkpoint whose weights
 * are finite but huge (a LayerNorm weight of 1e38) overflows float32 there; a NaN weight shows
 * as such. Runs only after a failure, so it costs nothing on a healthy model.
 */
import * as tf from '@tensorflow/tfjs';
import { VisionTransformer } from '../models/vit';
import { readTensor } from './features';

const EMBEDDING = ['patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'pos_embed'];

/**
 * A sentence naming where the activations of `images` ([B, S, S, 3], the model's input) first
 * stop being finite, up to block `upTo`, and that stage's largest weight.
 */
export async function describeOverflow(model: VisionTransformer, images: tf.Tensor4D, upTo: number): Promise<string> {
  const blocks = Array.from({ length: upTo + 1 }, (_, i) => i);
  // 1 where the stage's output is finite: the embedding, then block 0..upTo
  const finite = await readTensor<Int32Array>(() => {
    const stages = [model.prependCls(model.embedPatches(images)), ...model.getIntermediateLayers(images, { blocks })];
    return tf.stack(stages.map((t) => tf.cast(tf.all(tf.isFinite(t)), 'int32')));
  });
  const first = finite.indexOf(0);
  if (first < 0) return `every block's output up to block ${upTo} is finite on this batch: the pooling overflows`;
  const stage = first === 0 ? 'the patch embedding' : `block ${first - 1}`;
  const names = first === 0 ? EMBEDDING : model.params.names().filter((n) => n.startsWith(`blocks.${first - 1}.`));
  const largest = await readTensor(() => tf.stack(names.map((n) => tf.max(tf.abs(model.params.get(n))))));
  let at = 0;
  for (let i = 1; i < names.length && !Number.isNaN(largest[at]); i++) if (Number.isNaN(largest[i]) || largest[i] > largest[at]) at = i; // a NaN weight is named first
  const weight = Number.isNaN(largest[at]) ? `${names[at]} holds NaN` : `its largest weight is ${names[at]} (|w| up to ${largest[at].toExponential(2)})`;
  return `the activations first stop being finite at the output of ${stage}; ${weight}`;
}
