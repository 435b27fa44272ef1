/**
 * safetensors reading and writing (https://github.com/huggingface/safetensors), the checkpoint
 * interchange format of this project (timm ViT key names, PyTorch layouts; models/checkpoint-formats.ts
 * reads the others).
 *
 * Layout of a file: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON
 *   { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ...,
 *     "__metadata__": { "<string>": "<string>" } (optional) }
 * then the data buffer; offsets are relative to the start of the buffer, row-major,
 * little-endian. The spec requires the buffer to be covered exactly by the tensors (no
 * overlaps, no holes, nothing trailing); this reader enforces that. N need not be a multiple
 * of 8 (writers pad with spaces to keep data aligned, readers must not rely on it).
 *
 * Read: F32, F64, F16, BF16 become Float32Array (F64 loses precision), I32 and I64 become
 * Int32Array (an I64 value outside the int32 range is an error: they are queue indices and
 * counters here, never real 64-bit quantities). Write: F32, I32, I64.
 *
 * Every error names the file and, where there is one, the tensor key. Reading validates the
 * whole header before any data is read; nothing is returned unless everything is valid.
 * Writing validates every tensor first, then writes a temporary file in the same directory,
 * fsyncs it and renames it over the target, so a crash never leaves a half-written checkpoint.
 *
 * Host byte order must be little-endian (every platform Node runs on in practice); this is
 * checked and reported rather than silently producing garbage.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { randomBytes } from 'crypto';

export type SafetensorsDtype = 'F32' | 'F64' | 'F16' | 'BF16' | 'I32' | 'I64';
export type WriteDtype = 'F32' | 'I32' | 'I64';

export interface LoadedTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface SafetensorsContents {
  tensors: Map<string, LoadedTensor>;
  metadata: Record<string, string>;
}

export interface HeaderEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data buffer. */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  entries: Map<string, HeaderEntry>;
  metadata: Record<string, string>;
  /** Bytes of JSON header (N). The data buffer starts at 8 + N. */
  headerLength: number;
  fileSize: number;
}

/** Something writeSafetensors can store. A bare typed array is stored 1-D. */
export type TensorToWrite =
  | Float32Array
  | Int32Array
  | { shape: readonly number[]; data: Float32Array | Int32Array | readonly number[]; dtype?: WriteDtype }
  /** A tf.Tensor (float32 or int32) fits here; its values are read with dataSync(). */
  | { shape: readonly number[]; dtype: string; dataSync(): ArrayLike<number> };

export class SafetensorsError extends Error {
  constructor(
    readonly file: string,
    readonly key: string | undefined,
    detail: string,
  ) {
    super(`${file}: ${key === undefined ? '' : `tensor "${key}": `}${detail}`);
    this.name = 'SafetensorsError';
  }
}

const ELEMENT_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I32: 4, I64: 8 };
/** Dtypes of the spec this module does not convert (an error says "unsupported", not "unknown"). */
const UNSUPPORTED = new Set(['BOOL', 'U8', 'I8', 'U16', 'I16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64', 'E4M3', 'E5M2']);
const METADATA_KEY = '__metadata__';
const MAX_SAFE_HIGH = 2 ** 21; // high u32 word of a u64 must stay below this for N < 2^53

