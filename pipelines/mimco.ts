/**
 * MimCo pretraining (MimCo, Zhou et al. 2022, arXiv 2209.03063): a frozen contrastive teacher
 * (stage 1: by default the bundled refined checkpoint, made by pipelines/refine.ts) and a ViT
 * student that sees the same view with a random share of its patches replaced by a mask
 * token and learns to reconstruct the teacher's representations of the whole view: its masked
 * patch tokens against the teacher's patch features (InfoNCE over the image's positions), its
 * CLS against the teacher's CLS (InfoNCE over the batch). losses/mimco.ts has the loss.
 *
 * Per step: one view of a batch -> teacher forward (constants, no tape) -> student forward on
 * the masked view -> projection heads -> patch + image loss -> backward -> AdamW.
 * Where the paper is silent (docs/method.md) we follow MAE's recipe (AdamW (0.9, 0.95),
 * wd 0.05, lr = --lr x batch / 256, warm-up then cosine, RandomResizedCrop + flip) and choose:
 * per-sample random masking (MAE's randomMasking), teacher targets from a block with the
 * teacher's final norm, temperature 0.2 for both losses, sin-cos positions.
 * The defaults (student from the bundled MAE, 2 epochs, --lr 5e-4, a 0.1-epoch warm-up of the heads
 * alone, mask ratio 0.5, the teacher's last block) were chosen on validation kNN (docs/mimco.md);
 * the default run trains for about 13 minutes on 2 CPU cores.
 *
 *   npx ts-node pipelines/mimco.ts                    # refined teacher, student from the bundled MAE
 *   npx ts-node pipelines/mimco.ts --checkpoint none  # the same student from scratch
 *   npx ts-node pipelines/mimco.ts --resume runs/mimco     # continues from runs/mimco/checkpoint
 */
