/**
 * Settings compared over seeds: each argument is `name=glob` of refine run directories (one per
 * seed, each with the summary.json refine writes), and the table shows, per setting, the
 * refined EMA encoder's kNN on validation (the split choices are made on) and on test, for the
 * last block and for the block chosen on validation, as mean ± sample std over the runs, with
 * the MAE checkpoint's numbers from the same runs. A setting is decided on its validation
 * columns; test is read once the choice is made.
 *
 *   npx ts-node scripts/refine-seed-table.ts 'default=runs/A-s*' 'reference colour=runs/B-s*'
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import type { KnnReport } from '../eval/per-block-knn';
import { markdownTable, Results } from '../eval/report';

interface RunNumbers {
  valLast: number;
  valChosen: number;
  testLast: number;
  testChosen: number;
  maeValLast: number;
  maeTestLast: number;
}

function runNumbers(dir: string): RunNumbers {
  const file = path.join(dir, 'summary.json');
  if (!fs.existsSync(file)) throw new Error(`${file}: no summary.json (the run has not finished its kNN)`);
  const reports = (JSON.parse(fs.readFileSync(file, 'utf8')) as { knn?: KnnReport[] }).knn;
  if (!reports || reports.length !== 2 || !reports.every((r) => r.val && r.chosen !== undefined)) {
    throw new Error(`${file}: expected kNN before and after with a validation split`);
  }
  const [before, after] = reports;
  const lastVal = (r: KnnReport) => r.val!.top1[r.blocks.indexOf(r.lastBlock)];
  return {
    valLast: lastVal(after),
    valChosen: Math.max(...after.val!.top1),
    testLast: after.last,
    testChosen: after.chosen!,
    maeValLast: lastVal(before),
    maeTestLast: before.last,
  };
}

function meanStd(xs: number[]): string {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  if (xs.length < 2) return `${(100 * mean).toFixed(2)} (1 seed)`;
  const std = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1));
  return `${(100 * mean).toFixed(2)} ± ${(100 * std).toFixed(2)}`;
}

async function main(): Promise<void> {
  const groups = process.argv.slice(2);
  if (groups.length === 0) throw new Error('usage: refine-seed-table.ts name=glob [name=glob ...]');
  const results: Results = {};
  const perSeed: string[] = [];
  for (const group of groups) {
    const eq = group.indexOf('=');
    if (eq < 1) throw new Error(`'${group}': expected name=glob`);
    const name = group.slice(0, eq);
    const dirs = (await fg(group.slice(eq + 1), { onlyDirectories: true })).sort();
    const runs = dirs.filter((d) => fs.existsSync(path.join(d, 'summary.json'))).map((d) => ({ dir: d, ...runNumbers(d) }));
    if (runs.length === 0) throw new Error(`${name}: no finished run matches ${group.slice(eq + 1)}`);
    const col = (k: keyof RunNumbers) => meanStd(runs.map((r) => r[k]));
    results[name] = {
      runs: runs.length,
      'val, last block': col('valLast'),
      'val, chosen block': col('valChosen'),
      'test, last block': col('testLast'),
      'test, block chosen on val': col('testChosen'),
      'MAE val / test, last block': `${col('maeValLast')} / ${col('maeTestLast')}`,
    };
    for (const r of runs) {
      perSeed.push(`${name} ${r.dir}: val last ${(100 * r.valLast).toFixed(2)}, val chosen ${(100 * r.valChosen).toFixed(2)}, test last ${(100 * r.testLast).toFixed(2)}, test chosen ${(100 * r.testChosen).toFixed(2)}`);
    }
  }
  process.stdout.write(markdownTable(results, { rowHeader: 'setting' }));
  process.stdout.write('\n' + perSeed.join('\n') + '\n');
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
