/**
 * Named parameters with PyTorch/timm interchange. Variables keep the layout that is fast for
 * tfjs (Linear weights [in, out]; patch-embedding weights flattened in (kh, kw, c) order so
 * that patchify is a cheap 4-D transpose); exportTimm/importTimm convert to and from
 * PyTorch's layouts (Linear [out, in], Conv2d [out, in, kh, kw]).
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../lib/rng';

export type Layout = 'plain' | 'linear' | 'patch-conv';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** One trainable parameter as the optimiser sees it: its own lr scale and weight decay. */
export interface ParamGroupEntry {
  name: string;
  variable: tf.Variable;
  lrScale: number;
  weightDecay: number;
}

interface Entry {
  variable: tf.Variable;
  layout: Layout;
  /** Patch size (only for 'patch-conv'). */
  patch?: number;
  /** Decay this parameter (weights yes; biases, norms, tokens, positions no). */
  decay: boolean;
}

/** tfjs variable names must be unique per process; several models may share timm names. */
let variableCounter = 0;

export class ParamSet {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly rng: Rng) {}

  add(
    name: string,
    init: tf.Tensor,
    opts: { layout?: Layout; trainable?: boolean; decay?: boolean; patch?: number } = {},
  ): tf.Variable {
    if (this.entries.has(name)) throw new Error(`parameter ${name} defined twice`);
    const variable = tf.variable(init, opts.trainable ?? true, `${name}#${variableCounter++}`);
    init.dispose();
    this.entries.set(name, { variable, layout: opts.layout ?? 'plain', patch: opts.patch, decay: opts.decay ?? false });
    return variable;
  }

  /** Xavier-uniform Linear weight [in, out] (MAE/MIM-Refiner init) and zero bias. */
  addLinear(prefix: string, fanIn: number, fanOut: number): { w: tf.Variable; b: tf.Variable } {
    const limit = Math.sqrt(6 / (fanIn + fanOut));
    const w = this.add(`${prefix}.weight`, tf.randomUniform([fanIn, fanOut], -limit, limit, 'float32', this.seed()), {
      layout: 'linear',
      decay: true,
    });
    const b = this.add(`${prefix}.bias`, tf.zeros([fanOut]));
    return { w, b };
  }

  addNorm(prefix: string, dim: number): { g: tf.Variable; b: tf.Variable } {
    return { g: this.add(`${prefix}.weight`, tf.ones([dim])), b: this.add(`${prefix}.bias`, tf.zeros([dim])) };
  }

  /** A fresh integer seed for tfjs's seeded initialisers. */
  seed(): number {
    return this.rng.nextUint32() % 2147483647;
  }

  get(name: string): tf.Variable {
    const entry = this.entries.get(name);
    if (!entry) throw new Error(`no parameter ${name}`);
    return entry.variable;
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  trainable(): Array<{ name: string; variable: tf.Variable; decay: boolean }> {
    return [...this.entries]
      .filter(([, e]) => e.variable.trainable)
      .map(([name, e]) => ({ name, variable: e.variable, decay: e.decay }));
  }

  /** Expected shapes in PyTorch layout, for validating checkpoints before loading. */
  timmShapes(): Record<string, number[]> {
    const shapes: Record<string, number[]> = {};
    for (const [name, e] of this.entries) shapes[name] = toTimmShape(e);
    return shapes;
  }

  /**
   * The trainable parameters as optimiser entries named `prefix + name`: weight decay on the
   * weights only (not biases, norms, tokens, positions), lr scale and freezing per parameter
   * name (the model's layer ids decide them, see VisionTransformer.paramGroups).
   */
  groups(prefix: string, weightDecay: number, lrScale: (name: string) => number | undefined = () => 1): ParamGroupEntry[] {
    return this.trainable().flatMap((p) => {
      const scale = lrScale(p.name);
      return scale === undefined ? [] : [{ name: prefix + p.name, variable: p.variable, lrScale: scale, weightDecay: p.decay ? weightDecay : 0 }];
    });
  }

  /** All parameters in PyTorch layout, read from the device asynchronously (one read each). */
  async exportTimm(): Promise<Record<string, HostTensor>> {
    const entries = [...this.entries];
    const views = entries.map(([, e]) => tf.tidy(() => toTimmLayout(e, e.variable)));
    try {
      const data = await Promise.all(views.map((t) => t.data() as Promise<Float32Array>));
      return Object.fromEntries(entries.map(([name], i) => [name, { shape: views[i].shape, data: data[i] }]));
    } finally {
      tf.dispose(views);
    }
  }

  /**
   * Loads PyTorch-layout tensors. Every name and shape is checked before any variable is
   * assigned, so a wrong checkpoint leaves the model untouched. `ignore` names keys the file
   * may carry that this model does not use (a classifier head, an MAE decoder).
   */
  importTimm(tensors: Map<string, HostTensor>, file: string, ignore?: RegExp): void {
    const problems: string[] = [];
    for (const [name, e] of this.entries) {
      const t = tensors.get(name);
      const want = toTimmShape(e);
      if (!t) problems.push(`missing key ${name} (expected shape [${want}])`);
      else if (t.shape.join(',') !== want.join(',')) {
        problems.push(`key ${name}: shape [${t.shape}] in file, model expects [${want}]`);
      }
    }
    for (const name of tensors.keys()) {
      if (!this.entries.has(name) && !(ignore && ignore.test(name))) problems.push(`unexpected key ${name}`);
    }
    if (problems.length > 0) {
      throw new Error(`${file}: checkpoint does not match the model:\n  ${problems.join('\n  ')}`);
    }
    for (const [name, e] of this.entries) {
      const t = tensors.get(name)!;
      tf.tidy(() => e.variable.assign(fromTimmLayout(e, tf.tensor(t.data, t.shape))));
    }
  }

  /** Copies values from another set with the same names (EMA init, teacher copies). */
  copyFrom(other: ParamSet): void {
    for (const [name, e] of this.entries) e.variable.assign(other.get(name));
  }

  dispose(): void {
    for (const e of this.entries.values()) e.variable.dispose();
    this.entries.clear();
  }
}

function toTimmShape(e: Entry): number[] {
  const s = e.variable.shape as number[];
  if (e.layout === 'linear') return [s[1], s[0]];
  if (e.layout === 'patch-conv') {
    const p = e.patch!;
    return [s[1], s[0] / (p * p), p, p];
  }
  return s;
}

function toTimmLayout(e: Entry, v: tf.Tensor): tf.Tensor {
  if (e.layout === 'linear') return tf.transpose(v);
  if (e.layout === 'patch-conv') {
    const p = e.patch!;
    const [k, d] = v.shape as [number, number];
    // [(kh, kw, c), D] -> [kh, kw, c, D] -> [D, c, kh, kw]
    return tf.transpose(tf.reshape(v, [p, p, k / (p * p), d]), [3, 2, 0, 1]);
  }
  return v.clone();
}

function fromTimmLayout(e: Entry, t: tf.Tensor): tf.Tensor {
  if (e.layout === 'linear') return tf.transpose(t);
  if (e.layout === 'patch-conv') {
    const [d, c, p] = t.shape as [number, number, number, number];
    // [D, c, kh, kw] -> [kh, kw, c, D] -> [(kh, kw, c), D]
    return tf.reshape(tf.transpose(t, [2, 3, 1, 0]), [p * p * c, d]);
  }
  return t;
}