import * as path from 'node:path';
import { num, numRange, oneOf, runMain } from '../runtime/cli';
import { withoutPrefix } from '../runtime/checkpoint';
import { filesFingerprint } from '../runtime/data-parallel';
import { VitConfig } from '../models/vit';
import { MimcoHeads } from '../models/mimco';
import { mimcoObjective } from '../objectives/mimco';
import { maeViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { BUNDLED, dataFlags, evalFlags, knnFlags, LR_SCALINGS, modelFlags, optimiserFlags, runFlags, scaledLr, TRAINING_RUN_FLAGS } from '../train/flags';
import { openRun } from '../train/run';
import { loadModel } from '../train/model';
import { checkpointKey } from '../eval/feature-cache';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';

const FLAGS = {
  ...runFlags('mimco'),
  ...TRAINING_RUN_FLAGS,
  ...dataFlags(),
  ...modelFlags({ checkpoint: BUNDLED.mae, what: 'student start' }),
  teacher: { description: 'frozen contrastive teacher encoder', default: BUNDLED.refined },
  'teacher-preset': { description: "ViT size of a --teacher file whose metadata holds no config (as --preset)" },
  'teacher-block': { description: "teacher block whose tokens (final norm applied) are the targets, 0-based (default: its last)" },
  act: { description: "MLP activation of a student from scratch: 'gelu' (exact, timm's) or 'gelu_tanh'", default: 'gelu' },
  'proj-hidden': { description: 'hidden width of the two projection heads (0: twice the teacher width)', default: '0' },
  'mask-ratio': { description: 'share of patches masked per sample (0.01-0.99)', default: '0.5' },
  temperature: { description: 'InfoNCE temperature of the patch and image losses (> 0)', default: '0.2' },
  epochs: { description: 'epochs over the training data, fractions allowed (> 0)', default: '2' },
  'head-warmup-epochs': { description: 'epochs of a first stage training only the heads and mask token (0: none)', default: '0.1' },
  ...optimiserFlags({ batch: '64', lr: '5e-4', lrScaling: 'linear', weightDecay: '0.05', warmupShare: '0.1', layerDecay: '1' }),
  'crop-scale': { description: 'RandomResizedCrop area range lo,hi', default: '0.2,1.0' },
  seed: { description: 'seed of init, masking, augmentation and order', default: '0' },
  ...evalFlags({ trainLimit: '5000', testLimit: '2000', skip: true }),
} as const;

export const DEFINITION = {
  name: 'mimco',
  script: 'pipelines/mimco.ts',
  usage: 'MimCo: pretrain a ViT student to reconstruct a frozen contrastive teacher from masked input.\n  npx ts-node pipelines/mimco.ts [options]',
  flags: FLAGS,
  fixedOnResume: ['teacher', 'teacher-preset', 'teacher-block', 'train', 'checkpoint', 'preset', 'act', 'proj-hidden', 'mask-ratio', 'head-warmup-epochs', 'batch', 'crop-scale', 'seed'],
};

/** Runs MimCo pretraining with command-line style arguments; resolves to the run folder. */
export async function mimco(argv: string[]): Promise<string> {
  const run = openRun(DEFINITION, argv);
  const { flags: f, runDir, resumed } = run;
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2, max: 65536 });
  const epochs = num('epochs', f.epochs, { above: 0 });
  const maskRatio = num('mask-ratio', f['mask-ratio'], { min: 0.01, max: 0.99 });
  const temperature = num('temperature', f.temperature, { min: 1e-4 });
  const cropScale = numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 });
  const lr = num('lr', f.lr, { min: 0 });
  const lrScaling = oneOf('lr-scaling', f['lr-scaling'], LR_SCALINGS);
  const minLr = num('min-lr', f['min-lr'], { min: 0 });
  const warmupShare = num('warmup-share', f['warmup-share'], { min: 0, max: 1 });
  const headEpochs = num('head-warmup-epochs', f['head-warmup-epochs'], { min: 0 });
  const layerDecay = num('layer-decay', f['layer-decay'], { min: 1e-6, max: 1 });
  const wd = num('weight-decay', f['weight-decay'], { min: 0 });
  const clipGradNorm = num('clip-grad', f['clip-grad'], { min: 0 });
  const act = oneOf('act', f.act, ['gelu', 'gelu_tanh'] as const);
  const knn = { train: f.train!, test: f.test!, val: f.val === 'none' ? null : f.val, ...knnFlags(f) };
  const ctx = await run.start({ batch });
  const { dp } = ctx;

  // ---- teacher (frozen) and student, checked against each other before anything is written
  const teacher = loadModel({ flag: 'teacher', file: f.teacher!, presetFlag: 'teacher-preset', preset: f['teacher-preset'] });
  const tc = teacher.cfg;
  const student = loadModel({ flag: 'checkpoint', file: f.checkpoint!, presetFlag: 'preset', preset: f.preset, seed, act });
  const sc = student.cfg;
  const shape = (c: VitConfig) => `${c.imgSize} px, patch ${c.patchSize}: ${c.imgSize / c.patchSize}x${c.imgSize / c.patchSize} patches, width ${c.embedDim}`;
  if (tc.imgSize !== sc.imgSize || tc.patchSize !== sc.patchSize) {
    throw new Error(
      `student --checkpoint ${f.checkpoint} (${shape(sc)}) does not match the teacher ${f.teacher} (${shape(tc)}): ` +
        'MimCo matches student and teacher patch by patch on the same view, so both need the same image size and patch grid',
    );
  }
  const teacherBlock = f['teacher-block'] === undefined ? tc.depth - 1 : num('teacher-block', f['teacher-block'], { integer: true, min: 0 });
  if (teacherBlock >= tc.depth) throw new Error(`--teacher-block: block ${teacherBlock} does not exist in ${f.teacher} (blocks 0..${tc.depth - 1})`);
  const { samplesPerEpoch, stepsPerEpoch } = await run.dataSize(f.train!, batch, { labels: 'ignored' });
  using _claim = run.claim(ctx);
  const totalSteps = Math.max(1, Math.round(epochs * stepsPerEpoch));
  const warmupSteps = Math.round(warmupShare * totalSteps);
  const peakLr = scaledLr(lr, batch, lrScaling);
  const headSteps = Math.round(headEpochs * stepsPerEpoch);

  // ---- the student's heads
  const projHidden = num('proj-hidden', f['proj-hidden'], { integer: true, min: 0, max: 65536 }) || 2 * tc.embedDim;
  const heads = new MimcoHeads(sc.embedDim, tc.embedDim, projHidden, sc.act, seed + 1);
  if (resumed) {
    student.params.importTimm(withoutPrefix(resumed.tensors, 'encoder.'), resumed.file);
    heads.params.importTimm(withoutPrefix(resumed.tensors, 'mimco.'), resumed.file);
  }
  // every rank starts from rank 0's weights, with the same flags, data and teacher (each rank loads its own copy)
  await run.shareFromRank0(ctx, [student.params, heads.params], 'student and head parameters', { samplesPerEpoch, teacher: filesFingerprint([f.teacher!]) });

  console.log(
    `[mimco] teacher ${f.teacher} (depth ${tc.depth}, width ${tc.embedDim}, targets of block ${teacherBlock}); student ${f.checkpoint === 'none' ? `${f.preset} from scratch` : `from ${f.checkpoint}`}, ` +
      `mask ratio ${maskRatio}; ${samplesPerEpoch} samples/epoch, ${headSteps ? `${headSteps} steps of the heads alone, then ` : ''}${totalSteps} steps, peak lr ${peakLr.toExponential(2)}, backend ${ctx.backend.tfBackend}`,
  );
  const skips = new SkipLog();
  const views = maeViews(sc.imgSize, cropScale);
  const objective = mimcoObjective({ teacher, teacherBlock, student, heads, maskRatio, temperature, seed, collective: dp });
  const headGroups = () => heads.params.groups('mimco:', wd);
  const { done } = await train({
    ...run.driver(),
    stages: [
      ...(headSteps > 0 ? [{ label: 'heads only (student frozen)', schedule: { steps: headSteps, peakLr, minLr, warmupSteps: Math.round(0.1 * headSteps) }, objective, params: headGroups }] : []),
      { label: 'MimCo', schedule: { steps: totalSteps, peakLr, minLr, warmupSteps }, objective, params: () => [...student.paramGroups('', { weightDecay: wd, layerDecay }), ...headGroups()] },
    ],
    // a resumed run starts mid-epoch with the samples of the steps not yet taken; each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: ctx.localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize, labels: 'ignored' }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8, clipGradNorm },
    // each rank's loss is its own rows' mean against the gathered teacher CLS: losses and gradients average (objectives/mimco.ts)
    dataParallel: { collective: dp, gradients: 'mean' },
    sinks: { lossKeys: ['loss', 'loss_patch', 'loss_image'], title: 'MimCo loss' },
    checkpointFiles: (at, optimiser) => checkpointFiles({ encoder: student, parts: { 'mimco.': heads.params }, optimiser, state: { step: at, flags: f } }),
  });
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${skips.summary()}`);
  const encoderFile = path.join(runDir, 'checkpoint', 'encoder.safetensors');
  if (!done) return (run.finish(false), runDir);

  // ---- per-block kNN of the teacher (feature cache: it never changes) and of the student
  if (!f['skip-knn'] && dp.rank === 0) {
    const teacherKnn = await perBlockKnn(teacher, { ...knn, label: 'teacher', cacheKey: checkpointKey(f.teacher!) });
    const studentKnn = await perBlockKnn(student, { ...knn, label: 'MimCo student' });
    await writeKnnSummary(runDir, [teacherKnn, studentKnn], {
      title: 'Per-block kNN top-1 of the teacher and the MimCo student',
      extra: { teacher: f.teacher, teacherBlock, checkpoint: f.checkpoint, steps: headSteps + totalSteps, flags: f },
    });
  }
  // the other ranks wait for rank 0's kNN here, without spinning: a rank that exits first waits in
  // MPI_Finalize, which gives up after 60 s and so would stop the job (runtime/collective.ts)
  await dp.barrier();
  run.finish(true);
  console.log(`[mimco] done: ${encoderFile}`);
  return runDir;
}

if (require.main === module) runMain(() => mimco(process.argv.slice(2)).then(() => undefined));
