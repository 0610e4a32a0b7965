// Convolution as an image kernel, where CNNs start: a picture (drawn here, so nothing is
// downloaded) filtered by each classic kernel through ferroconv's conv2d (identity, three edge
// detectors, Sobel, sharpen, box and Gaussian blur, unsharp masking, and an on-centre/off-surround
// difference of Gaussians), one image per kernel side by side. Run:
//   npx tsx examples/classic-kernels.ts [out/kernels.png]
// The same from the command line: ferroconv filter --kernel all in.png out.png
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import sharp from 'sharp';
import { KERNELS, filter, readImage, visualize } from '../src/index.js';

const out = process.argv[2] ?? 'out/kernels.png';
mkdirSync(dirname(out), { recursive: true });
const scene = `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">
  <rect width="96" height="96" fill="#334466"/>
  <circle cx="30" cy="30" r="18" fill="#ffcc33"/>
  <rect x="52" y="50" width="34" height="34" fill="#ee3333"/>
  <path d="M56 8 L90 8 L90 40 Z" fill="#55cc77"/>
  <text x="6" y="88" font-size="22" font-family="DejaVu Sans" font-weight="bold" fill="white">CNN</text>
</svg>`;
const input = out.replace(/\.png$/, '-input.png');
await sharp(Buffer.from(scene)).png().toFile(input);
const image = await readImage(input);

// Each kernel is an ordinary conv2d weight: sharpen is the identity plus a negative Laplacian.
console.log('sharpen =', JSON.stringify(KERNELS.sharpen));
const edges = filter(image, 'edge3');
const [lo, hi] = edges.data.reduce(([a, b], v) => [Math.min(a, v), Math.max(b, v)], [Infinity, -Infinity]);
console.log(`edge3 response from ${lo.toFixed(3)} to ${hi.toFixed(3)}: signed, edges both ways, 0 where flat`);

const r = await visualize.kernels(image, { out });
console.log(`wrote ${out}: the input and ${r.kernels.length} kernels (${r.kernels.join(', ')})`);
