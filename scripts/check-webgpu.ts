/**
 * WebGPU against wasm on one refine step (scripts/webgpu-parity-step.ts run once per backend,
 * each in its own process: tfjs holds one backend per process). Compares the loss, every
 * gradient, every parameter's AdamW update and every EMA update; prints a table of the worst
 * tensors and, last, `webgpu vs wasm: max relative difference X`. Exit 1 above --tolerance.
 *   npm run check:webgpu            (needs a GPU or the lavapipe of `npm run setup:vulkan`)
 *
 * Relative difference of a tensor: max |webgpu - wasm| / max |wasm|. Two things are not
 * compared elementwise, because rounding noise decides them on any two backends:
 * - gradients that are analytically zero (the bias of a Linear followed by BatchNorm, the
 *   last block's fc2 bias, whose shift the heads' BatchNorm removes): both backends must
 *   give numerical zeros (below ZERO x the largest gradient);
 * - AdamW's first step moves every element by about ±lr whatever its gradient's size, so an
 *   element whose gradient is numerically zero (those above, and attention's key biases)
 *   moves by a sign that rounding picks. Updates are compared on the elements whose
 *   gradient is above DEFINED x the largest gradient; the rest are counted and reported.
 * Updates are differences of float32 weights, so one rounding step of a weight (6e-8 at 1)
 * shows in them; the step's lr (1e-2) keeps that below 1e-5 of an update.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { maxRelativeDifference } from '../lib/relative-difference';

/** Gradients below this share of the largest one are numerical zeros. */
const ZERO = 1e-6;
/**
 * AdamW's first update of an element is lr g / (|g| + eps): a rounding error e of g changes it
 * by lr eps e / g^2, which reaches the tolerance for |g| under about 1e-5 of the largest
 * gradient here; updates are compared on elements above that.
 */
const DEFINED = 1e-5;

export interface StepResult {
  backend: string;
  adapter?: { description: string; software: boolean };
  fusedWgsl?: boolean;
  wgslMatMul?: boolean;
  loss: number[];
  gradNorm: number[];
  before: Record<string, number[]>;
  grads: Record<string, number[]>;
  after: Record<string, number[]>;
  ema: Record<string, number[]>;
}

export interface Comparison {
  maxRelative: number;
  worst: { what: string; relative: number }[];
  zeroGradients: string[];
  excludedElements: number;
  comparedElements: number;
  adapter?: string;
}

/** Runs the step in a child process on `backend` (with `env` added) and returns its result. */
export function runStep(backend: 'webgpu' | 'wasm', env: Record<string, string> = {}): Promise<StepResult> {
  // in the device kit both scripts are bundles side by side; in the repository, TypeScript
  const bundled = path.join(__dirname, 'webgpu-parity-step.js');
  const inKit = fs.existsSync(bundled);
  const root = inKit ? __dirname : path.resolve(__dirname, '..');
  const args = inKit ? [bundled] : ['-r', 'ts-node/register', path.join(root, 'scripts', 'webgpu-parity-step.ts')];
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      args,
      { cwd: root, env: { ...process.env, TFJS_BACKEND: backend, WASM_THREADS: process.env.WASM_THREADS ?? '1', ...env }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`the ${backend} step failed: ${err.message}\n${stderr.split('\n').filter((l) => !/artificially reduced/.test(l)).slice(-20).join('\n')}`));
        resolve(JSON.parse(stdout.trim().split('\n').pop()!) as StepResult);
      },
    );
  });
}

function maxAbs(v: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]));
  return m;
}

/** Compares a webgpu step with a wasm (reference) step. */
export function compareSteps(gpu: StepResult, ref: StepResult): Comparison {
  const rows: { what: string; relative: number }[] = [];
  rows.push({ what: 'loss', relative: maxRelativeDifference(gpu.loss, ref.loss) });
  rows.push({ what: 'weights before the step', relative: Math.max(...Object.keys(ref.before).map((k) => maxRelativeDifference(gpu.before[k], ref.before[k]))) });
  const gradScale = Math.max(...Object.values(ref.grads).map(maxAbs));
  const zeroGradients: string[] = [];
  let excluded = 0;
  let compared = 0;
  for (const name of Object.keys(ref.grads)) {
    const [g, r] = [gpu.grads[name], ref.grads[name]];
    if (!g) throw new Error(`webgpu step has no gradient for ${name}`);
    if (maxAbs(r) < ZERO * gradScale) {
      zeroGradients.push(name);
      // numerically zero on both: scaled by the largest gradient, not by its own noise
      rows.push({ what: `grad ${name} (analytically zero)`, relative: maxAbs(g) / gradScale > ZERO ? Infinity : 0 });
    } else {
      rows.push({ what: `grad ${name}`, relative: maxRelativeDifference(g, r) });
    }
    const defined = (i: number) => Math.abs(r[i]) >= DEFINED * gradScale;
    const update = (w: StepResult, key: 'after' | 'ema') => w[key][name]?.map((x, i) => x - w.before[name][i]);
    for (const key of ['after', 'ema'] as const) {
      const [ug, ur] = [update(gpu, key), update(ref, key)];
      if (!ur) continue; // the EMA holds encoder parameters only
      const kept = ur.filter((_, i) => defined(i)).length;
      excluded += ur.length - kept;
      compared += kept;
      if (kept > 0) rows.push({ what: `${key === 'after' ? 'AdamW' : 'EMA'} update ${name}`, relative: maxRelativeDifference(ug!, ur, defined) });
    }
  }
  rows.sort((x, y) => y.relative - x.relative);
  return {
    maxRelative: rows[0].relative,
    worst: rows.slice(0, 5),
    zeroGradients,
    excludedElements: excluded,
    comparedElements: compared,
    adapter: gpu.adapter?.description,
  };
}

/** Runs both steps, prints the comparison (last line: the max relative difference), exit 1 above the tolerance. */
export async function main() {
  const { values } = parseArgs({ options: { tolerance: { type: 'string', default: '1e-4' }, help: { type: 'boolean' } } });
  if (values.help) return console.log('usage: npm run check:webgpu [-- --tolerance 1e-4]   (a GPU, or the software Vulkan of npm run setup:vulkan)');
  const [gpu, ref] = await Promise.all([runStep('webgpu'), runStep('wasm')]);
  const c = compareSteps(gpu, ref);
  console.log(`webgpu adapter: ${c.adapter ?? 'none'}`);
  console.log(`loss webgpu ${gpu.loss[0]} / wasm ${ref.loss[0]}; grad norm ${gpu.gradNorm[0]} / ${ref.gradNorm[0]}`);
  console.log(`analytically zero gradients (numerical zeros on both): ${c.zeroGradients.length}; update elements compared ${c.comparedElements}, left out (gradient below ${DEFINED} of the largest) ${c.excludedElements}`);
  for (const w of c.worst) console.log(`  ${w.relative.toExponential(2)}  ${w.what}`);
  console.log(`webgpu vs wasm: max relative difference ${c.maxRelative.toExponential(2)}`);
  if (!(c.maxRelative <= Number(values.tolerance))) process.exit(1);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err.message);
    if (/no WebGPU adapter/.test(err.message)) console.error('Without a GPU: `npm run setup:vulkan` puts a software Vulkan driver (lavapipe) into .cache/vulkan, which this check then uses.');
    process.exit(1);
  });
}
