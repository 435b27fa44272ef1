/**
 * Splits a fused kernel's work between the calling thread and helper threads that share the
 * tfjs heap (the threaded wasm build's memory is a SharedArrayBuffer). While a fused kernel
 * runs, tfjs's own pool threads sit idle, so the helpers use cores that would otherwise wait.
 * Each helper instantiates the same kernel modules on the same memory and waits on an Atomics
 * mailbox; a job is an index into the modules' exported functions and its numeric arguments.
 */
import { Worker } from 'worker_threads';

/** Mailbox: Int32 slots, then Float64 arguments. */
const SEQ = 0; // job number, bumped by the caller
const DONE = 1; // the last job number the helper finished
const FAILED = 2; // 1 when that job threw (the helper logs why)
const FUNCTION = 3; // index into the flat list of exported functions
const READY = 4; // 1 once the helper has instantiated the modules, -1 if it could not
/** How long the first job waits for a helper to start before calling it broken. */
const START_TIMEOUT_MS = 30_000;
const ARGS_AT = 32; // byte offset of the Float64 arguments (after 8 Int32 slots)
const ARGS_MAX = 16;

// Plain JS, so a helper starts without ts-node; Atomics.wait blocks it while idle.
const HELPER = `
const { workerData } = require('worker_threads');
const { memory, modules, mailbox } = workerData;
const box = new Int32Array(mailbox);
let fns;
try {
  fns = modules.flatMap((m) => Object.values(new WebAssembly.Instance(m, { env: { memory } }).exports).filter((f) => typeof f === 'function'));
} catch (e) {
  console.error('[kernel-threads] helper could not start: ' + ((e && e.stack) || e));
  Atomics.store(box, ${READY}, -1);
  Atomics.notify(box, ${READY});
  process.exit(1);
}
Atomics.store(box, ${READY}, 1);
Atomics.notify(box, ${READY});
const args = new Float64Array(mailbox, ${ARGS_AT}, ${ARGS_MAX});
let seen = 0;
for (;;) {
  Atomics.wait(box, ${SEQ}, seen);
  seen = Atomics.load(box, ${SEQ});
  let failed = 0;
  try {
    const f = fns[box[${FUNCTION}]];
    f(...args.subarray(0, f.length));
  } catch (e) {
    console.error('[kernel-threads] helper failed: ' + ((e && e.stack) || e));
    failed = 1;
  }
  Atomics.store(box, ${FAILED}, failed);
  Atomics.store(box, ${DONE}, seen);
  Atomics.notify(box, ${DONE});
}
`;

interface Helper {
  box: Int32Array;
  args: Float64Array;
  seq: number;
}

export class KernelThreads {
  private readonly helpers: Helper[];

  /**
   * `helpers` threads besides the caller, each instantiating `modules` (compiled) on the
   * shared `memory`; functions are numbered in the order of the modules' exports.
   */
  constructor(memory: object, modules: object[], helpers: number) {
    this.helpers = Array.from({ length: helpers }, () => {
      const mailbox = new SharedArrayBuffer(ARGS_AT + 8 * ARGS_MAX);
      new Worker(HELPER, { eval: true, workerData: { memory, modules, mailbox } }).unref(); // idle helpers must not keep node alive
      return { box: new Int32Array(mailbox), args: new Float64Array(mailbox, ARGS_AT, ARGS_MAX), seq: 0 };
    });
  }

  get threads(): number {
    return this.helpers.length + 1;
  }

  /**
   * Splits [0, total) into one share per thread: share 0 runs here as `local(start, end)`,
   * the others on the helpers as function `fn` with `args(start, end)`. Returns when all are done.
   */
  run(total: number, fn: number, args: (start: number, end: number) => number[], local: (start: number, end: number) => void): void {
    const shares = Math.max(1, Math.min(this.threads, total));
    const bound = (i: number) => Math.round((total * i) / shares);
    for (let i = 1; i < shares; i++) {
      const h = this.helpers[i - 1];
      if (h.box[READY] !== 1) awaitStart(h.box);
      h.box[FUNCTION] = fn;
      h.args.set(args(bound(i), bound(i + 1)));
      Atomics.store(h.box, SEQ, ++h.seq);
      Atomics.notify(h.box, SEQ);
    }
    local(bound(0), bound(1));
    for (let i = 1; i < shares; i++) {
      const h = this.helpers[i - 1];
      for (let done = Atomics.load(h.box, DONE); done !== h.seq; done = Atomics.load(h.box, DONE)) Atomics.wait(h.box, DONE, done);
      if (h.box[FAILED]) throw new Error('a fused kernel failed on a helper thread (its message is above)');
    }
  }
}

/** Blocks until a helper reports that it started; a helper that failed or never ran is an error, not a hang. */
function awaitStart(box: Int32Array): void {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Atomics.load(box, READY) === 0 && Date.now() < deadline) Atomics.wait(box, READY, 0, deadline - Date.now());
  const state = Atomics.load(box, READY);
  if (state === -1) throw new Error('a fused-kernel helper thread could not start (its message is above); FUSED_KERNELS=0 runs without them');
  if (state !== 1) throw new Error(`a fused-kernel helper thread did not start within ${START_TIMEOUT_MS / 1000} s; FUSED_KERNELS=0 runs without them`);
}
