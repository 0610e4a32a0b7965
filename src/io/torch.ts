// PyTorch checkpoints: the files torch.save writes, in its zip format (torch >= 1.6: an archive of
// `<name>/data.pkl`, the object as a pickle whose tensors refer to storages, and
// `<name>/data/<key>`, each storage's raw little-endian bytes) and the legacy format before it
// (magic number, protocol and system-info pickles, the object's pickle, the storage keys, then
// each storage's size and bytes). The pickle is read by the restricted unpickler of pickle.ts:
// only containers, torch's tensor-rebuild calls, its storage types and OrderedDict are accepted,
// and nothing is ever executed.
//
// readTorch returns the state dict inside: the object itself when it maps names to tensors, else
// the first of its 'state_dict', 'model_state_dict', 'model', 'net', 'module' or 'ema' entries
// that does, with DataParallel's 'module.' prefix taken off when every key has it.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { unzipSync } from 'fflate';
import { Tensor } from '../tensor.js';
import { PickleGlobal, unpickle } from './pickle.js';
import { toFloat32 } from './safetensors.js';

/** torch's storage classes and the safetensors dtype of their elements. */
const STORAGES = new Map<string, [string, number]>([
  ['FloatStorage', ['F32', 4]],
  ['DoubleStorage', ['F64', 8]],
  ['HalfStorage', ['F16', 2]],
  ['BFloat16Storage', ['BF16', 2]],
  ['LongStorage', ['I64', 8]],
  ['IntStorage', ['I32', 4]],
  ['ShortStorage', ['I16', 2]],
  ['CharStorage', ['I8', 1]],
  ['ByteStorage', ['U8', 1]],
  ['BoolStorage', ['BOOL', 1]],
]);

/** A storage a persistent id named: its dtype and bytes. */
class Storage {
  constructor(
    readonly dtype: string,
    readonly itemSize: number,
    readonly bytes: Uint8Array,
  ) {}
  get numel(): number {
    return Math.floor(this.bytes.length / this.itemSize);
  }
}

/** Entries a checkpoint's state dict may sit under, in the order they are tried. */
const WRAPPERS = ['state_dict', 'model_state_dict', 'model', 'net', 'module', 'ema'];

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** The whole object a torch.save file holds (dicts as Maps, tensors as float32 Tensors). */
export interface TorchFile {
  object: unknown;
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/**
 * torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...): the elements of a strided
 * view of the storage, checked to lie inside it, as a contiguous float32 tensor.
 */
function rebuildTensor(args: unknown[], fail: (m: string) => never, budget: Budget): Tensor {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof Storage)) fail('a tensor without a storage');
  const st = storage as Storage;
  if (!isInt(offset) || offset < 0) fail('a tensor with a bad storage offset');
  if (!Array.isArray(size) || !size.every((d) => isInt(d) && d >= 0)) fail('a tensor with a bad size');
  if (!Array.isArray(stride) || stride.length !== size.length || !stride.every((d) => isInt(d) && d >= 0)) {
    fail('a tensor with a bad stride');
  }
  const dims = size as number[];
  const strides = stride as number[];
  const count = dims.reduce((a, b) => a * b, 1);
  if (count > 2 ** 31 - 1) fail(`a tensor of ${count} elements is too large`);
  // Views may overlap (an expanded tensor has stride 0), so the tensors a file makes are bounded
  // by its size instead: twice its bytes in elements, and 16M more.
  budget.left -= count;
  if (budget.left < 0) fail('the tensors add up to far more elements than the file holds');
  if (count === 0) return new Tensor(new Float32Array(0), dims);
  const last = (offset as number) + dims.reduce((s, d, i) => s + (d - 1) * strides[i], 0);
  if (last >= st.numel) fail(`a tensor reads element ${last} of a storage of ${st.numel}`);
  const contiguous = dims.every((_, i) => strides[i] === dims.slice(i + 1).reduce((a, b) => a * b, 1) || dims[i] === 1);
  const at = (offset as number) * st.itemSize;
  if (contiguous) {
    const bytes = st.bytes.subarray(at, at + count * st.itemSize);
    return new Tensor(toFloat32(bytes, st.dtype, count), dims);
  }
  // A strided view (a transposed or sliced tensor saved as it was): gathered element by element.
  const all = toFloat32(st.bytes.subarray(0, st.numel * st.itemSize), st.dtype, st.numel);
  const out = new Float32Array(count);
  const idx = dims.map(() => 0);
  let src = offset as number;
  for (let i = 0; i < count; i++) {
    out[i] = all[src];
    for (let d = dims.length - 1; d >= 0; d--) {
      idx[d]++;
      src += strides[d];
      if (idx[d] < dims[d]) break;
      src -= idx[d] * strides[d];
      idx[d] = 0;
    }
  }
  return new Tensor(out, dims);
}

/** Elements the tensors of one file may still take (see rebuildTensor). */
interface Budget {
  left: number;
}

