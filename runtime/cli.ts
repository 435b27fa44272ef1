/**
 * Command-line flags for the pipelines: node's parseArgs (strict, so an unknown flag is an
 * error) plus descriptions for --help, config files (--config FILE, YAML or JSON, keys are flag
 * names; the command line wins), and typed, validated reads of numbers and lists. A flag given
 * twice, a renamed flag and a number in any notation but decimal are refused by name; a number
 * read names its flag and the accepted range when it is refused; a size that allocates memory
 * is also held to what the machine has, before anything is allocated.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import YAML from 'yaml';

export interface FlagSpec {
  description: string;
  default?: string;
  boolean?: boolean;
}

export type Flags<S extends Record<string, FlagSpec>> = {
  [K in keyof S]: S[K]['boolean'] extends true ? boolean : string | undefined;
};

/** Old flag names and what replaced them ("--stage2-lr"), so an old command gets a sentence instead of "unknown option". */
export type RenamedFlags = Readonly<Record<string, string>>;

export interface ReadFlags<S extends Record<string, FlagSpec>> {
  flags: Flags<S>;
  /** The flags given on the command line or in the --config file (not filled in from their defaults). */
  explicit: Set<string>;
}

/** Parses argv; prints usage and exits on --help, throws a clear error on a bad flag. */
export function parseFlags<S extends Record<string, FlagSpec>>(usage: string, spec: S, argv = process.argv.slice(2)): Flags<S> {
  return readFlags(usage, spec, argv).flags;
}

/**
 * Parses argv over `spec`, with the --config file's values (when the spec has --config) under
 * the command line's: defaults < config file < command line. Prints usage and exits on --help.
 */
export function readFlags<S extends Record<string, FlagSpec>>(usage: string, spec: S, argv = process.argv.slice(2), renamed: RenamedFlags = {}): ReadFlags<S> {
  checkNames(argv, spec, renamed);
  const { values, tokens } = parse(usage, spec, argv);
  if (values.help) {
    console.log(helpText(usage, spec));
    process.exit(0);
  }
  const explicit = new Set(tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
  // every flag of the spec is a key, given or not, so a resumed run's saved value reaches it
  const flags: Record<string, string | boolean | undefined> = Object.fromEntries(Object.keys(spec).map((k) => [k, values[k]]));
  if (typeof values.config === 'string') {
    for (const [name, value] of Object.entries(readConfigFile(values.config, spec, renamed))) {
      if (explicit.has(name)) continue; // the command line wins
      flags[name] = value;
      explicit.add(name);
    }
  }
  return { flags: flags as Flags<S>, explicit };
}

/** A flag given twice, or by an old name, is refused before parsing (parseArgs keeps the last silently). */
function checkNames(argv: string[], spec: Record<string, FlagSpec>, renamed: RenamedFlags): void {
  const seen = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--') || argv[i] === '--') continue;
    const [name, inline] = argv[i].slice(2).split(/=(.*)/s);
    if (name in renamed && !(name in spec)) throw new Error(`--${name} was renamed: use ${renamed[name]} (docs/flags.md)`);
    const value = inline ?? (spec[name] && !spec[name].boolean ? argv[i + 1] : '');
    if (seen.has(name)) throw new Error(`--${name} is given twice (${seen.get(name) || 'on'} and ${value || 'on'}): give it once`);
    seen.set(name, value ?? '');
  }
}

/** A config file's flags as command-line strings; unknown keys and wrong types are refused naming the file and key. */
export function readConfigFile(file: string, spec: Record<string, FlagSpec>, renamed: RenamedFlags = {}): Record<string, string | boolean> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`--config ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text, { uniqueKeys: true });
  } catch (err) {
    throw new Error(`--config ${file}: not valid YAML or JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`--config ${file}: expected a mapping of flag names to values, got ${Array.isArray(doc) ? 'a list' : typeof doc}`);
  const out: Record<string, string | boolean> = {};
  for (const [rawKey, value] of Object.entries(doc as Record<string, unknown>)) {
    const key = rawKey.replace(/^--/, '');
    if (key in renamed && !(key in spec)) throw new Error(`--config ${file}: key '${rawKey}' was renamed: use ${renamed[key].replace(/^--/, '')}`);
    if (!(key in spec) || key === 'config') throw new Error(`--config ${file}: '${rawKey}' is not a flag of this pipeline (--help lists them)`);
    if (spec[key].boolean) {
      if (typeof value !== 'boolean') throw new Error(`--config ${file}: '${key}' is an on/off flag: expected true or false, got ${JSON.stringify(value)}`);
      out[key] = value;
    } else if (typeof value === 'string' || typeof value === 'number') {
      out[key] = String(value);
    } else if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) {
      out[key] = value.join(',');
    } else {
      throw new Error(`--config ${file}: '${key}' expects a value like the flag's (a string, number or list), got ${JSON.stringify(value)}`);
    }
  }
  return out;
}

