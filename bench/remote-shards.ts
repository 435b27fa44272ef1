/**
 * Remote shards against local ones: samples/s of the tar source reading the bundled shards
 * (data/cifar10-mini/train-{000000..000001}.tar.gz, 10,000 JPEGs, 3.4 MB gzipped) from disk and
 * from a loopback HTTP server (node:http on 127.0.0.1, spec/sources-server.ts, in a child
 * process as a real server would be), repeats interleaved so that the shared machine's load
 * falls on both alike. Wall-clock samples/s and the reader's own CPU ms per 1,000 samples (the
 * load-independent figure on a busy machine). Also a pipe: source
 * (`pipe:cat FILE`), a server that drops every connection after 256 KiB (resumed with Range),
 * and the counting pass (countSamples) a shuffled or counted remote source costs.
 *
 *   npx ts-node bench/remote-shards.ts [--repeats 5]
 *
 * The source is timed alone (gunzip + tar parse + sample grouping, no image decode): that is
 * where a remote read can cost more; with decoding and augmentation after it the difference
 * is smaller still.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { countSamples, tarShards } from '../sources/tar-shards';
import { startShardServer } from '../spec/sources-server';

const DIR = path.resolve(__dirname, '..', 'data', 'cifar10-mini');
const FILES = 'train-{000000..000001}.tar.gz';
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};

interface Pass {
  rate: number;
  cpuMsPer1000: number;
}

async function pass(shards: string): Promise<Pass> {
  const start = performance.now();
  const cpu = process.cpuUsage();
  let n = 0;
  for await (const _ of tarShards({ shards, onSkip: (o, r) => console.warn(`skipped ${o}: ${r}`) })) n++;
  if (n !== 10000) throw new Error(`${shards}: ${n} samples, expected 10000`);
  const used = process.cpuUsage(cpu);
  return { rate: n / ((performance.now() - start) / 1000), cpuMsPer1000: (used.user + used.system) / 1000 / (n / 1000) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The server in its own process: its work does not share the reader's event loop. */
async function serverProcess(): Promise<{ base: string; stop: () => void }> {
  const child = spawn(process.execPath, [...process.execArgv, __filename, '--serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the server process exited (${code})`)));
  });
  return { base: line.trim(), stop: () => child.kill() };
}

async function main(): Promise<void> {
  if (process.argv.includes('--serve')) {
    const server = await startShardServer(DIR, { dropAfter: 256 * 1024 });
    console.log(server.base);
    return;
  }
  const repeats = arg('repeats', 5);
  // the counting pass is timed as a first count: its disk cache goes to a folder of its own
  process.env.MIMREF_SHARD_INDEX_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-bench-index-'));
  const server = await serverProcess();
  const sources: Record<string, string> = {
    disk: path.join(DIR, FILES),
    http: `${server.base}/ok/${FILES}`,
    'http, drops every 256 KiB': `${server.base}/drop/${FILES}`,
    'pipe:cat': ['train-000000.tar.gz', 'train-000001.tar.gz'].map((f) => `pipe:cat ${path.join(DIR, f)}`).join('::'),
  };
  const passes: Record<string, Pass[]> = Object.fromEntries(Object.keys(sources).map((k) => [k, []]));
  for (const spec of Object.values(sources)) await pass(spec); // warm: code paths, page cache, connections
  for (let r = 0; r < repeats; r++) {
    for (const [name, spec] of Object.entries(sources)) passes[name].push(await pass(spec));
  }
  const disk = median(passes.disk.map((p) => p.rate));
  const diskCpu = median(passes.disk.map((p) => p.cpuMsPer1000));
  console.log(`tar source, ${FILES} (10,000 samples), ${repeats} repeats, medians (all repeats in brackets):`);
  for (const [name, ps] of Object.entries(passes)) {
    const [r, c] = [median(ps.map((p) => p.rate)), median(ps.map((p) => p.cpuMsPer1000))];
    const pct = (x: number, base: number) => `${x >= base ? '+' : ''}${((x / base - 1) * 100).toFixed(1)}%`;
    console.log(
      `  ${name.padEnd(26)} ${r.toFixed(0).padStart(6)} samples/s (${pct(r, disk)} vs disk) [${ps.map((p) => p.rate.toFixed(0)).join(', ')}]` +
        `  ${c.toFixed(1)} cpu ms/1000 (${pct(c, diskCpu)}) [${ps.map((p) => p.cpuMsPer1000.toFixed(1)).join(', ')}]`,
    );
  }
  for (const [name, spec] of [['disk', sources.disk], ['http', sources.http]]) {
    const start = performance.now();
    const n = await countSamples(spec);
    console.log(`  counting pass, ${name}: ${n} samples in ${(performance.now() - start).toFixed(0)} ms (once per process; http: kept on disk)`);
  }
  server.stop();
  fs.rmSync(process.env.MIMREF_SHARD_INDEX_DIR, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
