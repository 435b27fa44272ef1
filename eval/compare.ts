/**
 * Models side by side: the eval reports (pipelines/eval.ts's report.json) of several models,
 * with their fine-tuning summaries (pipelines/finetune.ts), as one table and one grouped bar
 * chart, the way MIM-Refiner's tables put checkpoints side by side.
 *
 * Reports with the same label are runs of one method (training seeds, or random-init seeds):
 * each number is their mean ± std (population std, as low-shot's). Every report must have been
 * measured on the same train, validation and test images with the same kNN rule and pooling,
 * or the comparison is refused naming the file. Headline numbers are the LAST block (what a
 * user takes off the shelf) and the block chosen on VALIDATION; the best block on test is not
 * a result. Low-shot and k-means run on the block each report chose by validation kNN.
 */
import * as fs from 'node:fs';
import { BarChartSpec, LineChartSpec } from '../sinks/charts';
import { BlockCurve, EvalReport, markdownTable, Results } from './report';

/**
 * What this comparison reads of pipelines/finetune.ts's summary.json (runs/finetune/<label>/):
 * per share of the train labels ('1%', '10%', '100%'), top-1 in [0, 1] of each seed on the
 * validation split (the checkpoint chosen there) and on test.
 */
export interface FinetuneSummary {
  kind: 'finetune';
  label: string;
  test: { source: string; count: number };
  results: { share: string; seeds: number[]; val: number[]; test: number[] }[];
}

/** One row of the comparison: the reports of one label and its fine-tuning summary, if any. */
export interface ModelRuns {
  label: string;
  reports: EvalReport[];
  files: string[];
  finetune?: { file: string; summary: FinetuneSummary };
}

export interface Stat {
  mean: number;
  std: number;
  n: number;
}

/** Mean and population std (ddof 0) of the finite values; undefined when there are none. */
export function stat(values: (number | undefined)[]): Stat | undefined {
  const xs = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  if (xs.length === 0) return undefined;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean, std: Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length), n: xs.length };
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isUnit = (v: unknown): v is number => isNumber(v) && v >= 0 && v <= 1;

/** A report.json, checked to be an eval report before any number of it is used. */
export function readReport(file: string): EvalReport {
  if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) throw new Error(`--compare: ${file}: no such file`);
  let r: Partial<EvalReport>;
  try {
    r = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`--compare: ${file} is not an eval report: not JSON (${(err as Error).message})`);
  }
  const missing = [
    typeof r?.label === 'string' ? undefined : 'label',
    Array.isArray(r?.blocks) ? undefined : 'blocks',
    typeof r?.train?.source === 'string' && isNumber(r.train.count) ? undefined : 'train',
    typeof r?.test?.source === 'string' && isNumber(r.test.count) ? undefined : 'test',
  ].filter(Boolean);
  if (missing.length > 0) throw new Error(`--compare: ${file} is not an eval report (written by pipelines/eval.ts): no ${missing.join(', ')}`);
  return r as EvalReport;
}

/** What a number depends on besides the model: the images and the evaluation's settings. */
function measuredOn(r: EvalReport): [string, string][] {
  const set = (s?: { source: string; count: number }) => (s ? `${s.source} (${s.count} images)` : 'none');
  return [
    ['train images', set(r.train)],
    ['validation images', set(r.val)],
    ['test images', set(r.test)],
    ['pooling', r.pooling],
    ['kNN rule', r.knn ? `k ${r.knn.k}, T ${r.knn.temperature}, ${r.knn.standardise ? 'standardised' : 'L2 only'}` : 'any'],
  ];
}

/** Throws, naming the file and what differs, where a report was measured on other data or settings than the first. */
export function checkSameData(reports: EvalReport[], files: string[]): void {
  const ref = measuredOn(reports[0]);
  reports.forEach((r, i) => {
    for (const [j, [what, value]] of measuredOn(r).entries()) {
      if (value === ref[j][1] || value === 'any' || ref[j][1] === 'any') continue;
      throw new Error(`--compare: ${files[i]} was measured on other ${what} than ${files[0]}: ${value} vs ${ref[j][1]}; models compare only on the same data`);
    }
  });
}

