/**
 * Fine-tuning (pipelines/finetune.ts): the label-smoothed cross-entropy and its gradient against
 * PyTorch (spec/fixtures/label-smoothing.json, scripts/make-finetune-fixture.py), drop path
 * (identity at evaluation, seeded, linear over depth), the layer-wise decay groups against
 * MAE's param_groups_lrd rule, and a tiny run end to end on real bundled images: the loss
 * falls, the summary and the chosen checkpoint are written, a run stopped and resumed ends
 * bit-identical, and bad input is refused naming the flag, the class or the sample.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { writeEncoder } from '../runtime/checkpoint';
import { Rng } from '../lib/rng';
import { readSafetensors } from '../models/safetensors';
import { ClassifierHead, VisionTransformer, VitConfig } from '../models/vit';
import { labelSmoothingCrossEntropy } from '../losses/label-smoothing';
import { classifyObjective } from '../objectives/classify';
import { extractFeatures } from '../eval/extract-features';
import { batchStream } from '../datapath/batches';
import { openSource } from '../sources/open';
import { finetune } from '../pipelines/finetune';
import { FinetuneSummary, summaryMarkdown } from '../eval/finetune';
import { withFlags } from './argv';
import { writeTar } from './sources-fixtures';
import { rejects } from './eval-helpers';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetune-spec-'));
const checkpoint = path.join(dir, 'mim.safetensors');
const cfg: VitConfig = { imgSize: 16, patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, act: 'gelu', posEmbed: 'sincos' };
const data = path.join(dir, 'data');

/** Real CIFAR-10 images from the bundled test shard: 200 train, 100 val, 100 test shards with classes.txt. */
async function writeSplits(): Promise<void> {
  fs.mkdirSync(data);
  const members: { name: string; body: Buffer | string }[][] = [[], [], []];
  let n = 0;
  for await (const s of openSource('data/cifar10-mini/test-*.tar.gz').samples) {
    const split = n < 200 ? 0 : n < 300 ? 1 : 2;
    members[split].push({ name: `${s.key}.jpg`, body: s.bytes }, { name: `${s.key}.cls`, body: String(s.label) });
    if (++n === 400) break;
  }
  await Promise.all(['train', 'val', 'test'].map((name, i) => writeTar(path.join(data, `${name}-000000.tar`), members[i])));
  fs.copyFileSync('data/cifar10-mini/classes.txt', path.join(data, 'classes.txt'));
}

const run = (out: string, extra: string[] = []) =>
  finetune(withFlags([
    '--checkpoint', checkpoint, '--train', path.join(data, 'train-*.tar'), '--test', path.join(data, 'test-*.tar'), '--out', out,
    '--label-share', '5', '--epochs', '3', '--seed', '3', '--batch', '5', '--lr', '3e-3', '--val-evals', '2', '--log-every', '5',
  ], extra));

test.before(async () => {
  await initBackend(() => undefined);
  const model = new VisionTransformer(cfg, 1);
  await writeEncoder(checkpoint, model);
  model.dispose();
  await writeSplits();
});

test('label-smoothed cross-entropy and its gradient equal PyTorch cross_entropy(label_smoothing=eps)', () => {
  const fx = JSON.parse(fs.readFileSync('spec/fixtures/label-smoothing.json', 'utf8'));
  const logits = tf.tensor2d(fx.logits);
  const labels = tf.tensor1d(fx.labels, 'int32');
  for (const c of fx.cases) {
    const loss = labelSmoothingCrossEntropy(logits, labels, c.smoothing);
    const grad = tf.grad((x: tf.Tensor) => labelSmoothingCrossEntropy(x as tf.Tensor2D, labels, c.smoothing))(logits);
    assert.ok(Math.abs(loss.dataSync()[0] - c.loss) < 1e-6 * Math.max(1, c.loss), `eps ${c.smoothing}: loss ${loss.dataSync()[0]} vs torch ${c.loss}`);
    const g = grad.arraySync() as number[][];
    const worst = Math.max(...g.flatMap((row, i) => row.map((v, j) => Math.abs(v - c.grad[i][j]))));
    assert.ok(worst < 1e-6, `eps ${c.smoothing}: gradient off by ${worst}`);
    tf.dispose([loss, grad]);
  }
  tf.dispose([logits, labels]);
});

