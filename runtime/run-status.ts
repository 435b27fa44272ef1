/**
 * status.json: what a run says about itself for the dashboard (view/server.ts): its pipeline,
 * state, how it was started and on what, and how it ended. The pipeline writes it at start
 * (state 'running'), and once more at the end ('finished', 'stopped' with the command that
 * resumes it, or 'failed' with the error's message). Each write merges into the file and
 * replaces it atomically (lib/atomic-file.ts), so a reader sees the old status or the new one.
 * A run killed outright leaves 'running' behind; the dashboard then sees its lock released
 * (runtime/run-lock.ts) and shows it as stopped.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from '../lib/atomic-file';

export const STATUS_FILE = 'status.json';

export type RunState = 'running' | 'finished' | 'stopped' | 'failed';

export interface RunStatus {
  /** The pipeline's name ('refine', 'pretrain-mae', 'mimco', 'nnclr', 'finetune'). */
  pipeline: string;
  state: RunState;
  /** The command line that started this invocation. */
  command: string;
  /** When this invocation started (ISO 8601). */
  started: string;
  /** When this file was last written (ISO 8601). */
  updated: string;
  pid: number;
  host: string;
  /** tfjs backend ('wasm', 'webgpu', 'tensorflow'). */
  backend?: string;
  /** The WebGPU adapter, as the log names it. */
  adapter?: string;
  /** Data-parallel ranks (1: a single process). */
  ranks?: number;
  /** Steps of the whole schedule, for the progress and ETA. */
  totalSteps?: number;
  /** The resolved flags of the run. */
  flags?: Record<string, unknown>;
  /** The command that continues the run ('stopped', and 'failed' where a checkpoint exists). */
  resume?: string;
  /** Why the run failed ('failed'). */
  message?: string;
}

/** What a pipeline passes: the state and any fields to set; the rest is kept from the file or filled in. */
export type RunStatusUpdate = Partial<Omit<RunStatus, 'updated' | 'pid' | 'host'>> & { state: RunState };

/**
 * Merges `update` into `runDir`/status.json and writes it atomically; returns what was written.
 * A 'running' update starts a new invocation: `started`, `command`, `pid` and `host` are this
 * process's, and the previous invocation's end (`message`, `resume`) is dropped.
 */
export function writeRunStatus(runDir: string, update: RunStatusUpdate): RunStatus {
  const previous = readRunStatus(runDir);
  const starting = update.state === 'running';
  const base: Partial<RunStatus> = starting ? { ...previous, message: undefined, resume: undefined } : { ...previous };
  const status: RunStatus = {
    pipeline: 'unknown',
    ...base,
    ...(starting || !previous ? { started: new Date().toISOString(), command: process.argv.slice(1).join(' '), pid: process.pid, host: os.hostname() } : {}),
    ...update,
    updated: new Date().toISOString(),
  } as RunStatus;
  if (!status.command) status.command = process.argv.slice(1).join(' ');
  const text = JSON.stringify(status, null, 1);
  writeFileAtomic(path.join(runDir, STATUS_FILE), text + '\n');
  return JSON.parse(text) as RunStatus;
}

/** The run's status.json, or undefined where it is missing or not a status (half written by another tool, edited by hand). */
export function readRunStatus(runDir: string): RunStatus | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(path.join(runDir, STATUS_FILE), 'utf8'));
  } catch {
    return undefined;
  }
  const s = parsed as Partial<RunStatus> | null;
  if (!s || typeof s !== 'object' || typeof s.state !== 'string' || !['running', 'finished', 'stopped', 'failed'].includes(s.state)) return undefined;
  return s as RunStatus;
}
