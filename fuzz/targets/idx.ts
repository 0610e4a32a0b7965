// Target `idx`: parseIdx on the bytes (readIdxFile on a temporary .gz file when they are
// gzipped). What parses must hold together (dims match the data, the array type matches the
// type code), and ubyte files of MNIST's layouts ([N, H, W] images, [N] labels) go on through
// mnist({ dir }) with a matching partner file, then one sample and one batch are read.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type IdxArray, parseIdx, readIdxFile } from '../../src/data/idx.js';
import { mnist } from '../../src/data/mnist.js';
import { InvariantError, type Target } from '../engine.js';
import { IDX_DICTIONARY, isGzip, mutateIdx } from '../formats/idx.js';

const ARRAY_OF_TYPE: Record<number, new (n: number) => ArrayLike<number>> = {
  0x08: Uint8Array,
  0x09: Int8Array,
  0x0b: Int16Array,
  0x0c: Int32Array,
  0x0d: Float32Array,
  0x0e: Float64Array,
};
const NAME = 'idx';

function check(a: IdxArray): void {
  const n = a.dims.reduce((x, d) => x * d, 1);
  if (a.dims.length < 1 || a.dims.length > 8 || a.data.length !== n) {
    throw new InvariantError(`parseIdx: dims [${a.dims.join(', ')}] but ${a.data.length} values`);
  }
  if (!(a.data instanceof ARRAY_OF_TYPE[a.type]))
    throw new InvariantError(`parseIdx: type 0x${a.type.toString(16)} came back as ${a.data.constructor.name}`);
}

export function createTarget(opts: { workDir?: string } = {}): Target {
  const base = opts.workDir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(base, 'ferroconv-fuzz-idx-'));
  const gzPath = join(dir, 'input.gz');
  const mnistDir = join(dir, 'mnist');
  mkdirSync(mnistDir);
  const images = join(mnistDir, 'train-images-idx3-ubyte');
  const labels = join(mnistDir, 'train-labels-idx1-ubyte');
  const write = (path: string, bytes: Uint8Array, gz: boolean): void => {
    rmSync(gz ? path : `${path}.gz`, { force: true });
    writeFileSync(gz ? `${path}.gz` : path, bytes);
  };
  const ownPrefixes = [`${NAME}: `, `${dir}/`, 'MnistDataset: ', 'mnist: '];
  return {
    name: 'idx',
    dictionary: IDX_DICTIONARY,
    isParserError: (message) => ownPrefixes.some((p) => message.startsWith(p)),
    extension: (input) => (isGzip(input) ? 'idx.gz' : 'idx'),
    mutate: (input, rng) => mutateIdx(input, rng),
    execute(input) {
      const gz = isGzip(input);
      let a: IdxArray;
      if (gz) {
        writeFileSync(gzPath, input);
        a = readIdxFile(gzPath, { maxBytes: 64 << 20 });
      } else {
        a = parseIdx(input, NAME);
      }
      check(a);
      // The partner file: labels for images (some out of range when the first pixel says so),
      // or zero images of 2x2 for labels. (N can be huge with no data when H or W is 0.)
      const n = a.dims[0];
      if (a.type !== 0x08 || (a.dims.length !== 3 && a.dims.length !== 1) || n > 1 << 16) return;
      if (a.dims.length === 3) {
        const lab = new Uint8Array(8 + n);
        lab.set([0, 0, 8, 1, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
        for (let i = 0; i < n; i++) lab[8 + i] = i % 10;
        if (n > 0 && a.data[0] > 200) lab[8 + n - 1] = a.data[0] % 16;
        write(images, input, gz);
        write(labels, lab, false);
      } else {
        const img = new Uint8Array(16 + 4 * n);
        img.set([0, 0, 8, 3, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff, 0, 0, 0, 2, 0, 0, 0, 2]);
        write(images, img, false);
        write(labels, input, gz);
      }
      const ds = mnist({ train: true, dir: mnistDir, normalize: n % 2 === 0 });
      if (ds.length !== n) throw new InvariantError(`mnist: ${n} images in the file, length ${ds.length}`);
      if (n > 0) {
        const s = ds.get(n - 1);
        const b = ds.getBatch([0, n - 1]);
        if (s.image.size * 2 !== b.images.size || !(s.label >= 0 && s.label < 10))
          throw new InvariantError('mnist: sample and batch disagree');
      }
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
