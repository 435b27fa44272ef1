import { openSource } from './open';
import { countSamples as countTarSamples, type LabelPolicy, type RemoteOptions, type TarShardsSource } from './tar-shards';

/**
 * Samples in a source, for epoch lengths and schedules. Tar shards are counted from their
 * headers (remote shards are read once for it: one download, bodies dropped); folders and
 * CIFAR files by listing their samples (no decoding). A label-free pipeline passes
 * labels: 'ignored', so that samples without a valid label count too. None is an error that
 * says why.
 */
export async function countSamples(spec: string, opts: { numClasses?: number; labels?: LabelPolicy; remote?: RemoteOptions } = {}): Promise<number> {
  const opened = openSource(spec, { onSkip: () => undefined, numClasses: opts.numClasses, labels: opts.labels, remote: opts.remote });
  if (opened.kind === 'tar') return countTarSamples((opened.samples as TarShardsSource).shards, opened.numClasses, { labels: opts.labels, remote: opts.remote });
  let n = 0;
  for await (const _ of opened.samples) n++;
  if (n === 0) throw new Error(`${spec}: no samples`);
  return n;
}