function assertLittleEndian(file: string): void {
  if (os.endianness() !== 'LE') throw new SafetensorsError(file, undefined, 'this reader/writer supports little-endian hosts only');
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/** Random access to bytes: a file descriptor or an in-memory buffer. */
interface ByteSource {
  size: number;
  /** Fills dst completely from position pos (pos + dst.length <= size is checked by callers). */
  readInto(pos: number, dst: Uint8Array): void;
}

function fileSource(fd: number): ByteSource {
  return {
    size: fs.fstatSync(fd).size,
    readInto(pos, dst) {
      let done = 0;
      while (done < dst.length) {
        const n = fs.readSync(fd, dst, done, Math.min(dst.length - done, 1 << 30), pos + done);
        if (n <= 0) throw new Error(`unexpected end of file at byte ${pos + done}`);
        done += n;
      }
    },
  };
}

function bufferSource(bytes: Uint8Array): ByteSource {
  return { size: bytes.length, readInto: (pos, dst) => dst.set(bytes.subarray(pos, pos + dst.length)) };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseHeader(src: ByteSource, file: string): SafetensorsHeader {
  if (src.size < 8) throw new SafetensorsError(file, undefined, `file is ${src.size} bytes, shorter than the 8-byte header length`);
  const lenBytes = new Uint8Array(8);
  src.readInto(0, lenBytes);
  const dv = new DataView(lenBytes.buffer);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  if (hi >= MAX_SAFE_HIGH) throw new SafetensorsError(file, undefined, `header length ${BigInt(hi) * 2n ** 32n + BigInt(lo)} is absurd (not a safetensors file?)`);
  const n = hi * 2 ** 32 + lo;
  if (8 + n > src.size) {
    throw new SafetensorsError(file, undefined, `header length ${n} runs past the end of the file (${src.size} bytes, so at most ${src.size - 8})`);
  }
  const headerBytes = new Uint8Array(n);
  src.readInto(8, headerBytes);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new SafetensorsError(file, undefined, `header is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError(file, undefined, 'header JSON is not an object');

  const dataLength = src.size - 8 - n;
  let metadata: Record<string, string> = {};
  const entries = new Map<string, HeaderEntry>();
  for (const [key, raw] of Object.entries(json)) {
    if (key === METADATA_KEY) {
      metadata = parseMetadata(raw, file);
      continue;
    }
    const fail = (detail: string): never => {
      throw new SafetensorsError(file, key, detail);
    };
    if (!isPlainObject(raw)) fail('header entry is not an object');
    const entry = raw as Record<string, unknown>;
    const dtype = entry.dtype;
    if (typeof dtype !== 'string') fail('dtype is missing or not a string');
    const dt = dtype as string;
    if (!(dt in ELEMENT_BYTES)) {
      fail(UNSUPPORTED.has(dt)
        ? `dtype ${dt} is not supported (supported: ${Object.keys(ELEMENT_BYTES).join(', ')})`
        : `unknown dtype ${JSON.stringify(dt)}`);
    }
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      fail(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) fail(`data_offsets [${begin}, ${end}] run past the end of the data buffer (${dataLength} bytes)`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const bytes = count * ELEMENT_BYTES[dt as SafetensorsDtype];
    if (!Number.isSafeInteger(bytes) || bytes !== end - begin) {
      fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes, but shape [${shape}] of ${dt} needs ${bytes}`);
    }
    entries.set(key, { dtype: dt as SafetensorsDtype, shape: [...(shape as number[])], dataOffsets: [begin, end] });
  }

  // Coverage: sorted by offset, each tensor starts where the previous ended, the last ends
  // at the end of the file.
  const sorted = [...entries].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let pos = 0;
  let prevKey: string | undefined;
  for (const [key, e] of sorted) {
    const [begin, end] = e.dataOffsets;
    if (begin < pos) {
      throw new SafetensorsError(file, key, `data_offsets [${begin}, ${end}] overlap those of tensor "${prevKey}" (which ends at ${pos})`);
    }
    if (begin > pos) {
      throw new SafetensorsError(file, key, `data_offsets [${begin}, ${end}] leave bytes [${pos}, ${begin}) of the data buffer unused (a hole; the format forbids it)`);
    }
    if (end > begin) prevKey = key;
    pos = end;
  }
  if (pos !== dataLength) {
    throw new SafetensorsError(file, undefined, `the tensors cover ${pos} bytes of the data buffer, but it holds ${dataLength} (trailing bytes)`);
  }
  return { entries, metadata, headerLength: n, fileSize: src.size };
}

function parseMetadata(raw: unknown, file: string): Record<string, string> {
  if (!isPlainObject(raw)) throw new SafetensorsError(file, METADATA_KEY, 'is not an object of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new SafetensorsError(file, METADATA_KEY, `value of ${JSON.stringify(k)} is ${JSON.stringify(v)}, not a string`);
    out[k] = v;
  }
  return out;
}

let f16Table: Float32Array | undefined;

function halfToFloatTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return (f16Table = t);
}

/**
 * Elements of `dtype` (little-endian, in a fresh ArrayBuffer) as float32 or int32, as the reader
 * returns them; also used for the storages of PyTorch checkpoints.
 */
