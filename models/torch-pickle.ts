/**
 * PyTorch checkpoints (.pth / .pt / .bin) as torch.save writes them, read without Python. Since
 * PyTorch 1.6 torch.save writes a zip: `<name>/data.pkl` (the pickled object), `<name>/byteorder`,
 * and one entry `<name>/data/<key>` per storage (raw little-endian elements). The pickle names
 * each storage by a persistent id ('storage', torch.<Type>Storage, key, location, numel) and
 * builds each tensor with torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...).
 *
 * A pickle is a program: its GLOBAL opcode imports any Python callable and REDUCE calls it, so
 * loading an untrusted one runs whatever it names (posix.system, builtins.eval). This reader is
 * no interpreter: it implements only the opcodes a nested dict of tensors needs, and a GLOBAL
 * outside a short whitelist (the tensor and parameter rebuilders, the storage types,
 * collections.OrderedDict) is refused with an error naming the file and the global, before
 * anything else is read. Nothing is ever executed; "calling" a whitelisted global only builds a
 * description (a tensor reference or a Map). This is the same whitelist idea as torch.load's
 * weights_only=True, narrower.
 *
 * Tensors are references into the zip until `readTensor` reads one, so a large training
 * checkpoint (optimiser moments beside the weights) costs only the tensors that are asked for.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { decodeTensorBytes, type LoadedTensor, type SafetensorsDtype } from './safetensors';

/** Where a tensor's elements are: storage `key` of `dtype`, viewed with offset/shape/stride (in elements). */
export interface TorchTensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly offset: number;
  readonly shape: number[];
  readonly stride: number[];
}

interface StorageRef {
  readonly kind: 'storage';
  readonly key: string;
  /** PyTorch's storage class (FloatStorage, HalfStorage, ...). */
  readonly type: string;
}

/** What the reader builds: Python's None/bool/int/float/str/bytes, lists and tuples as arrays, dicts as Maps. */
export type PickleValue = null | boolean | number | bigint | string | Uint8Array | PickleValue[] | PickleDict | TorchTensorRef;
export type PickleDict = Map<PickleValue, PickleValue>;

/** A whitelisted global on the stack: never called, only recognised by REDUCE. */
interface GlobalRef {
  readonly kind: 'global';
  readonly name: string;
}

const STORAGE_DTYPES: Record<string, SafetensorsDtype | undefined> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  IntStorage: 'I32',
  LongStorage: 'I64',
  // allowed so that a checkpoint holding such a buffer opens; reading one is refused
  ByteStorage: undefined,
  CharStorage: undefined,
  ShortStorage: undefined,
  BoolStorage: undefined,
};
const ELEMENT_BYTES: Record<string, number> = {
  FloatStorage: 4, DoubleStorage: 8, HalfStorage: 2, BFloat16Storage: 2, IntStorage: 4, LongStorage: 8,
  ByteStorage: 1, CharStorage: 1, ShortStorage: 2, BoolStorage: 1,
};

const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const REBUILD_PARAMETER_WITH_STATE = 'torch._utils._rebuild_parameter_with_state';
const ORDERED_DICT = 'collections.OrderedDict';
const ALLOWED_GLOBALS = new Set([
  REBUILD_TENSOR,
  REBUILD_PARAMETER,
  REBUILD_PARAMETER_WITH_STATE,
  ORDERED_DICT,
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

export class TorchCheckpointError extends Error {
  constructor(readonly file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.name = 'TorchCheckpointError';
  }
}

// ---------------------------------------------------------------------------------------------
// Zip (the subset torch.save writes: stored entries, zip64 for large files; deflate accepted)
// ---------------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localHeader: number;
}

function readAt(fd: number, pos: number, length: number, file: string): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, Math.min(length - done, 1 << 30), pos + done);
    if (n <= 0) throw new TorchCheckpointError(file, `truncated: wanted bytes [${pos}, ${pos + length}) of a ${fs.fstatSync(fd).size}-byte file`);
    done += n;
  }
  return buf;
}

function u64(buf: Buffer, at: number, file: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TorchCheckpointError(file, `zip field ${v} is too large`);
  return Number(v);
}

