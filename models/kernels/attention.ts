/**
 * Registers attention.c's kernels with tfjs's wasm backend as the kernels 'FusedAttention'
 * and 'FusedAttentionGrad'. The module imports the backend's own memory, so kernels read
 * inputs and write outputs in place on the tfjs heap: no copies, and outputs are ordinary
 * tensors the backend owns. models/ops.ts's attention() uses them when they are registered
 * and composes the same computation from tfjs ops otherwise (native and GPU backends).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export const FUSED_ATTENTION = 'FusedAttention';
export const FUSED_ATTENTION_GRAD = 'FusedAttentionGrad';

// Neither lib ES2022 (no DOM) nor @types/node 20 declares WebAssembly; this is all we use.
declare const WebAssembly: {
  Memory: new (d: object) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
};
interface WasmMemory {
  buffer: ArrayBuffer | SharedArrayBuffer;
}

interface AttentionExports {
  attention_forward(qkv: number, out: number, p: number, scratch: number, t: number, h: number, hd: number, scale: number, g0: number, g1: number): void;
  attention_backward(qkv: number, p: number, dout: number, dqkv: number, scratch: number, t: number, h: number, hd: number, scale: number, g0: number, g1: number): void;
}

/** The emscripten module members used here (typed loosely by the package). */
interface EmscriptenHeap {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  wasmMemory?: WasmMemory;
  asm?: { memory?: WasmMemory };
}

/** The backend's heap: the threaded build keeps it on Module.wasmMemory, the others export it. */
function heapMemory(backend: BackendWasm): WasmMemory {
  const m = backend.wasm as unknown as EmscriptenHeap;
  const memory = m.wasmMemory ?? m.asm?.memory;
  if (!memory) throw new Error('tfjs wasm backend: its heap memory is not reachable (wasmMemory / asm.memory)');
  return memory;
}

/** Shapes of one call: qkv rows [batch * tokens, 3 * heads * headDim]. */
interface AttentionShape {
  batch: number;
  tokens: number;
  heads: number;
  headDim: number;
}

function shapeOf(qkv: tf.TensorInfo, batch: number, heads: number): AttentionShape {
  const [rows, width] = qkv.shape;
  if (qkv.shape.length !== 2 || rows % batch !== 0 || width % (3 * heads) !== 0) {
    throw new Error(`${FUSED_ATTENTION}: qkv [${qkv.shape}] does not split into batch ${batch} x tokens and 3 x ${heads} heads`);
  }
  return { batch, tokens: rows / batch, heads, headDim: width / (3 * heads) };
}

let registered = false;

export function fusedAttentionRegistered(): boolean {
  return registered;
}

/**
 * Instantiates the kernels on the backend's memory and registers them. Returns false (and
 * registers nothing) when the heap cannot be reached, so callers fall back to tfjs ops.
 */
export function registerFusedAttention(backend: BackendWasm): boolean {
  if (registered) return true;
  const memory = heapMemory(backend);
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const file = path.join(__dirname, shared ? 'attention.shared.wasm' : 'attention.wasm');
  const kernels = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(file)), { env: { memory } })
    .exports as AttentionExports;
  const heap = backend.wasm as unknown as EmscriptenHeap;
  const offset = (t: tf.TensorInfo) => backend.dataIdMap.get(t.dataId)!.memoryOffset;
  const withScratch = (floats: number, f: (scratch: number) => void) => {
    const scratch = heap._malloc(floats * 4);
    try {
      f(scratch);
    } finally {
      heap._free(scratch);
    }
  };

  tf.registerKernel({
    kernelName: FUSED_ATTENTION,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { qkv } = inputs as { qkv: tf.TensorInfo };
      const s = shapeOf(qkv, attrs!.batch as number, attrs!.heads as number);
      const out = backend.makeOutput([s.batch * s.tokens, s.heads * s.headDim], 'float32');
      const probs = backend.makeOutput([s.batch, s.heads, s.tokens, s.tokens], 'float32');
      withScratch(s.headDim * s.tokens, (scratch) =>
        kernels.attention_forward(offset(qkv), offset(out), offset(probs), scratch, s.tokens, s.heads, s.headDim, s.headDim ** -0.5, 0, s.batch * s.heads),
      );
      return [out, probs];
    },
  });
  tf.registerKernel({
    kernelName: FUSED_ATTENTION_GRAD,
    backendName: 'wasm',
    kernelFunc: ({ inputs, attrs }) => {
      const { qkv, probs, dy } = inputs as { qkv: tf.TensorInfo; probs: tf.TensorInfo; dy: tf.TensorInfo };
      const s = shapeOf(qkv, attrs!.batch as number, attrs!.heads as number);
      const dqkv = backend.makeOutput(qkv.shape, 'float32');
      withScratch(s.headDim * s.tokens + s.tokens * s.tokens, (scratch) =>
        kernels.attention_backward(offset(qkv), offset(probs), offset(dy), offset(dqkv), scratch, s.tokens, s.heads, s.headDim, s.headDim ** -0.5, 0, s.batch * s.heads),
      );
      return dqkv;
    },
  });
  registered = true;
  return true;
}