test('drop path: identity at evaluation, the same draw for the same seed, linear over depth (the last block at the full rate)', () => {
  const model = new VisionTransformer(cfg, 2);
  const head = new ClassifierHead(model, 10, 'avg', 2);
  const images = tf.randomNormal([6, 16, 16, 3], 0, 1, 'float32', 7) as tf.Tensor4D;
  const read = (t: tf.Tensor) => {
    const v = t.dataSync().slice();
    t.dispose();
    return v;
  };
  const evalLogits = read(head.forward(images));
  assert.equal(read(head.forward(images, { rate: 0, rng: new Rng(1) })), evalLogits, 'rate 0 is the plain network');
  const a = read(head.forward(images, { rate: 0.5, rng: new Rng(3, 1) }));
  assert.equal(read(head.forward(images, { rate: 0.5, rng: new Rng(3, 1) })), a, 'same seed, same draw');
  assert.not.equal(read(head.forward(images, { rate: 0.5, rng: new Rng(4, 1) })), a, 'another seed, another draw');
  assert.not.equal(a, evalLogits);
  assert.equal(read(head.forward(images)), evalLogits, 'evaluation stays deterministic after training forwards');
  // p_i = rate * i / (depth - 1): block 0 never dropped, block 1 (the last) at the full rate 1: skipped whole
  const [b0, b1] = model.getIntermediateLayers(images, { blocks: [0, 1], dropPath: { rate: 1, rng: new Rng(5) } });
  const [plain0] = model.getIntermediateLayers(images, { blocks: [0] });
  const [v0, v1, p0] = [read(b0), read(b1), read(plain0)];
  assert.equal(v1, v0, 'rate 1 drops both branches of the last block for every sample');
  assert.equal(v0, p0, 'block 0 has rate 0');
  tf.dispose(images);
  head.dispose();
  model.dispose();
});

test("layer-wise decay groups follow MAE's param_groups_lrd: decay^(depth + 1 - layer id), no weight decay on 1-D params and tokens", () => {
  const model = new VisionTransformer({ ...cfg, posEmbed: 'learned' }, 2);
  const head = new ClassifierHead(model, 10, 'avg', 2);
  const groups = [...model.paramGroups('encoder.', { weightDecay: 0.05, layerDecay: 0.5 }), ...head.paramGroups('classifier.', 0.05)];
  // param_groups_lrd (MAE util/lr_decay.py): num_layers = depth + 1; cls_token, pos_embed, patch_embed: 0; blocks.i: i + 1; the rest: num_layers
  const layerId = (n: string) => (/^(cls_token|pos_embed|patch_embed)/.test(n) ? 0 : n.startsWith('blocks.') ? Number(n.split('.')[1]) + 1 : cfg.depth + 1);
  const noDecay = (n: string, ndim: number) => ndim === 1 || n === 'cls_token' || n === 'pos_embed';
  assert.equal(groups.length, model.params.trainable().length + head.params.trainable().length);
  for (const g of groups) {
    const name = g.name.replace(/^(encoder|classifier)\./, '');
    assert.equal(g.lrScale, 0.5 ** (cfg.depth + 1 - layerId(name)), name);
    assert.equal(g.weightDecay, noDecay(name, g.variable.rank) ? 0 : 0.05, name);
  }
  assert.equal(groups.find((g) => g.name === 'classifier.head.weight')!.lrScale, 1);
  assert.equal(groups.find((g) => g.name === 'encoder.patch_embed.proj.weight')!.lrScale, 0.125);
  head.dispose();
  model.dispose();
});

