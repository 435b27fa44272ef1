/**
 * A bounded pool for tfjs-webgpu's freed buffers. Its BufferManager keeps every buffer a
 * disposed tensor held, keyed by exact size and usage, for reuse, and never gives any back: a
 * ViT-B/16 batch 64 train step on an H200 held 61 GB (PyTorch: 11 GB), most of it buffers of
 * sizes that recur rarely. Here a released buffer is kept only while the free pool stays under
 * a cap, and destroyed otherwise (WebGPU lets a buffer be destroyed once the work using it has
 * been submitted: tfjs releases buffers only after submitting the queue, and Dawn frees the
 * memory when that work completes). The peaks are counted for the benchmarks' memory line.
 */
import * as tf from '@tensorflow/tfjs';

export interface BufferPoolStats {
  /** Freed bytes kept for reuse at most. */
  capBytes: number;
  /** Bytes of live tensors' buffers (and staging/uniforms) now, and at their peak. */
  usedBytes: number;
  peakUsedBytes: number;
  /** Bytes of every buffer tfjs holds (live and pooled) now, and at their peak: the GPU memory it takes. */
  allocatedBytes: number;
  peakAllocatedBytes: number;
  /** Released buffers destroyed because the pool was full. */
  destroyed: number;
}

/** The parts of tfjs-webgpu's BufferManager used here. */
interface BufferManager {
  numBytesUsed: number;
  numBytesAllocated: number;
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, reuse?: boolean): void;
}

/**
 * Caps the free pool of the webgpu backend `backend` at `capMiB` MiB (0: no reuse at all) and
 * counts peaks. Returns a reader of the statistics.
 */
export function boundBufferPool(backend: tf.KernelBackend, capMiB: number): () => BufferPoolStats {
  const manager = (backend as unknown as { bufferManager: BufferManager }).bufferManager;
  const capBytes = Math.round(capMiB * 2 ** 20);
  const stats = { capBytes, peakUsedBytes: 0, peakAllocatedBytes: 0, destroyed: 0 };
  const acquire = manager.acquireBuffer.bind(manager);
  const release = manager.releaseBuffer.bind(manager);
  manager.acquireBuffer = (size, usage, mappedAtCreation, reuse) => {
    const buffer = acquire(size, usage, mappedAtCreation, reuse);
    stats.peakUsedBytes = Math.max(stats.peakUsedBytes, manager.numBytesUsed);
    stats.peakAllocatedBytes = Math.max(stats.peakAllocatedBytes, manager.numBytesAllocated);
    return buffer;
  };
  manager.releaseBuffer = (buffer, reuse = true) => {
    // the pooled bytes once this one joins them
    const pooled = manager.numBytesAllocated - manager.numBytesUsed + buffer.size;
    const keep = reuse && pooled <= capBytes;
    if (reuse && !keep) stats.destroyed++;
    release(buffer, keep);
  };
  return () => ({ ...stats, usedBytes: manager.numBytesUsed, allocatedBytes: manager.numBytesAllocated });
}
