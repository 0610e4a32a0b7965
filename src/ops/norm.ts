// Differentiable normalisation: batch norm (training and inference) and local response norm.
import { record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized, writableData } from '../tensor.js';
import { expectRank } from './conv.js';

export interface BatchNormOptions {
  /** Use batch statistics and update the running ones (default false). */
  training?: boolean;
  /** Weight of the new batch in the running statistics (default 0.1, as PyTorch). */
  momentum?: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
}

function checkChannelVec(name: string, t: Tensor | null, c: number): void {
  if (t && (t.ndim !== 1 || t.shape[0] !== c)) {
    throw new Error(`batchNorm2d: ${name}: expected shape [${c}], got [${t.shape.join(', ')}]`);
  }
}

/**
 * batchNorm2d(x [N, C, H, W], runningMean [C]?, runningVar [C]?, weight [C]?, bias [C]?)
 * -> [N, C, H, W], as torch.nn.functional.batch_norm. In training the running statistics are
 * updated in place.
 */
export function batchNorm2d(
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  opts: BatchNormOptions = {},
): Tensor {
  expectRank('batchNorm2d', 'input', x, 4);
  const c = x.shape[1];
  checkChannelVec('runningMean', runningMean, c);
  checkChannelVec('runningVar', runningVar, c);
  checkChannelVec('weight', weight, c);
  checkChannelVec('bias', bias, c);
  const args = { inputShape: x.shape, momentum: opts.momentum ?? 0.1, eps: opts.eps ?? 1e-5 };
  const out = uninitialized(x.size, 'batchNorm2d');
  const y = new Tensor(out, x.shape);
  if (opts.training) {
    const saveMean = uninitialized(c, 'batchNorm2d');
    const saveInvstd = uninitialized(c, 'batchNorm2d');
    native.batchNorm2dForwardTrain(
      x.data,
      weight?.data ?? null,
      bias?.data ?? null,
      runningMean ? writableData(runningMean) : null,
      runningVar ? writableData(runningVar) : null,
      out,
      saveMean,
      saveInvstd,
      args,
    );
    return record('batchNorm2d', y, [x, weight, bias], (g) => {
      const gx = uninitialized(x.size, 'batchNorm2d');
      const gw = weight?.requiresGrad ? uninitialized(c, 'batchNorm2d') : null;
      const gb = bias?.requiresGrad ? uninitialized(c, 'batchNorm2d') : null;
      native.batchNorm2dBackward(x.data, g, weight?.data ?? null, saveMean, saveInvstd, gx, gw, gb, args, 'batch');
      return [gx, gw, gb];
    });
  }
  if (!runningMean || !runningVar) throw new Error('batchNorm2d: inference needs runningMean and runningVar');
  native.batchNorm2dForwardEval(
    x.data,
    weight?.data ?? null,
    bias?.data ?? null,
    runningMean.data,
    runningVar.data,
    out,
    args,
  );
  return record('batchNorm2d(eval)', y, [x, weight, bias], (g) => {
    // With fixed statistics the layer is a per-channel affine map: y = (x - mean) * invstd * w + b.
    const gx = uninitialized(x.size, 'batchNorm2d');
    const gw = weight?.requiresGrad ? uninitialized(c, 'batchNorm2d') : null;
    const gb = bias?.requiresGrad ? uninitialized(c, 'batchNorm2d') : null;
    const [rm, rv] = [runningMean.data, runningVar.data];
    native.batchNorm2dBackward(x.data, g, weight?.data ?? null, rm, rv, gx, gw, gb, args, 'running');
    return [gx, gw, gb];
  });
}

/**
 * Batch norm in training over the batches of every rank of a distributed run together (torch's
 * SyncBatchNorm): the mean and variance are those of all the ranks' samples, and the backward
 * pass sums its per-channel terms over the ranks too, so N ranks at batch B normalise and
 * differentiate as one process at batch N*B. `reduce` replaces each array by its sum over the
 * ranks (a blocking all-reduce); every rank must make the same calls. The running statistics
 * are updated in place from the global ones.
 */
