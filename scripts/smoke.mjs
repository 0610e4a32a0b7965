// The installed-package smoke test of `npm run package`: run with plain `node` inside a project
// that installed ferroconv from its tarballs, on every platform and emulated CPU the script can
// reach. It checks what a first user does: import (ESM and require), a conv against a plain
// JavaScript loop for every algorithm on the best and the scalar SIMD path, a zoo model's
// forward, and a bad argument giving an Error. Prints one JSON line; exits 1 on any failure.
import { createRequire } from 'node:module';
import * as fc from 'ferroconv';

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};

// require(esm): CommonJS users load the same module.
const cjs = createRequire(import.meta.url)('ferroconv');
check(typeof cjs.conv2d === 'function' && cjs.conv2d === fc.conv2d, 'require("ferroconv") gives the ESM module');

// conv2d by its definition: out[n][o][y][x] = b[o] + sum_c,i,j in[n][c][y*s+i-p][x*s+j-p] * w[o][c][i][j].
function reference(x, [n, c, h, w], wt, [o, , kh, kw], bias, s, p) {
  const oh = Math.floor((h + 2 * p - kh) / s) + 1;
  const ow = Math.floor((w + 2 * p - kw) / s) + 1;
  const out = new Float64Array(n * o * oh * ow);
  for (let b = 0; b < n; b++)
    for (let oc = 0; oc < o; oc++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          let acc = bias[oc];
          for (let ic = 0; ic < c; ic++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const iy = y * s + i - p;
                const ix = xx * s + j - p;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                acc += x[((b * c + ic) * h + iy) * w + ix] * wt[((oc * c + ic) * kh + i) * kw + j];
              }
          out[((b * o + oc) * oh + y) * ow + xx] = acc;
        }
  return out;
}

const rng = new fc.Rng(7);
const shapes = [
  { x: [2, 5, 11, 9], w: [6, 5, 3, 3], s: 1, p: 1 },
  { x: [1, 3, 17, 17], w: [4, 3, 5, 5], s: 1, p: 2 },
  { x: [2, 4, 10, 12], w: [3, 4, 3, 3], s: 2, p: 0 },
];
let worst = 0;
for (const simd of ['auto', 'scalar']) {
  fc.setSimd(simd);
  for (const algo of ['auto', 'direct', 'im2col', 'fft', 'winograd']) {
    for (const sh of shapes) {
      const x = fc.randn(sh.x, { rng });
      const w = fc.randn(sh.w, { rng });
      const b = fc.randn([sh.w[0]], { rng });
      const y = fc.conv2d(x, w, b, { stride: sh.s, padding: sh.p, algo });
      const want = reference(x.data, sh.x, w.data, sh.w, b.data, sh.s, sh.p);
      let err = want.length === y.data.length ? 0 : Number.POSITIVE_INFINITY;
      for (let i = 0; i < want.length; i++)
        err = Math.max(err, Math.abs(y.data[i] - want[i]) / (1 + Math.abs(want[i])));
      worst = Math.max(worst, err);
      check(err < 1e-4, `conv2d ${algo} on ${simd} SIMD, input ${sh.x}: error ${err}`);
    }
  }
}
fc.setSimd('auto');

// A zoo model end to end (small input so emulated CPUs finish quickly).
const model = fc.models.resnet18({ numClasses: 10 });
model.eval();
const logits = model.forward(fc.randn([1, 3, 64, 64], { rng }));
check(logits.shape.join() === '1,10' && logits.data.every(Number.isFinite), `resnet18 forward gave ${logits.shape}`);

// Bad input is an Error that names what was expected, not a crash.
let message = '';
try {
  fc.conv2d(fc.zeros([1, 3, 8, 8]), fc.zeros([4, 2, 3, 3]));
} catch (e) {
  message = e instanceof Error ? e.message : String(e);
}
check(/conv2d/.test(message) && /channel/.test(message), `bad conv2d argument: got ${JSON.stringify(message)}`);

const i = fc.info();
console.log(
  JSON.stringify({
    ok: failures.length === 0,
    platform: `${i.platform}-${i.arch}`,
    node: i.node,
    simd: i.simdDetected,
    convWorstRelErr: Number(worst.toExponential(2)),
    failures,
  }),
);
process.exit(failures.length === 0 ? 0 : 1);
