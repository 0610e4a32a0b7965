// Structure-aware mutation of torch.save files: a zip archive's entries (the pickle data.pkl most
// often, a storage's bytes, an entry dropped or renamed) are mutated as bytes with pickle opcodes
// and torch's global names as the dictionary, then zipped again, so the mutations reach the
// unpickler and the storage checks instead of stopping at the archive's CRCs. Legacy files (one
// stream of pickles and storages) are mutated as bytes.
import { unzipSync, zipSync } from 'fflate';
import { type ByteContext, mutateBytes, utf8 } from '../mutate.js';
import type { Prng } from '../prng.js';

const NAMES = [
  'torch._utils\n_rebuild_tensor_v2\n',
  'torch._utils\n_rebuild_parameter\n',
  'collections\nOrderedDict\n',
  'torch\nFloatStorage\n',
  'torch\nHalfStorage\n',
  'torch\nBFloat16Storage\n',
  'torch\nLongStorage\n',
  'torch\nBoolStorage\n',
  'torch\nSize\n',
  'os\nsystem\n',
  'builtins\neval\n',
  'torch.nn.modules.linear\nLinear\n',
  'storage',
  'cpu',
  'state_dict',
  'module.',
];
// Opcodes worth splicing in: REDUCE, BUILD, NEWOBJ, STACK_GLOBAL, BINPERSID, MARK, SETITEMS,
// APPENDS, TUPLE, STOP, LONG_BINGET, LONG4, BINUNICODE8, FRAME.
const OPCODES = [0x52, 0x62, 0x81, 0x93, 0x51, 0x28, 0x75, 0x65, 0x74, 0x2e, 0x6a, 0x8b, 0x8d, 0x95];

export const TORCH_DICTIONARY: readonly Uint8Array[] = [
  ...NAMES.map(utf8),
  ...OPCODES.map((o) => Uint8Array.of(o)),
  Uint8Array.of(0x80, 0x02, 0x8a, 0x0a),
  utf8('PK\x03\x04'),
];

export function mutateTorch(input: Uint8Array, rng: Prng, corpus: readonly Uint8Array[]): Uint8Array | null {
  if (!(input[0] === 0x50 && input[1] === 0x4b)) return null;
  let files: Record<string, Uint8Array>;
  try {
    // fflate takes the entry count from the end record as it is: bounded here, as the reader does.
    let entries = 0;
    const most = Math.floor(input.length / 46);
    files = unzipSync(input, {
      filter: (f) => {
        if (++entries > most) throw new Error('too many entries');
        return f.compression === 0 || f.originalSize <= 1 << 20;
      },
    });
  } catch {
    return null;
  }
  const names = Object.keys(files);
  if (names.length === 0) return null;
  const pkl = names.find((n) => n.endsWith('data.pkl'));
  const ctx: ByteContext = { corpus, dictionary: TORCH_DICTIONARY };
  const choice = rng.int(10);
  if (choice < 7 && pkl) {
    files[pkl] = mutateBytes(files[pkl], rng, ctx);
  } else if (choice < 8) {
    const name = rng.pick(names);
    files[name] = mutateBytes(files[name], rng, ctx);
  } else if (choice < 9) {
    delete files[rng.pick(names)];
  } else {
    const name = rng.pick(names);
    files[`${name.slice(0, rng.int(name.length + 1))}x`] = files[name];
    delete files[name];
  }
  return zipSync(files, { level: 0 });
}
