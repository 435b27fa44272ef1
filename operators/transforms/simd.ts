/**
 * The SIMD row kernels of simd.wat, instantiated once per thread (main or worker), and a
 * scratch arena in their memory. Callers (blur.ts, resize.ts) copy their input into the
 * arena, run kernels on byte offsets, and copy the result out: no view into wasm memory
 * escapes a call (growing the memory would detach it).
 */

/**
 * simd.wat assembled. Regenerate after editing simd.wat:
 *   wat2wasm operators/transforms/simd.wat --output=- | base64 -w0
 * (spec/transforms-simd.spec.ts checks this still matches the .wat when wat2wasm is installed.)
 */
export const SIMD_WASM_BASE64 =
  'AGFzbQEAAAABIQRgBH9/fX8AYAV/f399fwBgBH99fX8AYAd/f39/f39/AAMGBQAAAQIDBQMBAAEHNQYGbWVtb3J5AgAFc2NhbGUAAARheHB5AAEFYXhweTIAAgVjbGFtcAADCWhyZXNhbXBsZQAECuYDBUQCAX8BeyAC/RMhBSAAIANBAnRqIQQCQANAIAAgBE8NASAAIAUgAf0ABAD95gH9CwQAIABBEGohACABQRBqIQEMAAsLC00CAX8BeyAC/RMhBSAAIANBAnRqIQQCQANAIAAgBE8NASAAIAD9AAQAIAUgAf0ABAD95gH95AH9CwQAIABBEGohACABQRBqIQEMAAsLC10CAX8BeyAD/RMhBiAAIARBAnRqIQUCQANAIAAgBU8NASAAIAD9AAQAIAYgAf0ABAAgAv0ABAD95AH95gH95AH9CwQAIABBEGohACABQRBqIQEgAkEQaiECDAALCwtIAgF/AnsgAf0TIQUgAv0TIQYgACADQQJ0aiEEAkADQCAAIARPDQEgACAA/QAEACAF/ekBIAb96AH9CwQAIABBEGohAAwACwsLqQECBX8BewJAA0AgByAGTw0B/QwAAAAAAAAAAAAAAAAAAAAAIQwgASACIAdBAnRqKAIAQQxsaiEKIAMgB0ECdGooAgAhCSAEIAcgBWxBAnRqIQtBACEIAkADQCAIIAlPDQEgDCAL/QkCACAK/QAEAP3mAf3kASEMIApBDGohCiALQQRqIQsgCEEBaiEIDAALCyAAIAdBDGxqIAz9CwQAIAdBAWohBwwACwsL';

// Neither lib ES2022 (no DOM) nor @types/node 20 declares WebAssembly; this is all we use.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
};

interface Kernels {
  memory: { buffer: ArrayBuffer; grow(pages: number): number };
  scale(dst: number, a: number, w: number, n: number): void;
  axpy(dst: number, a: number, w: number, n: number): void;
  axpy2(dst: number, a: number, b: number, w: number, n: number): void;
  clamp(dst: number, lo: number, hi: number, n: number): void;
  hresample(dst: number, src: number, start: number, count: number, weights: number, maxTaps: number, outW: number): void;
}

export const simd = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(SIMD_WASM_BASE64, 'base64'))).exports as unknown as Kernels;

/** 16 bytes: keeps f32x4 accesses aligned and gives each buffer the 3-float spill room the kernels need. */
const SLACK = 16;

/**
 * Resets the arena and carves it into buffers of the given sizes (in 4-byte elements),
 * returning their byte offsets. Valid until the next call.
 */
export function arena(sizes: number[]): number[] {
  let top = 0;
  const offsets = sizes.map((n) => {
    const at = top;
    top += Math.ceil((n * 4) / 16) * 16 + SLACK;
    return at;
  });
  const pages = Math.ceil(top / 65536) - simd.memory.buffer.byteLength / 65536;
  if (pages > 0) simd.memory.grow(pages);
  return offsets;
}

export const f32 = (offset: number, n: number) => new Float32Array(simd.memory.buffer, offset, n);
export const i32 = (offset: number, n: number) => new Int32Array(simd.memory.buffer, offset, n);
