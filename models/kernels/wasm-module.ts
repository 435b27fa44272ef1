/**
 * Loads this folder's kernel modules (the .c files, assembled by scripts/build-kernels.sh)
 * onto tfjs's wasm backend. The modules import the backend's own memory, so kernels read
 * inputs and write outputs in place on the tfjs heap: no copies, and outputs are ordinary
 * tensors the backend owns (backend.makeOutput). On the threaded build, kernels that split
 * into independent shares (parallel()) also run on helper threads (threads.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as v8 from 'v8';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { KernelThreads } from './threads';

// Neither lib ES2022 (no DOM) nor @types/node 20 declares WebAssembly; this is all we use.
declare const WebAssembly: {
  Module: { new (bytes: Uint8Array): object; exports(m: object): { name: string; kind: string }[] };
  validate(bytes: Uint8Array): boolean;
  Instance: new (module: object, imports: object) => { exports: Record<string, KernelFunction> };
};
interface WasmMemory {
  buffer: ArrayBuffer | SharedArrayBuffer;
}
/** A kernel export: numeric arguments (heap offsets, sizes, scalars); void exports return undefined. */
type KernelFunction = (...args: number[]) => number;

/** The emscripten module members used here (the package types them loosely). */
interface EmscriptenHeap {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  wasmMemory?: WasmMemory;
  asm?: { memory?: WasmMemory };
}

export interface KernelModules {
  /** Every module's exported functions, by name. */
  fns: Record<string, KernelFunction>;
  /** Byte offset of a tensor's data on the heap. */
  offset(t: tf.TensorInfo): number;
  /** Runs f with `floats` float32s of heap scratch, freed afterwards. */
  withScratch(floats: number, f: (scratch: number) => void): void;
  /**
   * Calls fns[name](...args(start, end)) over shares of [0, total) on all kernel threads;
   * `scratchFloats` per share, whose offset is passed to args as the third parameter.
   */
  parallel(name: string, total: number, scratchFloats: number, args: (start: number, end: number, scratch: number) => number[]): void;
  threads: number;
  /** The relaxed-SIMD (fused multiply-add) builds are in use. */
  relaxedSimd: boolean;
}

/**
 * Relaxed SIMD is on by default from V8 11.4 (Node 22); Node 20's V8 has it behind a flag,
 * which applies to modules compiled after it is set (worker threads included). The relaxed
 * builds are used only where the engine then validates them.
 */
function acceptsRelaxedSimd(bytes: Uint8Array): boolean {
  if (process.env.RELAXED_SIMD === '0') return false;
  if (!WebAssembly.validate(bytes)) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
  return WebAssembly.validate(bytes);
}

/**
 * Instantiates `<name>.wasm` for each name (or `<name>.shared.wasm` when the heap is shared
 * memory, as in the threaded build; `<name>.relaxed[.shared].wasm` where that build exists and
 * the engine accepts relaxed SIMD) on the backend's heap, with `threads` kernel threads
 * (the caller and threads - 1 helpers; helpers only on shared memory).
 */
export function loadKernelModules(backend: BackendWasm, names: string[], threads: number): KernelModules {
  const heap = backend.wasm as unknown as EmscriptenHeap;
  // the threaded build keeps its heap on Module.wasmMemory, the others export it
  const memory = heap.wasmMemory ?? heap.asm?.memory;
  if (!memory) throw new Error('tfjs wasm backend: its heap memory is not reachable (wasmMemory / asm.memory)');
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  let relaxedSimd = false;
  const modules = names.map((name) => {
    const relaxedFile = path.join(__dirname, `${name}.relaxed${shared ? '.shared' : ''}.wasm`);
    const relaxed = fs.existsSync(relaxedFile) && acceptsRelaxedSimd(fs.readFileSync(relaxedFile));
    relaxedSimd ||= relaxed;
    const file = relaxed ? relaxedFile : path.join(__dirname, `${name}${shared ? '.shared' : ''}.wasm`);
    try {
      return new WebAssembly.Module(fs.readFileSync(file));
    } catch (e) {
      throw new Error(`${file}: cannot load this kernel module (${(e as Error).message}); rebuild it with scripts/build-kernels.sh`);
    }
  });
  const fns: Record<string, KernelFunction> = {};
  for (const m of modules) Object.assign(fns, new WebAssembly.Instance(m, { env: { memory } }).exports);
  // helpers number functions in the same order: each module's exports, module after module
  const index = new Map(modules.flatMap((m) => WebAssembly.Module.exports(m).filter((e) => e.kind === 'function').map((e) => e.name)).map((n, i) => [n, i]));
  const pool = shared && threads > 1 ? new KernelThreads(memory, modules, threads - 1) : undefined;

  const withScratch = (floats: number, f: (scratch: number) => void) => {
    const scratch = heap._malloc(Math.max(1, floats) * 4);
    try {
      f(scratch);
    } finally {
      heap._free(scratch);
    }
  };
  return {
    fns,
    offset: (t) => backend.dataIdMap.get(t.dataId)!.memoryOffset,
    withScratch,
    threads: pool?.threads ?? 1,
    relaxedSimd,
    parallel(name, total, scratchFloats, args) {
      const f = fns[name];
      if (!pool) return withScratch(scratchFloats, (s) => f(...args(0, total, s)));
      withScratch(scratchFloats * pool.threads, (s) => {
        let share = 0;
        pool.run(total, index.get(name)!, (a, b) => args(a, b, s + 4 * scratchFloats * ++share), (a, b) => f(...args(a, b, s)));
      });
    },
  };
}

/**
 * Puts `run` in front of the wasm backend's own kernel `name` while `active()`: the own kernel
 * still runs when inactive, and whenever `run` declines (returns undefined) inputs it does not cover.
 */
export function overrideWasmKernel(name: string, active: () => boolean, run: (args: Parameters<tf.KernelFunc>[0]) => tf.TensorInfo | undefined): void {
  const own = tf.getKernel(name, 'wasm');
  if (!own) throw new Error(`tfjs wasm backend: no '${name}' kernel to extend`);
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ ...own, kernelFunc: (args) => (active() ? run(args) : undefined) ?? own.kernelFunc(args) });
}
