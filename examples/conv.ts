// A first look at ferroconv: what it runs with, and one convolution through the Rust kernels.
import { conv2d, info, randn } from '../src/index.js';

console.log(info());
const x = randn([8, 3, 224, 224]);
const w = randn([64, 3, 7, 7], { std: 0.05 });
const t0 = performance.now();
const y = conv2d(x, w, null, { stride: 2, padding: 3 });
const ms = performance.now() - t0;
console.log(
  `conv2d [8,3,224,224] * [64,3,7,7] stride 2 -> [${y.shape.join(', ')}] in ${ms.toFixed(1)} ms, mean ${y.mean().toFixed(5)}`,
);
