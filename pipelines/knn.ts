/**
 * Per-block kNN evaluation of a checkpoint (eval/per-block-knn.ts, as MIM-Refiner computes it):
 * one kNN per block on validation and test, printed, written as knn.json and drawn as per-block
 * curves, leading with the last block and the block chosen on validation. Each model's run
 * folder is its own (runs/knn/<label>), with run.json and config.yaml beside the results.
 *
 *   npx ts-node pipelines/knn.ts                                          # the bundled MAE
 *   npx ts-node pipelines/knn.ts --checkpoint none --preset vit-micro-p4  # the random-init baseline
 */
import { oneOf, readFlags, RenamedFlags, runMain } from '../runtime/cli';
import { onOff } from '../eval/knn';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';
import { knnFlags, RENAMED } from '../train/flags';
import { evalRunFlags, openEvalRun, POOLINGS } from '../train/eval-run';

const USAGE = [
  'Per-block kNN top-1 of a ViT checkpoint on validation and test.',
  '  npx ts-node pipelines/knn.ts [--checkpoint FILE | --checkpoint none --preset vit-micro-p4] [options]',
].join('\n');
const FLAGS = evalRunFlags('knn');
export const DEFINITION = { name: 'knn', script: 'pipelines/knn.ts', usage: USAGE, flags: FLAGS };
/** This pipeline's own old names, beside the vocabulary's. */
const KNN_RENAMED: RenamedFlags = { ...RENAMED, temperature: '--knn-temperature', standardise: '--knn-standardise' };

export async function knn(argv: string[]): Promise<string> {
  const { flags: f } = readFlags(USAGE, FLAGS, argv, KNN_RENAMED);
  // every flag and input is checked before the (slow) backend start and model load
  const pooling = oneOf('pooling', f.pooling, POOLINGS);
  const standardise = onOff('knn-standardise', f['knn-standardise']!);
  const { k, temperature, trainLimit, valLimit, testLimit } = knnFlags(f);
  const { model, runDir, numClasses, encoder, claim } = await openEvalRun(DEFINITION, f);
  try {
    // the model loads: the run starts, and only now writes
    using _run = claim();
    const report = await perBlockKnn(encoder, {
      train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, label: model.label,
      trainLimit, valLimit, testLimit, k, temperature, standardise, pooling, cacheKey: model.cacheKey, numClasses,
      model: model.checkpoint === 'none' ? undefined : model.checkpoint,
    });
    const extra = { checkpoint: model.checkpoint === 'none' ? null : model.checkpoint, ...(model.seed !== undefined ? { seed: model.seed } : {}) };
    await writeKnnSummary(runDir, [report], { title: `Per-block kNN top-1: ${model.label}`, name: 'knn', extra });
  } finally {
    encoder.dispose();
  }
  return runDir;
}


if (require.main === module) runMain(() => knn(process.argv.slice(2)).then(() => undefined));