test('the eval path (pooled features -> head.logits) is the classifier forward without drop path', async () => {
  const model = new VisionTransformer(cfg, 2);
  for (const pooling of ['avg', 'cls'] as const) {
    const head = new ClassifierHead(model, 10, pooling, 2);
    const set = await extractFeatures(model, { source: path.join(data, 'test-*.tar'), blocks: [cfg.depth - 1], pooling, limit: 8 });
    const viaFeatures = head.logits(tf.tensor2d(set.features[0], [set.count, set.dim]));
    const batch = batchStream({ source: path.join(data, 'test-*.tar'), transform: { kind: 'eval', eval: { size: 16, resizeRatio: 1 } }, batchSize: 8, dropLast: false });
    const b = (await batch.next()).value!;
    await batch.return();
    const direct = head.forward(tf.tensor4d(b.views[0], [8, 16, 16, 3]));
    const diff = tf.max(tf.abs(tf.sub(viaFeatures, direct))).dataSync()[0];
    assert.ok(diff < 1e-5, `${pooling}: ${diff}`);
    head.dispose();
  }
  model.dispose();
});

test('a label outside the head is refused naming the sample', () => {
  const model = new VisionTransformer(cfg, 2);
  const head = new ClassifierHead(model, 10, 'avg', 2);
  const objective = classifyObjective({ head, labelSmoothing: 0.1, dropPath: 0, seed: 0 });
  const batch = { indices: Int32Array.from([4, 9]), labels: Int32Array.from([3, 12]), views: [new Float32Array(2 * 16 * 16 * 3)], viewSizes: [16] };
  assert.throws(() => objective.prepare(batch, 0), /training sample 9: label 12 is outside the 10 classes/);
  head.dispose();
  model.dispose();
});

test('a tiny fine-tuning run end to end: the loss falls, the summary and the chosen checkpoint are written', async () => {
  const out = path.join(dir, 'a');
  const file = await run(out);
  const summary = JSON.parse(fs.readFileSync(file!, 'utf8')) as FinetuneSummary;
  const [r] = summary.results;
  assert.equal([r.share, r.images, r.seeds, r.steps], ['5', 50, [3], 30]);
  assert.equal(summary.val.count, 100);
  assert.equal(summary.test.count, 100);
  assert.ok(r.test[0] >= 0 && r.test[0] <= 1 && r.val[0] > 0);
  assert.equal(r.valMean, r.val[0]);
  assert.equal(r.testStd, 0);
  const runDir = path.join(out, '5-per-class', 'lr-0.003', 'seed-3');
  const rows = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const mean = (xs: { loss: number }[]) => xs.reduce((a, x) => a + x.loss, 0) / xs.length;
  assert.ok(mean(rows.slice(-5)) < mean(rows.slice(0, 5)) - 0.05, `loss ${mean(rows.slice(0, 5))} -> ${mean(rows.slice(-5))}`);
  const model = readSafetensors(path.join(runDir, 'model.safetensors'));
  assert.equal(model.tensors.get('head.weight')!.shape, [10, 32]);
  assert.equal(model.tensors.get('fc_norm.weight')!.shape, [32]);
  assert.ok(model.tensors.has('blocks.1.mlp.fc2.weight'));
  const result = JSON.parse(fs.readFileSync(path.join(runDir, 'result.json'), 'utf8'));
  assert.equal(result.curve.map((c: { step: number }) => c.step), [15, 30]);
  assert.equal(JSON.parse(model.metadata.chosen).step, result.best.step);
  assert.ok(fs.existsSync(path.join(out, 'val-curve.png')) && fs.existsSync(path.join(out, 'summary.md')));
});

test('summary.md shows every lr of a sweep with its validation mean, and no sweep column without one', () => {
  const result = { share: '10%', images: 1000, epochs: 8, steps: 248, lr: 1e-3, seeds: [0, 1], val: [0.4, 0.42], test: [0.41, 0.43], bestEpoch: [8, 8], valMean: 0.41, valStd: 0.01, testMean: 0.42, testStd: 0.01, models: [] };
  const summary = { kind: 'finetune', label: 'm', model: 'm', train: { source: 't', count: 1000 }, val: { source: 'v', count: 2000 }, test: { source: 's', count: 2000 }, settings: {}, results: [] } as unknown as FinetuneSummary;
  const swept = summaryMarkdown({ ...summary, results: [{ ...result, sweep: [{ lr: 3e-4, valMean: 0.349, valStd: 0 }, { lr: 1e-3, valMean: 0.41, valStd: 0.01 }] }] });
  assert.match(swept, /\| validation per lr \|/);
  assert.match(swept, /\| 0\.0003: 34\.9, 0\.001: 41\.0 \| 41\.0 ± 1\.0 \| 42\.0 ± 1\.0 \| 41\.0 \/ 43\.0 \|/);
  const single = summaryMarkdown({ ...summary, results: [{ ...result, sweep: [{ lr: 1e-3, valMean: 0.41, valStd: 0.01 }] }] });
  assert.not.match(single, /validation per lr/);
});

