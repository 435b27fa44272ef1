/**
 * The bad-input corpus: small, deterministic data sets, images and checkpoints that a hostile
 * or careless user could hand to any pipeline, each next to a good one. spec/bad-input-corpus.spec.ts
 * runs every entry point over it; it is generated at test time (about 10 MB, a few seconds), so
 * nothing binary is committed.
 *
 *   npx ts-node scripts/make-bad-input-corpus.ts /tmp/corpus     # writes it and lists what it made
 *
 * Images are 32 px JPEGs of seeded noise (sharp), shards WebDataset tars with mtime 0, so the
 * same command writes the same bytes. Checkpoints derive from the bundled MAE encoder.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import * as tar from 'tar-stream';
import { Rng } from '../lib/rng';
import { readSafetensors, writeSafetensors } from '../models/safetensors';

export const BUNDLED_CHECKPOINT = 'checkpoints/mae-vit-micro-p4/encoder.safetensors';
const CLASSES = ['red', 'green', 'blue', 'grey'];

interface Member {
  name: string;
  body?: Buffer | string;
  type?: 'file' | 'symlink' | 'link';
  linkname?: string;
}

/** Seeded noise with a class tint, so a kNN over it is a real (if easy) task. */
async function image(seed: number, label: number, format: 'jpeg' | 'png' = 'jpeg', side = 32): Promise<Buffer> {
  const rng = new Rng(seed, 0xbad);
  const pixels = Buffer.alloc(side * side * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.min(255, rng.int(128) + (i % 3 === label % 3 ? 120 : 0) + (label === 3 ? 60 : 0));
  const img = sharp(pixels, { raw: { width: side, height: side, channels: 3 } });
  return format === 'png' ? img.png().toBuffer() : img.jpeg({ quality: 90 }).toBuffer();
}

async function tarBytes(members: Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const m of members) {
    if (m.type && m.type !== 'file') pack.entry({ name: m.name, type: m.type, linkname: m.linkname, mtime: new Date(0) });
    else pack.entry({ name: m.name, mtime: new Date(0) }, m.body ?? '');
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** `<key>.jpg` + `<key>.cls` members of n samples, labels cycling over the classes. */
async function samples(prefix: string, n: number, seed: number): Promise<Member[]> {
  const members: Member[] = [];
  for (let i = 0; i < n; i++) {
    const key = `${prefix}${String(i).padStart(3, '0')}`;
    members.push({ name: `${key}.jpg`, body: await image(seed + i, i % CLASSES.length) }, { name: `${key}.cls`, body: String(i % CLASSES.length) });
  }
  return members;
}

function write(file: string, bytes: Buffer | string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, bytes);
}

const classesTxt = (dir: string) => write(path.join(dir, 'classes.txt'), CLASSES.join('\n') + '\n');

/** Writes the corpus under `dir`; returns the files it wrote, relative to dir. */
export async function makeBadInputCorpus(dir: string): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });

  // good: the reference data set every case varies (16 train, 8 test, 4 classes)
  write(path.join(dir, 'good/train-000000.tar'), await tarBytes(await samples('tr', 16, 0)));
  write(path.join(dir, 'good/test-000000.tar'), await tarBytes(await samples('te', 8, 1000)));
  classesTxt(path.join(dir, 'good'));

  // labels outside the classes: 123456 and a number beyond 2^64, with and without classes.txt
  const hugeLabels = await samples('tr', 16, 0);
  hugeLabels[1].body = '123456';
  hugeLabels[3].body = '99999999999999999999';
  for (const sub of ['label-huge', 'label-huge-no-classes']) write(path.join(dir, sub, 'train-000000.tar'), await tarBytes(hugeLabels));
  classesTxt(path.join(dir, 'label-huge'));

  // duplicate keys: tr001 twice in shard 0 (not adjacent), tr002 again in shard 1
  const dupA = await samples('tr', 8, 0);
  const dupB = await samples('tr', 8, 100);
  write(path.join(dir, 'dup-keys/train-000000.tar'), await tarBytes([...dupA, ...dupA.slice(2, 4)]));
  write(path.join(dir, 'dup-keys/train-000001.tar'), await tarBytes([...dupB.slice(4, 6), ...(await samples('tx', 6, 200))]));
  classesTxt(path.join(dir, 'dup-keys'));

  // link members: a symlink and a hard link standing in for images
  const linked = await samples('tr', 8, 0);
  linked.push({ name: 'ln000.jpg', type: 'symlink', linkname: '/etc/passwd' }, { name: 'ln000.cls', body: '0' });
  linked.push({ name: 'ln001.jpg', type: 'link', linkname: 'tr000.jpg' }, { name: 'ln001.cls', body: '1' });
  write(path.join(dir, 'links/train-000000.tar'), await tarBytes(linked));
  classesTxt(path.join(dir, 'links'));

  // shard-level damage: a tar cut mid-member, a gzip with garbled deflate data, a .tar.gz that is a plain tar
  const whole = await tarBytes(await samples('tr', 8, 0));
  write(path.join(dir, 'truncated/train-000000.tar'), whole.subarray(0, Math.floor(whole.length * 0.6)));
  write(path.join(dir, 'truncated/train-000001.tar'), await tarBytes(await samples('tu', 8, 300)));
  const gz = zlib.gzipSync(whole);
  for (let i = Math.floor(gz.length / 2); i < gz.length - 8; i += 7) gz[i] ^= 0x5a;
  write(path.join(dir, 'corrupt-gz/train-000000.tar.gz'), gz);
  write(path.join(dir, 'corrupt-gz/train-000001.tar.gz'), zlib.gzipSync(await tarBytes(await samples('tg', 8, 400))));
  write(path.join(dir, 'not-gzip/train-000000.tar.gz'), whole);
  for (const sub of ['truncated', 'corrupt-gz', 'not-gzip']) classesTxt(path.join(dir, sub));

  // an image folder with bad and odd files (4 classes, 4 good images each)
  const folder = path.join(dir, 'folder');
  for (let c = 0; c < CLASSES.length; c++) {
    for (let i = 0; i < 4; i++) write(path.join(folder, CLASSES[c], `img${i}.jpg`), await image(500 + 10 * c + i, c));
  }
  const good = await image(7, 0);
  write(path.join(folder, 'red/zero-bytes.jpg'), Buffer.alloc(0));
  write(path.join(folder, 'red/truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  write(path.join(folder, 'green/text.jpg'), 'this is not an image\n');
  write(path.join(folder, 'green/png-named.jpg'), await image(8, 1, 'png'));
  write(path.join(folder, 'blue/one-pixel.png'), await sharp(Buffer.from([0, 0, 255]), { raw: { width: 1, height: 1, channels: 3 } }).png().toBuffer());
  write(path.join(folder, 'grey/gray.png'), await sharp(Buffer.alloc(16 * 16, 128), { raw: { width: 16, height: 16, channels: 1 } }).png().toBuffer());
  // a decompression bomb: a PNG header promising 20000 x 20000 RGB (1.2 GB decoded) over a few bytes
  write(path.join(folder, 'grey/bomb.png'), bombPng(20000));

  // an image folder whose symbolic link loops back to its root: every image reachable ~40 times
  const loop = path.join(dir, 'folder-loop');
  for (let c = 0; c < 2; c++) {
    for (let i = 0; i < 3; i++) write(path.join(loop, CLASSES[c], `img${i}.jpg`), await image(700 + 10 * c + i, c));
  }
  fs.symlinkSync('..', path.join(loop, 'red/loop'));

  // CIFAR-10 binary: 6 records, one with label byte 200; and a file that is no whole number of records
  const record = (label: number, seed: number) => {
    const r = Buffer.alloc(3073);
    r[0] = label;
    const rng = new Rng(seed, 0xc1fa);
    for (let i = 1; i < r.length; i++) r[i] = rng.int(256);
    return r;
  };
  write(path.join(dir, 'cifar-bad-label/data_batch_1.bin'), Buffer.concat([0, 1, 200, 3, 4, 5].map((l, i) => record(l, i))));
  write(path.join(dir, 'cifar-short/data_batch_1.bin'), Buffer.concat([record(0, 0), record(1, 1).subarray(0, 1000)]));

  // folders with nothing to read
  fs.mkdirSync(path.join(dir, 'empty-folder'), { recursive: true });
  write(path.join(dir, 'no-images/readme.txt'), 'no images here\n');

  // checkpoints: the bundled encoder without its ViT metadata, cut short, text, and with a lying config
  fs.mkdirSync(path.join(dir, 'ckpt'), { recursive: true });
  const { tensors, metadata } = readSafetensors(BUNDLED_CHECKPOINT);
  const asWritable: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of tensors) asWritable[name] = { shape: t.shape, data: t.data as Float32Array };
  writeSafetensors(path.join(dir, 'ckpt/no-metadata.safetensors'), asWritable, { format: 'pt' });
  const bundled = fs.readFileSync(BUNDLED_CHECKPOINT);
  write(path.join(dir, 'ckpt/truncated.safetensors'), bundled.subarray(0, Math.floor(bundled.length / 3)));
  write(path.join(dir, 'ckpt/text.safetensors'), 'this is not a checkpoint\n');
  writeSafetensors(path.join(dir, 'ckpt/wrong-config.safetensors'), asWritable, { ...metadata, vit: JSON.stringify({ ...JSON.parse(metadata.vit), depth: 12 }) });
  // finite weights that overflow float32 in the forward pass: every feature NaN
  writeSafetensors(path.join(dir, 'ckpt/overflow.safetensors'), overflowing(asWritable), metadata);

  // a file where a folder is expected
  write(path.join(dir, 'a-file'), 'a file, not a folder\n');
  return listFiles(dir);
}