function readZipDirectory(fd: number, file: string): Map<string, ZipEntry> {
  const size = fs.fstatSync(fd).size;
  const tailLength = Math.min(size, 22 + 0xffff);
  const tail = readAt(fd, size - tailLength, tailLength, file);
  let eocd = -1;
  for (let i = tailLength - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new TorchCheckpointError(file, 'not a zip archive (no end-of-central-directory record): not a PyTorch checkpoint written by torch.save');
  let count = tail.readUInt16LE(eocd + 10);
  let dirSize = tail.readUInt32LE(eocd + 12);
  let dirOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || dirSize === 0xffffffff || dirOffset === 0xffffffff) {
    // zip64: the locator sits right before the end record and points at the zip64 end record
    const locatorAt = size - tailLength + eocd - 20;
    const locator = readAt(fd, locatorAt, 20, file);
    if (locator.readUInt32LE(0) !== 0x07064b50) throw new TorchCheckpointError(file, 'zip64 fields without a zip64 locator');
    const record = readAt(fd, u64(locator, 8, file), 56, file);
    if (record.readUInt32LE(0) !== 0x06064b50) throw new TorchCheckpointError(file, 'zip64 end record missing');
    count = u64(record, 32, file);
    dirSize = u64(record, 40, file);
    dirOffset = u64(record, 48, file);
  }
  if (dirOffset + dirSize > size) throw new TorchCheckpointError(file, 'zip central directory runs past the end of the file (truncated download?)');
  const dir = readAt(fd, dirOffset, dirSize, file);
  const entries = new Map<string, ZipEntry>();
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 46 > dir.length || dir.readUInt32LE(at) !== 0x02014b50) throw new TorchCheckpointError(file, `zip central directory entry ${i} is damaged`);
    const method = dir.readUInt16LE(at + 10);
    let compressedSize = dir.readUInt32LE(at + 20);
    let entrySize = dir.readUInt32LE(at + 24);
    const nameLength = dir.readUInt16LE(at + 28);
    const extraLength = dir.readUInt16LE(at + 30);
    const commentLength = dir.readUInt16LE(at + 32);
    let localHeader = dir.readUInt32LE(at + 42);
    const name = dir.toString('utf8', at + 46, at + 46 + nameLength);
    // zip64 extended information: the 64-bit values of the fields that read 0xffffffff, in this order
    for (let x = at + 46 + nameLength; x + 4 <= at + 46 + nameLength + extraLength; ) {
      const id = dir.readUInt16LE(x);
      const len = dir.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let p = x + 4;
        if (entrySize === 0xffffffff) (entrySize = u64(dir, p, file)), (p += 8);
        if (compressedSize === 0xffffffff) (compressedSize = u64(dir, p, file)), (p += 8);
        if (localHeader === 0xffffffff) localHeader = u64(dir, p, file);
      }
      x += 4 + len;
    }
    entries.set(name, { name, method, compressedSize, size: entrySize, localHeader });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

function readEntry(fd: number, entry: ZipEntry, file: string): Buffer {
  const local = readAt(fd, entry.localHeader, 30, file);
  if (local.readUInt32LE(0) !== 0x04034b50) throw new TorchCheckpointError(file, `zip entry ${entry.name}: local header missing`);
  const start = entry.localHeader + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  const raw = readAt(fd, start, entry.compressedSize, file);
  if (entry.method === 0) return raw;
  if (entry.method === 8) return zlib.inflateRawSync(raw);
  throw new TorchCheckpointError(file, `zip entry ${entry.name}: compression method ${entry.method} is not supported (stored or deflate only)`);
}

// ---------------------------------------------------------------------------------------------
// Pickle (the opcodes of a nested dict of tensors, protocols 2-5)
// ---------------------------------------------------------------------------------------------

const MARK = Symbol('mark');
type StackItem = PickleValue | GlobalRef | StorageRef | typeof MARK;

function isTensor(v: unknown): v is TorchTensorRef {
  return typeof v === 'object' && v !== null && (v as { kind?: string }).kind === 'tensor';
}

function isStorage(v: unknown): v is StorageRef {
  return typeof v === 'object' && v !== null && (v as { kind?: string }).kind === 'storage';
}

function isGlobal(v: unknown): v is GlobalRef {
  return typeof v === 'object' && v !== null && (v as { kind?: string }).kind === 'global';
}

function asInt(v: StackItem, what: string, fail: (d: string) => never): number {
  if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`${what} is not an integer`);
  return v as number;
}

function asIntTuple(v: StackItem, what: string, fail: (d: string) => never): number[] {
  if (!Array.isArray(v)) fail(`${what} is not a tuple`);
  return (v as PickleValue[]).map((x, i) => asInt(x, `${what}[${i}]`, fail));
}

/**
 * Unpickles `bytes` (the data.pkl of a torch.save zip) into PickleValues. Refuses, naming
 * `file`, every global outside the whitelist and every opcode that constructs arbitrary objects.
 */