const budgetFor = (bytes: Uint8Array): Budget => ({ left: 2 * bytes.length + (1 << 24) });

/** The unpickler's calls: torch's tensor rebuilds and OrderedDict; anything else is refused. */
function torchCall(fail: (m: string) => never, budget: Budget = { left: 0 }) {
  return (fn: PickleGlobal, args: unknown[]): unknown => {
    switch (fn.qualified) {
      case 'collections.OrderedDict':
        if (args.length) fail('OrderedDict with arguments');
        return new Map();
      case 'torch._utils._rebuild_tensor':
      case 'torch._utils._rebuild_tensor_v2':
        return rebuildTensor(args, fail, budget);
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state': {
        if (!(args[0] instanceof Tensor)) fail('a parameter without a tensor');
        return args[0];
      }
      case 'torch.Size':
        if (!Array.isArray(args[0])) fail('torch.Size of something not a tuple');
        return args[0];
      default:
        if (fn.module.startsWith('torch.nn.') || fn.module === '__main__') {
          return fail(
            `${fn.qualified}: the file holds a pickled module, not a state dict; ` +
              'save model.state_dict() with torch.save and load that',
          );
        }
        return fail(`${fn.qualified} is not allowed (only tensors, storages and plain containers are read)`);
    }
  };
}

/** A storage persistent id: ('storage', <storage class>, key, location, numel[, view]). */
function storageId(
  pid: unknown,
  fail: (m: string) => never,
): { key: string; dtype: string; size: number; numel: number } {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) fail('a persistent id that is not a storage');
  const [, cls, key, , numel] = pid as unknown[];
  if (!(cls instanceof PickleGlobal) || cls.module !== 'torch') fail('a storage of an unknown type');
  const known = STORAGES.get((cls as PickleGlobal).name);
  if (!known) return fail(`storage type torch.${(cls as PickleGlobal).name} is not supported`);
  if (typeof key !== 'string' || !isInt(numel) || numel < 0) fail('a storage with a bad key or size');
  return { key: key as string, dtype: known[0], size: known[1], numel: numel as number };
}

