import { openSource } from './open';
import { countSamples as countTarSamples, type TarShardsSource } from './tar-shards';

/**
 * Samples in a source, for epoch lengths and schedules. Tar shards are counted from their
 * headers; folders and CIFAR files by listing their samples (no decoding). None is an error
 * that says why.
 */
export async function countSamples(spec: string, opts: { numClasses?: number } = {}): Promise<number> {
  const opened = openSource(spec, { onSkip: () => undefined, numClasses: opts.numClasses });
  if (opened.kind === 'tar') return countTarSamples((opened.samples as TarShardsSource).shards, opened.numClasses);
  let n = 0;
  for await (const _ of opened.samples) n++;
  if (n === 0) throw new Error(`${spec}: no samples`);
  return n;
}
