// Inference fusion: Conv2d [+ BatchNorm2d] [+ residual add] [+ ReLU] computed as one conv whose
// epilogue applies the rest while each output tile is still in cache (ops/conv.ts conv2dFused).
// An eval-mode batch norm is a per-channel affine map, so it folds into the conv as
//   scale = gamma / sqrt(running_var + eps),  shift = beta + (conv_bias - running_mean) * scale,
// applied to the conv's output (conv(x, w) * scale == conv(x, w * scale), without rewriting the
// weights). scale and shift are recomputed from the live parameters on every call (a few hundred
// floats per layer), so there is no cache to go stale after loadStateDict, an optimizer step or
// a manual write.
//
// Fusion happens only when it cannot change what the user observes: batch norm in eval mode with
// running statistics, no gradient being recorded for any tensor involved (noGrad(), or frozen
// parameters), and every layer's forward the class's own (a user-installed forward override or
// hook disables fusion for that layer). Sequential applies it to Conv2d, BatchNorm2d, ReLU runs;
// the zoo's blocks (ResNet, DenseNet, GoogLeNet, VGG, AlexNet) use it too. A BatchNorm2d + ReLU
// pair that follows no conv runs the ReLU in place on the norm's output; DenseNet's
// cat + norm + ReLU of all earlier features is one pass (catAffine) with no concatenated copy;
// a 1x1 conv followed by an average pool runs after the pool, on fewer positions (tryPoolFirst).
// The results equal the unfused forward within float rounding. Opt out with
// setInferenceFusion(false).
import { needsGrad, noGrad } from '../autograd.js';
import { relu as reluOp, relu_ } from '../ops/activation.js';
import { conv2dFused } from '../ops/conv.js';
import { convOutputSize, poolOutputSize } from '../ops/geometry.js';
import { catAffine } from '../ops/elementwise.js';
import { batchNorm2d, batchNormFold } from '../ops/norm.js';
import { invalidatePlans } from '../plan/index.js';
import { type GraphTrace, traceGraph, Untraceable } from '../plan/trace.js';
import type { Tensor } from '../tensor.js';
import { AvgPool2d } from './avg-pool2d.js';
import { BatchNorm2d } from './batch-norm.js';
import { Conv2d } from './conv2d.js';
import { Module } from './module.js';
import { ReLU } from './relu.js';

/**
 * What a batch norm becomes once fuseConvBn has folded it into the conv before it: the identity,
 * kept in its place so the model's structure and its other layers' names stay as they were.
 */
export class FoldedBatchNorm extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}

/** A block's batch norm as the fusion helpers use it: null once it is folded into its conv. */
function liveBn(bn: BatchNorm2d | Module | null): BatchNorm2d | null {
  return bn instanceof BatchNorm2d ? bn : null;
}

let fusionEnabled = true;

/**
 * Turns inference fusion (conv + eval batch norm + residual + ReLU in one kernel pass) on or off
 * for the whole process; it is on by default. Returns the previous setting.
 */
export function setInferenceFusion(enabled: boolean): boolean {
  const prev = fusionEnabled;
  fusionEnabled = enabled;
  if (prev !== enabled) invalidatePlans();
  return prev;
}

/**
 * The kernel calls of `model`'s eval forward on `x` (plan/trace.ts traceGraph), with inference
 * fusion set to `fusion` and every module in eval mode for the trace, both put back after.
 * `who` starts the Error when the forward cannot be traced. ONNX export, quantize, fuseConvBn and
 * pruneChannels read models this way.
 */
export function traceEvalGraph(model: Module, x: Tensor, fusion: boolean, who: string): GraphTrace {
  const modules = model.namedModules().map(([, m]) => m);
  const modes = modules.map((m) => m.training);
  const before = setInferenceFusion(fusion);
  try {
    for (const m of modules) m.training = false;
    return traceGraph(() => noGrad(() => model.call(x)), x.data, [...model.stateDict().values()]);
  } catch (e) {
    if (e instanceof Untraceable) throw new Error(`${who}: the forward cannot be traced: ${e.message}`);
    throw e;
  } finally {
    modules.forEach((m, i) => {
      m.training = modes[i];
    });
    setInferenceFusion(before);
  }
}