export function unpickleStateDict(bytes: Uint8Array, file: string): PickleValue {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, StackItem>();
  let pos = 0;
  let op = 0;
  const fail = (detail: string): never => {
    throw new TorchCheckpointError(file, `data.pkl byte ${pos}: ${detail}`);
  };
  const need = (n: number) => {
    if (pos + n > buf.length) fail(`truncated pickle (opcode 0x${op.toString(16)} needs ${n} more bytes)`);
  };
  const pop = (): StackItem => (stack.length === 0 ? fail('stack underflow') : stack.pop()!);
  const popMark = (): StackItem[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail('MARK missing');
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const top = (): StackItem => (stack.length === 0 ? fail('stack underflow') : stack[stack.length - 1]);
  const str = (n: number, enc: BufferEncoding = 'utf8') => {
    need(n);
    const s = buf.toString(enc, pos, pos + n);
    pos += n;
    return s;
  };
  const line = () => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) fail('GLOBAL without a newline');
    const s = buf.toString('latin1', pos, end);
    pos = end + 1;
    return s;
  };
  const global = (module: string, name: string): GlobalRef => {
    const full = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(full)) {
      throw new TorchCheckpointError(
        file,
        `refused: the pickle imports ${full}, which a checkpoint of tensors never needs; loading it in Python would run it. ` +
          `Nothing from it was executed. Only ${[...ALLOWED_GLOBALS].join(', ')} are accepted; ` +
          'if you trust the file, re-save its weights alone (torch.save(state_dict) or safetensors)',
      );
    }
    return { kind: 'global', name: full };
  };
  const dictOf = (v: StackItem, what: string): PickleDict => (v instanceof Map ? v : fail(`${what} on something that is not a dict`));
  const setItems = (d: PickleDict, items: StackItem[]) => {
    if (items.length % 2 !== 0) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) d.set(items[i] as PickleValue, items[i + 1] as PickleValue);
  };

  for (;;) {
    if (pos >= buf.length) fail('pickle ends without STOP');
    op = buf[pos++];
    switch (op) {
      case 0x80: // PROTO
        need(1);
        if (buf[pos] > 5) fail(`pickle protocol ${buf[pos]} is newer than 5`);
        pos += 1;
        break;
      case 0x95: // FRAME
        need(8);
        pos += 8;
        break;
      case 0x2e: { // STOP
        const result = pop();
        if (isGlobal(result) || isStorage(result) || result === MARK) fail('the pickle does not hold a value');
        return result as PickleValue;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(buf.readInt32LE(pos));
        pos += 4;
        break;
      case 0x4b: // BININT1
        need(1);
        stack.push(buf[pos++]);
        break;
      case 0x4d: // BININT2
        need(2);
        stack.push(buf.readUInt16LE(pos));
        pos += 2;
        break;
      case 0x8a: // LONG1
      case 0x8b: { // LONG4
        const width = op === 0x8a ? 1 : 4;
        need(width);
        const n = width === 1 ? buf[pos] : buf.readUInt32LE(pos);
        pos += width;
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[pos + i]);
        if (n > 0 && buf[pos + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        pos += n;
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        need(8);
        stack.push(buf.readDoubleBE(pos));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        need(4);
        pos += 4;
        stack.push(str(buf.readUInt32LE(pos - 4)));
        break;
      case 0x8c: // SHORT_BINUNICODE
        need(1);
        pos += 1;
        stack.push(str(buf[pos - 1]));
        break;
      case 0x8d: // BINUNICODE8
        need(8);
        pos += 8;
        stack.push(str(u64(buf, pos - 8, file)));
        break;
      case 0x54: // BINSTRING (Python 2 str)
        need(4);
        pos += 4;
        stack.push(str(buf.readUInt32LE(pos - 4), 'latin1'));
        break;
      case 0x55: // SHORT_BINSTRING
        need(1);
        pos += 1;
        stack.push(str(buf[pos - 1], 'latin1'));
        break;
      case 0x42: // BINBYTES
      case 0x43: { // SHORT_BINBYTES
        const width = op === 0x43 ? 1 : 4;
        need(width);
        const n = width === 1 ? buf[pos] : buf.readUInt32LE(pos);
        pos += width;
        need(n);
        stack.push(Uint8Array.from(buf.subarray(pos, pos + n)));
        pos += n;
        break;
      }
      case 0x74: // TUPLE
        stack.push(popMark() as PickleValue[]);
        break;
      case 0x85: // TUPLE1
        stack.push([pop() as PickleValue]);
        break;
      case 0x86: { // TUPLE2
        const b = pop();
        stack.push([pop() as PickleValue, b as PickleValue]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop() as PickleValue, b as PickleValue, c as PickleValue]);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const list = top();
        if (!Array.isArray(list)) fail('APPEND to something that is not a list');
        (list as PickleValue[]).push(v as PickleValue);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const list = top();
        if (!Array.isArray(list)) fail('APPENDS to something that is not a list');
        (list as PickleValue[]).push(...(items as PickleValue[]));
        break;
      }
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(dictOf(top(), 'SETITEM'), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(dictOf(top(), 'SETITEMS'), items);
        break;
      }
      case 0x71: // BINPUT
        need(1);
        memo.set(buf[pos++], top());
        break;
      case 0x72: // LONG_BINPUT
        need(4);
        memo.set(buf.readUInt32LE(pos), top());
        pos += 4;
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const width = op === 0x68 ? 1 : 4;
        need(width);
        const id = width === 1 ? buf[pos] : buf.readUInt32LE(pos);
        pos += width;
        if (!memo.has(id)) fail(`memo ${id} was never stored`);
        stack.push(memo.get(id)!);
        break;
      }
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x63: { // GLOBAL
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL without two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x51: { // BINPERSID: ('storage', torch.<Type>Storage, key, location, numel)
        const pid = pop();
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 3) fail('persistent id is not a torch storage');
        const [, type, key] = pid as unknown as [string, StackItem, StackItem];
        if (!isGlobal(type) || !type.name.startsWith('torch.') || !type.name.endsWith('Storage')) fail('persistent id without a storage type');
        if (typeof key !== 'string' || !/^[A-Za-z0-9_]+$/.test(key)) fail('persistent id with a bad storage key');
        stack.push({ kind: 'storage', key: key as string, type: (type as GlobalRef).name.slice('torch.'.length) });
        break;
      }
      case 0x52: { // REDUCE: only the whitelisted builders, which describe rather than run
        const args = pop();
        const callable = pop();
        if (!isGlobal(callable)) fail('REDUCE of something that is not a global');
        if (!Array.isArray(args)) fail('REDUCE without an argument tuple');
        const a = args as StackItem[];
        const g = (callable as GlobalRef).name;
        if (g === REBUILD_TENSOR) {
          const [storage, offset, size, stride] = a;
          if (!isStorage(storage)) fail(`${REBUILD_TENSOR} without a storage`);
          const shape = asIntTuple(size, 'tensor size', fail);
          const strides = asIntTuple(stride, 'tensor stride', fail);
          if (strides.length !== shape.length) fail(`tensor of shape [${shape}] with strides [${strides}]`);
          const ref: TorchTensorRef = { kind: 'tensor', storage: storage as StorageRef, offset: asInt(offset, 'storage offset', fail), shape, stride: strides };
          stack.push(ref);
        } else if (g === REBUILD_PARAMETER || g === REBUILD_PARAMETER_WITH_STATE) {
          if (!isTensor(a[0])) fail(`${g} without a tensor`);
          stack.push(a[0]);
        } else if (g === ORDERED_DICT) {
          const d: PickleDict = new Map();
          if (a.length > 0) {
            if (!Array.isArray(a[0])) fail('OrderedDict of something that is not a list of pairs');
            for (const pair of a[0] as PickleValue[]) {
              if (!Array.isArray(pair) || pair.length !== 2) fail('OrderedDict item that is not a pair');
              d.set((pair as PickleValue[])[0], (pair as PickleValue[])[1]);
            }
          }
          stack.push(d);
        } else {
          fail(`${g} cannot be called`);
        }
        break;
      }
      case 0x62: { // BUILD: only a dict's attributes (a state_dict's _metadata), which are not kept
        pop();
        if (!(top() instanceof Map)) fail('BUILD of an object other than a dict (refused: it would set state on an arbitrary object)');
        break;
      }
      case 0x69: // INST
      case 0x6f: // OBJ
      case 0x81: // NEWOBJ
      case 0x92: // NEWOBJ_EX
        fail(`refused: opcode 0x${op.toString(16)} constructs an arbitrary object, which a checkpoint of tensors never needs; nothing was executed`);
        break;
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16)} (this reader takes the nested dicts of tensors torch.save writes)`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The checkpoint
// ---------------------------------------------------------------------------------------------

export interface TorchCheckpoint {
  /** The unpickled object: usually a dict (of tensors, or holding 'model' / 'state_dict'). */
  root: PickleValue;
  /** Reads a tensor's elements; F16/BF16/F64 become float32, I64 int32 (as readSafetensors). */
  readTensor(ref: TorchTensorRef, name: string): LoadedTensor;
}

/** First bytes of a pickle written by torch.save's legacy format (before PyTorch 1.6): PROTO 2, LONG1 of the magic number. */
const LEGACY_MAGIC = Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);

/** True if `head` (the first bytes of a file) look like a zip or a pickle: a PyTorch checkpoint. */
export function looksLikeTorchFile(head: Uint8Array): boolean {
  // a zip (torch.save since 1.6) or the legacy format's magic number; a safetensors file may begin
  // with 0x80 too (its little-endian header length), so one byte is not enough
  return (head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) || (head.length >= 3 && head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a);
}

/** Opens a torch.save zip: reads its directory and unpickles data.pkl (refusing anything beyond tensors). */
export function readTorchCheckpoint(file: string): TorchCheckpoint {
  const fd = fs.openSync(file, 'r');
  let root: PickleValue;
  let entries: Map<string, ZipEntry>;
  let prefix: string;
  try {
    const head = readAt(fd, 0, Math.min(LEGACY_MAGIC.length, fs.fstatSync(fd).size), file);
    if (head.equals(LEGACY_MAGIC)) {
      throw new TorchCheckpointError(
        file,
        "PyTorch's legacy (pre-1.6, non-zip) serialization is not supported: re-save it with a current torch.save (the zip format, the default since 1.6) or as safetensors",
      );
    }
    entries = readZipDirectory(fd, file);
    const pickles = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pickles.length !== 1) {
      throw new TorchCheckpointError(file, `a zip but not a torch.save checkpoint: expected one <name>/data.pkl, found ${pickles.length === 0 ? 'none' : pickles.join(', ')}`);
    }
    prefix = pickles[0].slice(0, -'data.pkl'.length);
    const byteorder = entries.get(`${prefix}byteorder`);
    if (byteorder && readEntry(fd, byteorder, file).toString('latin1') !== 'little') {
      throw new TorchCheckpointError(file, 'saved on a big-endian machine: not supported');
    }
    root = unpickleStateDict(readEntry(fd, entries.get(pickles[0])!, file), file);
  } finally {
    fs.closeSync(fd);
  }
  return {
    root,
    readTensor(ref, name) {
      const fail = (detail: string): never => {
        throw new TorchCheckpointError(file, `tensor "${name}": ${detail}`);
      };
      const dtype = STORAGE_DTYPES[ref.storage.type];
      if (!dtype) fail(`${ref.storage.type} elements are not supported (float and int storages only)`);
      const elementBytes = ELEMENT_BYTES[ref.storage.type];
      const entry = entries.get(`${prefix}data/${ref.storage.key}`) ?? fail(`storage ${ref.storage.key} is missing from the archive`);
      const count = ref.shape.reduce((a, b) => a * b, 1);
      const storageElements = entry.size / elementBytes;
      // the element range the view touches (strides may be any non-negative values)
      let last = ref.offset;
      for (let d = 0; d < ref.shape.length; d++) {
        if (ref.stride[d] < 0) fail(`negative stride ${ref.stride[d]}`);
        if (ref.shape[d] > 0) last += (ref.shape[d] - 1) * ref.stride[d];
      }
      if (count > 0 && (ref.offset < 0 || last >= storageElements)) fail(`view [offset ${ref.offset}, shape ${ref.shape}, stride ${ref.stride}] runs past its storage of ${storageElements} elements`);
      const fd2 = fs.openSync(file, 'r');
      let storage: Buffer;
      try {
        storage = readEntry(fd2, entry, file);
      } finally {
        fs.closeSync(fd2);
      }
      const raw = gatherStrided(storage, elementBytes, ref.offset, ref.shape, ref.stride);
      return { dtype: dtype!, shape: [...ref.shape], data: decodeTensorBytes(dtype!, raw, file, name) };
    },
  };
}

/** The bytes of a strided view, laid out contiguously (row-major). */
function gatherStrided(storage: Buffer, elementBytes: number, offset: number, shape: number[], stride: number[]): ArrayBuffer {
  const count = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(count * elementBytes);
  const contiguous = shape.every((_, d) => shape[d] === 1 || stride[d] === shape.slice(d + 1).reduce((a, b) => a * b, 1));
  if (contiguous) {
    out.set(storage.subarray(offset * elementBytes, (offset + count) * elementBytes));
    return out.buffer;
  }
  const index = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < count; i++) {
    let src = offset;
    for (let d = 0; d < shape.length; d++) src += index[d] * stride[d];
    out.set(storage.subarray(src * elementBytes, (src + 1) * elementBytes), i * elementBytes);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out.buffer;
}
