import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cifarBinary } from '../sources/cifar-binary';
import { collect, tmpDir } from './sources-fixtures';

let dir = '';
const PIXELS = 1024;

/** Record r of a file: pixel p of plane c holds (r * 7 + c * 50 + p) & 255, label bytes given. */
function record(labels: number[], r: number): Buffer {
  const planes = Buffer.alloc(3 * PIXELS);
  for (let c = 0; c < 3; c++) for (let p = 0; p < PIXELS; p++) planes[c * PIXELS + p] = (r * 7 + c * 50 + p) & 255;
  return Buffer.concat([Buffer.from(labels), planes]);
}

test.before(() => {
  dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'c10'));
  fs.mkdirSync(path.join(dir, 'c100'));
  // data_batch_2 first on disk; sorted order puts data_batch_1 first.
  fs.writeFileSync(path.join(dir, 'c10', 'data_batch_2.bin'), Buffer.concat([3, 4].map((r) => record([r], r))));
  fs.writeFileSync(path.join(dir, 'c10', 'data_batch_1.bin'), Buffer.concat([0, 1, 2].map((r) => record([r + 5], r))));
  fs.writeFileSync(path.join(dir, 'c10', 'batches.meta.txt'), 'airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n');
  fs.writeFileSync(path.join(dir, 'c100', 'train.bin'), Buffer.concat([0, 1].map((r) => record([r + 1, 40 + r], r))));
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('CIFAR-10: records -> raw HWC RGB 32x32, labels, stable indices, class names', async () => {
  const source = cifarBinary({ files: path.join(dir, 'c10', '*.bin') });
  assert.is(source.variant, 'cifar10');
  assert.is(source.size, 5);
  assert.is(source.classes?.length, 10);
  const got = await collect(source);
  assert.equal(got.map((s) => s.index), [0, 1, 2, 3, 4]);
  assert.equal(got.map((s) => s.label), [5, 6, 7, 3, 4]);
  assert.equal(got.map((s) => s.key), ['data_batch_1_00000', 'data_batch_1_00001', 'data_batch_1_00002', 'data_batch_2_00000', 'data_batch_2_00001']);
  for (const s of got) assert.equal(s.raw, { width: 32, height: 32 });
  // Pixel (y=1, x=2) of record 1 in data_batch_1: p = 34, R/G/B from the three planes.
  const s = got[1];
  const p = 1 * 32 + 2;
  assert.equal([...s.bytes.subarray(3 * p, 3 * p + 3)], [(7 + p) & 255, (7 + 50 + p) & 255, (7 + 100 + p) & 255]);
  assert.is(s.bytes.length, 3 * PIXELS);
});

test('CIFAR-100: fine label by default, coarse on request', async () => {
  const file = path.join(dir, 'c100', 'train.bin');
  assert.equal((await collect(cifarBinary({ files: file }))).map((s) => s.label), [40, 41]);
  assert.equal((await collect(cifarBinary({ files: file, labelKind: 'coarse' }))).map((s) => s.label), [1, 2]);
  const s = (await collect(cifarBinary({ files: file })))[1];
  assert.is(s.bytes[0], 7); // record 1, plane R, pixel 0
});

test('shuffle, ranks and start', async () => {
  const files = path.join(dir, 'c10', '*.bin');
  const idx = async (o: object) => (await collect(cifarBinary({ files, ...o }))).map((s) => s.index);
  const shuffle = { seed: 9, epoch: 1 };
  assert.equal(await idx({ shuffle }), await idx({ shuffle }));
  assert.equal([...(await idx({ shuffle }))].sort(), [0, 1, 2, 3, 4]);
  const parts = [await idx({ shuffle, rank: 0, worldSize: 2 }), await idx({ shuffle, rank: 1, worldSize: 2 })];
  assert.equal([...parts[0], ...parts[1]].sort(), [0, 1, 2, 3, 4]);
  assert.equal(await idx({ shuffle, start: 2 }), (await idx({ shuffle })).slice(2));
});

test('errors: no files, wrong size', () => {
  assert.throws(() => cifarBinary({ files: path.join(dir, 'none-*.bin') }), /none-\*\.bin/);
  const odd = path.join(dir, 'odd.bin');
  fs.writeFileSync(odd, Buffer.alloc(3073 + 10));
  assert.throws(() => cifarBinary({ files: odd, variant: 'cifar10' }), /not a whole number/);
});

test.run();
