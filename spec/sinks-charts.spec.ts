import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { lineChart, LineChartSpec, writeChart } from '../sinks/charts';

const spec: LineChartSpec = {
  title: 'kNN accuracy per block',
  xLabel: 'block',
  yLabel: 'kNN top-1',
  yDomain: [0, 1],
  series: [
    { name: 'MIM checkpoint', points: [[4, 0.41], [5, 0.45], [6, 0.43]] },
    { name: 'refined (EMA)', points: [[4, 0.44], [5, 0.5], [6, NaN], [7, 0.58]] },
  ],
};

test('SVG names the title, axes and series; PNG is the SVG at 2x', async () => {
  const { svg, png } = await lineChart(spec);
  for (const text of [spec.title, spec.xLabel, spec.yLabel, 'MIM checkpoint', 'refined (EMA)']) assert.ok(svg.includes(`>${text}<`), `SVG lacks ${text}`);
  const width = Number(/<svg[^>]* width="(\d+)"/.exec(svg)![1]);
  const meta = await sharp(png).metadata();
  assert.is(meta.format, 'png');
  assert.is(meta.width, 2 * width);
});

test('text is actually drawn in the PNG (a font was found): dark pixels in the title band', async () => {
  const count = async (title: string) => {
    const { png } = await lineChart({ ...spec, title });
    const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    let dark = 0;
    // The title band: the top 40 px of the 2x PNG hold nothing but the title.
    for (let i = 0; i < 40 * info.width * 3; i += 3) if (data[i] + data[i + 1] + data[i + 2] < 300) dark++;
    return dark;
  };
  assert.ok((await count('A title with words')) > 200, 'no title pixels: is a font (DejaVu Sans) installed? see fc-list');
});

test('writeChart writes .svg and .png, leaving no temporary files', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'charts-'));
  try {
    const out = await writeChart(path.join(dir, 'sub', 'knn'), spec);
    assert.equal(fs.readdirSync(path.join(dir, 'sub')).sort(), ['knn.png', 'knn.svg']);
    assert.ok(fs.readFileSync(out.svgPath, 'utf8').startsWith('<svg'));
    assert.is((await sharp(out.pngPath).metadata()).format, 'png');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