/** Whether inference fusion is on (see setInferenceFusion). */
export function isInferenceFusionEnabled(): boolean {
  return fusionEnabled;
}

/** Whether `m` runs its class's own forward (a forward the user replaced is never fused). */
function plainForward(m: Module, cls: { prototype: { forward: unknown } }): boolean {
  return m.forward === cls.prototype.forward;
}

/**
 * The output shape of a Conv2d that may run fused on `x`, or null when its own forward must run
 * (and report any error with its usual message).
 */
function convFusable(conv: Conv2d, x: Tensor): number[] | null {
  if (!fusionEnabled || !plainForward(conv, Conv2d)) return null;
  if (x.ndim !== 4 || x.shape[1] !== conv.inChannels) return null;
  if (needsGrad(x, conv.weight, conv.bias)) return null;
  try {
    const [oh, ow] = convOutputSize(x.shape, conv.weight.shape, conv.geometry);
    return [x.shape[0], conv.outChannels, oh, ow];
  } catch {
    return null; // the layer's own forward reports it
  }
}

function bnFusable(bn: BatchNorm2d, channels: number): boolean {
  return (
    plainForward(bn, BatchNorm2d) &&
    !bn.training &&
    bn.runningMean !== null &&
    bn.runningVar !== null &&
    bn.numFeatures === channels &&
    !needsGrad(bn.weight, bn.bias)
  );
}

/** Per-channel scale and shift that turn conv(x) into bn(conv(x) + conv.bias) (or x into bn(x)). */
function foldBatchNorm(conv: Conv2d | null, bn: BatchNorm2d): { scale: Tensor; shift: Tensor } {
  return batchNormFold(bn.runningMean!, bn.runningVar!, bn.weight, bn.bias, conv?.bias ?? null, bn.eps);
}

export interface FuseOptions {
  /** Apply ReLU at the end: a ReLU module (fused only if its forward is the plain one) or true. */
  relu?: ReLU | boolean;
  /** Add this tensor (the output's shape) before the ReLU: a residual shortcut. */
  residual?: Tensor | null;
}

/**
 * relu?(bn?(conv(x)) + residual?) in one fused conv when that is allowed (see the top of this
 * file), else null and the caller runs the layers one by one.
 */
export function tryFusedConv(
  conv: Conv2d,
  norm: BatchNorm2d | FoldedBatchNorm | null,
  x: Tensor,
  opts: FuseOptions = {},
): Tensor | null {
  const bn = liveBn(norm);
  const outShape = convFusable(conv, x);
  if (!outShape) return null;
  if (bn && !bnFusable(bn, conv.outChannels)) return null;
  const { relu = false, residual = null } = opts;
  if (relu instanceof ReLU && !plainForward(relu, ReLU)) return null;
  if (residual && (residual.shape.join() !== outShape.join() || needsGrad(residual))) return null;
  const epilogue = bn ? foldBatchNorm(conv, bn) : { scale: null, shift: conv.bias };
  return conv2dFused(
    x,
    conv.weight,
    { ...epilogue, residual, relu: relu !== false },
    { ...conv.geometry, algo: conv.opts.algo },
  );
}

/**
 * relu(bn(conv(x))), the conv block of ResNet, GoogLeNet and DenseNet: one fused conv when that
 * is allowed, the three layers one by one otherwise (training, fusion off, a replaced forward).
 * `relu` is the block's ReLU module, or true for the functional one.
 */
export function convBnRelu(conv: Conv2d, bn: BatchNorm2d | FoldedBatchNorm, relu: ReLU | true, x: Tensor): Tensor {
  const fused = tryFusedConv(conv, bn, x, { relu });
  if (fused) return fused;
  const y = bn.call(conv.call(x));
  return relu === true ? reluOp(y) : relu.call(y);
}

/**
 * relu(bn(x)) with the ReLU done in place on the batch norm's fresh output, when allowed (the
 * pre-activation order of DenseNet, where the norm cannot fold into a conv); else null.
 */
