/**
 * Graceful stop of a training run. The first SIGINT (Ctrl-C) or SIGTERM (kill, Slurm,
 * Kubernetes) only sets `requested`: the loop finishes its current step, writes a checkpoint
 * and ends normally (exit 0) with the command that resumes it. A second signal exits at once
 * (status 128 + signal number, as a shell reports it): checkpoints are swapped in whole
 * (runtime/checkpoint.ts), so that never leaves a damaged one, only an older one.
 */
import * as os from 'node:os';

export interface StopRequests {
  /** True once a first SIGINT/SIGTERM has been handled. */
  readonly requested: boolean;
  /**
   * Lets the event loop handle signals that arrived meanwhile, then returns `requested`. Call it
   * after each step: a loop fed by batches already prepared never leaves its microtasks, and
   * Node delivers signals only when the loop polls for I/O.
   */
  check(): Promise<boolean>;
  /** Which signal asked, for the message. */
  readonly signal: NodeJS.Signals | undefined;
  /** Restores the default handling (signals then end the process at once). */
  dispose(): void;
  [Symbol.dispose](): void;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

export function stopRequests(log: (line: string) => void = (line) => console.error(line)): StopRequests {
  let signal: NodeJS.Signals | undefined;
  const onSignal = (received: NodeJS.Signals) => {
    if (signal === undefined) {
      signal = received;
      log(`\n[stop] ${received}: finishing the current step, then writing a checkpoint (${received} again stops at once)`);
      return;
    }
    log(`\n[stop] second ${received}: stopping now; the last complete checkpoint stays`);
    process.exit(128 + os.constants.signals[received]);
  };
  for (const s of SIGNALS) process.on(s, onSignal);
  const dispose = () => {
    for (const s of SIGNALS) process.off(s, onSignal);
  };
  return {
    get requested() {
      return signal !== undefined;
    },
    get signal() {
      return signal;
    },
    check: () => new Promise((resolve) => setImmediate(() => resolve(signal !== undefined))),
    dispose,
    [Symbol.dispose]: dispose,
  };
}
