import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { markdownTable, writeFileAtomic, writeJsonReport } from '../eval/report';

const results = {
  'MAE ViT-T/16': { knn: 0.41234, linear: 0.5, 'low-shot 1': 0.2 },
  'refined (EMA)': { knn: 0.5, linear: NaN, epochs: 30, note: 'a|b' },
};

test('markdown table: models as rows, metrics as columns in first-seen order', () => {
  assert.is(
    markdownTable(results),
    [
      '| model | knn | linear | low-shot 1 | epochs | note |',
      '| --- | ---: | ---: | ---: | ---: | --- |',
      '| MAE ViT-T/16 | 0.4123 | 0.5000 | 0.2000 | – | – |',
      '| refined (EMA) | 0.5000 | NaN | – | 30 | a\\|b |',
      '',
    ].join('\n'),
  );
});

test('markdown table: chosen columns, header and number format', () => {
  const md = markdownTable(results, { columns: ['linear', 'knn'], rowHeader: 'checkpoint', format: (v) => (100 * v).toFixed(1) });
  assert.equal(md.trimEnd().split('\n'), ['| checkpoint | linear | knn |', '| --- | ---: | ---: |', '| MAE ViT-T/16 | 50.0 | 41.2 |', '| refined (EMA) | NaN | 50.0 |']);
});

test('JSON report written atomically, replacing the old one, no temp file left', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'report-'));
  try {
    const file = path.join(dir, 'out', 'report.json');
    writeJsonReport(file, { old: true });
    writeJsonReport(file, { results, when: 'now' });
    const back = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.is(back.results['refined (EMA)'].linear, null); // NaN
    assert.is(back.results['MAE ViT-T/16'].knn, 0.41234);
    assert.equal(fs.readdirSync(path.join(dir, 'out')), ['report.json']);
    // A failed write leaves the previous file as it was.
    assert.throws(() => writeFileAtomic(path.join(dir, 'out', 'report.json', 'x'), 'y'));
    assert.is(JSON.parse(fs.readFileSync(file, 'utf8')).when, 'now');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
