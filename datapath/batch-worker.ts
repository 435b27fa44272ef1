/**
 * Worker-thread side of batchStream: runs the in-process data path and posts each batch
 * (buffers transferred) once the consumer has granted a credit for it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { inProcessBatchStream, WorkerStreamOptions } from './batches';

const port = parentPort!;
const stream = inProcessBatchStream(workerData as WorkerStreamOptions, (origin, reason) => port.postMessage({ type: 'skip', origin, reason }));
let credits = 0;
let pumping = false;

async function pump(): Promise<void> {
  if (pumping) return;
  pumping = true;
  try {
    while (credits > 0) {
      const r = await stream.next();
      if (r.done) {
        port.postMessage({ type: 'done' });
        port.close();
        return;
      }
      credits--;
      const b = r.value;
      port.postMessage({ type: 'batch', batch: b }, [b.indices.buffer, b.labels.buffer, ...b.views.map((v) => v.buffer)] as ArrayBuffer[]);
    }
  } catch (err) {
    port.postMessage({ type: 'error', message: (err as Error).message });
  } finally {
    pumping = false;
  }
}

port.on('message', (m: { type: 'credit'; n: number }) => {
  credits += m.n;
  void pump();
});
