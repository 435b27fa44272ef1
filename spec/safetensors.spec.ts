import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  checkAgainst,
  decodeSafetensors,
  encodeSafetensors,
  readChecked,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from '../models/safetensors';

const FIXTURE = path.join(__dirname, 'fixtures', 'python-dtypes.safetensors');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'safetensors-spec-'));
let counter = 0;

/** Builds a file by hand: header (object or raw string), data bytes, optional forged length. */
function raw(header: unknown, data: Uint8Array = new Uint8Array(0), opts: { length?: bigint } = {}): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf-8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.length ?? BigInt(json.length));
  const file = path.join(dir, `case-${counter++}.safetensors`);
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
  return file;
}

function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** Asserts that reading throws an error naming the file and every fragment given. */
function rejects(file: string, ...fragments: string[]): void {
  let message: string | undefined;
  try {
    readSafetensors(file);
  } catch (e) {
    message = (e as Error).message;
  }
  assert.ok(message !== undefined, `expected ${file} to be rejected`);
  assert.ok(message!.includes(file), `error does not name the file: ${message}`);
  for (const f of fragments) assert.ok(message!.includes(f), `error lacks "${f}": ${message}`);
}

function throwsWith(fn: () => unknown, ...fragments: string[]): string {
  try {
    fn();
  } catch (e) {
    const m = (e as Error).message;
    for (const f of fragments) assert.ok(m.includes(f), `error lacks "${f}": ${m}`);
    return m;
  }
  assert.unreachable('expected an error');
  return '';
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string): void {
  assert.is(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    assert.ok(Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e)), `${label}[${i}]: ${a} vs ${e}`);
  }
}

test('round trip: F32, I32, I64, scalar, empty, metadata; atomic write leaves no temp file', () => {
  const file = path.join(dir, 'round.safetensors');
  fs.writeFileSync(file, 'old contents');
  const w = Float32Array.from({ length: 12 }, (_, i) => i * 0.25 - 1);
  writeSafetensors(
    file,
    {
      'blocks.0.attn.qkv.weight': { shape: [3, 4], data: w },
      'queue.index': { shape: [2, 2], data: [0, -1, 2 ** 31 - 1, -(2 ** 31)], dtype: 'I64' },
      'queue.big': { shape: [1], data: Int32Array.of(123), dtype: 'I64' },
      counts: Int32Array.of(1, 2, 3),
      scalar: { shape: [], data: [3.5] },
      empty: { shape: [0, 4], data: new Float32Array(0) },
      tensorLike: { shape: [2], dtype: 'float32', dataSync: () => Float32Array.of(1, 2) },
    },
    { format: 'pt', note: 'round trip' },
  );
  assert.equal(fs.readdirSync(dir).filter((f) => f.includes('round') && f !== 'round.safetensors'), []);
  const bytes = fs.readFileSync(file);
  assert.is(Number(bytes.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
  const { tensors, metadata } = readSafetensors(file);
  assert.equal(metadata, { format: 'pt', note: 'round trip' });
  const q = tensors.get('blocks.0.attn.qkv.weight')!;
  assert.is(q.dtype, 'F32');
  assert.equal(q.shape, [3, 4]);
  close(q.data, w, 'qkv');
  const idx = tensors.get('queue.index')!;
  assert.is(idx.dtype, 'I64');
  assert.ok(idx.data instanceof Int32Array);
  close(idx.data, [0, -1, 2 ** 31 - 1, -(2 ** 31)], 'I64');
  close(tensors.get('queue.big')!.data, [123], 'I64 from Int32Array');
  assert.is(tensors.get('counts')!.dtype, 'I32');
  close(tensors.get('counts')!.data, [1, 2, 3], 'I32');
  assert.equal(tensors.get('scalar')!.shape, []);
  close(tensors.get('scalar')!.data, [3.5], 'scalar');
  assert.equal(tensors.get('empty')!.shape, [0, 4]);
  assert.is(tensors.get('empty')!.data.length, 0);
  close(tensors.get('tensorLike')!.data, [1, 2], 'tensor-like');
  // In-memory encoding gives the same bytes as the file.
  const again = decodeSafetensors(encodeSafetensors({ counts: Int32Array.of(4) }, { a: 'b' }));
  close(again.tensors.get('counts')!.data, [4], 'encode/decode');
});

test('reads a file written from PyTorch: F32, F16, BF16, I64, I32, scalar, empty', () => {
  const { tensors, metadata } = readSafetensors(FIXTURE);
  assert.is(metadata.format, 'pt');
  const f32 = tensors.get('f32')!;
  assert.equal(f32.shape, [2, 3, 4]);
  close(f32.data, Array.from({ length: 24 }, (_, i) => i / 8 - 1), 'f32');
  for (const name of ['f16', 'bf16', 'f16_random', 'bf16_random']) {
    const t = tensors.get(name)!;
    assert.is(t.dtype, name.startsWith('f16') ? 'F16' : 'BF16');
    assert.equal(t.shape, tensors.get(`${name}.as_f32`)!.shape);
    close(t.data, tensors.get(`${name}.as_f32`)!.data, name);
  }
  // Hand-checked conversions (independent of PyTorch): subnormal, max, signed zero, inf.
  const f16 = tensors.get('f16')!.data;
  close(Array.from(f16.slice(0, 8)), [0, -0, 1, -2, 0.5, 65504, 2 ** -24, 2 ** -14], 'f16 literal');
  assert.is(f16[9], Infinity);
  assert.is(f16[10], -Infinity);
  assert.ok(Number.isNaN(f16[11]));
  assert.is(tensors.get('bf16')!.data[1], -3.140625);
  const i64 = tensors.get('i64')!;
  assert.is(i64.dtype, 'I64');
  assert.equal(i64.shape, [2, 3]);
  close(i64.data, [0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 65536], 'i64');
  close(tensors.get('i32')!.data, [7, -8, 2 ** 31 - 1], 'i32');
  assert.equal(tensors.get('scalar')!.shape, []);
  close(tensors.get('scalar')!.data, [2.5], 'scalar');
  assert.equal(tensors.get('empty')!.shape, [0, 3]);
  // Only some keys.
  const some = readSafetensors(FIXTURE, { keys: ['i32'] });
  assert.equal([...some.tensors.keys()], ['i32']);
  assert.is(readSafetensorsHeader(FIXTURE).entries.get('f16')!.dtype, 'F16');
});

test('a header length that is not a multiple of 8 is allowed', () => {
  const header = JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } });
  assert.is.not(header.length % 8, 0);
  const file = raw(header, f32Bytes([1.5, -2]));
  close(readSafetensors(file).tensors.get('a')!.data, [1.5, -2], 'unaligned');
});

