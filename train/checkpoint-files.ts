/**
 * The files of a training checkpoint, in the format runs have always written: encoder.safetensors
 * (timm names, ViT config in the metadata; encoder-ema.safetensors beside it with an EMA), and
 * state.safetensors holding everything to resume: the encoder under 'encoder.', the EMA under
 * 'ema.', each further parameter set under its prefix, extra state (queues), the optimiser's
 * moments, and the step and flags as JSON in metadata 'state'.
 */
import { prefixKeys } from '../runtime/checkpoint';
import { HostTensor, ParamSet } from '../models/params';
import { VisionTransformer } from '../models/vit';
import type { TensorToWrite } from '../models/safetensors';
import type { CheckpointFiles } from '../runtime/checkpoint';

export interface CheckpointContent {
  encoder: VisionTransformer;
  ema?: VisionTransformer;
  /** Further parameter sets by key prefix ('decoder.', 'heads.0.'). */
  parts?: Record<string, ParamSet>;
  /** Further state tensors under their full keys (NN queues). */
  extra?: Record<string, TensorToWrite | HostTensor>;
  optimiser: { state: Record<string, HostTensor>; step: number };
  /** Metadata 'state': the step, flags, ... (the optimiser's step is added). */
  state: Record<string, unknown> & { step: number };
}

export async function checkpointFiles(c: CheckpointContent): Promise<CheckpointFiles> {
  const parts = Object.entries(c.parts ?? {});
  const [encoder, ema, ...partWeights] = await Promise.all([c.encoder.params.exportTimm(), c.ema?.params.exportTimm(), ...parts.map(([, p]) => p.exportTimm())]);
  const metadata = { format: 'pt', vit: JSON.stringify(c.encoder.cfg) };
  return {
    ...(ema ? { 'encoder-ema.safetensors': { tensors: ema, metadata } } : {}),
    'encoder.safetensors': { tensors: encoder, metadata },
    'state.safetensors': {
      tensors: {
        ...prefixKeys('encoder.', encoder),
        ...(ema ? prefixKeys('ema.', ema) : {}),
        ...Object.assign({}, ...parts.map(([prefix], i) => prefixKeys(prefix, partWeights[i]))),
        ...c.extra,
        ...c.optimiser.state,
      },
      metadata: { state: JSON.stringify({ ...c.state, optimiserStep: c.optimiser.step }) },
    },
  };
}
