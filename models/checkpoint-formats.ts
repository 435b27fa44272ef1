/**
 * Encoder checkpoints as the ecosystem ships them, turned into timm-named tensors and a ViT
 * config: safetensors (this project's, timm's, Hugging Face's) and PyTorch's torch.save zips
 * (.pth/.pt/.bin, read by ./torch-pickle without Python), with
 *  - timm key names (patch_embed.proj, blocks.N.attn.qkv, ...), possibly under a prefix such as
 *    DDP's `module.`, or nested in a training checkpoint under 'model' / 'state_dict' / ...;
 *  - Hugging Face transformers ViT / ViTMAE key names, as save_pretrained writes them
 *    (`vit.encoder.layer.N.attention.attention.query`) and as transformers 5 holds them in
 *    memory (`vit.layers.N.attention.q_proj`), with q/k/v fused into timm's qkv;
 * and, when a file carries no 'vit' metadata, the config read off the tensors' shapes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensorsHeader, readSafetensors, type LoadedTensor, type SafetensorsDtype } from './safetensors';
import { looksLikeTorchFile, readTorchCheckpoint, type PickleDict, type PickleValue, type TorchTensorRef } from './torch-pickle';
import type { VitConfig } from './vit';

/** Tensors of a file, known by name, dtype and shape before any is read. */
export interface TensorSource {
  entries: Map<string, { dtype: SafetensorsDtype; shape: number[] }>;
  read(keys: string[]): Map<string, LoadedTensor>;
}

/** A checkpoint file opened: its tensors, its safetensors metadata, and how they were found (for the log). */
export interface OpenedCheckpoint {
  source: TensorSource;
  metadata: Record<string, string>;
  /** "safetensors" or "PyTorch zip checkpoint, weights under 'model'". */
  found: string;
}

/** Dict entries of a training checkpoint that may hold the weights, in the order they are tried. */
const NESTED_WEIGHTS = ['model', 'state_dict', 'module', 'model_ema'];

/** Opens an encoder checkpoint of any supported format (decided by its bytes, not its extension). */
export function openCheckpoint(file: string): OpenedCheckpoint {
  if (!fs.existsSync(file)) throw new Error(`${file}: checkpoint not found`);
  if (fs.statSync(file).isDirectory()) {
    const inside = fs.readdirSync(file).filter((n) => /\.(safetensors|pth|pt|bin|th)$/.test(n));
    throw new Error(
      `${file}: is a folder, not a checkpoint file; pass the weights file itself` +
        (inside.length > 0 ? ` (it holds ${inside.slice(0, 5).join(', ')}${inside.length > 5 ? ', ...' : ''})` : ' (it holds no .safetensors/.pth/.pt/.bin file)'),
    );
  }
  const fd = fs.openSync(file, 'r');
  const head = Buffer.alloc(4);
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (looksLikeTorchFile(head)) return openTorch(file);
  const header = readSafetensorsHeader(file);
  return {
    source: {
      entries: new Map([...header.entries].map(([k, e]) => [k, { dtype: e.dtype, shape: e.shape }])),
      read: (keys) => readSafetensors(file, { keys }).tensors,
    },
    metadata: header.metadata,
    found: 'safetensors',
  };
}

const TORCH_DTYPES: Record<string, SafetensorsDtype> = {
  FloatStorage: 'F32', DoubleStorage: 'F64', HalfStorage: 'F16', BFloat16Storage: 'BF16', IntStorage: 'I32', LongStorage: 'I64',
};

function isTensorRef(v: PickleValue | undefined): v is TorchTensorRef {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Uint8Array) && v.kind === 'tensor';
}

function tensorsOf(d: PickleDict): Map<string, TorchTensorRef> {
  const out = new Map<string, TorchTensorRef>();
  for (const [k, v] of d) if (typeof k === 'string' && isTensorRef(v)) out.set(k, v);
  return out;
}