export function decodeTensorBytes(dtype: SafetensorsDtype, raw: ArrayBuffer, file: string, key: string): Float32Array | Int32Array {
  switch (dtype) {
    case 'F32':
      return new Float32Array(raw);
    case 'I32':
      return new Int32Array(raw);
    case 'F64':
      return Float32Array.from(new Float64Array(raw));
    case 'F16': {
      const table = halfToFloatTable();
      const u16 = new Uint16Array(raw);
      const out = new Float32Array(u16.length);
      for (let i = 0; i < u16.length; i++) out[i] = table[u16[i]];
      return out;
    }
    case 'BF16': {
      const u16 = new Uint16Array(raw);
      const bits = new Uint32Array(u16.length);
      for (let i = 0; i < u16.length; i++) bits[i] = u16[i] << 16;
      return new Float32Array(bits.buffer);
    }
    case 'I64': {
      const words = new Int32Array(raw);
      const out = new Int32Array(words.length / 2);
      for (let i = 0; i < out.length; i++) {
        const lo = words[2 * i];
        const hi = words[2 * i + 1];
        if (hi !== lo >> 31) {
          const value = (BigInt(hi) << 32n) + BigInt(lo >>> 0);
          throw new SafetensorsError(file, key, `I64 element ${i} = ${value} does not fit in int32`);
        }
        out[i] = lo;
      }
      return out;
    }
  }
}

function readContents(src: ByteSource, file: string, keys?: Iterable<string>): SafetensorsContents {
  assertLittleEndian(file);
  const header = parseHeader(src, file);
  const wanted = keys ? [...keys] : [...header.entries.keys()];
  const missing = wanted.filter((k) => !header.entries.has(k));
  if (missing.length > 0) throw new SafetensorsError(file, missing[0], `not in the file (missing: ${missing.join(', ')})`);
  const tensors = new Map<string, LoadedTensor>();
  const base = 8 + header.headerLength;
  for (const key of wanted) {
    const e = header.entries.get(key)!;
    const [begin, end] = e.dataOffsets;
    // A fresh ArrayBuffer per tensor: aligned for typed-array views whatever N was.
    const raw = new ArrayBuffer(end - begin);
    src.readInto(base + begin, new Uint8Array(raw));
    tensors.set(key, { dtype: e.dtype, shape: e.shape, data: decodeTensorBytes(e.dtype, raw, file, key) });
  }
  return { tensors, metadata: header.metadata };
}

function withFile<T>(file: string, f: (src: ByteSource) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new SafetensorsError(file, undefined, `cannot open: ${(e as Error).message}`);
  }
  try {
    return f(fileSource(fd));
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads and validates only the header (cheap; for checking shapes before loading data). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  return withFile(file, (src) => parseHeader(src, file));
}

/**
 * Reads a safetensors file. `keys` restricts loading to those tensors (each must exist);
 * the whole header is validated either way.
 */
export function readSafetensors(file: string, opts: { keys?: Iterable<string> } = {}): SafetensorsContents {
  return withFile(file, (src) => readContents(src, file, opts.keys));
}

/** Same as readSafetensors, from bytes in memory; `name` stands in for the file name in errors. */
export function decodeSafetensors(bytes: Uint8Array, name = '<buffer>'): SafetensorsContents {
  return readContents(bufferSource(bytes), name);
}

// ---------------------------------------------------------------------------------------------
// Checking against a model
// ---------------------------------------------------------------------------------------------

type ShapeMap = ReadonlyMap<string, { shape: readonly number[] }> | Readonly<Record<string, { shape: readonly number[] }>>;
type ExpectedShapes = ReadonlyMap<string, readonly number[]> | Readonly<Record<string, readonly number[]>>;

function entriesOf<V>(m: ReadonlyMap<string, V> | Readonly<Record<string, V>>): Array<[string, V]> {
  return m instanceof Map ? [...m] : Object.entries(m as Record<string, V>);
}

export interface CheckOptions {
  /** Keys the file may carry that the model does not use (an MAE decoder, a classifier head). */
  allowUnexpected?: boolean | RegExp | ((key: string) => boolean);
}