export function syncBatchNorm2d(
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  opts: { momentum?: number; eps?: number },
  reduce: (arrays: Float32Array[]) => void,
): Tensor {
  expectRank('syncBatchNorm2d', 'input', x, 4);
  const [n, c, h, w] = x.shape;
  for (const [name, t] of [
    ['runningMean', runningMean],
    ['runningVar', runningVar],
    ['weight', weight],
    ['bias', bias],
  ] as const) {
    checkChannelVec(name, t, c);
  }
  const momentum = opts.momentum ?? 0.1;
  const eps = opts.eps ?? 1e-5;
  const plane = h * w;
  const xs = x.data;
  // Per-channel sums over this rank's samples, in double; their totals over the ranks.
  const perChannel = (f: (base: number, k: number) => number): Float32Array => {
    const acc = new Float64Array(c);
    for (let i = 0; i < n; i++) for (let k = 0; k < c; k++) acc[k] += f((i * c + k) * plane, k);
    return Float32Array.from(acc);
  };
  // Two rounds (the mean, then squared deviations from it) rather than one of sums and sums of
  // squares, whose difference cancels catastrophically when the mean is large.
  const sum = perChannel((base) => {
    let a = 0;
    for (let p = 0; p < plane; p++) a += xs[base + p];
    return a;
  });
  const count = Float32Array.of(n * plane);
  reduce([sum, count]);
  const total = count[0];
  const mean = sum.map((v) => v / total);
  const sq = perChannel((base, k) => {
    let a = 0;
    for (let p = 0; p < plane; p++) a += (xs[base + p] - mean[k]) ** 2;
    return a;
  });
  reduce([sq]);
  const variance = sq.map((v) => v / total);
  const invstd = variance.map((v) => 1 / Math.sqrt(v + eps));
  const out = uninitialized(x.size, 'syncBatchNorm2d');
  const args = { inputShape: x.shape, momentum: 0, eps };
  native.batchNorm2dForwardEval(x.data, weight?.data ?? null, bias?.data ?? null, mean, variance, out, args);
  if (runningMean && runningVar) {
    const rm = writableData(runningMean);
    const rv = writableData(runningVar);
    const unbiased = total > 1 ? total / (total - 1) : 1;
    for (let k = 0; k < c; k++) {
      rm[k] = (1 - momentum) * rm[k] + momentum * mean[k];
      rv[k] = (1 - momentum) * rv[k] + momentum * variance[k] * unbiased;
    }
  }
  const y = new Tensor(out, x.shape);
  return record('syncBatchNorm2d', y, [x, weight, bias], (g) => {
    // This rank's sum of dy and of dy * (x - mean) per channel give the weight and bias
    // gradients; their totals over the ranks give the input gradient.
    const sumDy = perChannel((base) => {
      let a = 0;
      for (let p = 0; p < plane; p++) a += g[base + p];
      return a;
    });
    const sumDyXmu = perChannel((base, k) => {
      let a = 0;
      for (let p = 0; p < plane; p++) a += g[base + p] * (xs[base + p] - mean[k]);
      return a;
    });
    const gw = weight?.requiresGrad ? sumDyXmu.map((v, k) => v * invstd[k]) : null;
    const gb = bias?.requiresGrad ? Float32Array.from(sumDy) : null;
    reduce([sumDy, sumDyXmu]);
    const gx = uninitialized(x.size, 'syncBatchNorm2d');
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < c; k++) {
        const base = (i * c + k) * plane;
        const scale = (weight ? weight.data[k] : 1) * invstd[k];
        const meanDy = sumDy[k] / total;
        const meanDyXmu = (sumDyXmu[k] / total) * invstd[k] * invstd[k];
        for (let p = 0; p < plane; p++) {
          gx[base + p] = scale * (g[base + p] - meanDy - (xs[base + p] - mean[k]) * meanDyXmu);
        }
      }
    }
    return [gx, gw, gb];
  });
}

export interface LrnOptions {
  alpha?: number;
  beta?: number;
  k?: number;
}

/** localResponseNorm(x [N, C, H, W], size) -> same shape, as torch.nn.functional.local_response_norm. */
export function localResponseNorm(x: Tensor, size: number, opts: LrnOptions = {}): Tensor {
  expectRank('localResponseNorm', 'input', x, 4);
  const args = { inputShape: x.shape, size, alpha: opts.alpha ?? 1e-4, beta: opts.beta ?? 0.75, k: opts.k ?? 1 };
  const out = uninitialized(x.size, 'localResponseNorm');
  const scale = uninitialized(x.size, 'localResponseNorm');
  native.lrnForward(x.data, out, scale, args);
  const y = new Tensor(out, x.shape);
  return record('localResponseNorm', y, [x], (g) => {
    const gx = uninitialized(x.size, 'localResponseNorm');
    native.lrnBackward(x.data, out, scale, g, gx, args);
    return [gx];
  });
}

/**
 * An eval batch norm (after a conv with `convBias`, or alone) as a per-channel affine map, for
 * the fused epilogues: scale = weight / sqrt(runningVar + eps), shift = bias + (convBias -
 * runningMean) * scale, computed in double and rounded once. No gradient (inference only). In
 * the binding rather than in JavaScript so a compiled plan recomputes it from the live
 * parameters on every run.
 */
export function batchNormFold(
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  convBias: Tensor | null,
  eps: number,
): { scale: Tensor; shift: Tensor } {
  const c = runningMean.size;
  const scale = uninitialized(c, 'batchNormFold');
  const shift = uninitialized(c, 'batchNormFold');
  native.batchNormFold(
    runningMean.data,
    runningVar.data,
    weight?.data ?? null,
    bias?.data ?? null,
    convBias?.data ?? null,
    eps,
    scale,
    shift,
  );
  return { scale: new Tensor(scale, [c]), shift: new Tensor(shift, [c]) };
}
