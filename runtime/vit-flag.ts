/**
 * The architecture of a checkpoint whose safetensors metadata holds no ViT config (a file
 * converted from PyTorch, say): every pipeline that loads one takes it by a preset flag, so the
 * "no ViT config" error always names a flag that exists in that pipeline.
 */
import type { FlagSpec } from './cli';
import { VIT_PRESETS, type VitConfig } from '../models/vit';

/** The flag's definition; `what` names the checkpoint ("--checkpoint", "the teacher"). */
export function vitPresetFlag(what: string): FlagSpec {
  return { description: `ViT size of ${what} when its file's metadata holds no config: ${Object.keys(VIT_PRESETS).join(', ')}` };
}

/**
 * The flag's value as loadEncoder's `preset` (timm's exact GELU); undefined when not given. Its
 * posEmbed ('sincos') serves a randomly initialised model; loadEncoder takes the position
 * embedding's kind from the checkpoint instead.
 */
export function vitPresetFallback(flag: string, value: string | undefined): VitConfig | undefined {
  if (value === undefined) return undefined;
  const preset = VIT_PRESETS[value];
  if (!preset) throw new Error(`--${flag}: unknown '${value}' (one of ${Object.keys(VIT_PRESETS).join(', ')})`);
  return { ...preset, act: 'gelu', posEmbed: 'sincos' };
}