export function tryBnRelu(bn: BatchNorm2d, relu: ReLU | true, x: Tensor): Tensor | null {
  if (!fusionEnabled || x.ndim !== 4 || !bnFusable(bn, x.shape[1]) || needsGrad(x)) return null;
  if (relu !== true && !plainForward(relu, ReLU)) return null;
  return relu_(
    batchNorm2d(x, bn.runningMean, bn.runningVar, bn.weight, bn.bias, { training: false, momentum: 0, eps: bn.eps }),
  );
}

/**
 * relu(bn(cat(features, 1))) in one pass over the features, when allowed (DenseNet's dense layers
 * in inference: no concatenated copy is made); else null.
 */
export function tryCatBnRelu(features: Tensor[], bn: BatchNorm2d, relu: ReLU | true): Tensor | null {
  if (!fusionEnabled || features.length === 0 || needsGrad(...features)) return null;
  if (relu !== true && !plainForward(relu, ReLU)) return null;
  const [n, , h, w] = features[0].shape;
  let channels = 0;
  for (const t of features) {
    if (t.ndim !== 4 || t.shape[0] !== n || t.shape[2] !== h || t.shape[3] !== w) return null;
    channels += t.shape[1];
  }
  if (!bnFusable(bn, channels)) return null;
  const { scale, shift } = foldBatchNorm(null, bn);
  return catAffine(features, scale, shift, true);
}

/**
 * pool(conv(x)) computed as conv(pool(x)) when `conv` is a 1x1 Conv2d of stride 1 without padding
 * and `pool` an AvgPool2d, when allowed (else null): the conv mixes channels at each position,
 * the pool takes a weighted mean of positions in each channel, and the two linear maps commute
 * (the conv's bias too when every window's weights sum to one: no padding, no divisor override).
 * DenseNet's transitions (BN, ReLU, 1x1 conv, 2x2 average pool) then run their conv on a quarter
 * of the positions: at batch 8 in a compiled plan their three convs took 11.5 ms of 128.
 */
function tryPoolFirst(conv: Conv2d, pool: AvgPool2d, x: Tensor): Tensor | null {
  if (!convFusable(conv, x) || !plainForward(pool, AvgPool2d)) return null;
  const [, , kh, kw] = conv.weight.shape;
  const { stride, padding } = conv.geometry;
  if (kh !== 1 || kw !== 1 || stride[0] !== 1 || stride[1] !== 1 || padding.some((p) => p !== 0)) return null;
  const meanWeights = pool.geometry.padding.every((p) => p === 0) && (pool.opts.divisorOverride ?? null) === null;
  if (conv.bias && !meanWeights) return null;
  try {
    poolOutputSize(x.shape, pool.geometry);
  } catch {
    return null; // the layers one by one report it, with the shapes the user expects
  }
  return conv.call(pool.call(x));
}

/**
 * Runs layers[i..] fused when they start with Conv2d followed by BatchNorm2d and/or ReLU, or by
 * an AvgPool2d it commutes with (tryPoolFirst); returns
 * the output and how many layers it covered, or null.
 */
export function fuseSequence(layers: readonly Module[], i: number, x: Tensor): { y: Tensor; used: number } | null {
  const conv = layers[i];
  if (conv instanceof Conv2d && layers[i + 1] instanceof AvgPool2d) {
    const y = tryPoolFirst(conv, layers[i + 1] as AvgPool2d, x);
    return y ? { y, used: 2 } : null;
  }
  if (conv instanceof BatchNorm2d && layers[i + 1] instanceof ReLU) {
    const y = tryBnRelu(conv, layers[i + 1] as ReLU, x);
    return y ? { y, used: 2 } : null;
  }
  if (!(conv instanceof Conv2d)) return null;
  let j = i + 1;
  const next = layers[j];
  const bn = next instanceof BatchNorm2d ? next : null;
  if (bn || next instanceof FoldedBatchNorm) j++;
  const relu = layers[j] instanceof ReLU ? (layers[j] as ReLU) : null;
  if (relu) j++;
  if (j === i + 1) return null;
  const y = tryFusedConv(conv, bn, x, { relu: relu ?? false });
  if (!y) {
    // The whole run could not fuse (e.g. the ReLU is hooked): try conv + bn alone.
    if (bn && relu) {
      const y2 = tryFusedConv(conv, bn, x);
      return y2 ? { y: y2, used: 2 } : null;
    }
    return null;
  }
  return { y, used: j - i };
}
