/**
 * Shard specs in WebDataset's notation -> the list of shards a tar source reads.
 *
 *   several specs:  `a/train-*.tar::b/extra-{0..3}.tar` (separated by `::`, as webdataset's
 *                   expand_urls does) or a list of strings
 *   brace lists:    `{a,b}` (nested as in `{a,{b,c}}`; an alternative may be empty: `{a,}`)
 *   brace ranges:   `{000000..001281}` (zero padding kept: a bound with a leading zero pads every
 *                   number to the longer bound's width), `{9..11}`, `{0..10..2}`, `{a..e}`
 *   remote shards:  `http://...`, `https://...`, `pipe:COMMAND` (the command's stdout is the shard)
 *   local files:    a path, or a fast-glob pattern (`*`, `?`, `[...]`) after the braces are expanded
 *
 * These are the conventions of the Python `braceexpand` package that webdataset uses: `{a}` and
 * `{}` stay literal, a brace without its partner is an error; `\{`, `\}` and `\,` are literal
 * characters (the backslash is removed).
 *
 * Local names from a brace expansion work like glob alternatives: those that exist are taken
 * (so `shard-{0,1}.{tar,tar.gz}` takes whichever of the four exist), except that a numbered
 * range names every shard of a numbered set, so a missing member of it is an error (a silently
 * smaller data set is worse than a refusal). Remote names are taken as written: whether they
 * exist shows when they are read.
 */
import * as fs from 'fs';
import * as path from 'path';
import fg from 'fast-glob';

/** Expansions above this are a typo (`{0..99999999}`), not a data set. */
const MAX_EXPANSION = 1_000_000;

/** An `http(s)://` URL or a `pipe:` command: read as a stream, never listed or globbed. */
export function isRemoteShard(shard: string): boolean {
  return /^https?:\/\//i.test(shard) || shard.startsWith('pipe:');
}

/** `a::b::c` -> ['a', 'b', 'c']; a `::` inside `[...]` (an IPv6 host such as `http://[::1]:80/`) does not split. */
export function splitSpecs(spec: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < spec.length; i++) {
    if (spec[i] === '[') depth++;
    else if (spec[i] === ']') depth = Math.max(0, depth - 1);
    else if (depth === 0 && spec[i] === ':' && spec[i + 1] === ':') {
      parts.push(spec.slice(start, i));
      start = i + 2;
      i++;
    }
  }
  parts.push(spec.slice(start));
  return parts.filter((p) => p.length > 0);
}

/** Brace expansion as Python's braceexpand does it (see the file comment), in order. */
export function braceExpand(pattern: string): string[] {
  let depth = 0;
  for (let i = 0; i < pattern.length && depth >= 0; i++) {
    if (pattern[i] === '\\') i++;
    else if (pattern[i] === '{') depth++;
    else if (pattern[i] === '}') depth--;
  }
  if (depth !== 0) throw new Error(`${JSON.stringify(pattern)}: unbalanced braces (write \\{ or \\} for a literal one)`);
  return expand(pattern, pattern).map((s) => s.replace(/\\([{},\\])/g, '$1'));
}

function expand(s: string, whole: string): string[] {
  for (let open = 0; open < s.length; open++) {
    if (s[open] === '\\') {
      open++;
      continue;
    }
    if (s[open] !== '{') continue;
    const close = closingBrace(s, open);
    const body = s.slice(open + 1, close);
    const items = listItems(body) ?? rangeItems(body, whole);
    if (!items) continue; // `{a}`, `{}`: literal; a brace expression may still follow, or sit inside
    const prefix = s.slice(0, open);
    const suffixes = expand(s.slice(close + 1), whole);
    const out: string[] = [];
    for (const item of items) {
      for (const middle of expand(item, whole)) {
        for (const suffix of suffixes) out.push(prefix + middle + suffix);
        if (out.length > MAX_EXPANSION) throw new Error(`${JSON.stringify(whole)} expands to more than ${MAX_EXPANSION} names`);
      }
    }
    return out;
  }
  return [s];
}

function closingBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '{') depth++;
    else if (s[i] === '}' && --depth === 0) return i;
  }
  return -1;
}