function openTorch(file: string): OpenedCheckpoint {
  const ckpt = readTorchCheckpoint(file);
  const root = ckpt.root;
  if (!(root instanceof Map)) throw new Error(`${file}: the PyTorch checkpoint holds ${Array.isArray(root) ? 'a list' : typeof root}, not a dict of tensors`);
  const looksLikeViT = (t: Map<string, TorchTensorRef>) => [...t.keys()].some((k) => /patch_embed\.proj\.weight$|embeddings\.patch_embeddings\.projection\.weight$/.test(k));
  let tensors = tensorsOf(root);
  let where = 'at the top level';
  if (!looksLikeViT(tensors)) {
    const nested = NESTED_WEIGHTS.find((k) => root.get(k) instanceof Map && looksLikeViT(tensorsOf(root.get(k) as PickleDict)));
    if (!nested) {
      const keys = [...root.keys()].map(String);
      throw new Error(
        `${file}: no ViT weights found: neither the top level nor ${NESTED_WEIGHTS.map((k) => `'${k}'`).join(' / ')} holds a patch embedding ` +
          `(top-level keys: ${keys.slice(0, 12).join(', ')}${keys.length > 12 ? ', ...' : ''})`,
      );
    }
    tensors = tensorsOf(root.get(nested) as PickleDict);
    where = `under '${nested}'`;
  }
  const entries = new Map<string, { dtype: SafetensorsDtype; shape: number[] }>();
  const skipped: string[] = [];
  for (const [k, ref] of tensors) {
    const dtype = TORCH_DTYPES[ref.storage.type];
    // a buffer of bytes or bools (a mask, say) is no ViT parameter: left out, and said so
    if (dtype) entries.set(k, { dtype, shape: ref.shape });
    else skipped.push(`${k} (${ref.storage.type})`);
  }
  return {
    source: { entries, read: (keys) => new Map(keys.map((k) => [k, ckpt.readTensor(tensors.get(k)!, k)])) },
    metadata: {},
    found: `PyTorch zip checkpoint, weights ${where}${skipped.length > 0 ? `; left out non-float buffers ${skipped.join(', ')}` : ''}`,
  };
}

// ---------------------------------------------------------------------------------------------
// Key names
// ---------------------------------------------------------------------------------------------

/** Where each timm-named tensor comes from: one source key, or several concatenated on dim 0 (q, k, v). */
export interface NameMapping {
  layout: 'timm' | 'Hugging Face';
  /** timm name -> source keys. */
  sources: Map<string, string[]>;
  /** Source keys this encoder does not use (a classifier, a decoder, a pooler), left out. */
  ignored: string[];
}

const TIMM_PATCH = 'patch_embed.proj.weight';
const HF_PATCH = 'embeddings.patch_embeddings.projection.weight';

/** LayerNorm eps of transformers' ViTConfig and ViTMAEConfig by default (timm's is 1e-6). */
export const HF_LAYER_NORM_EPS = 1e-12;

/** Keys of a Hugging Face ViT / ViTMAE checkpoint that the encoder does not use. */
const HF_UNUSED = /^(pooler\.|classifier\.|decoder\.|embeddings\.mask_token$)/;

/** Per-layer HF names -> timm block names, for the save_pretrained layout and transformers 5's. */
const HF_LAYER_NAMES: Array<[RegExp, string]> = [
  [/^layernorm_before\.(weight|bias)$/, 'norm1.$1'],
  [/^layernorm_after\.(weight|bias)$/, 'norm2.$1'],
  [/^attention\.output\.dense\.(weight|bias)$/, 'attn.proj.$1'],
  [/^attention\.o_proj\.(weight|bias)$/, 'attn.proj.$1'],
  [/^intermediate\.dense\.(weight|bias)$/, 'mlp.fc1.$1'],
  [/^output\.dense\.(weight|bias)$/, 'mlp.fc2.$1'],
  [/^mlp\.fc1\.(weight|bias)$/, 'mlp.fc1.$1'],
  [/^mlp\.fc2\.(weight|bias)$/, 'mlp.fc2.$1'],
];
const HF_QKV: Array<[RegExp, number]> = [
  [/^attention\.attention\.query\.(weight|bias)$/, 0],
  [/^attention\.attention\.key\.(weight|bias)$/, 1],
  [/^attention\.attention\.value\.(weight|bias)$/, 2],
  [/^attention\.q_proj\.(weight|bias)$/, 0],
  [/^attention\.k_proj\.(weight|bias)$/, 1],
  [/^attention\.v_proj\.(weight|bias)$/, 2],
];

/** The prefix before `suffix` in the file's keys ('' preferred; more than one other is ambiguous). */
function prefixOf(keys: string[], suffix: string, file: string): string | undefined {
  const prefixes = keys.filter((k) => k.endsWith(suffix)).map((k) => k.slice(0, -suffix.length));
  if (prefixes.length === 0) return undefined;
  if (prefixes.includes('')) return '';
  if (prefixes.length > 1) throw new Error(`${file}: several encoders in one file (prefixes ${prefixes.map((p) => `'${p}'`).join(', ')}); save the one you want alone`);
  if (!/\.$/.test(prefixes[0])) return undefined;
  return prefixes[0];
}

