/**
 * Vision Transformer (Dosovitskiy et al. 2021) in timm's layout and parameter names
 * (patch_embed.proj, cls_token, pos_embed, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
 * mlp.fc2}, norm), pre-norm blocks, LayerNorm eps 1e-6 (or the config's normEps), so checkpoints move to and from
 * PyTorch. One forward returns the tokens after any set of blocks (timm's
 * get_intermediate_layers), and takes an optional per-sample set of visible patches (MAE's
 * token dropping) and stochastic depth (timm's drop_path_rate) while training. The classifier
 * head (timm's forward_head: pooling, fc_norm, head) sits beside it for fine-tuning. Images
 * come in NHWC, the layout decoders and augmentations produce.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';
import { Activation, attention, gatherPerSample, gelu, layerNorm, linear } from './ops';
import { ParamGroupEntry, ParamSet } from './params';

export interface VitConfig {
  imgSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** 'gelu' (exact, timm default) or 'gelu_tanh' (faster on wasm). */
  act: Activation;
  /** 'sincos': fixed 2-D sin-cos (MAE); 'learned': trainable (timm default). */
  posEmbed: 'sincos' | 'learned';
  /** LayerNorm eps; absent: timm's 1e-6 (Hugging Face's ViT and ViTMAE use 1e-12). */
  normEps?: number;
}

export const VIT_PRESETS: Record<string, Omit<VitConfig, 'act' | 'posEmbed'>> = {
  /** The CPU demonstration model: CIFAR-sized images, 64 patches. */
  'vit-micro-p4': { imgSize: 32, patchSize: 4, embedDim: 128, depth: 6, numHeads: 2, mlpRatio: 4 },
  'vit-tiny-p16': { imgSize: 224, patchSize: 16, embedDim: 192, depth: 12, numHeads: 3, mlpRatio: 4 },
  'vit-small-p16': { imgSize: 224, patchSize: 16, embedDim: 384, depth: 12, numHeads: 6, mlpRatio: 4 },
  'vit-base-p16': { imgSize: 224, patchSize: 16, embedDim: 768, depth: 12, numHeads: 12, mlpRatio: 4 },
  'vit-large-p16': { imgSize: 224, patchSize: 16, embedDim: 1024, depth: 24, numHeads: 16, mlpRatio: 4 },
  'vit-huge-p14': { imgSize: 224, patchSize: 14, embedDim: 1280, depth: 32, numHeads: 16, mlpRatio: 4 },
};

export function numPatches(cfg: Pick<VitConfig, 'imgSize' | 'patchSize'>): number {
  return (cfg.imgSize / cfg.patchSize) ** 2;
}

/** Fixed 2-D sin-cos position embedding [1 + gridSize^2, dim] with a zero row for CLS (MAE). */
export function sincosPosEmbed(dim: number, gridSize: number): Float32Array {
  const out = new Float32Array((1 + gridSize * gridSize) * dim);
  const quarter = dim / 4;
  for (let gy = 0; gy < gridSize; gy++) {
    for (let gx = 0; gx < gridSize; gx++) {
      const row = (1 + gy * gridSize + gx) * dim;
      // first half encodes the column (w), second half the row (h), as MAE's get_2d_sincos_pos_embed
      for (const [half, pos] of [[0, gx], [1, gy]] as const) {
        for (let i = 0; i < quarter; i++) {
          const omega = 1 / 10000 ** (i / quarter);
          out[row + half * 2 * quarter + i] = Math.sin(pos * omega);
          out[row + half * 2 * quarter + quarter + i] = Math.cos(pos * omega);
        }
      }
    }
  }
  return out;
}

/**
 * Largest |difference| between a position embedding [1 + g^2, dim] (CLS row first) and the fixed
 * 2-D sin-cos table of that grid: near 0 for MAE's fixed embedding (up to the rounding of the
 * dtype it was stored in), order 1 for a learned one.
 */
