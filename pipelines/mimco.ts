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
 * Where our facts (REFERENCE.md section 3) are silent we follow MAE's recipe (AdamW (0.9, 0.95),
 * wd 0.05, lr = blr * batch / 256, warm-up then cosine, RandomResizedCrop + flip) and choose:
 * per-sample random masking (MAE's randomMasking), teacher targets from a block with the
 * teacher's final norm, temperature 0.2 for both losses, sin-cos positions.
 * The defaults (student from the bundled MAE, 2 epochs, blr 5e-4, a 0.1-epoch warm-up of the heads
 * alone, mask ratio 0.5, the teacher's last block) were chosen on validation kNN (README, "MimCo");
 * the default run trains for about 13 minutes on 2 CPU cores.
 *
 *   npx ts-node pipelines/mimco.ts                    # refined teacher, student from the bundled MAE
 *   npx ts-node pipelines/mimco.ts --init none        # the same student from scratch
 *   npx ts-node pipelines/mimco.ts --resume runs/mimco     # continues from runs/mimco/checkpoint
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend';
import { localBatchSize, openCollective, pinLocalGpu } from '../runtime/collective';
import { broadcastVariables, checkSameOnAllRanks, filesFingerprint } from '../runtime/data-parallel';
import { num, numRange, parseFlags, runMain } from '../runtime/cli';
import { loadEncoder, withoutPrefix } from '../runtime/checkpoint';
import { checkOutDir } from '../runtime/out-dir';
import { lockRunDir } from '../runtime/run-lock';
import { vitPresetFallback, vitPresetFlag } from '../runtime/vit-flag';
import { VisionTransformer, VIT_PRESETS, VitConfig } from '../models/vit';
import { MimcoHeads } from '../models/mimco';
import { mimcoObjective } from '../objectives/mimco';
import { maeViews } from '../operators/multi-view';
import { epochBatches, SkipLog } from '../datapath/batches';
import { countSamples } from '../sources/count';
import { train } from '../train/driver';
import { checkpointFiles } from '../train/checkpoint-files';
import { DRIVER_FLAGS, driverFlags, scaledLr } from '../train/flags';
import { resumeRun } from '../train/resume';
import { checkpointKey } from '../eval/feature-cache';
import { perBlockKnn, writeKnnSummary } from '../eval/per-block-knn';

const USAGE = 'MimCo: pretrain a ViT student to reconstruct a frozen contrastive teacher from masked input.\n  npx ts-node pipelines/mimco.ts [options]';
const FLAGS = {
  teacher: { description: 'frozen contrastive teacher encoder (safetensors, timm names); default: the bundled refined checkpoint (npm run refine, seed 0)', default: 'checkpoints/refined-vit-micro-p4/encoder.safetensors' },
  'teacher-preset': vitPresetFlag('the teacher'),
  'teacher-block': { description: "teacher block whose tokens (final norm applied) are the targets, 0-based (default: the teacher's last)" },
  train: { description: 'training data: tar shards glob, image folder or CIFAR .bin files', default: 'data/cifar10-mini/train-*.tar.gz' },
  test: { description: 'held-out images for the kNN at the end', default: 'data/cifar10-mini/test-*.tar.gz' },
  out: { description: 'run directory (checkpoint/, metrics.jsonl, loss.png, summary.json)', default: 'runs/mimco' },
  resume: { description: 'continue the run in this directory from its checkpoint' },
  init: { description: "the student's starting weights: an encoder (safetensors, timm names; its config from the file's metadata) or 'none' for a random init of --preset", default: 'checkpoints/mae-vit-micro-p4/encoder.safetensors' },
  preset: { description: `student ViT size (same image size and patch grid as the teacher) from scratch, or of an --init file whose metadata holds no config: ${Object.keys(VIT_PRESETS).join(', ')}`, default: 'vit-micro-p4' },
  act: { description: "MLP activation of a student from scratch: 'gelu' (exact, timm's) or 'gelu_tanh'", default: 'gelu' },
  'proj-hidden': { description: 'hidden width of the two projection heads (0: twice the teacher width); their output width is the teacher width', default: '0' },
  'mask-ratio': { description: 'share of patches masked per sample (random per sample)', default: '0.5' },
  temperature: { description: 'InfoNCE temperature of the patch and image losses', default: '0.2' },
  epochs: { description: 'epochs over the training data (fractions allowed)', default: '2' },
  'warmup-epochs': { description: 'linear lr warm-up epochs', default: '0.2' },
  'head-warmup-epochs': { description: 'epochs of a first stage that trains only the projection heads and the mask token on the frozen student (0: none), so that new random heads do not send noise into a pretrained --init', default: '0.1' },
  'layer-decay': { description: "layer-wise lr decay of the student's blocks (1: none)", default: '1' },
  batch: { description: 'batch size', default: '64' },
  blr: { description: 'base lr; lr = blr * batch / 256', default: '5e-4' },
  'min-lr': { description: 'lr at the end of the cosine', default: '1e-6' },
  'weight-decay': { description: 'AdamW weight decay (not on biases, norms, tokens)', default: '0.05' },
  'crop-scale': { description: 'RandomResizedCrop scale range lo,hi', default: '0.2,1.0' },
  seed: { description: 'seed of init, masking, augmentation and order', default: '0' },
  'knn-train-limit': { description: 'train images for the kNN at the end (0: all)', default: '5000' },
  'knn-test-limit': { description: 'test images for the kNN at the end (0: all)', default: '2000' },
  'knn-val-limit': { description: 'validation images for the kNN at the end (0: as --knn-test-limit)', default: '0' },
  'skip-knn': { description: 'skip the per-block kNN of teacher and student at the end', boolean: true },
  ...DRIVER_FLAGS,
} as const;

/** Flags a resumed run keeps from its checkpoint: they define shapes, data and its order. */
const FIXED_ON_RESUME = ['teacher', 'teacher-preset', 'teacher-block', 'train', 'init', 'preset', 'act', 'proj-hidden', 'mask-ratio', 'head-warmup-epochs', 'batch', 'crop-scale', 'seed'];

/** Runs MimCo pretraining with command-line style arguments; resolves to the run directory. */
export async function mimco(argv: string[]): Promise<string> {
  const flags = parseFlags(USAGE, FLAGS, argv);
  const runDir = flags.resume ?? flags.out!;
  if (!flags.resume) checkOutDir(runDir); // a resumed run's folder is checked by reading its checkpoint
  const resumed = flags.resume ? resumeRun('mimco', runDir, { usage: USAGE, spec: FLAGS, flags, argv }, FIXED_ON_RESUME) : undefined;
  const f = resumed?.flags ?? flags;
  const preset = VIT_PRESETS[f.preset!];
  if (!preset) throw new Error(`--preset: unknown '${f.preset}', expected one of ${Object.keys(VIT_PRESETS).join(', ')}`);
  if (f.act !== 'gelu' && f.act !== 'gelu_tanh') throw new Error(`--act: expected gelu or gelu_tanh, got '${f.act}'`);
  const cfg: VitConfig = { ...preset, act: f.act, posEmbed: 'sincos' };
  const seed = num('seed', f.seed, { integer: true });
  const batch = num('batch', f.batch, { integer: true, min: 2, max: 65536 });
  const epochs = num('epochs', f.epochs, { min: 0 });
  const maskRatio = num('mask-ratio', f['mask-ratio'], { min: 0.01, max: 0.99 });
  const temperature = num('temperature', f.temperature, { min: 1e-4 });
  const cropScale = numRange('crop-scale', f['crop-scale'], { min: 0.01, max: 1 });
  const driver = driverFlags(f);

  // data parallelism: a world of one unless started by an MPI launcher (README, MPI section)
  pinLocalGpu();
  const dp = openCollective();
  const localBatch = localBatchSize(batch, dp.worldSize);

  // ---- teacher: frozen, checked against the student before anything is written
  const backend = await initBackend();
  const teacher = loadEncoder(f.teacher!, vitPresetFallback('teacher-preset', f['teacher-preset']), '--teacher-preset');
  const tc = teacher.cfg;
  // a student from --init is built (and its keys and shapes checked) here, before anything is written
  const init = f.init === 'none' ? undefined : f.init!;
  const student = init ? loadEncoder(init, cfg) : new VisionTransformer(cfg, seed);
  const sc = student.cfg;
  const shape = (c: VitConfig) => `${c.imgSize} px, patch ${c.patchSize}: ${c.imgSize / c.patchSize}x${c.imgSize / c.patchSize} patches, width ${c.embedDim}`;
  if (tc.imgSize !== sc.imgSize || tc.patchSize !== sc.patchSize) {
    throw new Error(
      `student ${init ? `--init ${init}` : `--preset ${f.preset}`} (${shape(sc)}) does not match the teacher ${f.teacher} (${shape(tc)}): ` +
        'MimCo matches student and teacher patch by patch on the same view, so both need the same image size and patch grid',
    );
  }
  const teacherBlock = f['teacher-block'] === undefined ? tc.depth - 1 : num('teacher-block', f['teacher-block'], { integer: true, min: 0 });
  if (teacherBlock >= tc.depth) throw new Error(`--teacher-block: block ${teacherBlock} does not exist in ${f.teacher} (blocks 0..${tc.depth - 1})`);

  // one run at a time in a run directory; every file of the run is rank 0's
  using _runLock = dp.rank === 0 ? lockRunDir(runDir) : undefined;
  const samplesPerEpoch = await countSamples(f.train!);
  const stepsPerEpoch = Math.floor(samplesPerEpoch / batch);
  if (stepsPerEpoch < 1) throw new Error(`${f.train}: ${samplesPerEpoch} samples, fewer than one batch of ${batch}`);
  const totalSteps = Math.max(1, Math.round(epochs * stepsPerEpoch));
  const warmupSteps = Math.round(num('warmup-epochs', f['warmup-epochs'], { min: 0 }) * stepsPerEpoch);
  const peakLr = scaledLr(num('blr', f.blr, { min: 0 }), batch, 'linear');
  const minLr = num('min-lr', f['min-lr'], { min: 0 });
  const headSteps = Math.round(num('head-warmup-epochs', f['head-warmup-epochs'], { min: 0 }) * stepsPerEpoch);
  const layerDecay = num('layer-decay', f['layer-decay'], { min: 0, max: 1 });

  // ---- the student's heads
  const projHidden = num('proj-hidden', f['proj-hidden'], { integer: true, min: 0, max: 65536 }) || 2 * tc.embedDim;
  const heads = new MimcoHeads(sc.embedDim, tc.embedDim, projHidden, sc.act, seed + 1);
  const wd = num('weight-decay', f['weight-decay'], { min: 0 });
  if (resumed) {
    student.params.importTimm(withoutPrefix(resumed.tensors, 'encoder.'), resumed.file);
    heads.params.importTimm(withoutPrefix(resumed.tensors, 'mimco.'), resumed.file);
  }
  if (dp.worldSize > 1) {
    // every rank starts from rank 0's weights, with the same flags, data and teacher (each rank loads its own copy)
    await checkSameOnAllRanks(dp, { flags: f, step: resumed?.step ?? 0, samplesPerEpoch, teacher: filesFingerprint([f.teacher!]) });
    const variables = [student.params, heads.params].flatMap((ps) => ps.names().map((n) => [n, ps.get(n)] as [string, tf.Variable]));
    await broadcastVariables(dp, variables, 'student and head parameters');
    console.log(`[mimco] rank ${dp.rank} of ${dp.worldSize}: ${localBatch} of each global batch of ${batch}`);
  }

  console.log(
    `[mimco] teacher ${f.teacher} (depth ${tc.depth}, width ${tc.embedDim}, targets of block ${teacherBlock}); student ${init ? `from ${init}` : `${f.preset} from scratch`}, ` +
      `mask ratio ${maskRatio}; ${samplesPerEpoch} samples/epoch, ${headSteps ? `${headSteps} steps of the heads alone, then ` : ''}${totalSteps} steps, peak lr ${peakLr.toExponential(2)}, backend ${backend.tfBackend}`,
  );
  const skips = new SkipLog();
  const views = maeViews(sc.imgSize, cropScale);
  const objective = mimcoObjective({ teacher, teacherBlock, student, heads, maskRatio, temperature, seed, collective: dp });
  const headGroups = () => heads.params.groups('mimco:', wd);
  const { done } = await train({
    name: 'mimco',
    script: 'pipelines/mimco.ts',
    runDir,
    stages: [
      ...(headSteps > 0 ? [{ label: 'heads only (student frozen)', schedule: { steps: headSteps, peakLr, minLr, warmupSteps: Math.round(0.1 * headSteps) }, objective, params: headGroups }] : []),
      { label: 'MimCo', schedule: { steps: totalSteps, peakLr, minLr, warmupSteps }, objective, params: () => [...student.paramGroups('', { weightDecay: wd, layerDecay }), ...headGroups()] },
    ],
    resume: resumed,
    // a resumed run starts mid-epoch with the samples of the steps not yet taken; each rank its rows of every global batch
    batches: (fromStep) => epochBatches({ source: f.train!, seed, batchSize: localBatch, stepsPerEpoch, fromStep, views, skips, rank: dp.rank, worldSize: dp.worldSize }),
    optimiser: { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
    ...driver,
    // each rank's loss is its own rows' mean against the gathered teacher CLS: losses and gradients average (objectives/mimco.ts)
    dataParallel: { collective: dp, gradients: 'mean' },
    sinks: { lossKeys: ['loss', 'loss_patch', 'loss_image'], title: 'MimCo loss' },
    checkpointFiles: (at, optimiser) => checkpointFiles({ encoder: student, parts: { 'mimco.': heads.params }, optimiser, state: { step: at, flags: f } }),
  });
  if (skips.total > 0) console.log(`[data] skipped ${skips.total} samples: ${JSON.stringify(Object.fromEntries(skips.counts))}`);
  const encoderFile = path.join(runDir, 'checkpoint', 'encoder.safetensors');
  if (!done) return runDir;

  // ---- per-block kNN of the teacher (feature cache: it never changes) and of the student
  if (!f['skip-knn'] && dp.rank === 0) {
    const knnOpts = {
      train: f.train!,
      test: f.test!,
      trainLimit: num('knn-train-limit', f['knn-train-limit'], { integer: true, min: 0 }) || undefined,
      testLimit: num('knn-test-limit', f['knn-test-limit'], { integer: true, min: 0 }) || undefined,
      valLimit: num('knn-val-limit', f['knn-val-limit'], { integer: true, min: 0 }) || undefined,
    };
    const teacherKnn = await perBlockKnn(teacher, { ...knnOpts, label: 'teacher', cacheKey: checkpointKey(f.teacher!) });
    const studentKnn = await perBlockKnn(student, { ...knnOpts, label: 'MimCo student' });
    await writeKnnSummary(runDir, [teacherKnn, studentKnn], {
      title: 'Per-block kNN top-1 of the teacher and the MimCo student',
      extra: { teacher: f.teacher, teacherBlock, init: init ?? null, steps: headSteps + totalSteps, flags: f },
    });
  }
  // the other ranks wait for rank 0's kNN here, without spinning: a rank that exits first waits in
  // MPI_Finalize, which gives up after 60 s and so would stop the job (runtime/collective.ts)
  await dp.barrier();
  console.log(`[mimco] done: ${encoderFile}`);
  return runDir;
}

if (require.main === module) runMain(() => mimco(process.argv.slice(2)).then(() => undefined));