/** Maps the file's keys to timm's names (checked against the model later, by importTimm). */
export function mapToTimmNames(keys: string[], file: string): NameMapping {
  const timm = prefixOf(keys, TIMM_PATCH, file);
  if (timm !== undefined) {
    const sources = new Map<string, string[]>();
    const ignored: string[] = [];
    for (const k of keys) {
      if (k.startsWith(timm)) sources.set(k.slice(timm.length), [k]);
      else ignored.push(k);
    }
    return { layout: 'timm', sources, ignored };
  }
  const hf = prefixOf(keys, HF_PATCH, file);
  if (hf === undefined) {
    throw new Error(
      `${file}: neither timm (${TIMM_PATCH}, blocks.N...) nor Hugging Face ViT (${HF_PATCH}, encoder.layer.N...) key names ` +
        `(its keys begin: ${keys.slice(0, 8).join(', ')}${keys.length > 8 ? ', ...' : ''})`,
    );
  }
  const sources = new Map<string, string[]>();
  const qkv = new Map<string, string[]>();
  const ignored: string[] = [];
  const unknown: string[] = [];
  for (const k of keys) {
    if (!k.startsWith(hf)) {
      ignored.push(k);
      continue;
    }
    const name = k.slice(hf.length);
    const layer = /^(?:encoder\.layer|layers)\.(\d+)\.(.+)$/.exec(name);
    if (name === 'embeddings.cls_token') sources.set('cls_token', [k]);
    else if (name === 'embeddings.position_embeddings') sources.set('pos_embed', [k]);
    else if (/^embeddings\.patch_embeddings\.projection\.(weight|bias)$/.test(name)) sources.set(`patch_embed.proj.${name.split('.').pop()}`, [k]);
    else if (/^layernorm\.(weight|bias)$/.test(name)) sources.set(`norm.${name.split('.').pop()}`, [k]);
    else if (HF_UNUSED.test(name)) ignored.push(k);
    else if (layer) {
      const [, index, rest] = layer;
      const plain = HF_LAYER_NAMES.find(([re]) => re.test(rest));
      const part = HF_QKV.find(([re]) => re.test(rest));
      if (plain) sources.set(`blocks.${index}.${rest.replace(plain[0], plain[1])}`, [k]);
      else if (part) {
        const target = `blocks.${index}.attn.qkv.${rest.split('.').pop()}`;
        const parts = qkv.get(target) ?? [];
        parts[part[1]] = k;
        qkv.set(target, parts);
      } else unknown.push(k);
    } else unknown.push(k);
  }
  for (const [target, parts] of qkv) {
    const missing = ['query', 'key', 'value'].filter((_, i) => parts[i] === undefined);
    if (missing.length > 0) throw new Error(`${file}: ${target.replace(/^blocks\.(\d+)\..*/, 'layer $1')} lacks its attention ${missing.join(', ')} tensor(s)`);
    sources.set(target, parts);
  }
  // unknown keys go through under their own names, so the model's check lists them as unexpected
  for (const k of unknown) sources.set(k, [k]);
  return { layout: 'Hugging Face', sources, ignored };
}

