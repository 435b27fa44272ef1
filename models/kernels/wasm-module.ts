/**
 * Loads one of this folder's kernel modules (the .c files, assembled by scripts/build-kernels.sh)
 * onto tfjs's wasm backend. The module imports the backend's own memory, so its kernels read
 * inputs and write outputs in place on the tfjs heap: no copies, and outputs are ordinary
 * tensors the backend owns (backend.makeOutput).
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

// Neither lib ES2022 (no DOM) nor @types/node 20 declares WebAssembly; this is all we use.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
};
interface WasmMemory {
  buffer: ArrayBuffer | SharedArrayBuffer;
}

/** The emscripten module members used here (the package types them loosely). */
interface EmscriptenHeap {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  wasmMemory?: WasmMemory;
  asm?: { memory?: WasmMemory };
}

export interface KernelModule<E> {
  exports: E;
  /** Byte offset of a tensor's data on the heap. */
  offset(t: tf.TensorInfo): number;
  /** Runs f with `floats` float32s of heap scratch, freed afterwards. */
  withScratch(floats: number, f: (scratch: number) => void): void;
}

/**
 * Instantiates `<name>.wasm` (or `<name>.shared.wasm` when the heap is shared memory, as in
 * the threaded build) on the backend's heap.
 */
export function loadKernelModule<E>(backend: BackendWasm, name: string): KernelModule<E> {
  const heap = backend.wasm as unknown as EmscriptenHeap;
  // the threaded build keeps its heap on Module.wasmMemory, the others export it
  const memory = heap.wasmMemory ?? heap.asm?.memory;
  if (!memory) throw new Error('tfjs wasm backend: its heap memory is not reachable (wasmMemory / asm.memory)');
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const file = path.join(__dirname, `${name}${shared ? '.shared' : ''}.wasm`);
  const exports = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(file)), { env: { memory } }).exports as E;
  return {
    exports,
    offset: (t) => backend.dataIdMap.get(t.dataId)!.memoryOffset,
    withScratch(floats, f) {
      const scratch = heap._malloc(floats * 4);
      try {
        f(scratch);
      } finally {
        heap._free(scratch);
      }
    },
  };
}
