// Failures inside the native code: a kernel that runs out of memory or hits a bug must come
// back as a JavaScript Error naming the op, print nothing, and leave the process working.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { conv2d, linear, maxPool2d, ones, randn, Rng, zeros } from '../src/index.js';
import { expectClose } from './helpers.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('conv2d algorithms agree where output windows lie in the padding', () => {
  it('the FFT input gradient of a 1x1 kernel with padding 2 equals im2col and direct', () => {
    const rng = new Rng(7);
    const x = randn([1, 1, 4, 4], { rng });
    const w = randn([1, 1, 1, 1], { rng });
    const grads = (['fft', 'im2col', 'direct'] as const).map((algo) => {
      const xi = x.clone().requiresGrad_();
      conv2d(xi, w, null, { padding: 2, algo }).backward(ones([1, 1, 8, 8]));
      return xi.grad!;
    });
    expectClose(grads[0].data, grads[2].data, 1e-5, 1e-5, 'fft');
    expectClose(grads[1].data, grads[2].data, 1e-6, 1e-6, 'im2col');
  });
});

describe('scratch the allocator refuses', () => {
  it('is an Error naming the op and the size, prints nothing, and the process goes on', () => {
    // Under a 3 GiB address-space cap, im2col would need 4 GiB to lower one panel of an
    // 8192x8192 kernel; direct needs no scratch and must still work afterwards.
    const script = `
      import { conv2d, zeros } from './dist/index.js';
      const x = zeros([1, 1, 8192, 8192]);
      const w = zeros([1, 1, 8192, 8192]);
      let message = 'no error';
      try { conv2d(x, w, null, { algo: 'im2col' }); } catch (e) { message = e.message; }
      const after = conv2d(zeros([1, 1, 4, 4]), zeros([1, 1, 3, 3]), null, { algo: 'im2col' });
      console.log(JSON.stringify({ message, after: after.shape }));
    `;
    const r = spawnSync(
      'bash',
      ['-c', 'ulimit -v 3000000 && exec "$0" --input-type=module -e "$1"', process.execPath, script],
      {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, FERROCONV_DEBUG_PANICS: '' },
      },
    );
    expect(r.status, `exit ${r.status} signal ${r.signal} stderr ${r.stderr}`).toBe(0);
    expect(r.stderr).toBe('');
    const got = JSON.parse(r.stdout);
    expect(got.message).toMatch(/^conv2d: out of memory: could not allocate [\d.]+ GiB of scratch/);
    expect(got.after).toEqual([1, 1, 2, 2]);
  });
});

describe('outputs too large to allocate', () => {
  it('name the op and the size asked for', () => {
    // 30000 channels of a 404x404 map: 4.9e9 elements, more than a tensor holds.
    expect(() => conv2d(zeros([1, 1, 4, 4]), zeros([30000, 1, 1, 1]), null, { padding: 200 })).toThrow(
      /^conv2d: cannot allocate an output of 4896480000 float32 elements \(18\.2 GiB\)/,
    );
    expect(() => linear(zeros([70000, 1]), zeros([70000, 1]), null)).toThrow(
      /^linear: cannot allocate an output of 4900000000 float32 elements/,
    );
    expect(() => maxPool2d(zeros([1, 1, 2, 2]), 1, { stride: 1 })).not.toThrow();
  });

  it('when memory runs out, say so with the op name instead of a bare RangeError', () => {
    const script = `
      import { conv2d, zeros } from './dist/index.js';
      try { conv2d(zeros([1, 1, 4, 4]), zeros([4000, 1, 1, 1]), null, { padding: 200 }); console.log('no error'); }
      catch (e) { console.log(e.constructor.name + ': ' + e.message); }
    `;
    const r = spawnSync(
      'bash',
      ['-c', 'ulimit -v 2000000 && exec "$0" --input-type=module -e "$1"', process.execPath, script],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Error: conv2d: cannot allocate an output of 652864000 float32 elements \(2\.4 GiB\)/);
  });
});