/** A summary.json of pipelines/finetune.ts, checked against FinetuneSummary and against the reports' test images. */
export function readFinetuneSummary(file: string, report: EvalReport): FinetuneSummary {
  if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) throw new Error(`--finetune-summaries: ${file}: no such file`);
  let s: Partial<FinetuneSummary>;
  try {
    s = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`--finetune-summaries: ${file} is not a fine-tuning summary: not JSON (${(err as Error).message})`);
  }
  const ok =
    s?.kind === 'finetune' &&
    typeof s.test?.source === 'string' &&
    isNumber(s.test.count) &&
    Array.isArray(s.results) &&
    s.results.every((r) => typeof r?.share === 'string' && [r.seeds, r.val, r.test].every((a) => Array.isArray(a) && a.length === r.seeds.length) && [...r.val, ...r.test].every(isUnit));
  if (!ok) {
    throw new Error(
      `--finetune-summaries: ${file} is not a fine-tuning summary (written by pipelines/finetune.ts): ` +
        "expected { kind: 'finetune', test: { source, count }, results: [{ share, seeds, val, test }] } with top-1 in [0, 1] per seed",
    );
  }
  if (s.test!.source !== report.test.source || s.test!.count !== report.test.count) {
    throw new Error(`--finetune-summaries: ${file} was measured on other test images than the eval reports: ${s.test!.source} (${s.test!.count} images) vs ${report.test.source} (${report.test.count} images)`);
  }
  return s as FinetuneSummary;
}

/** Reports grouped by label, in first-seen order. */
export function groupByLabel(reports: EvalReport[], files: string[]): ModelRuns[] {
  const rows = new Map<string, ModelRuns>();
  reports.forEach((r, i) => {
    const row = rows.get(r.label) ?? { label: r.label, reports: [], files: [] };
    row.reports.push(r);
    row.files.push(files[i]);
    rows.set(r.label, row);
  });
  return [...rows.values()];
}

/** One headline number of a model: the metric's column name, its validation and test values (`split`: whether it has a validation number at all). */
export interface Headline {
  metric: string;
  split: 'val and test' | 'test';
  val?: Stat;
  test?: Stat;
}

/** Low-shot accuracies of one setting, pooled over the runs' low-shot seeds (and training seeds). */
function lowShotStat(m: ModelRuns, setting: string): Stat | undefined {
  return stat(m.reports.flatMap((r) => r.lowShot?.results.find((s) => s.setting === setting)?.accuracies ?? []));
}

/** The headline metrics of a model: last block kNN/linear, low-shot, k-means, fine-tuning (per share of the labels). */
export function headlines(m: ModelRuns, { shots, shares }: Settings): Headline[] {
  const last = (task: 'knn' | 'linear') => ({
    split: 'val and test' as const,
    val: stat(m.reports.map((r) => (r[task]?.val ? r[task]!.val![r[task]!.val!.length - 1] : undefined))),
    test: stat(m.reports.map((r) => r[task]?.last)),
  });
  const ft = (share: string) => m.finetune?.summary.results.find((r) => r.share === share);
  return [
    { metric: 'kNN', ...last('knn') },
    { metric: 'linear', ...last('linear') },
    ...shots.map((s) => ({ metric: `${s}-shot`, split: 'test' as const, test: lowShotStat(m, s) })),
    ...(['nmi', 'ari', 'acc'] as const).map((k) => ({ metric: k.toUpperCase(), split: 'test' as const, test: stat(m.reports.map((r) => r.kmeans?.[k])) })),
    // no summary at all: one fine-tuning column of dashes, so its absence shows
    ...(shares.length ? shares : ['']).map((share) => ({ metric: share ? `fine-tune ${share}` : 'fine-tune', split: 'val and test' as const, val: stat(ft(share)?.val ?? []), test: stat(ft(share)?.test ?? []) })),
  ];
}