/** The alternatives of `a,b,{c,d}` split at top-level commas; undefined where there is no such comma. */
function listItems(body: string): string[] | undefined {
  const items: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '\\') i++;
    else if (body[i] === '{') depth++;
    else if (body[i] === '}') depth--;
    else if (body[i] === ',' && depth === 0) {
      items.push(body.slice(start, i));
      start = i + 1;
    }
  }
  if (items.length === 0) return undefined;
  items.push(body.slice(start));
  return items;
}

const INT_RANGE = /^(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?$/;
const CHAR_RANGE = /^([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?$/;

function rangeItems(body: string, whole: string): string[] | undefined {
  const ints = INT_RANGE.exec(body);
  const chars = ints ? null : CHAR_RANGE.exec(body);
  const m = ints ?? chars;
  if (!m) return undefined;
  const [from, to] = ints ? [Number(m[1]), Number(m[2])] : [m[1].charCodeAt(0), m[2].charCodeAt(0)];
  const step = Math.abs(Number(m[3] ?? 1)) || 1;
  const count = Math.floor(Math.abs(to - from) / step) + 1;
  if (count > MAX_EXPANSION) throw new Error(`${JSON.stringify(whole)}: the range {${body}} names ${count} items, more than ${MAX_EXPANSION}`);
  const padded = (b: string) => /^-?0\d/.test(b);
  const width = ints && (padded(m[1]) || padded(m[2])) ? Math.max(m[1].length, m[2].length) : 0;
  const format = (v: number) => {
    if (!ints) return String.fromCharCode(v);
    const digits = String(Math.abs(v)).padStart(v < 0 ? width - 1 : width, '0');
    return v < 0 ? `-${digits}` : digits;
  };
  const dir = to >= from ? 1 : -1;
  return Array.from({ length: count }, (_, i) => format(from + dir * i * step));
}

const NUMBER_RANGE = /\{-?\d+\.\.-?\d+(\.\.-?\d+)?\}/;
const UNSUPPORTED_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

/**
 * Specs -> sorted, de-duplicated shards: absolute paths of local files, URLs and `pipe:`
 * commands as written. Sorted by their text, so the same shards on disk and behind a URL
 * (same names) come in the same order and get the same stable sample indices. Throws, naming
 * the spec, where one matches nothing or a numbered range misses a local shard.
 */
export function resolveShards(specs: string | string[]): string[] {
  const found = new Set<string>();
  for (const spec of expandShardSpecs(specs, { strict: true })) found.add(spec);
  return [...found].sort();
}

/**
 * Every shard or file the specs name, in spec order (local paths absolute). strict: refuse a
 * spec that matches nothing (resolveShards); otherwise it adds nothing (openSource judges what
 * was matched, and says so where nothing was).
 */
export function expandShardSpecs(specs: string | string[], opts: { strict: boolean }): string[] {
  const out: string[] = [];
  for (const given of [specs].flat()) {
    // A literal existing path is taken as-is: file names may hold glob, brace or ':' characters.
    if (isFile(given)) {
      out.push(path.resolve(given));
      continue;
    }
    for (const spec of splitSpecs(given)) {
      if (isFile(spec)) {
        out.push(path.resolve(spec));
        continue;
      }
      const scheme = UNSUPPORTED_SCHEME.exec(spec)?.[1];
      if (scheme && !/^https?$/i.test(scheme)) {
        throw new Error(
          `Data source ${JSON.stringify(spec)}: ${scheme}:// is not read directly; use its https:// address, or a pipe: ` +
            `command that writes the shard to stdout (webdataset's notation, e.g. "pipe:aws s3 cp ${spec} -" or "pipe:gsutil cat ${spec}")`,
        );
      }
      const matched: string[] = [];
      const missing: string[] = [];
      for (const item of braceExpand(spec)) {
        if (isRemoteShard(item)) matched.push(item);
        else if (isFile(item)) matched.push(path.resolve(item));
        else if (fg.isDynamicPattern(item, { braceExpansion: false })) {
          matched.push(...fg.sync(item, { onlyFiles: true, braceExpansion: false }).map((f) => path.resolve(f)));
        } else missing.push(item);
      }
      if (opts.strict && matched.length === 0) throw new Error(`No tar shards match ${JSON.stringify(spec)}`);
      if (missing.length > 0 && matched.length > 0 && NUMBER_RANGE.test(spec)) {
        throw new Error(
          `${JSON.stringify(spec)}: ${missing.length} of the shards its numbered range names do not exist: ` +
            `${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}`,
        );
      }
      out.push(...matched);
    }
  }
  return out;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}
