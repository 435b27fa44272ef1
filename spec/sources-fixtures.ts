/** Test fixtures for the source specs: real JPEGs (sharp) packed into small WebDataset shards. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { Rng } from '../lib/rng';
import type { EncodedSample } from '../sources/types';

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mimref-sources-'));
}

/** A small real JPEG with seeded random pixels. */
export async function jpeg(seed: number, format: 'jpeg' | 'png' = 'jpeg'): Promise<Buffer> {
  const rng = new Rng(seed);
  const pixels = Buffer.alloc(8 * 8 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = rng.int(256);
  const img = sharp(pixels, { raw: { width: 8, height: 8, channels: 3 } });
  return format === 'png' ? img.png().toBuffer() : img.jpeg().toBuffer();
}

export interface Member {
  name: string;
  body: Buffer | string;
}

/** Writes a tar (gzipped when the name ends in .gz/.tgz) in memory, then to disk. */
export async function writeTar(file: string, members: Member[]): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const m of members) pack.entry({ name: m.name, mtime: new Date(0) }, m.body);
  pack.finalize();
  await collected;
  const tarBytes = Buffer.concat(chunks);
  fs.writeFileSync(file, /\.(gz|tgz)$/.test(file) ? zlib.gzipSync(tarBytes) : tarBytes);
}

export interface Expected {
  key: string;
  label: number;
  bytes: Buffer;
}

/**
 * `shards` shards of `perShard` samples each, keys `s<shard>_<i>`, label = running count % 10.
 * Shard 1 is gzipped to test both containers. Returns the shard paths and the samples in
 * sorted-shard order (= their stable indices).
 */
export async function makeShards(dir: string, shards: number, perShard: number): Promise<{ files: string[]; expected: Expected[] }> {
  const files: string[] = [];
  const expected: Expected[] = [];
  for (let s = 0; s < shards; s++) {
    const members: Member[] = [];
    for (let i = 0; i < perShard; i++) {
      const key = `s${s}_${String(i).padStart(3, '0')}`;
      const label = expected.length % 10;
      const bytes = await jpeg(expected.length);
      expected.push({ key, label, bytes });
      members.push({ name: `${key}.jpg`, body: bytes }, { name: `${key}.cls`, body: String(label) });
    }
    const file = path.join(dir, `shard-${String(s).padStart(6, '0')}.${s === 1 ? 'tar.gz' : 'tar'}`);
    await writeTar(file, members);
    files.push(file);
  }
  return { files, expected };
}

export async function collect(source: AsyncIterable<EncodedSample>): Promise<EncodedSample[]> {
  const out: EncodedSample[] = [];
  for await (const s of source) out.push(s);
  return out;
}

export const keys = (samples: EncodedSample[]) => samples.map((s) => s.key);
