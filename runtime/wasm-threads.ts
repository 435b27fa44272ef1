/**
 * Runs @tensorflow/tfjs-backend-wasm 4.22.0 on several threads in Node.
 *
 * The package ships a threaded+SIMD build, but its Node bundle never uses it (see
 * docs/cpu-performance.md, "Threads", for the four obstacles). Its init() is private, so instead
 * of patching node_modules this loader builds the threaded module itself from files the package
 * publishes, wraps it in the package's exported BackendWasm, and registers that instance as
 * the 'wasm' backend. How each obstacle is handled here:
 *  1. WASM_HAS_MULTITHREAD_SUPPORT: the package's init() is bypassed, so the flag does not
 *     gate anything; it is set to true afterwards only so that it tells the truth.
 *  2. Blob URLs: the pthread worker script is written to a real file (its escaped newlines
 *     kept) and returned from locateFile; the main script needs no generated copy, because
 *     wasm-out/tfjs-backend-wasm-threaded-simd.js is the same factory as a real file.
 *  3. Bundler globals (require$$0.., commonjsGlobal): they exist only in the bundle's copy of
 *     the factory. The wasm-out file is the plain emscripten output and calls require() itself.
 *  4. emscripten_num_logical_cores: overridden in the wasm imports (instantiateWasm hook) to
 *     report 2x os.cpus().length, as the C++ side halves it when sizing the pool.
 * Any failure falls back to the package's own single-threaded SIMD backend, with one log line.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BackendWasm, getThreadsCount, setThreadsCount, version_wasm } from '@tensorflow/tfjs-backend-wasm';

const PKG = '@tensorflow/tfjs-backend-wasm';
const BUILD = 'tfjs-backend-wasm-threaded-simd';
/** Same as the package's registration, so backend priorities do not change. */
const WASM_PRIORITY = 2;
/** A worker that never reports 'loaded' would otherwise hang init forever. */
const INIT_TIMEOUT_MS = 30_000;

/** The parts of the emscripten module this loader touches. */
interface ThreadedModule {
  cwrap: (name: string, ret: string | null, args: string[]) => unknown;
  PThread: { unusedWorkers: Worker[]; runningWorkers: Worker[] };
  tfjs?: unknown;
}
type Worker = import('worker_threads').Worker & { onerror?: (e: unknown) => void };
// Neither lib ES2022 (no DOM) nor @types/node 20 declares WebAssembly; this is all we use.
declare const WebAssembly: { instantiate(bytes: Uint8Array, imports: object): Promise<{ instance: object; module: object }> };

let started: Promise<WasmThreads> | undefined;

export interface WasmThreads {
  /** Threads sharing the wasm memory (1 after a fallback): what the fused kernels may use. */
  threads: number;
  /** Threads of tfjs-wasm's own kernels (XNNPACK's pool). */
  poolThreads: number;
}

/**
 * Call after require('@tensorflow/tfjs-backend-wasm') and before tf.setBackend('wasm').
 * `poolThreads` caps tfjs-wasm's own thread pool (default: all threads).
 */
export function enableWasmThreads(opts: { poolThreads?: number } = {}): Promise<WasmThreads> {
  started ??= start(opts.poolThreads);
  return started;
}

async function start(poolCap: number | undefined): Promise<WasmThreads> {
  const single = { threads: 1, poolThreads: 1 };
  const requested = requestedThreads();
  const wanted = Math.min(requested, os.cpus().length);
  if (wanted < requested) console.log(`[wasm-threads] asked for ${requested} threads, using ${wanted} (at most one per core)`);
  if (wanted <= 1) return single; // the package's default backend is already single-threaded
  if ('wasm' in tf.engine().registry) {
    console.log('[wasm-threads] 1 thread: the wasm backend was initialised before enableWasmThreads()');
    return single;
  }
  let module: ThreadedModule | undefined;
  try {
    module = await loadThreadedModule();
    setThreadsCount(Math.min(wanted, poolCap ?? wanted)); // read by the BackendWasm constructor, which creates the pool
    const backend = new BackendWasm(module as never);
    // Pool threads are ref()'d by emscripten while they run, and XNNPACK's never return:
    // without this, node would not exit after the pipeline ends.
    for (const w of module.PThread.runningWorkers) w.unref();
    // emscripten pre-spawns 8 workers (PTHREAD_POOL_SIZE, fixed in the build) and the pool
    // took threads-1 of them; each idle one holds a V8 isolate and wasm instance (~40 MB).
    // End them: emscripten spawns a fresh worker should a pthread ever be created later.
    for (const w of module.PThread.unusedWorkers.splice(0)) void w.terminate();
    tf.removeBackend('wasm');
    tf.registerBackend('wasm', () => backend, WASM_PRIORITY);
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    return { threads: wanted, poolThreads: getThreadsCount() };
  } catch (e) {
    // Running pool workers are ref()'d; end them so a failed start cannot keep node alive.
    if (module) for (const w of [...module.PThread.unusedWorkers, ...module.PThread.runningWorkers]) void w.terminate();
    console.log(`[wasm-threads] 1 thread: threaded wasm failed to start (${e instanceof Error ? e.message : String(e)})`);
    return single;
  }
}