test('stopped by --max-steps and resumed: the same chosen checkpoint and numbers as a straight run', async () => {
  const out = path.join(dir, 'b');
  assert.equal(await run(out, ['--max-steps', '15']), undefined);
  assert.throws(() => fs.readFileSync(path.join(out, 'summary.json')));
  const status = () => JSON.parse(fs.readFileSync(path.join(out, 'status.json'), 'utf8'));
  assert.is(status().state, 'stopped', 'a stop is not a failure');
  assert.match(status().resume, /pipelines\/finetune\.ts --resume /);
  await rejects(() => finetune(['--resume', out, '--lr', '1e-3']), /--lr 1e-3: the run .* was started with --lr 3e-3/);
  const file = await finetune(['--resume', out]);
  assert.is(status().state, 'finished');
  const [a, b] = [path.join(dir, 'a'), out].map((o) => readSafetensors(path.join(o, '5-per-class', 'lr-0.003', 'seed-3', 'model.safetensors')).tensors);
  for (const [k, t] of a) assert.equal(b.get(k)!.data, t.data, k);
  const [sa, sb] = [path.join(dir, 'a', 'summary.json'), file!].map((f) => JSON.parse(fs.readFileSync(f, 'utf8')).results);
  assert.equal(sb, sa);
});

test('bad input: an unknown flag, a bad share, a class left without images, no preset for a random init', async () => {
  const out = path.join(dir, 'bad');
  await rejects(() => run(out, ['--bogus', '1']), /Unknown option '--bogus'/);
  await rejects(() => run(out, ['--label-share', '0%']), /--label-share: '0%' is neither/);
  await rejects(() => run(out, ['--epochs', '1,2,3']), /--epochs: give one value or one per --label-share/);
  await rejects(() => finetune(['--checkpoint', 'none', '--out', out]), /--checkpoint none: pass --preset/);
  // classes.txt lists a third class no training image has
  const sparse = path.join(dir, 'sparse');
  fs.mkdirSync(sparse);
  const members = [0, 1, 0, 1].flatMap((label, i) => [{ name: `k${i}.jpg`, body: fs.readFileSync('checkpoints/mae-vit-micro-p4/loss.png') }, { name: `k${i}.cls`, body: String(label) }]);
  await writeTar(path.join(sparse, 'train-000000.tar'), members);
  await writeTar(path.join(sparse, 'val-000000.tar'), members.map((m) => ({ ...m, name: `v${m.name}` })));
  await writeTar(path.join(sparse, 'test-000000.tar'), members.map((m) => ({ ...m, name: `t${m.name}` })));
  fs.writeFileSync(path.join(sparse, 'classes.txt'), 'cat\ndog\nbird\n');
  await rejects(
    () => finetune(['--checkpoint', checkpoint, '--train', path.join(sparse, 'train-*.tar'), '--test', path.join(sparse, 'test-*.tar'), '--label-share', '50%', '--epochs', '1', '--batch', '1', '--out', out]),
    /--label-share 50% leaves class 2 \(bird\) without images/,
  );
  // a share smaller than a batch (10 labelled images, batch 16) is refused before anything is written
  const small = path.join(dir, 'small-share');
  await rejects(() => run(small, ['--label-share', '1', '--batch', '16']), /--label-share 1: 10 labelled images, fewer than one batch of 16/);
  assert.not.ok(fs.existsSync(small), 'nothing written');
  // a failure after the run began (an lr that overflows the weights): status.json says failed, not running
  const diverging = path.join(dir, 'diverging');
  await rejects(() => run(diverging, ['--lr', '1e30']), /not finite/);
  assert.is(JSON.parse(fs.readFileSync(path.join(diverging, 'status.json'), 'utf8')).state, 'failed');
});

test.run();
