// A dataset of image files laid out one folder per class (torchvision's ImageFolder):
// root/cat/001.png, root/dog/xyz.jpg, ... Class names are the sorted folder names, labels their
// positions. Files are decoded with sharp (libvips), which runs in libuv's thread pool, so
// decoding does not block the event loop; with DataLoader numWorkers > 0 the transforms run in
// worker threads too.
import { readdirSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { extname, join } from 'node:path';
import { type Rng, globalRng } from '../random.js';
import type { AsyncDataset, Sample, WorkerSource } from './dataset.js';
import { checkIndex } from './dataset.js';
import { type Size, pairSize, toTensor } from './functional.js';
import { type Transform, type TransformSpec, transformFromSpec } from './transforms.js';

/** File types decoded by default (those of torchvision's IMG_EXTENSIONS that sharp reads, plus gif/avif). */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif', '.avif'];

export interface ImageFolderOptions {
  /**
   * Resize while decoding (with sharp's antialiased bilinear filter, close to PIL's bilinear):
   * a number sets the shorter side (aspect kept, like transforms.resize), [h, w] is exact.
   * Default: keep each image's size (then a crop transform must bring samples to one size).
   */
  size?: Size;
  /** Applied to each decoded [3, H, W] image in [0, 1] (e.g. randomResizedCrop, normalize). */
  transform?: Transform;
  /** File extensions to load, lower case with the dot (default IMAGE_EXTENSIONS). */
  extensions?: string[];
}

/** The subset of sharp's API used here (sharp ships its own full typings). */
interface SharpImage {
  metadata(): Promise<{ width?: number; height?: number }>;
  resize(opts: { width: number; height: number; fit: 'fill'; kernel: string }): SharpImage;
  toColourspace(space: string): SharpImage;
  removeAlpha(): SharpImage;
  raw(): SharpImage;
  toBuffer(opts: {
    resolveWithObject: true;
  }): Promise<{ data: Buffer; info: { width: number; height: number; channels: number; depth?: string } }>;
}
type Sharp = (input: string, opts?: { limitInputPixels?: number }) => SharpImage;

let sharpModule: Sharp | null = null;

/**
 * sharp, loaded on first use so that ferroconv does not need it unless images are decoded.
 * Loaded with require (sharp is CommonJS), which also honours NODE_PATH.
 */
export function loadSharp(): Sharp {
  if (!sharpModule) {
    try {
      sharpModule = createRequire(import.meta.url)('sharp') as Sharp;
    } catch (e) {
      throw new Error(
        `ImageFolder: decoding images needs the 'sharp' package (npm install sharp): ${(e as Error).message}`,
      );
    }
  }
  return sharpModule;
}

/**
 * Image files under root/<class>/ (any depth), decoded to float32 [3, H, W] in [0, 1] (RGB; gray
 * images are expanded and alpha dropped, like PIL's convert('RGB')), then `transform`.
 * Samples are ordered by class, then by path; `classes[label]` is the folder name. Unlike
 * torchvision, hidden folders (.ipynb_checkpoints, ...) are not taken as classes.
 */
export class ImageFolder implements AsyncDataset {
  readonly classes: string[];
  readonly classToIdx: Record<string, number>;
  /** [path, label] for every image. */
  readonly samples: [string, number][];
  private readonly size: [number, number] | number | null;
  private readonly transform: Transform | null;
  private readonly extensions: string[];

  constructor(
    readonly root: string,
    opts: ImageFolderOptions = {},
    scanned?: { classes: string[]; samples: [string, number][] },
  ) {
    if (typeof root !== 'string') throw new Error(`ImageFolder: root must be a folder path, got ${typeof root}`);
    const size = opts.size ?? null;
    if (size !== null) {
      if (typeof size === 'number' || (Array.isArray(size) && size.length === 1)) {
        this.size = pairSize('ImageFolder: size', size)[0];
      } else {
        this.size = pairSize('ImageFolder: size', size);
      }
    } else {
      this.size = null;
    }
    if (opts.transform !== undefined && typeof opts.transform !== 'function') {
      throw new Error('ImageFolder: transform must be a function (a transform)');
    }
    this.transform = opts.transform ?? null;
    this.extensions = (opts.extensions ?? IMAGE_EXTENSIONS).map((e) => e.toLowerCase());
    const found = scanned ?? scan(root, this.extensions);
    this.classes = found.classes;
    this.samples = found.samples;
    this.classToIdx = Object.fromEntries(this.classes.map((c, i) => [c, i]));
  }

  get length(): number {
    return this.samples.length;
  }

  async getAsync(index: number, rng: Rng = globalRng): Promise<Sample> {
    checkIndex('ImageFolder.getAsync', index, this.length);
    const [path, label] = this.samples[index];
    let image = await decodeImage(path, this.size);
    if (this.transform) image = this.transform(image, rng);
    return { image, label };
  }

  workerSource(): WorkerSource {
    const spec: TransformSpec | null = this.transform ? (this.transform.spec ?? null) : null;
    if (this.transform && !spec) {
      throw new Error(
        'ImageFolder: with numWorkers > 0 the transform must be built from ferroconv transforms ' +
          '(a custom function cannot be sent to a worker thread)',
      );
    }
    return {
      kind: 'imageFolder',
      root: this.root,
      options: {
        size: this.size,
        transform: spec,
        extensions: this.extensions,
        classes: this.classes,
        samples: this.samples,
      },
    };
  }

  /** Rebuilds an ImageFolder from workerSource().options without scanning the disk again. */
  static fromWorkerOptions(root: string, options: unknown): ImageFolder {
    const o = options as {
      size: Size | null;
      transform: TransformSpec | null;
      extensions: string[];
      classes: string[];
      samples: [string, number][];
    };
    return new ImageFolder(
      root,
      {
        size: o.size ?? undefined,
        transform: o.transform ? transformFromSpec(o.transform) : undefined,
        extensions: o.extensions,
      },
      { classes: o.classes, samples: o.samples },
    );
  }
}

/** Most pixels an image file may declare: 2^26, 8192x8192 (a 48-megapixel photo fits). */
const MAX_FILE_PIXELS = 2 ** 26;
/**
 * Most pixels of a decoded (resized) image: 2^24, 4096x4096, a 192 MiB tensor. libvips needs
 * several times that in intermediate buffers (16-bit and alpha inputs more), so this bounds a
 * decode at a few hundred MB; larger images are decoded with a `size`.
 */
const MAX_DECODED_PIXELS = 2 ** 24;

/**
 * Decodes an image file to float32 [3, H, W] in [0, 1]. `size`: shorter side (number) or exact
 * [h, w]; null keeps the file's size.
 */
export async function decodeImage(
  path: string,
  size: number | [number, number] | null = null,
): Promise<ReturnType<typeof toTensor>> {
  const sharp = loadSharp();
  try {
    // The same cap on what the file declares: a 114-byte PNG can claim hundreds of megapixels,
    // and libvips would allocate them before finding the data missing.
    const open = () => sharp(path, { limitInputPixels: MAX_FILE_PIXELS });
    let img = open();
    let h: number;
    let w: number;
    if (Array.isArray(size)) {
      [h, w] = size;
    } else {
      const meta = await open().metadata();
      const ih = meta.height ?? 0;
      const iw = meta.width ?? 0;
      if (!(ih > 0 && iw > 0)) throw new Error('image has no size');
      if (size === null) [h, w] = [ih, iw];
      // Same arithmetic as transforms.resize(number): shorter side to `size`.
      else if (iw <= ih) [h, w] = [Math.floor((size * ih) / iw), size];
      else [h, w] = [size, Math.floor((size * iw) / ih)];
    }
    // A tiny file can declare an extreme aspect ratio (millions of pixels by a few): keeping its
    // shorter side would ask libvips for a gigantic image, seconds and gigabytes for nothing.
    if (h * w > MAX_DECODED_PIXELS) {
      const what = size === null ? "decoding at the file's size" : 'resizing';
      throw new Error(
        `${what} to ${h}x${w} would make ${h * w} pixels (at most ${MAX_DECODED_PIXELS}; pass a smaller size)`,
      );
    }
    if (size !== null) img = img.resize({ width: w, height: h, fit: 'fill', kernel: 'linear' });
    const { data, info } = await img.toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.depth !== undefined && info.depth !== 'uchar')
      throw new Error(`decoded to ${info.depth} samples, expected 8-bit`);
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return toTensor(data, info);
  } catch (e) {
    throw new Error(`ImageFolder: cannot decode ${path}: ${(e as Error).message}`);
  }
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch (e) {
    throw new Error(`ImageFolder: cannot read folder ${dir}: ${(e as Error).message}`);
  }
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false; // a dangling link or an unreadable entry: not a class folder
  }
}