/** WASM_THREADS=n if set, else one thread per core. */
function requestedThreads(): number {
  const cores = os.cpus().length;
  const env = process.env.WASM_THREADS;
  if (env === undefined || env === '') return cores;
  const n = Number(env);
  if (Number.isInteger(n) && n >= 1) return n;
  console.log(`[wasm-threads] ignoring WASM_THREADS=${env} (expected a positive integer), using ${cores}`);
  return cores;
}

/** Instantiates the threaded+SIMD build with its worker pool, like the package's init() would. */
async function loadThreadedModule(): Promise<ThreadedModule> {
  const factoryPath = require.resolve(`${PKG}/wasm-out/${BUILD}.js`);
  const wasmPath = require.resolve(`${PKG}/dist/${BUILD}.wasm`);
  const workerPath = writeWorkerScript();
  const factory: (config: object) => Promise<ThreadedModule> = require(factoryPath);

  // Rejected by what `ready` never reports: a failed instantiation, a worker that cannot
  // start, silence. Any of them means falling back to one thread.
  let fail: (e: unknown) => void = () => {};
  const failure = new Promise<never>((_, reject) => (fail = reject));
  let starting = true;
  const config = {
    // Each worker importScripts() this file (fs.readFileSync + eval), so it must be a path.
    mainScriptUrlOrBlob: factoryPath,
    locateFile: (file: string) => (file.endsWith('.worker.js') ? workerPath : file.endsWith('.wasm') ? wasmPath : file),
    // Only the main thread goes through here (workers get the compiled module by message).
    instantiateWasm(imports: { env: Record<string, unknown> }, receive: (instance: object, module: object) => void) {
      if (typeof imports.env.emscripten_num_logical_cores !== 'function') {
        fail(new Error('wasm import emscripten_num_logical_cores not found')); // (throwing would log twice)
        return {};
      }
      // The pool gets min(requested, logical_cores / 2): report two per core (obstacle 4).
      imports.env.emscripten_num_logical_cores = () => 2 * os.cpus().length;
      WebAssembly.instantiate(fs.readFileSync(wasmPath), imports).then(({ instance, module }) => {
        receive(instance, module); // sends the module to the workers, sets their onerror
        // emscripten's onerror rethrows, an uncaught exception that would kill the process;
        // while starting, the 'error' listener below turns it into a fallback instead.
        for (const w of workers()) w.onerror = (e) => { if (!starting) throw e; };
      }, fail);
      return {};
    },
  };
  // emscripten fills config in place: it is the module under construction.
  const module = config as unknown as ThreadedModule;
  const workers = () => (module.PThread ? [...module.PThread.unusedWorkers, ...module.PThread.runningWorkers] : []);
  const timer = setTimeout(() => fail(new Error(`no answer from workers in ${INIT_TIMEOUT_MS / 1000} s`)), INIT_TIMEOUT_MS);
  try {
    const ready = factory(config);
    // The factory spawned its workers synchronously; they can report errors from the next tick.
    for (const w of workers()) w.on('error', fail);
    await Promise.race([ready, failure]);
  } catch (e) {
    for (const w of workers()) void w.terminate(); // a worker still loading would keep node alive
    throw e;
  } finally {
    starting = false;
    clearTimeout(timer);
  }
  // The same wrappers the package's init() attaches; BackendWasm and the kernels call them.
  module.tfjs = {
    init: module.cwrap('init', null, []),
    initWithThreadsCount: module.cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: module.cwrap('get_threads_count', 'number', []),
    registerTensor: module.cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: module.cwrap('dispose_data', null, ['number']),
    dispose: module.cwrap('dispose', null, []),
  };
  return module;
}

/**
 * The pthread worker script ships only as a JS string (wasm-out/*.worker.js exports it) and
 * Node's worker_threads need a file. Written to node_modules/.cache (owned by the project, so
 * no one else can plant code there), or a private temp dir if that is read-only; atomically
 * (write + rename), as parallel processes may start at once.
 */
function writeWorkerScript(): string {
  const { wasmWorkerContents } = require(`${PKG}/wasm-out/${BUILD}.worker.js`) as { wasmWorkerContents: string };
  // The string's "\n" escapes became real newlines inside JS string literals; put them back,
  // as the package does before making its Blob. '.cjs': CommonJS even under "type": "module".
  const text = wasmWorkerContents.replace(/\n/g, '\\n');
  const name = `${BUILD}-${version_wasm}.worker.cjs`;
  const pkgDir = path.dirname(require.resolve(`${PKG}/package.json`));
  try {
    return writeAtomically(path.resolve(pkgDir, '..', '..', '.cache', 'wasm-threads'), name, text);
  } catch {
    return writeAtomically(fs.mkdtempSync(path.join(os.tmpdir(), 'wasm-threads-')), name, text);
  }
}

function writeAtomically(dir: string, name: string, text: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
  return file;
}
