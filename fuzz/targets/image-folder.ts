// Target `image-folder`: an ImageFolder over a temporary root with two class folders, one
// holding the input (as .png or .jpg by its magic bytes), the other a valid image, and
// getAsync on the input's sample (decoding through sharp/libvips). The decode size comes from
// the input's length (none, shorter side 6, or exactly 5x7) so each input always runs the same
// way. A decoded sample must be a finite [3, H, W] tensor in [0, 1].
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageFolder } from '../../src/data/image-folder.js';
import { Rng } from '../../src/random.js';
import { FUZZ_DIR, InvariantError, type Target } from '../engine.js';
import { IMAGE_DICTIONARY, isJpeg, isPng, mutateImage } from '../formats/image.js';

const SIZES: (number | [number, number] | undefined)[] = [undefined, undefined, 6, [5, 7]];

export function createTarget(opts: { workDir?: string } = {}): Target {
  // A fresh decode every time: libvips would otherwise serve a cached image for a reused path.
  const sharp = createRequire(import.meta.url)('sharp') as { cache(on: boolean): void; concurrency(n: number): void };
  sharp.cache(false);
  const base = opts.workDir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const root = mkdtempSync(join(base, 'ferroconv-fuzz-images-'));
  const inputDir = join(root, 'a-input');
  const otherDir = join(root, 'b-other');
  mkdirSync(inputDir);
  mkdirSync(otherDir);
  writeFileSync(join(otherDir, 'ok.png'), readFileSync(join(FUZZ_DIR, 'corpus', 'image-folder', 'rgb-8x6.png')));
  let previous: string | null = null;
  let n = 0;
  return {
    name: 'image-folder',
    dictionary: IMAGE_DICTIONARY,
    isParserError: (message) => message.startsWith('ImageFolder: '),
    extension: (input) => (isJpeg(input) ? 'jpg' : isPng(input) ? 'png' : 'bin'),
    mutate: (input, rng) => mutateImage(input, rng),
    async execute(input) {
      if (previous) rmSync(previous, { force: true });
      const file = join(inputDir, `input-${n++}.${isJpeg(input) ? 'jpg' : 'png'}`);
      writeFileSync(file, input);
      previous = file;
      const size = SIZES[input.length % SIZES.length];
      const ds = new ImageFolder(root, { size });
      if (ds.length !== 2 || ds.samples[0][0] !== file)
        throw new InvariantError(`ImageFolder found ${ds.length} samples, expected the input first of 2`);
      const { image, label } = await ds.getAsync(0, new Rng(1));
      const [c, h, w] = image.shape;
      if (label !== 0 || image.shape.length !== 3 || c !== 3 || image.data.length !== c * h * w) {
        throw new InvariantError(`decoded sample has shape [${image.shape.join(', ')}] and label ${label}`);
      }
      if (Array.isArray(size) && (h !== size[0] || w !== size[1]))
        throw new InvariantError(`asked for ${size.join('x')}, got ${h}x${w}`);
      if (typeof size === 'number' && Math.min(h, w) !== size)
        throw new InvariantError(`asked for shorter side ${size}, got ${h}x${w}`);
      for (let i = 0; i < image.data.length; i++) {
        const v = image.data[i];
        if (!(v >= 0 && v <= 1)) throw new InvariantError(`decoded value ${v} at ${i} is outside [0, 1]`);
      }
    },
    close: () => rmSync(root, { recursive: true, force: true }),
  };
}
