/**
 * Worker-thread side of augmentInWorkers: decode + views for one sample per task, with the
 * very same functions the in-process operators use (so the outputs are identical).
 * Messages in: {type: 'config', id, transform} once per recipe, then {type: 'task', ...}.
 * Messages out: {id, views} (buffers transferred), {id, skip: reason} for an undecodable
 * sample, {id, error} for anything else (a bug: the stream fails).
 */
import { parentPort } from 'worker_threads';
import { decodeImage, type FailOn } from './decode';
import { renderViews } from './multi-view';
import { renderEvalView, type EvalConfig, type ViewConfig } from './transforms/view';

export type WorkerTransform =
  | { kind: 'views'; seed: number; epoch: number; views: ViewConfig[] }
  | { kind: 'eval'; eval: EvalConfig };

export interface WorkerTask {
  type: 'task';
  id: number;
  config: number;
  index: number;
  bytes: Uint8Array;
  raw?: { width: number; height: number };
  failOn?: FailOn;
}

export type WorkerReply = { id: number; views: Float32Array[] } | { id: number; skip: string } | { id: number; error: string };

const configs = new Map<number, WorkerTransform>();

async function run(task: WorkerTask): Promise<WorkerReply> {
  const transform = configs.get(task.config);
  if (!transform) return { id: task.id, error: `no transform ${task.config} configured in worker` };
  let image;
  try {
    const bytes = Buffer.from(task.bytes.buffer, task.bytes.byteOffset, task.bytes.byteLength);
    image = await decodeImage({ bytes, raw: task.raw }, task.failOn);
  } catch (err) {
    return { id: task.id, skip: (err as Error).message };
  }
  const views =
    transform.kind === 'views' ? await renderViews(image, task.index, transform) : [await renderEvalView(image, transform.eval)];
  return { id: task.id, views };
}

parentPort?.on('message', (m: WorkerTask | { type: 'config'; id: number; transform: WorkerTransform }) => {
  if (m.type === 'config') {
    configs.set(m.id, m.transform);
    return;
  }
  run(m).then(
    (reply) => parentPort!.postMessage(reply, 'views' in reply ? reply.views.map((v) => v.buffer as ArrayBuffer) : []),
    (err) => parentPort!.postMessage({ id: m.id, error: (err as Error).stack ?? String(err) }),
  );
});
