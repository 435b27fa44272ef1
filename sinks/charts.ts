/**
 * Line charts (per-block kNN curves before/after refining, loss curves) and grouped bar charts
 * (models side by side per metric) drawn with Vega-Lite:
 * the spec is compiled to Vega, rendered headless to SVG by a Vega View with renderer 'none'
 * (its toSVG() needs no canvas or DOM), and rasterised to PNG by sharp (librsvg).
 * librsvg draws text with fontconfig fonts: the font named here must exist on the machine,
 * or labels silently vanish. DejaVu Sans comes with Debian's fontconfig (fonts-dejavu-core);
 * the family list falls back to whatever 'sans-serif' maps to.
 * vega 5 / vega-lite 5 are pinned on purpose: their 6.x majors ship as ES modules only,
 * which this CommonJS project could load only through Node's require(esm).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import * as vega from 'vega';
import * as vl from 'vega-lite';

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: { name: string; points: [number, number][] }[];
  /** Plot area size in CSS pixels (default 560 x 320). */
  width?: number;
  height?: number;
  /** Fixed y range, e.g. [0, 1] for accuracies; default: fitted to the data (not forced to include 0). */
  yDomain?: [number, number];
}

export interface BarChartSpec {
  title: string;
  /** A second, smaller title line (what the bars are measured on, say). */
  subtitle?: string;
  yLabel: string;
  /** One group of bars per category (in this order), one bar per series within it (in this order). */
  categories: string[];
  series: string[];
  /** The bars; a missing (category, series) pair leaves a gap. `err`: a ± error bar around the value. */
  bars: { category: string; series: string; value: number; err?: number }[];
  /** Plot area size in CSS pixels (default: 24 px per bar x 320). */
  width?: number;
  height?: number;
  yDomain?: [number, number];
}

export interface Chart {
  svg: string;
  png: Buffer;
}

const FONT = 'DejaVu Sans, Liberation Sans, Arial, sans-serif';
/** PNG pixels per SVG pixel: 2 keeps text crisp when the PNG is viewed at full size. */
const PNG_SCALE = 2;
/** Above this many points per series, dots would hide the line. */
const MAX_POINTS_WITH_DOTS = 60;

function vegaLiteSpec(spec: LineChartSpec): vl.TopLevelSpec {
  const rows = spec.series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).map(([x, y]) => ({ series: s.name, x, y })));
  const dots = spec.series.every((s) => s.points.length <= MAX_POINTS_WITH_DOTS);
  // Block indices and steps are integers: no "16.0" ticks, no ticks between them.
  const integerX = rows.every((r) => Number.isInteger(r.x));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: spec.title,
    width: spec.width ?? 560,
    height: spec.height ?? 320,
    background: 'white',
    data: { values: rows },
    mark: { type: 'line', point: dots, strokeWidth: 2 },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        title: spec.xLabel,
        scale: { zero: false, nice: false },
        ...(integerX ? { axis: { format: 'd', tickMinStep: 1 } } : {}),
      },
      y: {
        field: 'y',
        type: 'quantitative',
        title: spec.yLabel,
        scale: spec.yDomain ? { domain: spec.yDomain } : { zero: false },
      },
      // Keep the caller's series order in the legend and colours (vega-lite sorts by default).
      color: { field: 'series', type: 'nominal', title: null, sort: spec.series.map((s) => s.name) },
    },
    config: { font: FONT, title: { fontSize: 15 }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 12, labelLimit: 400 } },
  };
}

function barChartSpec(spec: BarChartSpec): vl.TopLevelSpec {
  const rows = spec.bars.filter((b) => Number.isFinite(b.value)).map((b) => ({ ...b, lo: b.value - (b.err ?? 0), hi: b.value + (b.err ?? 0) }));
  const x = { field: 'category', type: 'nominal', title: null, sort: spec.categories, axis: { labelAngle: 0 } } as const;
  const xOffset = { field: 'series', type: 'nominal', sort: spec.series } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: spec.subtitle ? { text: spec.title, subtitle: spec.subtitle } : spec.title,
    width: spec.width ?? 24 * (spec.series.length + 1) * spec.categories.length,
    height: spec.height ?? 320,
    background: 'white',
    data: { values: rows },
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          x,
          xOffset,
          y: { field: 'value', type: 'quantitative', title: spec.yLabel, ...(spec.yDomain ? { scale: { domain: spec.yDomain } } : {}) },
          color: { field: 'series', type: 'nominal', title: null, sort: spec.series },
        },
      },
      {
        transform: [{ filter: 'datum.hi > datum.lo' }],
        mark: { type: 'rule', color: 'black' },
        encoding: { x, xOffset, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } },
      },
    ],
    config: { font: FONT, title: { fontSize: 15, subtitleFontSize: 12 }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelFontSize: 12, labelLimit: 400, orient: 'top', direction: 'horizontal', columns: 4 } },
  };
}

/** Renders the line chart as SVG text and as a PNG. */
export function lineChart(spec: LineChartSpec): Promise<Chart> {
  return render(vegaLiteSpec(spec));
}

/** Renders the grouped bar chart as SVG text and as a PNG. */
export function barChart(spec: BarChartSpec): Promise<Chart> {
  return render(barChartSpec(spec));
}

async function render(spec: vl.TopLevelSpec): Promise<Chart> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    const png = await sharp(Buffer.from(svg), { density: 72 * PNG_SCALE }).png().toBuffer();
    return { svg, png };
  } finally {
    view.finalize();
  }
}

/** Renders and writes `<pathWithoutExt>.svg` and `.png`, each atomically (temp file + rename): a line chart, or a bar chart. */
export async function writeChart(pathWithoutExt: string, spec: LineChartSpec | BarChartSpec): Promise<{ svgPath: string; pngPath: string }> {
  const { svg, png } = await ('bars' in spec ? barChart(spec) : lineChart(spec));
  fs.mkdirSync(path.dirname(path.resolve(pathWithoutExt)), { recursive: true });
  const svgPath = `${pathWithoutExt}.svg`, pngPath = `${pathWithoutExt}.png`;
  for (const [file, data] of [[svgPath, svg], [pngPath, png]] as const) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  }
  return { svgPath, pngPath };
}