/** The resolved flags as a config file that repeats the run (`--config RUN/config.yaml`); every value a string, so it reads back exactly. */
export function configYaml(flags: Record<string, string | boolean | undefined>, header: string[], omit: readonly string[] = []): string {
  const doc: Record<string, string | boolean> = {};
  for (const [k, v] of Object.entries(flags)) if (v !== undefined && !omit.includes(k)) doc[k] = v;
  const body = YAML.stringify(doc, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN' });
  return `${header.map((line) => `# ${line}`).join('\n')}\n${body}`;
}

/**
 * `--batch -4` -> `--batch=-4`: parseArgs takes a token starting with '-' after a value flag
 * for a forgotten value ("argument is ambiguous"); a negative number there is the value, so it
 * reaches the flag's own range check.
 */
function attachNegativeValues(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') && !argv[i].includes('=') ? argv[i].slice(2) : undefined;
    if (name !== undefined && options[name]?.type === 'string' && i + 1 < argv.length && /^-(\d|\.\d|Infinity\b)/.test(argv[i + 1])) {
      out.push(`${argv[i]}=${argv[++i]}`);
    } else out.push(argv[i]);
  }
  return out;
}

/** The flags given on the command line (not filled in from their defaults). */
export function explicitFlags(usage: string, spec: Record<string, FlagSpec>, argv = process.argv.slice(2)): Set<string> {
  const { tokens } = parse(usage, spec, argv);
  return new Set(tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
}

function parse(usage: string, spec: Record<string, FlagSpec>, argv: string[]) {
  const options: Record<string, { type: 'string' | 'boolean'; default?: string | boolean }> = { help: { type: 'boolean' } };
  for (const [name, s] of Object.entries(spec)) {
    options[name] = s.boolean ? { type: 'boolean', default: false } : { type: 'string', ...(s.default !== undefined ? { default: s.default } : {}) };
  }
  try {
    return parseArgs({ args: attachNegativeValues(argv, options), options, strict: true, allowPositionals: false, tokens: true });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n\n${helpText(usage, spec)}`);
  }
}

type FlagValues = Record<string, string | boolean | undefined>;

/** Flags of this invocation only, never taken from a checkpoint. */
const PER_INVOCATION = new Set(['resume', 'out', 'max-steps', 'config', 'overwrite', 'allow-data-change', 'view']);

/**
 * The flags of a resumed run. Those in `fixed` (what defines shapes and the data order: model,
 * data, batch, seed, augmentation) come from the checkpoint, and changing one explicitly is an
 * error naming the run; the others (lr, schedule length, logging, checkpoint interval) come
 * from the command line when given there, else from the checkpoint. `lines` says which came
 * from where, for the log.
 */
export function mergeResumeFlags<F extends FlagValues>(
  saved: FlagValues,
  given: F,
  explicit: ReadonlySet<string>,
  fixed: readonly string[],
  runDir: string,
): { flags: F; lines: string[] } {
  const flags: FlagValues = { ...given };
  const fromCommandLine: string[] = [];
  const fromCheckpoint: string[] = [];
  for (const key of Object.keys(given)) {
    if (PER_INVOCATION.has(key) || !(key in saved)) continue;
    const shown = `--${key} ${saved[key]}`;
    if (fixed.includes(key)) {
      if (explicit.has(key) && given[key] !== saved[key]) {
        throw new Error(`--${key} ${given[key]}: the run in ${runDir} was started with ${shown}, which fixes shapes or data order; a resumed run cannot change it (start a new run instead)`);
      }
      flags[key] = saved[key];
    } else if (explicit.has(key) && given[key] !== saved[key]) {
      fromCommandLine.push(`--${key} ${given[key]} (was ${saved[key]})`);
      continue;
    } else {
      flags[key] = saved[key];
    }
    if (saved[key] !== undefined && saved[key] !== false) fromCheckpoint.push(shown);
  }
  const lines = [`flags from the command line: ${fromCommandLine.join(', ') || 'none'}`, `flags from the checkpoint: ${fromCheckpoint.join(' ')}`];
  return { flags: flags as F, lines };
}

/** The command that continues a run, as the user can paste it. */
export function resumeCommand(script: string, runDir: string): string {
  const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return `npx ts-node ${quote(script)} --resume ${quote(runDir)}`;
}

export function helpText(usage: string, spec: Record<string, FlagSpec>): string {
  // one line a flag: --name (V where it takes a value), what it does, [its default]
  const rows = Object.entries(spec).map(([name, s]) => {
    const flag = s.boolean ? `--${name}` : `--${name} V`;
    const def = s.default !== undefined && s.default !== '' ? ` [${s.default}]` : '';
    return `  ${flag.padEnd(23)} ${s.description}${def}`;
  });
  return `${usage}\n\nOptions (V: the flag takes a value; [default]):\n${rows.join('\n')}\n  ${'--help'.padEnd(23)} show this help`;
}

export interface NumOptions {
  min?: number;
  /** Exclusive lower bound: "a number > 0" (a length of 0 steps is not a schedule). */
  above?: number;
  max?: number;
  integer?: boolean;
  /**
   * Bytes one unit of this number allocates (a queue entry, a hidden unit, ...): the value is
   * then also held to half of this machine's memory, so an absurd size is refused by name
   * instead of failing later inside an allocation ("Invalid typed array length").
   */
  bytesEach?: number;
}

/** Bytes a single allocation-driven flag may claim: half the memory (the cgroup's limit where lower). */
export function memoryBudget(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  const total = limit > 0 && limit < os.totalmem() ? limit : os.totalmem();
  return total / 2;
}

/** Decimal notation only: Number() also takes '0x4', '0b1', ' 4' and '', which a user never means as a count. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** A number flag, checked finite and within [min, max] (and the memory budget with bytesEach). */
export function num(name: string, value: string | undefined, opts: NumOptions = {}): number {
  // an integer beyond 2^53 no longer names one value (1e300 is "an integer" to JavaScript)
  let max = opts.max ?? (opts.integer ? Number.MAX_SAFE_INTEGER : undefined);
  let why = '';
  if (opts.bytesEach !== undefined && opts.bytesEach > 0) {
    const fits = Math.floor(memoryBudget() / opts.bytesEach);
    if (max === undefined || fits < max) {
      max = fits;
      why = ` (each takes ${formatBytes(opts.bytesEach)}; at most half of this machine's ${formatBytes(2 * memoryBudget())} memory)`;
    }
  }
  const n = Number(value);
  const bad =
    value === undefined ||
    !DECIMAL.test(value) ||
    !Number.isFinite(n) ||
    (opts.integer && !Number.isInteger(n)) ||
    (opts.min !== undefined && n < opts.min) ||
    (opts.above !== undefined && n <= opts.above) ||
    (opts.integer && opts.min === undefined && n < -Number.MAX_SAFE_INTEGER) ||
    (max !== undefined && n > max);
  const notation = value !== undefined && value.trim() !== '' && !DECIMAL.test(value) && Number.isFinite(n) ? ' in decimal notation' : '';
  if (bad) throw new Error(`--${name}: expected ${rangeText({ ...opts, max })}${notation}${why}, got '${value}'`);
  return n;
}

/** "an integer in [2, 4096]", "a number >= 0", "any integer". */
function rangeText(opts: NumOptions): string {
  const what = opts.integer ? 'integer' : 'number';
  const { min, max } = opts;
  if (opts.above !== undefined) return `a${opts.integer ? 'n' : ''} ${what} > ${opts.above}${max !== undefined ? ` and <= ${max}` : ''}`;
  if (min === undefined && max === Number.MAX_SAFE_INTEGER) return `an integer of magnitude <= ${max}`;
  if (min !== undefined && max !== undefined) return `a${opts.integer ? 'n' : ''} ${what} in [${min}, ${max}]`;
  if (min !== undefined) return `a${opts.integer ? 'n' : ''} ${what} >= ${min}`;
  if (max !== undefined) return `a${opts.integer ? 'n' : ''} ${what} <= ${max}`;
  return `any finite ${what}`;
}

function formatBytes(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${i === 0 ? bytes : bytes.toFixed(1)} ${units[i]}`;
}

/** A flag that takes one of a few words ("--bn-views joint"); anything else is refused naming the flag and the words. */
export function oneOf<T extends string>(name: string, value: string | undefined, choices: readonly T[]): T {
  if (!choices.includes(value as T)) throw new Error(`--${name}: expected ${choices.join(' or ')}, got '${value}'`);
  return value as T;
}

/** A range "lo,hi" of two numbers within [min, max] with lo <= hi (crop scales). */
export function numRange(name: string, value: string | undefined, opts: { min?: number; max?: number } = {}): [number, number] {
  const parts = (value ?? '').split(',');
  if (parts.length !== 2) throw new Error(`--${name}: expected lo,hi, got '${value}'`);
  const [lo, hi] = parts.map((part) => num(name, part, opts));
  if (lo > hi) throw new Error(`--${name}: expected lo,hi with lo <= hi, got '${value}'`);
  return [lo, hi];
}

/** A comma-separated list of integers ("4,5,6"); empty or missing gives []. */
export function intList(name: string, value: string | undefined): number[] {
  if (!value) return [];
  return value.split(',').map((part) => num(name, part, { integer: true }));
}

const fatalErrorListeners: ((err: Error) => void)[] = [];

/** `listener` sees the error that ends runMain's process (a run folder records it in its status). */
export function onFatalError(listener: (err: Error) => void): void {
  fatalErrorListeners.push(listener);
}

/** Runs a pipeline's main, printing errors without a stack trace for the user's mistakes. */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      for (const listener of fatalErrorListeners) {
        try {
          listener(err);
        } catch (e) {
          console.error(`while recording the error: ${(e as Error).message}`);
        }
      }
      console.error(`error: ${err.message}`);
      if (process.env.DEBUG) console.error(err.stack);
      process.exit(1);
    },
  );
}