function readZip(bytes: Uint8Array, fail: (m: string) => never, what: string): unknown {
  let files: Record<string, Uint8Array>;
  try {
    // Only stored (uncompressed) entries, as torch writes them, and small compressed ones: no
    // decompression bombs. And no more entries than the archive has room for (46 bytes of
    // central directory each): fflate takes the count from the end record as it is.
    let entries = 0;
    const most = Math.floor(bytes.length / 46);
    files = unzipSync(bytes, {
      filter: (f) => {
        if (++entries > most) throw new Error('the archive claims more entries than it can hold');
        return f.compression === 0 || (f.compression === 8 && f.originalSize <= 64 << 20);
      },
    });
  } catch (e) {
    return fail(`not a readable zip archive (${(e as Error).message})`);
  }
  const pkl = Object.keys(files).find((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (!pkl) return fail('no data.pkl in the archive: not a torch.save file');
  const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
  const storages = new Map<string, Storage>();
  const persistentLoad = (pid: unknown) => {
    const { key, dtype, size, numel } = storageId(pid, fail);
    const seen = storages.get(key);
    if (seen) return seen;
    const data = files[`${prefix}data/${key}`];
    if (!data) return fail(`storage ${key} is missing from the archive`);
    if (data.length < numel * size) fail(`storage ${key} holds ${data.length} bytes, ${numel * size} expected`);
    const s = new Storage(dtype, size, data.subarray(0, numel * size));
    storages.set(key, s);
    return s;
  };
  const byteorder = files[`${prefix}byteorder`];
  if (byteorder && new TextDecoder().decode(byteorder) !== 'little') fail('big-endian storages are not supported');
  return unpickle(files[pkl], { call: torchCall(fail, budgetFor(bytes)), persistentLoad, what }).value;
}

function readLegacy(bytes: Uint8Array, fail: (m: string) => never, what: string): unknown {
  const plain = { call: torchCall(fail), what };
  const magic = unpickle(bytes, plain);
  if (magic.value !== LEGACY_MAGIC) fail('not a torch.save file (no zip archive, no legacy magic number)');
  const protocol = unpickle(bytes, plain, magic.end);
  if (protocol.value !== 1001) fail(`legacy protocol ${String(protocol.value)} is not supported`);
  const sysInfo = unpickle(bytes, plain, protocol.end);
  if (sysInfo.value instanceof Map && sysInfo.value.get('little_endian') === false) {
    fail('big-endian storages are not supported');
  }
  // The storages' bytes follow the object's pickle, so it is read twice: once to find where it
  // ends and which storages it names (nothing built), then again with the storages in hand.
  const types = new Map<string, { dtype: string; size: number }>();
  const scan = unpickle(
    bytes,
    {
      call: (fn) => (fn.qualified === 'collections.OrderedDict' ? new Map() : null),
      persistentLoad: (pid) => {
        const { key, dtype, size } = storageId(pid, fail);
        types.set(key, { dtype, size });
        return null;
      },
      what,
    },
    sysInfo.end,
  );
  const keys = unpickle(bytes, plain, scan.end);
  if (!Array.isArray(keys.value)) fail('the storage key list is missing');
  const storages = new Map<string, Storage>();
  let pos = keys.end;
  for (const key of keys.value as unknown[]) {
    const t = typeof key === 'string' ? types.get(key) : undefined;
    if (!t) return fail(`storage ${String(key)} is not named by the object`);
    if (pos + 8 > bytes.length) fail(`truncated before storage ${key}`);
    const n = new DataView(bytes.buffer, bytes.byteOffset + pos, 8).getBigUint64(0, true);
    if (n * BigInt(t.size) > BigInt(bytes.length - pos - 8)) fail(`storage ${key} runs past the end of the file`);
    const len = Number(n) * t.size;
    storages.set(key as string, new Storage(t.dtype, t.size, bytes.subarray(pos + 8, pos + 8 + len)));
    pos += 8 + len;
  }
  const persistentLoad = (pid: unknown) => {
    const { key } = storageId(pid, fail);
    const base = storages.get(key) ?? fail(`storage ${key} has no data`);
    const view = (pid as unknown[])[5];
    if (view === undefined || view === null) return base;
    // (view key, offset, numel): a view into the storage, from torch before 0.4.
    const [, off, n] = Array.isArray(view) ? view : [];
    if (!isInt(off) || !isInt(n) || off < 0 || n < 0 || off + n > base.numel) fail('a storage view past its storage');
    const [o, c] = [off as number, n as number];
    return new Storage(base.dtype, base.itemSize, base.bytes.subarray(o * base.itemSize, (o + c) * base.itemSize));
  };
  const call = torchCall(fail, budgetFor(bytes));
  return unpickle(bytes, { call, persistentLoad, what }, sysInfo.end).value;
}

/** Reads a torch.save file (zip or legacy) into its object, refusing anything but data. */
export function readTorchObject(source: string | Uint8Array): unknown {
  const what = typeof source === 'string' ? source : '<buffer>';
  const name = `readTorch ${what}`;
  const fail = (msg: string): never => {
    throw new Error(`${name}: ${msg}`);
  };
  let bytes: Uint8Array;
  try {
    bytes = typeof source === 'string' ? readFileSync(source) : source;
  } catch (e) {
    return fail((e as Error).message);
  }
  try {
    if (bytes[0] === 0x50 && bytes[1] === 0x4b) return readZip(bytes, fail, name);
    return readLegacy(bytes, fail, name);
  } catch (e) {
    const msg = (e as Error).message;
    if (msg.startsWith(`${name}: `)) throw e;
    return fail(msg);
  }
}

/**
 * Whether the file at `path` is a torch.save file: a zip archive, or a protocol-2 pickle starting
 * with the legacy format's magic number. A file that cannot be read is not (its reader says why).
 */
export function isTorchFile(path: string): boolean {
  const head = new Uint8Array(4);
  let fd: number | null = null;
  try {
    fd = openSync(path, 'r');
    readSync(fd, head, 0, 4, 0);
  } catch {
    return false;
  } finally {
    if (fd !== null) closeSync(fd);
  }
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  const legacy = head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a;
  return zip || legacy;
}

function isStateDict(v: unknown): v is Map<string, Tensor> {
  if (!(v instanceof Map) || v.size === 0) return false;
  let tensors = 0;
  for (const [k, t] of v) {
    if (typeof k !== 'string') return false;
    if (t instanceof Tensor) tensors++;
    else if (!(typeof t === 'number')) return false;
  }
  return tensors > 0;
}

/**
 * The state dict in a PyTorch checkpoint (a .pth / .pt file from torch.save), as a Map of
 * float32 tensors by name: the object itself, or the state dict under a usual wrapper key
 * ('state_dict', 'model_state_dict', 'model', ...), with DataParallel's 'module.' prefix removed.
 * Numbers stored beside tensors (rare) are dropped. Throws naming the file otherwise.
 */
export function readTorch(source: string | Uint8Array): Map<string, Tensor> {
  const what = typeof source === 'string' ? source : '<buffer>';
  const obj = readTorchObject(source);
  let dict: Map<string, Tensor> | null = isStateDict(obj) ? obj : null;
  if (!dict && obj instanceof Map) {
    for (const k of WRAPPERS) {
      const v = obj.get(k);
      if (isStateDict(v)) {
        dict = v;
        break;
      }
    }
  }
  if (!dict) {
    const keys = obj instanceof Map ? [...obj.keys()].slice(0, 8).map(String).join(', ') : typeof obj;
    throw new Error(`readTorch ${what}: no state dict of tensors in the file (top level: ${keys})`);
  }
  const out = new Map<string, Tensor>();
  const strip = [...dict.keys()].every((k) => k.startsWith('module.'));
  for (const [k, t] of dict) if (t instanceof Tensor) out.set(strip ? k.slice('module.'.length) : k, t);
  return out;
}