/**
 * Compares tensors (or a header's entries) with the shapes a model expects and throws one
 * error listing every missing key, unexpected key and shape mismatch, naming `file`.
 */
export function checkAgainst(tensors: ShapeMap, expected: ExpectedShapes, file: string, opts: CheckOptions = {}): void {
  const have = new Map(entriesOf(tensors).map(([k, v]) => [k, v.shape] as const));
  const want = new Map(entriesOf(expected));
  const allow = opts.allowUnexpected;
  const allowed = (k: string): boolean =>
    allow === true || (allow instanceof RegExp ? allow.test(k) : typeof allow === 'function' ? allow(k) : false);
  const missing: string[] = [];
  const mismatched: string[] = [];
  const unexpected: string[] = [];
  for (const [k, shape] of want) {
    const got = have.get(k);
    if (!got) missing.push(`  missing: ${k} (expected [${shape.join(', ')}])`);
    else if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      mismatched.push(`  shape mismatch: ${k}: file has [${got.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }
  for (const [k, shape] of have) {
    if (!want.has(k) && !allowed(k)) unexpected.push(`  unexpected: ${k} [${shape.join(', ')}]`);
  }
  const problems = [...missing, ...unexpected, ...mismatched];
  if (problems.length > 0) {
    throw new SafetensorsError(
      file,
      undefined,
      `does not match the expected parameters (${missing.length} missing, ${unexpected.length} unexpected, ${mismatched.length} shape mismatches):\n${problems.join('\n')}`,
    );
  }
}

/**
 * Reads a checkpoint whose keys and shapes must match `expected`: the header is checked
 * first (no data is read from a wrong file), then every tensor is loaded and returned as
 * float32. Throws (naming the file) on any problem, so callers never see a partial load.
 */
export function readChecked(
  file: string,
  expected: ExpectedShapes,
  opts: CheckOptions = {},
): Map<string, { shape: number[]; data: Float32Array }> {
  return withFile(file, (src) => {
    const header = parseHeader(src, file);
    checkAgainst(new Map([...header.entries].map(([k, e]) => [k, { shape: e.shape }])), expected, file, opts);
    const keys = entriesOf(expected).map(([k]) => k);
    const ints = keys.filter((k) => !isFloatDtype(header.entries.get(k)!.dtype));
    if (ints.length > 0) throw new SafetensorsError(file, ints[0], `integer dtype where a float parameter is expected (${ints.join(', ')})`);
    return asFloat32(readContents(src, file, keys).tensors, file);
  });
}

function isFloatDtype(d: SafetensorsDtype): boolean {
  return d === 'F32' || d === 'F64' || d === 'F16' || d === 'BF16';
}

/** Narrows loaded tensors to float data (throws naming the first integer tensor). */
export function asFloat32(tensors: ReadonlyMap<string, LoadedTensor>, file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, t] of tensors) {
    if (!(t.data instanceof Float32Array)) throw new SafetensorsError(file, k, `is ${t.dtype}, a float tensor was expected`);
    out.set(k, { shape: t.shape, data: t.data });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

interface Prepared {
  key: string;
  dtype: WriteDtype;
  shape: number[];
  bytes: Uint8Array;
}

function prepare(key: string, t: TensorToWrite, file: string): Prepared {
  const fail = (detail: string): never => {
    throw new SafetensorsError(file, key, detail);
  };
  if (key === METADATA_KEY || key.length === 0) fail('is not a valid tensor name');
  let shape: readonly number[];
  let data: ArrayLike<number>;
  let dtype: WriteDtype | undefined;
  if (ArrayBuffer.isView(t)) {
    shape = [t.length];
    data = t;
  } else if ('dataSync' in t && typeof t.dataSync === 'function') {
    shape = t.shape;
    if (t.dtype === 'float32') dtype = 'F32';
    else if (t.dtype === 'int32') dtype = 'I32';
    else fail(`tensor dtype ${t.dtype} cannot be written (float32 or int32 only)`);
    data = t.dataSync();
  } else {
    const h = t as { shape: readonly number[]; data: Float32Array | Int32Array | readonly number[]; dtype?: WriteDtype };
    shape = h.shape;
    data = h.data;
    dtype = h.dtype;
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) fail(`has ${data.length} values, shape [${shape.join(', ')}] needs ${count}`);
  dtype ??= data instanceof Int32Array ? 'I32' : 'F32';
  if (!(['F32', 'I32', 'I64'] as const).includes(dtype)) fail(`cannot write dtype ${dtype} (F32, I32, I64 only)`);
  if (dtype === 'F32' && data instanceof Int32Array) fail('Int32Array data given for dtype F32');
  if (dtype !== 'F32' && data instanceof Float32Array) fail(`Float32Array data given for dtype ${dtype}`);

  let bytes: Uint8Array;
  if (dtype === 'F32') {
    const f = data instanceof Float32Array ? data : Float32Array.from(data);
    bytes = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  } else if (dtype === 'I32') {
    if (!(data instanceof Int32Array)) {
      for (let i = 0; i < data.length; i++) if (!Number.isInteger(data[i]) || (data[i] | 0) !== data[i]) fail(`element ${i} = ${data[i]} is not an int32`);
    }
    const a = data instanceof Int32Array ? data : Int32Array.from(data);
    bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  } else {
    const words = new Int32Array(2 * count);
    for (let i = 0; i < count; i++) {
      const v = data[i];
      if (!Number.isSafeInteger(v)) fail(`element ${i} = ${v} is not a safe integer`);
      words[2 * i] = v | 0; // low 32 bits (two's complement, also right for |v| >= 2^31)
      words[2 * i + 1] = Math.floor(v / 2 ** 32);
    }
    bytes = new Uint8Array(words.buffer);
  }
  return { key, dtype, shape: [...shape], bytes };
}

/** Serialises tensors to safetensors bytes: header padded with spaces to 8 bytes, I64 first. */
function layout(tensors: Record<string, TensorToWrite> | ReadonlyMap<string, TensorToWrite>, metadata: Record<string, string> | undefined, file: string): { head: Uint8Array; parts: Prepared[] } {
  assertLittleEndian(file);
  const parts = entriesOf(tensors).map(([k, t]) => prepare(k, t, file));
  // 8-byte elements first keeps every tensor aligned to its element size (as the reference
  // writer does); the sort is stable, so otherwise the caller's order is kept.
  parts.sort((a, b) => ELEMENT_BYTES[b.dtype] - ELEMENT_BYTES[a.dtype]);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(file, METADATA_KEY, `value of ${JSON.stringify(k)} is not a string`);
    }
    header[METADATA_KEY] = metadata;
  }
  let offset = 0;
  for (const p of parts) {
    header[p.key] = { dtype: p.dtype, shape: p.shape, data_offsets: [offset, offset + p.bytes.length] };
    offset += p.bytes.length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf-8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const head = new Uint8Array(8 + json.length);
  const dv = new DataView(head.buffer);
  dv.setUint32(0, json.length % 2 ** 32, true);
  dv.setUint32(4, Math.floor(json.length / 2 ** 32), true);
  head.set(json, 8);
  return { head, parts };
}

/** Serialises tensors to bytes in memory (see writeSafetensors). */
export function encodeSafetensors(
  tensors: Record<string, TensorToWrite> | ReadonlyMap<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array {
  const { head, parts } = layout(tensors, metadata, '<buffer>');
  return Buffer.concat([head, ...parts.map((p) => p.bytes)]);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
}

/**
 * Writes tensors atomically: everything is validated first, then a temporary file in the
 * target's directory is written, fsynced and renamed over `file` (then the directory is
 * fsynced where the platform allows). Float32Array / float32 tensors are written F32,
 * Int32Array / int32 tensors I32; `{shape, data, dtype: 'I64'}` writes I64.
 */
export function writeSafetensors(
  file: string,
  tensors: Record<string, TensorToWrite> | ReadonlyMap<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const { head, parts } = layout(tensors, metadata, file);
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx');
    writeAll(fd, head);
    for (const p of parts) writeAll(fd, p.bytes);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw new SafetensorsError(file, undefined, `write failed: ${(e as Error).message}`);
  }
  try {
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch {
    // Directory fsync is not possible everywhere (Windows); the rename itself is done.
  }
}
