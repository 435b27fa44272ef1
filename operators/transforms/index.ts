/** The image transforms of the data path, as plain functions (see each file for the why). */
export * from './image';
export * from './geometry';
export * from './resize';
export * from './colour';
export * from './blur';
export * from './normalize';
export * from './view';
export { SIMD_WASM_BASE64 } from './simd';
