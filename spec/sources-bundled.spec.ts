import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openSource } from '../sources/open';
import type { EncodedSample } from '../sources/types';

const DIR = path.join(__dirname, '..', 'data', 'cifar10-mini');

async function census(spec: string): Promise<{ count: number; perClass: number[]; indices: Set<number>; jpeg: boolean }> {
  const perClass = new Array<number>(10).fill(0);
  const indices = new Set<number>();
  let jpeg = true;
  let count = 0;
  for await (const s of openSource(spec, { onSkip: (o, r) => assert.unreachable(`${o}: ${r}`) }).samples as AsyncIterable<EncodedSample>) {
    count++;
    perClass[s.label]++;
    indices.add(s.index);
    jpeg &&= s.bytes[0] === 0xff && s.bytes[1] === 0xd8; // JPEG SOI marker
  }
  return { count, perClass, indices, jpeg };
}

test('bundled CIFAR-10 mini: train 10,000 = 1,000 per class', async () => {
  const train = await census(path.join(DIR, 'train-*.tar.gz'));
  assert.is(train.count, 10000);
  assert.equal(train.perClass, new Array(10).fill(1000));
  assert.is(train.indices.size, 10000);
  assert.ok(train.jpeg);
});

test('bundled CIFAR-10 mini: test 2,000 = 200 per class; classes.txt; small', async () => {
  const src = openSource(path.join(DIR, 'test-*.tar.gz'));
  assert.equal(src.classes, ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']);
  const t = await census(path.join(DIR, 'test-*.tar.gz'));
  assert.is(t.count, 2000);
  assert.equal(t.perClass, new Array(10).fill(200));
  const bytes = fs.readdirSync(DIR).reduce((sum, f) => sum + fs.statSync(path.join(DIR, f)).size, 0);
  assert.ok(bytes < 20e6, `${bytes} bytes`);
});

test.run();
