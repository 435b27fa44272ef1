/**
 * The model a pipeline starts from, by its flags: a checkpoint file (its config from the file,
 * or from --preset when the file holds none; timm, Hugging Face and PyTorch .pth files; position
 * embeddings resampled to the run's image size) or 'none', a random init of --preset. Every
 * pipeline that takes a checkpoint reads it here, so they all read the same files the same way.
 */
import { loadEncoder } from '../runtime/checkpoint';
import { vitPresetFallback } from '../runtime/vit-flag';
import { VisionTransformer, VitConfig } from '../models/vit';

export interface ModelFlags {
  /** The checkpoint flag's name and value (--checkpoint, --teacher). */
  flag: string;
  file: string;
  /** The preset flag's name and value (--preset, --teacher-preset). */
  presetFlag: string;
  preset: string | undefined;
  /** The run's image size: a checkpoint of another size has its position embedding resampled. */
  imgSize?: number;
  /** Seed and MLP activation of a random init. */
  seed?: number;
  act?: VitConfig['act'];
}

export function loadModel(m: ModelFlags): VisionTransformer {
  const fallback = vitPresetFallback(m.presetFlag, m.preset);
  if (m.file === 'none') {
    if (!fallback) throw new Error(`--${m.flag} none: pass --${m.presetFlag} to say which ViT to initialise at random`);
    return new VisionTransformer({ ...fallback, act: m.act ?? fallback.act, imgSize: m.imgSize ?? fallback.imgSize }, m.seed ?? 0);
  }
  return loadEncoder(m.file, { preset: fallback, presetFlag: `--${m.presetFlag}`, imgSize: m.imgSize });
}