/** "41.2", or "41.2 ± 0.4" over several values, in %. */
export function formatStat(s: Stat | undefined): string | undefined {
  if (!s) return undefined;
  return s.n > 1 ? `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}` : (100 * s.mean).toFixed(1);
}

/** The columns every model gets: low-shot settings and fine-tuning shares, in the order the files list them. */
export interface Settings {
  shots: string[];
  shares: string[];
}

export function settingsOf(models: ModelRuns[]): Settings {
  return {
    shots: [...new Set(models.flatMap((m) => m.reports.flatMap((r) => r.lowShot?.results.map((s) => s.setting) ?? [])))],
    shares: [...new Set(models.flatMap((m) => m.finetune?.summary.results.map((r) => r.share) ?? []))],
  };
}

/** The runs' seeds where the reports record them ("0,1,2"), else how many runs. */
function seedsCell(m: ModelRuns): string {
  const seeds = m.reports.map((r) => r.seed);
  return seeds.every((s) => s !== undefined) ? seeds.join(',') : `${m.reports.length} run${m.reports.length === 1 ? '' : 's'}`;
}

/** The headline table: one row per model; kNN, linear and fine-tuning with validation and test columns. */
export function headlineResults(models: ModelRuns[]): Results {
  const settings = settingsOf(models);
  const results: Results = {};
  for (const m of models) {
    const row: Results[string] = { seeds: seedsCell(m) };
    for (const h of headlines(m, settings)) {
      if (h.split === 'test') row[h.metric] = formatStat(h.test);
      else Object.assign(row, { [`${h.metric} val`]: formatStat(h.val), [`${h.metric} test`]: formatStat(h.test) });
    }
    const blocks = m.reports.map((r) => r.lowShot?.block ?? r.kmeans?.block).filter((b) => b !== undefined);
    row['low-shot/k-means block'] = blocks.length ? blocks.join(',') : undefined;
    results[m.label] = row;
  }
  return results;
}

/** The block-chosen-on-validation table: kNN and linear, the chosen blocks, validation and test top-1. */
export function chosenBlockResults(models: ModelRuns[]): Results {
  const results: Results = {};
  for (const m of models) {
    const row: Results[string] = {};
    for (const [name, task] of [['kNN', 'knn'], ['linear', 'linear']] as const) {
      const curves = m.reports.map((r) => r[task]).filter((c) => c?.chosenBlock !== undefined);
      if (curves.length === 0) continue;
      row[`${name} block`] = curves.map((c) => c!.chosenBlock).join(',');
      // the chosen block is the one with the best validation top-1
      row[`${name} val`] = formatStat(stat(curves.map((c) => Math.max(...c!.val!))));
      row[`${name} test`] = formatStat(stat(curves.map((c) => c!.chosen)));
    }
    results[m.label] = row;
  }
  return results;
}

/** Rows "<label> kNN" / "<label> linear" on validation and test, one column per block, mean ± std over the runs. */
export function perBlockStats(models: ModelRuns[]): Results {
  const results: Results = {};
  for (const m of models) {
    const blocks = [...new Set(m.reports.flatMap((r) => r.blocks))].sort((a, b) => a - b);
    for (const [name, task] of [['kNN', 'knn'], ['linear', 'linear']] as const) {
      for (const [split, of] of [['validation', (c: BlockCurve) => c.val], ['test', (c: BlockCurve) => c.top1]] as const) {
        const atBlock = (b: number) => m.reports.map((r) => (r[task] && r.blocks.includes(b) ? of(r[task]!)?.[r.blocks.indexOf(b)] : undefined));
        const row = Object.fromEntries(blocks.map((b) => [`block ${b}`, formatStat(stat(atBlock(b)))]));
        if (Object.values(row).some((v) => v !== undefined)) results[`${m.label} ${name} (${split})`] = row;
      }
    }
  }
  return results;
}

