/**
 * The evaluation's outputs: one report (eval/evaluate.ts's EvalReport) as report.json,
 * report.md (a summary table leading with the last block and the block chosen on validation,
 * and a per-block table) and charts; and several reports side by side (eval/compare.ts) as
 * compare.md, compare.json and charts, with fine-tuning summaries where they exist.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { slug } from '../lib/format';
import { writeChart } from '../sinks/charts';
import { EvalReport, markdownTable, Results, writeFileAtomic, writeJsonReport } from './report';
import {
  checkSameData,
  comparePerBlockChart,
  compareMarkdown,
  comparisonChart,
  groupByLabel,
  headlines,
  readFinetuneSummary,
  readReport,
  settingsOf,
} from './compare';

/**
 * One table row per report: the last block and the block chosen on validation for the curves
 * (never the best block on test), low-shot, clustering, long-tail.
 */
export function summaryResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    const row: Results[string] = {};
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (!curve) continue;
      row[`${name} last`] = curve.last;
      if (curve.chosenBlock !== undefined) {
        row[`${name} val-chosen`] = curve.chosen;
        row[`${name} val-chosen block`] = curve.chosenBlock;
      }
    }
    const block = r.lowShot?.block ?? r.kmeans?.block ?? r.longTail?.block;
    if (block !== undefined) row['low-shot/k-means block'] = block;
    for (const s of r.lowShot?.results ?? []) row[`${s.setting}-shot`] = `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}`;
    if (r.kmeans) Object.assign(row, { NMI: r.kmeans.nmi, ARI: r.kmeans.ari, ACC: r.kmeans.acc });
    if (r.longTail) Object.assign(row, { 'LT kNN': r.longTail.knn.top1, 'LT linear': r.longTail.linear.top1 });
    results[r.label] = row;
  }
  return results;
}

/** Rows "<label> kNN" / "<label> linear" (test) and "... (validation)", one column per block. */
export function perBlockResults(reports: EvalReport[]): Results {
  const results: Results = {};
  for (const r of reports) {
    for (const [name, curve] of [['kNN', r.knn], ['linear', r.linear]] as const) {
      if (!curve) continue;
      results[`${r.label} ${name}`] = Object.fromEntries(r.blocks.map((b, i) => [`block ${b}`, curve.top1[i]]));
      if (curve.val) results[`${r.label} ${name} (validation)`] = Object.fromEntries(r.blocks.map((b, i) => [`block ${b}`, curve.val![i]]));
    }
  }
  return results;
}

/** The summary table and the per-block table, numbers in % (block indices as they are). */
export function reportMarkdown(reports: EvalReport[]): string {
  const percent = (v: number) => (100 * v).toFixed(1);
  const perBlock = perBlockResults(reports);
  const blockColumns = [...new Set(reports.flatMap((r) => r.blocks))].sort((a, b) => a - b).map((b) => `block ${b}`);
  const onBlock = reports.some((r) => r.lowShot || r.kmeans || r.longTail);
  const knn = reports.find((r) => r.knn)?.knn;
  return [
    `Top-1 accuracy${onBlock ? ', NMI, ARI and ACC' : ''} in % on the test set; "last": the last block, "val-chosen": the block with the best validation top-1 (training images held out from training).` +
      (knn ? ` kNN: k ${knn.k}, T ${knn.temperature}, ${knn.standardise ? 'features standardised with train statistics (the reference)' : 'L2 only (not standardised)'}.` : '') +
      (onBlock ? ' Low-shot (mean ± std over 3 seeds), k-means and long-tail (LT) on the block chosen by validation kNN.' : ''),
    '',
    markdownTable(summaryResults(reports), { format: (v, column) => (column.endsWith(' block') ? String(v) : percent(v)) }),
    ...(Object.keys(perBlock).length ? ['Top-1 (%) per block:', '', markdownTable(perBlock, { format: percent, columns: blockColumns })] : []),
  ].join('\n');
}

