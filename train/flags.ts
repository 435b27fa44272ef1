/** The flags every training pipeline takes for the driver (train/driver.ts), and the lr scaling they share. */
import { num } from '../runtime/cli';
import { DEFAULT_KEEP_CHECKPOINTS } from '../runtime/checkpoint';

export const DRIVER_FLAGS = {
  'checkpoint-minutes': { description: 'write a checkpoint at least this often', default: '5' },
  'keep-checkpoints': { description: 'checkpoints kept: the latest in checkpoint/, older ones as checkpoint.step-<n>', default: String(DEFAULT_KEEP_CHECKPOINTS) },
  'max-steps': { description: 'stop after this many steps in this invocation (checkpointed; continue with --resume)', default: '0' },
  'log-every': { description: 'read the step metrics from the device every this many steps (they are all logged)', default: '10' },
  'on-nonfinite': {
    description: "a NaN/Inf loss or gradient norm: 'stop' (before the next checkpoint, naming the step and the last good checkpoint) or 'skip' the step's update (reads loss and gradient norm every step: one host sync a step)",
    default: 'stop',
  },
} as const;

export function driverFlags(f: { 'checkpoint-minutes'?: string; 'keep-checkpoints'?: string; 'max-steps'?: string; 'log-every'?: string; 'on-nonfinite'?: string }) {
  const onNonFinite = f['on-nonfinite'];
  if (onNonFinite !== 'stop' && onNonFinite !== 'skip') throw new Error(`--on-nonfinite: expected stop or skip, got '${onNonFinite}'`);
  return {
    checkpointMinutes: num('checkpoint-minutes', f['checkpoint-minutes'], { min: 0 }),
    keepCheckpoints: num('keep-checkpoints', f['keep-checkpoints'], { integer: true, min: 1, max: 1000 }),
    maxSteps: num('max-steps', f['max-steps'], { integer: true, min: 0 }),
    logEvery: num('log-every', f['log-every'], { integer: true, min: 1 }),
    onNonFinite: onNonFinite as 'stop' | 'skip',
  };
}

/** How an lr flag relates to the batch: as given, or the lr of a batch of 256 scaled linearly (Goyal et al. 2017; MAE, MIM-Refiner). */
export const LR_SCALINGS = ['none', 'linear'] as const;
export type LrScaling = (typeof LR_SCALINGS)[number];

/** The peak lr a run uses: `lr` itself ('none') or lr x batch / 256 ('linear'), batch the global batch. */
export function scaledLr(lr: number, batch: number, scaling: LrScaling): number {
  return scaling === 'linear' ? (lr * batch) / 256 : lr;
}
