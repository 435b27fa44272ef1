/**
 * How far `got` is from `want`, as the tests and self-checks of numerical kernels measure it:
 * the largest absolute difference over the largest magnitude of `want` (0 where both are all
 * zero, Infinity where only `want` is). A NaN anywhere makes the result NaN, so a non-finite
 * value never passes as close.
 */
export function maxRelativeDifference(got: ArrayLike<number>, want: ArrayLike<number>, keep?: (i: number) => boolean): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    if (keep && !keep(i)) continue;
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return scale === 0 ? (diff === 0 ? 0 : Infinity) : diff / scale;
}
