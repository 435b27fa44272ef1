/**
 * Shared by the webgpu specs: whether a WebGPU device can be had here (a GPU, or the lavapipe
 * of `npm run setup:vulkan`), and what to do when not: in CI (CI=true) that is a failure,
 * elsewhere the spec is skipped with a note.
 */
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const LAVAPIPE_ICD = path.join(ROOT, '.cache', 'vulkan', 'icd.json');

/** Errors that mean "no device here" rather than "the backend is wrong". */
export const NO_DEVICE = /no WebGPU adapter|no Vulkan loader|dawn\.node .* does not load/;

/** A missing device: throws in CI, else prints a note (the caller then returns: a skip). */
export function deviceMissing(reason: string): void {
  const message = `no WebGPU device (${reason.split('\n')[0]}); run \`npm run setup:vulkan\` for the software one`;
  if (process.env.CI === 'true') throw new Error(`CI: ${message}`);
  console.log(`[skip] ${message}`);
}
