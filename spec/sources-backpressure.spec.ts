import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fromPull, PullQueue, Valve } from '../lib/flow';
import { tarShards } from '../sources/tar-shards';
import type { EncodedSample } from '../sources/types';
import { makeShards, tmpDir } from './sources-fixtures';

let dir = '';
const N = 40;

test.before(async () => {
  dir = tmpDir();
  await makeShards(dir, 2, N / 2);
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The tar source, counting what it has produced, so the test sees how far it ran ahead. */
function counted(stats: { produced: number; consumed: number; maxAhead: number }): AsyncIterable<EncodedSample> {
  const source = tarShards({ shards: path.join(dir, 'shard-*'), shuffle: { seed: 1, epoch: 0, bufferSize: 8 } });
  return {
    async *[Symbol.asyncIterator]() {
      for await (const s of source) {
        stats.produced++;
        stats.maxAhead = Math.max(stats.maxAhead, stats.produced - stats.consumed);
        yield s;
      }
    },
  };
}

test('slow consumer: never more than valve.capacity samples in flight', async () => {
  const stats = { produced: 0, consumed: 0, maxAhead: 0 };
  const valve = new Valve(4);
  const queue = new PullQueue(fromPull(counted(stats), valve));
  const seen: number[] = [];
  for await (const s of queue) {
    await new Promise((resolve) => setTimeout(resolve, 3)); // the slow training step
    seen.push(s.index);
    stats.consumed++;
    valve.release(1);
  }
  assert.is(seen.length, N);
  assert.ok(valve.peak <= valve.capacity, `peak ${valve.peak}`);
  assert.ok(stats.maxAhead <= valve.capacity, `source ran ${stats.maxAhead} ahead`);
  assert.is(valve.peak, valve.capacity, 'and the source does fill the valve');
});

test('fast consumer gets every sample, in the source order', async () => {
  const direct: number[] = [];
  for await (const s of counted({ produced: 0, consumed: 0, maxAhead: 0 })) direct.push(s.index);
  const valve = new Valve(4);
  const queue = new PullQueue(fromPull(counted({ produced: 0, consumed: 0, maxAhead: 0 }), valve));
  const seen: number[] = [];
  for await (const s of queue) {
    seen.push(s.index);
    valve.release(1);
  }
  assert.equal(seen, direct);
  assert.is(new Set(seen).size, N);
});

test.run();