/** Shape of a timm-named tensor as mapped (q/k/v concatenated on dim 0). */
export function mappedShape(mapping: NameMapping, source: TensorSource, name: string): number[] | undefined {
  const keys = mapping.sources.get(name);
  if (!keys) return undefined;
  const shapes = keys.map((k) => source.entries.get(k)!.shape);
  return keys.length === 1 ? shapes[0] : [shapes.reduce((a, s) => a + s[0], 0), ...shapes[0].slice(1)];
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

const ACTIVATIONS = ['gelu', 'gelu_tanh'] as const;
const POS_EMBEDS = ['sincos', 'learned'] as const;
const CONFIG_KEYS: Array<keyof VitConfig> = ['imgSize', 'patchSize', 'embedDim', 'depth', 'numHeads', 'mlpRatio', 'act', 'posEmbed', 'normEps'];

/**
 * The ViT config in a file's metadata 'vit', checked field by field: every key known, integers
 * where integers belong, act and posEmbed among the values this ViT implements.
 */
export function parseVitMetadata(json: string, file: string): VitConfig {
  const fail = (detail: string): never => {
    throw new Error(`${file}: metadata 'vit': ${detail}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    fail('is not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('is not a JSON object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!CONFIG_KEYS.includes(k as keyof VitConfig)) fail(`unknown key "${k}" (known: ${CONFIG_KEYS.join(', ')})`);
  for (const k of ['imgSize', 'patchSize', 'embedDim', 'depth', 'numHeads'] as const) {
    if (o[k] === undefined) fail(`${k} is missing (a positive integer)`);
    if (!Number.isInteger(o[k]) || (o[k] as number) <= 0) fail(`${k} ${JSON.stringify(o[k])} is not a positive integer`);
  }
  if (o.mlpRatio === undefined) fail('mlpRatio is missing (a positive number)');
  if (typeof o.mlpRatio !== 'number' || !(o.mlpRatio > 0) || !Number.isFinite(o.mlpRatio)) fail(`mlpRatio ${JSON.stringify(o.mlpRatio)} is not a positive number`);
  if (!ACTIVATIONS.includes(o.act as (typeof ACTIVATIONS)[number])) fail(`act ${JSON.stringify(o.act)} is not supported (one of ${ACTIVATIONS.join(', ')})`);
  if (!POS_EMBEDS.includes(o.posEmbed as (typeof POS_EMBEDS)[number])) fail(`posEmbed ${JSON.stringify(o.posEmbed)} is not supported (one of ${POS_EMBEDS.join(', ')})`);
  if (o.normEps !== undefined && !(typeof o.normEps === 'number' && o.normEps > 0 && o.normEps < 1)) fail(`normEps ${JSON.stringify(o.normEps)} is not a number in (0, 1)`);
  const cfg = o as unknown as VitConfig;
  if (cfg.imgSize % cfg.patchSize !== 0) fail(`imgSize ${cfg.imgSize} is not a multiple of patchSize ${cfg.patchSize}`);
  if (cfg.embedDim % cfg.numHeads !== 0) fail(`embedDim ${cfg.embedDim} is not divisible by numHeads ${cfg.numHeads}`);
  return cfg;
}

/** timm's presets whose heads are not 64 channels wide, by width (vit_huge, vit_giant, vit_gigantic, SigLIP so400m / so150m). */
const TIMM_HEADS: Record<number, number> = { 1280: 16, 1408: 16, 1664: 16, 1152: 16, 880: 16 };

/**
 * Heads of a ViT of this width as timm's presets have them (192 -> 3, 384 -> 6, 768 -> 12,
 * 1024 -> 16, 1280 -> 16, ...): 64 channels a head except the widths listed above; a width up
 * to 64 gets one head. undefined where timm has no rule (a width not a multiple of 64).
 */
export function defaultNumHeads(width: number): number | undefined {
  if (TIMM_HEADS[width]) return TIMM_HEADS[width];
  if (width <= 64) return 1;
  return width % 64 === 0 ? width / 64 : undefined;
}

/** What the tensors say of the architecture, and how each fact was read, for the log. */
export interface InferredConfig {
  /** numHeads: timm's default for the width (the heads are not in the tensors); undefined where it has none. */
  cfg: Omit<VitConfig, 'posEmbed' | 'numHeads'> & { numHeads: number | undefined };
  /** The grid side of the file's position embedding. */
  grid: number;
  /** The file's position embedding has no CLS row (timm's no_embed_class): the class token gets no position. */
  posEmbedWithoutCls: boolean;
  notes: string[];
  /** How the head count was chosen (a separate note: a config.json may give it instead). */
  headsNote: string;
}

/**
 * The architecture read off timm-named shapes: width and patch from patch_embed.proj.weight
 * [D, 3, p, p], depth from blocks.N, mlp ratio from blocks.0.mlp.fc1.weight, the grid (so the
 * image size) from pos_embed's rows, heads by width as timm's presets (defaultNumHeads).
 */
export function inferVitConfig(shape: (name: string) => number[] | undefined, names: string[], file: string): InferredConfig {
  const fail = (detail: string): never => {
    throw new Error(`${file}: ${detail}`);
  };
  const patch = shape(TIMM_PATCH) ?? fail(`no ${TIMM_PATCH}`);
  if (patch.length !== 4 || patch[1] !== 3 || patch[2] !== patch[3]) fail(`${TIMM_PATCH} has shape [${patch}], expected [width, 3, p, p]`);
  const [embedDim, , patchSize] = patch;
  const blockIds = [...new Set(names.map((n) => /^blocks\.(\d+)\./.exec(n)?.[1]).filter((s): s is string => s !== undefined).map(Number))].sort((a, b) => a - b);
  const depth = blockIds.length;
  if (depth === 0) fail('no transformer blocks (blocks.N...)');
  if (blockIds[depth - 1] !== depth - 1) fail(`blocks are not numbered 0..${depth - 1} (found ${blockIds.join(', ')})`);
  const fc1 = shape('blocks.0.mlp.fc1.weight') ?? fail('no blocks.0.mlp.fc1.weight: not a standard ViT MLP block');
  const mlpRatio = fc1[0] / embedDim;
  if (!shape('cls_token')) fail('no cls_token: a ViT without a class token is not supported here (this ViT pools its CLS token)');
  const pos = shape('pos_embed') ?? fail('no pos_embed: only absolute position embeddings (learned or sin-cos) are supported');
  if (pos.length !== 3 || pos[0] !== 1 || pos[2] !== embedDim) fail(`pos_embed has shape [${pos}], expected [1, tokens, ${embedDim}]`);
  const isSquare = (n: number) => n > 0 && Math.round(Math.sqrt(n)) ** 2 === n;
  const withCls = isSquare(pos[1] - 1);
  if (!withCls && !isSquare(pos[1])) fail(`pos_embed has ${pos[1]} rows: neither 1 + a square grid nor a square grid (non-square images are not supported)`);
  const grid = Math.round(Math.sqrt(withCls ? pos[1] - 1 : pos[1]));
  const numHeads = defaultNumHeads(embedDim);
  const notes = [
    `width ${embedDim}, patch ${patchSize} (${TIMM_PATCH} [${patch}])`,
    `depth ${depth} (blocks.0-${depth - 1})`,
    `mlp ratio ${mlpRatio} (blocks.0.mlp.fc1.weight [${fc1}])`,
    `${grid}x${grid} patches${withCls ? ' + class token' : ', class token without a position'} -> image size ${grid * patchSize} (pos_embed [${pos}])`,
  ];
  const headsNote = numHeads === undefined ? 'heads unknown' : `${numHeads} head${numHeads > 1 ? 's' : ''} (timm's default for width ${embedDim}; heads are not in the tensors), exact GELU (timm's default)`;
  return {
    cfg: { imgSize: grid * patchSize, patchSize, embedDim, depth, numHeads, mlpRatio, act: 'gelu' },
    grid,
    posEmbedWithoutCls: !withCls,
    notes,
    headsNote,
  };
}

/**
 * Heads and activation from a Hugging Face config.json beside the weights (save_pretrained
 * writes one), when it describes this model; undefined when there is none.
 */
export function readHfConfig(file: string, embedDim: number): { numHeads: number; act: VitConfig['act']; normEps?: number; note: string } | undefined {
  const configFile = path.join(path.dirname(file), 'config.json');
  if (!fs.existsSync(configFile)) return undefined;
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  } catch {
    return undefined;
  }
  if (!['vit', 'vit_mae'].includes(String(c.model_type)) || c.hidden_size !== embedDim || !Number.isInteger(c.num_attention_heads)) return undefined;
  const acts: Record<string, VitConfig['act']> = { gelu: 'gelu', gelu_pytorch_tanh: 'gelu_tanh', gelu_new: 'gelu_tanh' };
  const act = acts[String(c.hidden_act ?? 'gelu')];
  if (!act) throw new Error(`${configFile}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (one of ${Object.keys(acts).join(', ')})`);
  const normEps = typeof c.layer_norm_eps === 'number' && c.layer_norm_eps > 0 ? c.layer_norm_eps : undefined;
  return { numHeads: c.num_attention_heads as number, act, normEps, note: `${c.num_attention_heads} heads, ${act}${normEps ? `, LayerNorm eps ${normEps}` : ''} from ${configFile}` };
}

/**
 * Largest rounding error of values of `dtype` in [-1, 1]: how far a stored sin-cos table may be
 * from the exact one and still be recognised as it.
 */
export function sincosTolerance(dtype: SafetensorsDtype): number {
  return dtype === 'BF16' ? 8e-3 : dtype === 'F16' ? 1e-3 : 1e-5;
}