/** The data and settings every compared report shares, as one sentence. */
export function measuredOnLine(r: EvalReport): string {
  const set = (s: { source: string; count: number }) => `${s.source} (${s.count} images)`;
  return (
    `Measured on: train ${set(r.train)}, ${r.val ? `validation ${set(r.val)}` : 'no validation split'}, test ${set(r.test)}; ` +
    `${r.pooling === 'avg' ? 'mean of patch tokens' : 'CLS token'}` +
    (r.knn ? `; kNN k ${r.knn.k}, T ${r.knn.temperature}, ${r.knn.standardise ? 'features standardised with train statistics (the reference)' : 'L2 only'}` : '') +
    '.'
  );
}

/** compare.md: what it was measured on, the headline table, the block chosen on validation, per block. */
export function compareMarkdown(models: ModelRuns[]): string {
  const perBlock = perBlockStats(models);
  return [
    measuredOnLine(models[0].reports[0]),
    '',
    'Last block (what a user takes off the shelf): top-1 in % on the validation split ("val": training images held out from training) and on test. ' +
      'Low-shot (test top-1, classifiers trained on 3 subsets of the train images) and k-means (NMI, ARI, ACC on test) run on the block chosen by validation kNN. ' +
      'Fine-tuning (pipelines/finetune.ts, on the share of the train labels named; "–": no summary): top-1 of the checkpoint chosen on validation, over its seeds. ' +
      '"a ± b": mean ± std over the runs (seeds) of a model and, for low-shot, its subsets.',
    '',
    markdownTable(headlineResults(models)),
    "The block chosen on validation (kNN and linear probe each choose theirs; with several runs, each run's block):",
    '',
    markdownTable(chosenBlockResults(models)),
    ...(Object.keys(perBlock).length ? ['Top-1 (%) per block:', '', markdownTable(perBlock)] : []),
  ].join('\n');
}

/** The grouped bar chart: every headline metric on test, the models side by side, ± std over runs where there are several. */
export function comparisonChart(models: ModelRuns[]): BarChartSpec {
  const settings = settingsOf(models);
  const bars = models.flatMap((m) =>
    headlines(m, settings).flatMap((h) => (h.test ? [{ category: h.metric, series: m.label, value: 100 * h.test.mean, ...(h.test.n > 1 ? { err: 100 * h.test.std } : {}) }] : [])),
  );
  const categories = [...new Set(bars.map((b) => b.category))];
  const r = models[0].reports[0];
  return {
    title: `Models side by side on the test set (${r.test.count} images)`,
    subtitle: 'last block; low-shot and k-means on the block chosen on validation; lines: ± std over runs (low-shot: and its subsets)',
    yLabel: 'top-1 / NMI / ARI / ACC (%)',
    categories,
    series: models.map((m) => m.label),
    bars,
  };
}

/** Per-block test top-1 of kNN and linear probe, one line per (model, task), the mean over a model's runs. */
export function comparePerBlockChart(models: ModelRuns[]): LineChartSpec {
  const series = models.flatMap((m) => {
    const blocks = [...new Set(m.reports.flatMap((r) => r.blocks))].sort((a, b) => a - b);
    return (['knn', 'linear'] as const).flatMap((task) => {
      const points = blocks.flatMap((b): [number, number][] => {
        const s = stat(m.reports.map((r) => (r[task] && r.blocks.includes(b) ? r[task]!.top1[r.blocks.indexOf(b)] : undefined)));
        return s ? [[b, 100 * s.mean]] : [];
      });
      return points.length ? [{ name: `${m.label}: ${task === 'knn' ? 'kNN' : 'linear'}`, points }] : [];
    });
  });
  return { title: 'Per-block test top-1 (mean over runs)', xLabel: 'block', yLabel: 'top-1 (%)', series };
}
