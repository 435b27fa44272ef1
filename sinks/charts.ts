// placeholder until the vega-lite charts land: writes the series as JSON
import { writeJsonAtomic } from './json';
export interface LineChartSpec { title: string; xLabel: string; yLabel: string; series: { name: string; points: [number, number][] }[] }
export async function writeChart(pathWithoutExt: string, spec: LineChartSpec): Promise<void> {
  writeJsonAtomic(`${pathWithoutExt}.chart.json`, spec);
}
