/**
 * WebDataset's shard notation: brace lists and ranges as Python's braceexpand expands them
 * (spec/fixtures/braceexpand.json, written by spec/fixtures/make-braceexpand.py with
 * braceexpand 0.1.7), `::` between specs, URLs and pipes taken as written, local names checked
 * against the disk.
 */
import * as fs from 'fs';
import * as path from 'path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { braceExpand, resolveShards, splitSpecs } from '../sources/shard-spec';
import { openSource } from '../sources/open';
import { tmpDir } from './sources-fixtures';

const FIXTURE = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'braceexpand.json'), 'utf8')) as {
  cases: { pattern: string; expanded?: string[]; error?: string }[];
};

test('brace expansion: the same lists as Python braceexpand (padding, lists, nesting, steps, letters, escapes)', () => {
  for (const c of FIXTURE.cases) {
    if (c.error) assert.throws(() => braceExpand(c.pattern), /unbalanced braces/, c.pattern);
    else assert.equal(braceExpand(c.pattern), c.expanded, c.pattern);
  }
  const imagenet = braceExpand('imagenet-train-{000000..001281}.tar');
  assert.is(imagenet.length, 1282);
  assert.is(imagenet[1281], 'imagenet-train-001281.tar');
  assert.throws(() => braceExpand('x-{0..99999999}'), /"x-\{0\.\.99999999\}": the range \{0\.\.99999999\} names 100000000 items/);
});

test(':: separates specs, except inside an IPv6 host', () => {
  assert.equal(splitSpecs('a/*.tar::http://h/b-{0..1}.tar::pipe:cat c.tar'), ['a/*.tar', 'http://h/b-{0..1}.tar', 'pipe:cat c.tar']);
  assert.equal(splitSpecs('http://[::1]:8080/x.tar::y.tar'), ['http://[::1]:8080/x.tar', 'y.tar']);
});

test('resolveShards: sorted by text, local paths absolute, URLs and pipes as written; missing members of a numbered range refused', () => {
  const d = tmpDir();
  for (const name of ['s-000000.tar', 's-000001.tar', 's-000002.tar.gz', 'odd{1,2}.tar']) fs.writeFileSync(path.join(d, name), '');
  assert.equal(resolveShards([`pipe:cat ${d}/s-000001.tar`, `http://h/s-{000001..000000}.tar`]), ['http://h/s-000000.tar', 'http://h/s-000001.tar', `pipe:cat ${d}/s-000001.tar`]);
  assert.equal(resolveShards(`${d}/s-{000000..000001}.tar::${d}/*.gz`).map((f) => path.basename(f)), ['s-000000.tar', 's-000001.tar', 's-000002.tar.gz']);
  // a list of alternatives works like a glob: whichever exist
  assert.equal(resolveShards(`${d}/s-{000000,000002}.{tar,tar.gz}`).map((f) => path.basename(f)), ['s-000000.tar', 's-000002.tar.gz']);
  assert.equal(resolveShards(path.join(d, 'odd{1,2}.tar')).map((f) => path.basename(f)), ['odd{1,2}.tar'], 'an existing name is taken literally');
  assert.throws(() => resolveShards(`${d}/s-{000000..000003}.tar`), (e: Error) => e.message === `"${d}/s-{000000..000003}.tar": 2 of the shards its numbered range names do not exist: ${d}/s-000002.tar, ${d}/s-000003.tar`);
  assert.throws(() => resolveShards(`${d}/t-{0..3}.tar`), /No tar shards match ".*t-\{0\.\.3\}\.tar"/);
  assert.throws(() => resolveShards('gs://bucket/train-{0..3}.tar'), /gs:\/\/ is not read directly; use its https:\/\/ address, or a pipe: command .*"pipe:gsutil cat gs:\/\/bucket\/train-\{0\.\.3\}\.tar"/);
  fs.rmSync(d, { recursive: true, force: true });
});

test('openSource: brace ranges and :: name the bundled shards like a glob does', () => {
  const dir = path.resolve(__dirname, '..', 'data', 'cifar10-mini');
  const glob = openSource(path.join(dir, 'train-*.tar.gz'));
  const braced = openSource(`${path.join(dir, 'train-{000000..000001}.tar.gz')}`);
  const joined = openSource(`${path.join(dir, 'train-000001.tar.gz')}::${path.join(dir, 'train-000000.tar.gz')}`);
  for (const s of [braced, joined]) {
    assert.is(s.kind, 'tar');
    assert.equal((s.samples as unknown as { shards: string[] }).shards, (glob.samples as unknown as { shards: string[] }).shards);
    assert.equal(s.classes, glob.classes);
  }
});

test.run();