/** The tensors with one LayerNorm weight, blocks.0.norm1.weight[0], set to 1e38 (finite, but its products overflow). */
export function overflowing(tensors: Record<string, { shape: number[]; data: Float32Array }>): Record<string, { shape: number[]; data: Float32Array }> {
  const name = 'blocks.0.norm1.weight';
  const data = Float32Array.from(tensors[name].data);
  data[0] = 1e38;
  return { ...tensors, [name]: { shape: tensors[name].shape, data } };
}

/**
 * Rewrites a tar shard in place with every one-digit `.cls` label moved to the next class
 * (mod numClasses), then puts its mtime back: the same size, the same mtime, other labels. What
 * a cache keyed on (path, size, mtime) cannot see. Returns how many labels changed.
 */
export function rotateTarLabels(file: string, numClasses: number): number {
  const st = fs.statSync(file);
  const bytes = fs.readFileSync(file);
  let changed = 0;
  for (let at = 0; at + 512 <= bytes.length; ) {
    const name = bytes.subarray(at, at + 100).toString('latin1').replace(/\0.*$/s, '');
    if (name === '') break; // the end-of-archive blocks
    const size = parseInt(bytes.subarray(at + 124, at + 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
    if (name.endsWith('.cls') && size === 1 && bytes[at + 512] >= 0x30 && bytes[at + 512] <= 0x39) {
      bytes[at + 512] = 0x30 + ((bytes[at + 512] - 0x30 + 1) % numClasses);
      changed++;
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  fs.writeFileSync(file, bytes);
  fs.utimesSync(file, st.atime, st.mtime);
  return changed;
}

/** PNG signature, IHDR of side x side RGB, one IDAT of a few zero rows, IEND. */
function bombPng(side: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = zlib.deflateSync(Buffer.alloc(4 * (1 + 3 * side)));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', rows), chunk('IEND', Buffer.alloc(0))]);
}

function listFiles(dir: string, sub = ''): string[] {
  return fs.readdirSync(path.join(dir, sub), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(sub, e.name);
    return e.isDirectory() ? listFiles(dir, rel) : [rel];
  });
}

if (require.main === module) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: npx ts-node scripts/make-bad-input-corpus.ts OUT_DIR');
    process.exit(1);
  }
  makeBadInputCorpus(out).then(
    (files) => console.log(files.map((f) => `${f} ${fs.statSync(path.join(out, f)).size}`).join('\n')),
    (err) => {
      console.error(`error: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
