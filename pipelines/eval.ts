/**
 * Off-the-shelf evaluation of a ViT checkpoint on frozen features (eval/evaluate.ts: per-block
 * kNN and linear probe, low-shot, k-means, long-tailed; choices made on validation, never on
 * test), written as report.json, report.md and charts (eval/reports.ts) into the model's run
 * folder (runs/eval/<label>) with run.json and config.yaml; or, with --compare, several
 * reports side by side.
 *
 *   npx ts-node pipelines/eval.ts --checkpoint checkpoints/mae-vit-micro-p4/encoder.safetensors
 *   npx ts-node pipelines/eval.ts --checkpoint none --preset vit-micro-p4 --label random
 *   npx ts-node pipelines/eval.ts --compare runs/eval/random/report.json,runs/eval/mae-vit-micro-p4/report.json
 */
import * as fs from 'node:fs';
import fg from 'fast-glob';
import { Flags, oneOf, readFlags, runMain } from '../runtime/cli';
import { DEFAULT_CACHE_DIR } from '../eval/feature-cache';
import { onOff } from '../eval/knn';
import { DEFAULT_SHOTS, parseShots, shotName } from '../eval/low-shot';
import { DEFAULT_LT_TRAIN, evaluate, parseBlocks, parseTasks, TASKS } from '../eval/evaluate';
import { compareReports, DEFAULT_FINETUNE_DIR, writeEvalOutputs } from '../eval/reports';
import { knnFlags, RENAMED } from '../train/flags';
import { checkEvalFolder, evalRunFlags, openEvalRun, POOLINGS, writeEvalRunFiles } from '../train/eval-run';

const USAGE = [
  'Frozen-feature evaluation of a ViT checkpoint: per-block kNN and linear probe, low-shot, k-means, long-tailed.',
  'Choices (the block of low-shot/k-means/long-tail, the block a summary names) are made on --val, never on test.',
  '  npx ts-node pipelines/eval.ts [--checkpoint FILE | --checkpoint none --preset vit-micro-p4] [--tasks ...] [options]',
  '  npx ts-node pipelines/eval.ts --compare a/report.json,b/report.json[,...] [--finetune-summaries LABEL=FILE,...]',
].join('\n');
const FLAGS = {
  ...evalRunFlags('eval'),
  out: { description: 'run folder (default: runs/eval/<label>(-s<seed> for none), or runs/eval/compare)' },
  tasks: { description: `some of ${TASKS.join(',')}`, default: 'knn,linear,lowshot,kmeans' },
  blocks: { description: "blocks to evaluate: 'all', 'last' or indices like 4,5", default: 'all' },
  shots: { description: 'low-shot: images per class, or a share of each class like 1%', default: DEFAULT_SHOTS.map(shotName).join(',') },
  'lt-train': { description: 'long-tailed train images of --tasks longtail', default: DEFAULT_LT_TRAIN },
  'cache-dir': { description: 'feature cache folder', default: DEFAULT_CACHE_DIR },
  'no-cache': { description: 'extract features without reading or writing the cache', boolean: true },
  compare: { description: "report.json files side by side instead of evaluating (a label's runs: mean ± std)" },
  'finetune-summaries': { description: 'with --compare: fine-tuning summaries as LABEL=summary.json,... (pipelines/finetune.ts)' },
  'finetune-dir': { description: "with --compare: <dir>/<label>/summary.json files ('none': off)", default: DEFAULT_FINETUNE_DIR },
} as const;
type EvalFlags = Flags<typeof FLAGS>;
export const DEFINITION = { name: 'eval', script: 'pipelines/eval.ts', usage: USAGE, flags: FLAGS };
/** What run.json names as the "model" of a --compare folder. */
const COMPARISON = 'comparison of eval reports';

/** Runs the evaluation (or --compare) with command-line style arguments; resolves to the run folder. */
export async function runEval(argv: string[]): Promise<string> {
  const { flags: f } = readFlags(USAGE, FLAGS, argv, RENAMED);
  return f.compare !== undefined ? compare(f) : evaluateModel(f);
}

async function evaluateModel(f: EvalFlags): Promise<string> {
  // every flag and input is checked before the (slow) backend start and model load
  const pooling = oneOf('pooling', f.pooling, POOLINGS);
  const tasks = parseTasks(f.tasks!);
  const { k, temperature, trainLimit, valLimit, testLimit } = knnFlags(f);
  const knn = { k, temperature, standardise: onOff('knn-standardise', f['knn-standardise']!) };
  const shots = parseShots(f.shots!);
  if (tasks.includes('longtail') && fg.sync(f['lt-train']!, { onlyFiles: true }).length === 0 && !fs.existsSync(f['lt-train']!)) {
    throw new Error(`--lt-train ${f['lt-train']}: no such files; build CIFAR-10-LT with: npx ts-node scripts/make-cifar10-splits.ts`);
  }
  const { model, runDir, numClasses, encoder, claim } = await openEvalRun(DEFINITION, f);
  try {
    const blocks = parseBlocks(f.blocks!, encoder.cfg.depth);
    // the model loads and its blocks exist: the run starts, and only now writes
    using _run = claim();
    const report = await evaluate(encoder, {
      label: model.label, modelKey: model.cacheKey, seed: model.seed, checkpoint: model.checkpoint === 'none' ? undefined : model.checkpoint,
      train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, ltTrain: f['lt-train'],
      tasks, blocks, pooling, knn, shots,
      trainLimit, valLimit, testLimit, numClasses, cacheDir: f['no-cache'] ? null : f['cache-dir']!,
    });
    const md = await writeEvalOutputs(runDir, report);
    console.log(`\n${md}`);
    console.log(`[eval] wrote report.json, report.md, per-block.png${report.longTail ? ', long-tail-per-class.png' : ''} in ${runDir}`);
  } finally {
    encoder.dispose();
  }
  return runDir;
}

async function compare(f: EvalFlags): Promise<string> {
  const files = f.compare!.split(',').filter(Boolean);
  if (files.length === 0) throw new Error('--compare: expected report.json files separated by commas');
  const finetune = f['finetune-summaries'] === undefined ? undefined : parseFinetuneSummaries(f['finetune-summaries']);
  const runDir = f.out ?? 'runs/eval/compare';
  checkEvalFolder(runDir, DEFINITION.name, COMPARISON);
  const md = await compareReports(files, runDir, { finetune, finetuneDir: f['finetune-dir'] === 'none' ? null : f['finetune-dir'] });
  // after the reports were read and checked: a refused comparison writes nothing
  writeEvalRunFiles(runDir, DEFINITION, { ...f, out: runDir }, { model: COMPARISON });
  console.log(md);
  console.log(`[eval] wrote compare.md, compare.json, compare.png (the models side by side), compare-per-block.png in ${runDir}`);
  return runDir;
}

/** `LABEL=FILE,...` -> { LABEL: FILE }. */
function parseFinetuneSummaries(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of spec.split(',').filter(Boolean)) {
    const at = item.lastIndexOf('=');
    if (at <= 0 || at === item.length - 1) throw new Error(`--finetune-summaries: expected LABEL=summary.json, got '${item}'`);
    out[item.slice(0, at)] = item.slice(at + 1);
  }
  return out;
}

if (require.main === module) runMain(() => runEval(process.argv.slice(2)).then(() => undefined));