export function sincosDistance(pos: Float32Array, dim: number, gridSize: number): number {
  if (dim % 4 !== 0 || pos.length !== (1 + gridSize * gridSize) * dim) return Infinity;
  const table = sincosPosEmbed(dim, gridSize);
  let worst = 0;
  for (let i = 0; i < table.length; i++) worst = Math.max(worst, Math.abs(table[i] - pos[i]));
  return worst;
}

/** Cubic convolution kernel with parameter a (PyTorch: -0.75 plain bicubic, -0.5 antialiased). */
function cubicKernel(x: number, a: number): number {
  x = Math.abs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

/**
 * Taps (source index, weight) of each output position along one axis of PyTorch's bicubic
 * F.interpolate (align_corners=False) from `from` to `to` samples. Plain: source coordinate
 * (o + 0.5) * from / to - 0.5, the 4 taps around it, a = -0.75, taps beyond the border clamped
 * to it. antialias=True (PyTorch's _upsample_bicubic2d_aa, as PIL): a = -0.5 stretched by the
 * scale when shrinking, taps beyond the border dropped, weights normalised to sum 1.
 */
function bicubicTaps(from: number, to: number, antialias: boolean): Array<Array<{ index: number; weight: number }>> {
  const scale = from / to;
  return Array.from({ length: to }, (_, o) => {
    if (!antialias) {
      const src = (o + 0.5) * scale - 0.5;
      const base = Math.floor(src);
      const t = src - base;
      return [t + 1, t, 1 - t, 2 - t].map((x, k) => ({ index: Math.min(Math.max(base - 1 + k, 0), from - 1), weight: cubicKernel(x, -0.75) }));
    }
    const support = scale >= 1 ? 2 * scale : 2;
    const invScale = scale >= 1 ? 1 / scale : 1;
    const center = scale * (o + 0.5);
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const end = Math.min(Math.trunc(center + support + 0.5), from);
    const taps = [];
    for (let j = first; j < end; j++) taps.push({ index: j, weight: cubicKernel((j - center + 0.5) * invScale, -0.5) });
    const total = taps.reduce((a, t) => a + t.weight, 0);
    return total === 0 ? taps : taps.map((t) => ({ index: t.index, weight: t.weight / total }));
  });
}

/**
 * A learned position embedding [1 + g0^2, dim] (CLS row first, kept as it is) resampled to a
 * g1 x g1 grid as timm's resample_abs_pos_embed does: F.interpolate(mode='bicubic',
 * align_corners=False) over the patch rows, with timm's `antialias` (true when timm loads
 * pretrained weights at another image size, its checkpoint_filter_fn; false in its older
 * resize_pos_embed). Computed in float64.
 */
export function resamplePosEmbed(pos: Float32Array, dim: number, fromGrid: number, toGrid: number, antialias = true): Float32Array {
  if (pos.length !== (1 + fromGrid * fromGrid) * dim) throw new Error(`position embedding of ${pos.length} values is not [1 + ${fromGrid}^2, ${dim}]`);
  const taps = bicubicTaps(fromGrid, toGrid, antialias);
  const out = new Float32Array((1 + toGrid * toGrid) * dim);
  out.set(pos.subarray(0, dim));
  const acc = new Float64Array(dim);
  for (let oy = 0; oy < toGrid; oy++) {
    for (let ox = 0; ox < toGrid; ox++) {
      acc.fill(0);
      for (const ty of taps[oy]) {
        for (const tx of taps[ox]) {
          const w = ty.weight * tx.weight;
          const row = (1 + ty.index * fromGrid + tx.index) * dim;
          for (let c = 0; c < dim; c++) acc[c] += w * pos[row + c];
        }
      }
      out.set(acc, (1 + oy * toGrid + ox) * dim);
    }
  }
  return out;
}

export interface ForwardOptions {
  /** Blocks (0-based) whose output tokens to return. */
  blocks: number[];
  /** Apply the final norm to the returned tokens (timm's norm=True). */
  norm?: boolean;
  /** MAE: indices [B, K] of the patches each sample keeps (CLS is always kept). */
  keep?: tf.Tensor2D;
  /**
   * Stochastic depth while training (Huang et al. 2016, arXiv 1603.09382; timm's drop_path_rate):
   * block i's attention and MLP branches are each dropped per sample with probability
   * p_i = rate * i / (depth - 1) (timm's linspace(0, rate, depth)), kept ones scaled by
   * 1 / (1 - p_i), drawn from `rng` (block by block, attention before MLP). Absent (evaluation):
   * every branch kept and unscaled.
   */
  dropPath?: { rate: number; rng: Rng };
}

/** How tokens [B, 1+T, D] become one feature per image: the CLS token, or the mean of the patch tokens. */
export type Pooling = 'cls' | 'avg';

/** Pools tokens [B, 1+T, D] to [B, D]: CLS, or mean of the patch tokens (CLS left out, as timm's global_pool 'avg'). */
export function poolTokens(tokens: tf.Tensor3D, pooling: Pooling): tf.Tensor2D {
  const [b, seq, d] = tokens.shape;
  return pooling === 'cls'
    ? (tf.reshape(tf.slice(tokens, [0, 0, 0], [b, 1, d]), [b, d]) as tf.Tensor2D)
    : (tf.mean(tf.slice(tokens, [0, 1, 0], [b, seq - 1, d]), 1) as tf.Tensor2D);
}

export class VisionTransformer {
  readonly params: ParamSet;
  readonly gridSize: number;
  readonly numPatches: number;

  constructor(readonly cfg: VitConfig, seed = 0) {
    const { imgSize, patchSize: p, embedDim: d, depth, numHeads, mlpRatio } = cfg;
    if (imgSize % p !== 0) throw new Error(`image size ${imgSize} is not a multiple of patch size ${p}`);
    if (d % numHeads !== 0) throw new Error(`width ${d} is not divisible by ${numHeads} heads`);
    if (cfg.posEmbed === 'sincos' && d % 4 !== 0) throw new Error(`sin-cos position embedding needs width % 4 == 0, got ${d}`);
    this.gridSize = imgSize / p;
    this.numPatches = this.gridSize ** 2;
    const ps = (this.params = new ParamSet(new Rng(seed, 0x717)));
    const patchIn = p * p * 3;
    const limit = Math.sqrt(6 / (patchIn + d));
    ps.add('patch_embed.proj.weight', tf.randomUniform([patchIn, d], -limit, limit, 'float32', ps.seed()), {
      layout: 'patch-conv',
      patch: p,
      decay: true,
    });
    ps.add('patch_embed.proj.bias', tf.zeros([d]));
    ps.add('cls_token', tf.mul(tf.randomNormal([1, 1, d], 0, 1, 'float32', ps.seed()), 0.02));
    ps.add(
      'pos_embed',
      cfg.posEmbed === 'sincos'
        ? tf.tensor(sincosPosEmbed(d, this.gridSize), [1, 1 + this.numPatches, d])
        : tf.mul(tf.randomNormal([1, 1 + this.numPatches, d], 0, 1, 'float32', ps.seed()), 0.02),
      { trainable: cfg.posEmbed === 'learned' },
    );
    const hidden = Math.round(d * mlpRatio);
    for (let i = 0; i < depth; i++) addBlockParams(ps, `blocks.${i}`, d, hidden);
    ps.addNorm('norm', d);
  }

  /**
   * Patch tokens with position embedding: images [B, S, S, 3] -> [B, (S/p)^2, D]. Images of
   * another size than the model's (local crops) get the patch position embedding resized
   * bilinearly to their grid, as timm's dynamic image size does (bicubic there).
   */
  embedPatches(images: tf.Tensor4D): tf.Tensor3D {
    const { patchSize: p, embedDim: d } = this.cfg;
    const [b, h, w, c] = images.shape;
    if (h !== w || h % p !== 0 || c !== 3) {
      throw new Error(`expected square images [B, S, S, 3] with S a multiple of ${p}, got [${images.shape}]`);
    }
    const g = h / p;
    // [B*g, p, g, p*3] -> [B*g, g, p, p*3]: each patch flattened (kh, kw, c), a 4-D transpose
    const patches = tf.reshape(tf.transpose(tf.reshape(images, [b * g, p, g, p * 3]), [0, 2, 1, 3]), [b * g * g, p * p * 3]);
    const tokens = linear(
      patches as tf.Tensor2D,
      this.params.get('patch_embed.proj.weight') as tf.Tensor2D,
      this.params.get('patch_embed.proj.bias') as tf.Tensor1D,
    );
    let pos: tf.Tensor = tf.slice(this.params.get('pos_embed'), [0, 1, 0], [1, this.numPatches, d]);
    if (g !== this.gridSize) {
      const grid = tf.reshape(pos, [1, this.gridSize, this.gridSize, d]) as tf.Tensor4D;
      pos = tf.reshape(tf.image.resizeBilinear(grid, [g, g], false, true), [1, g * g, d]);
    }
    return tf.add(tf.reshape(tokens, [b, g * g, d]), pos) as tf.Tensor3D;
  }

  /** Prepends the CLS token (with its position embedding) to tokens [B, T, D]. */
  prependCls(tokens: tf.Tensor3D): tf.Tensor3D {
    const d = this.cfg.embedDim;
    const cls = tf.add(this.params.get('cls_token'), tf.slice(this.params.get('pos_embed'), [0, 0, 0], [1, 1, d]));
    // broadcast by an add: tile's gradient (and broadcastTo's, which runs as Tile) slices and adds every copy one by one
    return tf.concat([tf.add(tf.zeros([tokens.shape[0], 1, d]), cls), tokens], 1) as tf.Tensor3D;
  }

  /** One pre-norm block on rows x [B*T, D] (`drop`: per-sample branch scales, see dropPathScales). */
  block(i: number, x: tf.Tensor2D, batch: number, drop?: BranchScales): tf.Tensor2D {
    return transformerBlock(this.params, `blocks.${i}`, x, batch, this.cfg.numHeads, this.cfg.act, drop, this.cfg.normEps);
  }

  finalNorm(rows: tf.Tensor2D): tf.Tensor2D {
    return layerNorm(rows, this.params.get('norm.weight') as tf.Tensor1D, this.params.get('norm.bias') as tf.Tensor1D, this.cfg.normEps ?? 1e-6);
  }

  /**
   * Tokens [B, 1 + T', D] (CLS first) after each requested block, like timm's
   * get_intermediate_layers; with norm, the final LayerNorm is applied to each.
   */
  getIntermediateLayers(images: tf.Tensor4D, opts: ForwardOptions): tf.Tensor3D[] {
    const { depth, embedDim: d } = this.cfg;
    for (const i of opts.blocks) {
      if (!Number.isInteger(i) || i < 0 || i >= depth) throw new Error(`block ${i} does not exist (model has blocks 0..${depth - 1})`);
    }
    const batch = images.shape[0];
    let tokens = this.embedPatches(images);
    if (opts.keep) tokens = gatherPerSample(tokens, opts.keep);
    const seq = tokens.shape[1] + 1;
    let x = tf.reshape(this.prependCls(tokens), [batch * seq, d]) as tf.Tensor2D;
    const wanted = new Map<number, tf.Tensor3D>();
    const last = Math.max(...opts.blocks);
    for (let i = 0; i <= last; i++) {
      x = this.block(i, x, batch, opts.dropPath && dropPathScales(batch, (opts.dropPath.rate * i) / Math.max(1, depth - 1), opts.dropPath.rng));
      if (opts.blocks.includes(i)) wanted.set(i, tf.reshape(opts.norm ? this.finalNorm(x) : x, [batch, seq, d]));
    }
    return opts.blocks.map((i) => wanted.get(i)!);
  }

  /** CLS token after each requested block, [B, D] each. */
  clsFeatures(images: tf.Tensor4D, blocks: number[], norm = false): tf.Tensor2D[] {
    return this.getIntermediateLayers(images, { blocks, norm }).map(
      (t) => tf.reshape(tf.slice(t, [0, 0, 0], [t.shape[0], 1, t.shape[2]]), [t.shape[0], t.shape[2]]) as tf.Tensor2D,
    );
  }

  /**
   * BEiT-style layer id for layer-wise lr decay: patch embedding, CLS and positions 0, block i
   * i + 1, the final norm depth + 1.
   */
  layerId(name: string): number {
    const [first, index] = name.split('.');
    if (first === 'blocks') return Number(index) + 1;
    return first === 'patch_embed' || first === 'cls_token' || first === 'pos_embed' ? 0 : this.cfg.depth + 1;
  }

  /**
   * Optimiser entries `prefix + name`: lr scale layerDecay^(depth + 1 - layer id), weight decay
   * on weights only, layers 0..frozenLayers (embeddings and the first frozenLayers blocks) left out.
   */
  paramGroups(prefix: string, opts: { weightDecay: number; layerDecay?: number; frozenLayers?: number }): ParamGroupEntry[] {
    const { layerDecay = 1, frozenLayers = -1 } = opts;
    return this.params.groups(prefix, opts.weightDecay, (name) => {
      const id = this.layerId(name);
      return id <= frozenLayers ? undefined : layerDecay ** (this.cfg.depth + 1 - id);
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}

/**
 * timm's classifier on top of a ViT (forward_head), with timm's names: pooling 'avg' takes the
 * mean of the last block's patch tokens and normalises it with `fc_norm` (timm's global_pool
 * 'avg', the MAE / BEiT fine-tuning recipe; the encoder's final `norm` is then unused), 'cls'
 * the CLS token after the encoder's final `norm` (timm's default, global_pool 'token'); then
 * `head`, a Linear to the classes (weight normal with std 2e-5 as MAE's fine-tuning, bias 0).
 * Its parameters have layer id depth + 1 (VisionTransformer.layerId): full lr under layer decay.
 */
export class ClassifierHead {
  readonly params: ParamSet;

  constructor(readonly encoder: VisionTransformer, readonly numClasses: number, readonly pooling: Pooling, seed = 0) {
    if (!Number.isInteger(numClasses) || numClasses < 2) throw new Error(`a classifier needs at least 2 classes, got ${numClasses}`);
    const d = encoder.cfg.embedDim;
    const ps = (this.params = new ParamSet(new Rng(seed, 0xc1a5)));
    if (pooling === 'avg') ps.addNorm('fc_norm', d);
    ps.add('head.weight', tf.mul(tf.truncatedNormal([d, numClasses], 0, 1, 'float32', ps.seed()), 2e-5), { layout: 'linear', decay: true });
    ps.add('head.bias', tf.zeros([numClasses]));
  }

  /** Logits [B, C] of features [B, D] pooled from the last block's tokens (before any norm) with this.pooling. */
  logits(pooled: tf.Tensor2D): tf.Tensor2D {
    const P = (name: string) => this.params.get(name) as unknown as tf.Tensor1D;
    const normed = this.pooling === 'avg' ? layerNorm(pooled, P('fc_norm.weight'), P('fc_norm.bias'), this.encoder.cfg.normEps ?? 1e-6) : this.encoder.finalNorm(pooled);
    return linear(normed, this.params.get('head.weight') as tf.Tensor2D, P('head.bias'));
  }

  /** Images [B, S, S, 3] -> logits [B, C]; with dropPath (training) stochastic depth in the encoder. */
  forward(images: tf.Tensor4D, dropPath?: ForwardOptions['dropPath']): tf.Tensor2D {
    const [tokens] = this.encoder.getIntermediateLayers(images, { blocks: [this.encoder.cfg.depth - 1], dropPath });
    return this.logits(poolTokens(tokens, this.pooling));
  }

  /** Optimiser entries `prefix + name`, weight decay on head.weight only. */
  paramGroups(prefix: string, weightDecay: number): ParamGroupEntry[] {
    return this.params.groups(prefix, weightDecay);
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** Per-sample scales [B, 1, 1] of a block's attention and MLP branches (undefined: keep all, unscaled). */
export interface BranchScales {
  attn: tf.Tensor3D;
  mlp: tf.Tensor3D;
}

/**
 * Stochastic depth's scales for one block: each branch of each sample kept with probability
 * 1 - p and then scaled by 1 / (1 - p), else 0 (timm's drop_path with scale_by_keep). Drawn on
 * the host from `rng` (attention's B values, then the MLP's), so a seed fixes them on any backend.
 */
export function dropPathScales(batch: number, p: number, rng: Rng): BranchScales | undefined {
  if (p <= 0) return undefined;
  const keep = 1 - p;
  const draw = () => tf.tensor3d(Float32Array.from({ length: batch }, () => (rng.bernoulli(keep) ? 1 / keep : 0)), [batch, 1, 1]);
  return { attn: draw(), mlp: draw() };
}

/** A branch's rows [B*T, D] times its per-sample scale [B, 1, 1]. */
function scaleBranch(rows: tf.Tensor2D, scale: tf.Tensor3D | undefined, batch: number): tf.Tensor2D {
  if (!scale) return rows;
  const [n, d] = rows.shape;
  return tf.reshape(tf.mul(tf.reshape(rows, [batch, n / batch, d]), scale), [n, d]) as tf.Tensor2D;
}

/** Parameters of one pre-norm transformer block, timm names under `prefix`. */
export function addBlockParams(ps: ParamSet, prefix: string, dim: number, hidden: number): void {
  ps.addNorm(`${prefix}.norm1`, dim);
  ps.addLinear(`${prefix}.attn.qkv`, dim, 3 * dim);
  ps.addLinear(`${prefix}.attn.proj`, dim, dim);
  ps.addNorm(`${prefix}.norm2`, dim);
  ps.addLinear(`${prefix}.mlp.fc1`, dim, hidden);
  ps.addLinear(`${prefix}.mlp.fc2`, hidden, dim);
}

/**
 * One pre-norm block (x + attn(norm1(x)), then x + mlp(norm2(x))) on rows x [B*T, D]; `drop`
 * scales each branch per sample (stochastic depth, dropPathScales).
 */
export function transformerBlock(
  ps: ParamSet,
  prefix: string,
  x: tf.Tensor2D,
  batch: number,
  numHeads: number,
  act: Activation,
  drop?: BranchScales,
  eps = 1e-6,
): tf.Tensor2D {
  const P = <T extends tf.Tensor>(name: string) => ps.get(`${prefix}.${name}`) as unknown as T;
  const h1 = layerNorm(x, P('norm1.weight'), P('norm1.bias'), eps);
  const qkv = linear(h1, P('attn.qkv.weight'), P('attn.qkv.bias'));
  const merged = attention(qkv, batch, numHeads);
  const x1 = tf.add(x, scaleBranch(linear(merged, P('attn.proj.weight'), P('attn.proj.bias')), drop?.attn, batch)) as tf.Tensor2D;
  const h2 = layerNorm(x1, P('norm2.weight'), P('norm2.bias'), eps);
  const mid = gelu(linear(h2, P('mlp.fc1.weight'), P('mlp.fc1.bias')), act) as tf.Tensor2D;
  return tf.add(x1, scaleBranch(linear(mid, P('mlp.fc2.weight'), P('mlp.fc2.bias')), drop?.mlp, batch)) as tf.Tensor2D;
}