function scan(root: string, extensions: string[]): { classes: string[]; samples: [string, number][] } {
  if (!isDir(root)) throw new Error(`ImageFolder: root ${root} is not a folder`);
  const classes = listDir(root).filter((name) => !name.startsWith('.') && isDir(join(root, name)));
  if (classes.length === 0) throw new Error(`ImageFolder: no class folders in ${root} (expected root/<class>/<image>)`);
  const samples: [string, number][] = [];
  const empty: string[] = [];
  classes.forEach((cls, label) => {
    const before = samples.length;
    // Folders are followed through symbolic links (as torchvision does), once each, so a link
    // cycle cannot recurse forever.
    const seen = new Set<string>();
    const walk = (dir: string): void => {
      const real = realpathSync(dir);
      if (seen.has(real)) return;
      seen.add(real);
      // A folder's own files first, then its sub-folders: torchvision's sorted(os.walk(...)) order.
      const subdirs: string[] = [];
      for (const name of listDir(dir)) {
        const p = join(dir, name);
        if (isDir(p)) subdirs.push(p);
        else if (extensions.includes(extname(name).toLowerCase())) samples.push([p, label]);
      }
      subdirs.forEach(walk);
    };
    walk(join(root, cls));
    if (samples.length === before) empty.push(cls);
  });
  if (empty.length > 0) {
    throw new Error(
      `ImageFolder: no ${extensions.join('/')} files for class${empty.length > 1 ? 'es' : ''} ` +
        `${empty.join(', ')} in ${root}`,
    );
  }
  return { classes, samples };
}