test('malformed files: errors name the file and the key', () => {
  const short = path.join(dir, 'short.safetensors');
  fs.writeFileSync(short, Buffer.from([1, 2, 3]));
  rejects(short, 'shorter than the 8-byte header length');
  rejects(raw('{}', new Uint8Array(0), { length: 1000n }), 'header length 1000 runs past the end');
  rejects(raw('{}', new Uint8Array(0), { length: 2n ** 63n }), 'absurd');
  rejects(raw('{"a": {"dtype": "F32",'), 'not valid UTF-8 JSON');
  rejects(raw('[1, 2]'), 'not an object');
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const two = f32Bytes([1, 2]);
  rejects(raw({ w: { ...ok, dtype: 'F17' } }, two), 'tensor "w"', 'unknown dtype "F17"');
  rejects(raw({ w: { ...ok, dtype: 'U8', shape: [8] } }, two), 'tensor "w"', 'dtype U8 is not supported');
  rejects(raw({ w: { shape: [2], data_offsets: [0, 8] } }, two), 'tensor "w"', 'dtype is missing');
  rejects(raw({ w: { ...ok, shape: [2, -1] } }, two), 'tensor "w"', 'shape');
  rejects(raw({ w: { ...ok, shape: [1.5] } }, two), 'tensor "w"', 'shape');
  rejects(raw({ w: { ...ok, data_offsets: [0] } }, two), 'tensor "w"', 'data_offsets');
  rejects(raw({ w: { ...ok, data_offsets: [8, 0] } }, two), 'tensor "w"', 'end before they begin');
  rejects(raw({ w: { ...ok, data_offsets: [0, 16] } }, two), 'tensor "w"', 'run past the end of the data buffer');
  rejects(raw({ w: { ...ok, shape: [3] } }, two), 'tensor "w"', 'hold 8 bytes', 'needs 12');
  rejects(raw({ w: { ...ok, dtype: 'F16' } }, two), 'tensor "w"', 'needs 4');
  rejects(
    raw({ a: ok, b: { ...ok, data_offsets: [4, 12] } }, f32Bytes([1, 2, 3])),
    'tensor "b"',
    'overlap',
    'tensor "a"',
  );
  rejects(raw({ a: ok, b: ok }, two), 'overlap');
  rejects(raw({ w: { ...ok, data_offsets: [4, 12] } }, f32Bytes([1, 2, 3])), 'tensor "w"', 'hole');
  rejects(raw({ w: ok }, f32Bytes([1, 2, 3])), 'trailing bytes');
  rejects(raw({ w: 'F32' }, two), 'tensor "w"', 'not an object');
  rejects(raw({ __metadata__: { a: 1 }, w: ok }, two), 'tensor "__metadata__"', 'not a string');
  const tooBig = new Int32Array([5, 0, 0, 1]); // second I64 element is 2^32
  rejects(
    raw({ idx: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(tooBig.buffer)),
    'tensor "idx"',
    'I64 element 1 = 4294967296 does not fit in int32',
  );
  const missingFile = path.join(dir, 'does-not-exist.safetensors');
  rejects(missingFile, 'cannot open');
});

test('writer rejects bad input before touching the target file', () => {
  const file = path.join(dir, 'keep.safetensors');
  writeSafetensors(file, { a: Float32Array.of(1) });
  const before = fs.readFileSync(file);
  throwsWith(() => writeSafetensors(file, { ok: Float32Array.of(1), bad: { shape: [2, 2], data: [1, 2, 3] } }), file, 'tensor "bad"', 'needs 4');
  throwsWith(() => writeSafetensors(file, { __metadata__: Float32Array.of(1) }), 'tensor "__metadata__"');
  throwsWith(() => writeSafetensors(file, { i: { shape: [1], data: [1.5], dtype: 'I32' } }), 'tensor "i"', 'not an int32');
  throwsWith(() => writeSafetensors(file, { i: { shape: [1], data: Float32Array.of(1), dtype: 'I64' } }), 'tensor "i"', 'Float32Array');
  throwsWith(() => writeSafetensors(file, { b: { shape: [1], dtype: 'bool', dataSync: () => [1] } }), 'tensor "b"', 'bool');
  throwsWith(() => writeSafetensors(file, { a: Float32Array.of(1) }, { n: 3 as unknown as string }), '__metadata__');
  assert.ok(fs.readFileSync(file).equals(before), 'target unchanged');
  const missingDir = path.join(dir, 'no-such-dir', 'x.safetensors');
  throwsWith(() => writeSafetensors(missingDir, { a: Float32Array.of(1) }), missingDir, 'write failed');
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
});

test('checkAgainst lists every missing, unexpected and mismatched key with the file name', () => {
  const expected = { 'norm.weight': [32], 'norm.bias': [32], cls_token: [1, 1, 32], pos_embed: [1, 17, 32] };
  const tensors = new Map([
    ['norm.weight', { shape: [32] }],
    ['cls_token', { shape: [1, 1, 64] }],
    ['pos_embed', { shape: [1, 17, 32] }],
    ['head.weight', { shape: [10, 32] }],
    ['decoder.norm.weight', { shape: [16] }],
  ]);
  const m = throwsWith(
    () => checkAgainst(tensors, expected, 'ckpt.safetensors'),
    'ckpt.safetensors',
    'missing: norm.bias',
    'unexpected: head.weight',
    'unexpected: decoder.norm.weight',
    'shape mismatch: cls_token: file has [1, 1, 64], expected [1, 1, 32]',
    '1 missing, 2 unexpected, 1 shape mismatches',
  );
  assert.not.ok(m.includes('pos_embed'));
  checkAgainst(new Map([['a', { shape: [2] }]]), { a: [2] }, 'f');
  checkAgainst({ a: { shape: [2] }, 'decoder.x': { shape: [1] } }, { a: [2] }, 'f', { allowUnexpected: /^decoder\./ });
  throwsWith(() => checkAgainst({ a: { shape: [2] }, b: { shape: [1] } }, { a: [2] }, 'f', { allowUnexpected: /^decoder\./ }), 'unexpected: b');
});

test('readChecked validates shapes before loading, and loads float32', () => {
  const file = path.join(dir, 'checked.safetensors');
  writeSafetensors(file, { w: { shape: [2, 2], data: [1, 2, 3, 4] }, 'decoder.w': Float32Array.of(9), idx: Int32Array.of(1) });
  const got = readChecked(file, { w: [2, 2] }, { allowUnexpected: (k) => k !== 'w' });
  assert.equal([...got.keys()], ['w']);
  close(got.get('w')!.data, [1, 2, 3, 4], 'w');
  throwsWith(() => readChecked(file, { w: [4] }), file, 'shape mismatch: w', 'unexpected: decoder.w', 'unexpected: idx');
  throwsWith(() => readChecked(file, { w: [2, 2], idx: [1] }, { allowUnexpected: true }), file, 'tensor "idx"', 'integer dtype');
  // Reduced-precision tensors load as float32 too.
  const f16 = readChecked(FIXTURE, { f16: [12] }, { allowUnexpected: true }).get('f16')!;
  assert.ok(f16.data instanceof Float32Array);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test.run();