/** kNN and linear top-1 over blocks, one line per (model, task). */
export async function writePerBlockChart(file: string, reports: EvalReport[]): Promise<void> {
  const series = reports.flatMap((r) =>
    (['knn', 'linear'] as const).flatMap((task) => {
      const curve = r[task];
      const name = `${reports.length > 1 ? `${r.label}: ` : ''}${task === 'knn' ? 'kNN' : 'linear'}`;
      return curve ? [{ name, points: r.blocks.map((b, i) => [b, 100 * curve.top1[i]] as [number, number]) }] : [];
    }),
  );
  if (series.length === 0) return;
  const title = reports.length === 1 ? `Per-block top-1: ${reports[0].label}` : 'Per-block top-1';
  await writeChart(file, { title, xLabel: 'block', yLabel: 'top-1 (%)', series });
}

/** Per-class test top-1 of the long-tailed kNN and linear probe, classes from most to fewest train images. */
export async function writeLongTailChart(file: string, report: EvalReport): Promise<void> {
  const lt = report.longTail;
  if (!lt) return;
  const order = lt.train.perClass.map((n, c) => ({ n, c })).sort((a, b) => b.n - a.n || a.c - b.c);
  const name = (c: number) => lt.classNames?.[c] ?? `class ${c}`;
  await writeChart(file, {
    title: `Long-tailed (${lt.train.count} train images, block ${lt.block}): per-class test top-1, ${report.label}`,
    xLabel: `class, most to fewest train images: ${order.map(({ n, c }) => `${name(c)} ${n}`).join(', ')}`,
    yLabel: 'test top-1 (%)',
    yDomain: [0, 100],
    width: 720,
    series: (['knn', 'linear'] as const).map((task) => ({
      name: task === 'knn' ? `kNN (${(100 * lt.knn.top1).toFixed(1)}% overall)` : `linear (${(100 * lt.linear.top1).toFixed(1)}% overall)`,
      points: order.map(({ c }, rank) => [rank, 100 * lt[task].perClass[c]] as [number, number]),
    })),
  });
}

/** report.json, report.md, per-block.{svg,png} (and long-tail-per-class.{svg,png}) in `dir`; returns the markdown. */
export async function writeEvalOutputs(dir: string, report: EvalReport): Promise<string> {
  const md = reportMarkdown([report]);
  writeJsonReport(path.join(dir, 'report.json'), report);
  writeFileAtomic(path.join(dir, 'report.md'), md);
  await writePerBlockChart(path.join(dir, 'per-block'), [report]);
  await writeLongTailChart(path.join(dir, 'long-tail-per-class'), report);
  return md;
}

/** Where pipelines/finetune.ts writes a model's summary: runs/finetune/<label as a folder name>/summary.json. */
export const DEFAULT_FINETUNE_DIR = 'runs/finetune';

/**
 * Several report.json files side by side (eval/compare.ts): compare.md (tables), compare.json,
 * compare.{svg,png} (every headline metric, the models side by side) and
 * compare-per-block.{svg,png}. Reports with the same label are runs of one model (seeds).
 * Fine-tuning summaries: `finetune` maps a label to its summary.json; a label without one
 * takes `<finetuneDir>/<label as a folder name>/summary.json` where that exists.
 */
export async function compareReports(
  files: string[],
  dir: string,
  opts: { finetune?: Record<string, string>; finetuneDir?: string | null } = {},
): Promise<string> {
  const reports = files.map(readReport);
  checkSameData(reports, files);
  const models = groupByLabel(reports, files);
  for (const label of Object.keys(opts.finetune ?? {})) {
    if (!models.some((m) => m.label === label)) throw new Error(`--finetune-summaries: no report has the label '${label}' (labels: ${models.map((m) => `'${m.label}'`).join(', ')})`);
  }
  for (const m of models) {
    const byLabel = opts.finetuneDir === null ? undefined : path.join(opts.finetuneDir ?? DEFAULT_FINETUNE_DIR, slug(m.label), 'summary.json');
    const file = opts.finetune?.[m.label] ?? (byLabel && fs.existsSync(byLabel) ? byLabel : undefined);
    if (file) m.finetune = { file, summary: readFinetuneSummary(file, reports[0]) };
  }
  const md = compareMarkdown(models);
  writeFileAtomic(path.join(dir, 'compare.md'), md);
  writeJsonReport(path.join(dir, 'compare.json'), {
    files,
    models: models.map((m) => ({ label: m.label, files: m.files, finetune: m.finetune?.file, headline: headlines(m, settingsOf(models)) })),
    reports,
  });
  await writeChart(path.join(dir, 'compare'), comparisonChart(models));
  await writeChart(path.join(dir, 'compare-per-block'), comparePerBlockChart(models));
  return md;
}
