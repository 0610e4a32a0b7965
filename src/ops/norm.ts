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
