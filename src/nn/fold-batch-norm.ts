// fuseConvBn: batch norm folded into the conv before it, for good, as torch's
// fuse_conv_bn_eval does: with s = gamma / sqrt(running_var + eps) per output channel,
//   w' = w * s,   b' = (b - running_mean) * s + beta,
// so conv'(x) equals bn(conv(x)) in eval mode. Which batch norm follows which conv is read off
// the model's own eval forward (traced with fusion off, as ONNX export traces it): a
// BatchNorm2d in eval whose input is a Conv2d's output that nothing else reads. The batch norm
// is then replaced, wherever its parent holds it, by a FoldedBatchNorm (the identity), so every
// other layer keeps its name.
import { invalidatePlans } from '../plan/index.js';
import type { Operand } from '../plan/trace.js';
import { type Tensor, writableData, zeros } from '../tensor.js';
import { BatchNorm2d } from './batch-norm.js';
import { Conv2d } from './conv2d.js';
import { FoldedBatchNorm, traceEvalGraph } from './fuse.js';
import type { Module } from './module.js';

export interface FuseConvBnResult {
  /** The (conv, batch norm) pairs folded, by their names in the model. */
  fused: [string, string][];
}

type OperandArg = { operand: Operand } | null;

/**
 * Folds every eval-mode BatchNorm2d that directly follows a Conv2d into that conv's weight and
 * bias, in place, and replaces the batch norm with a FoldedBatchNorm (identity). Outputs in eval
 * mode are unchanged (within float rounding); the model has fewer layers and parameters, and a
 * conv that had no bias gets one. `inputShape` is one input's shape, batch first (the forward is
 * traced once on zeros to see which layer feeds which). Returns the model and the pairs folded.
 * Train the model after this only knowing its batch norms are gone.
 */
export function fuseConvBn<M extends Module>(model: M, inputShape: readonly number[]): M & FuseConvBnResult {
  const modules = model.namedModules();
  const convOf = new Map<Tensor, [string, Conv2d]>();
  const bnOf = new Map<Tensor, [string, BatchNorm2d]>();
  for (const [name, m] of modules) {
    if (m instanceof Conv2d) convOf.set(m.weight, [name, m]);
    if (m instanceof BatchNorm2d && m.runningMean) bnOf.set(m.runningMean, [name, m]);
  }
  const g = traceEvalGraph(model, zeros([...inputShape]), false, 'fuseConvBn');
  const steps = g.rec.steps;
  const state = g.rec.usedState as Tensor[];
  const tensorOf = (a: OperandArg) => (a?.operand.src === 'state' ? state[a.operand.id] : null);
  const readers = new Map<number, number>();
  const writerOf = new Map<number, number>();
  steps.forEach((s, i) => {
    s.args.forEach((a, pos) => {
      const o = (a as OperandArg)?.operand;
      if (o?.src !== 'temp') return;
      const isWrite = (s.op === 'conv2dForward' && pos === 3) || (s.op === 'batchNorm2dForwardEval' && pos === 5);
      if (isWrite) writerOf.set(o.id, i);
      else readers.set(o.id, (readers.get(o.id) ?? 0) + 1);
    });
  });
  const pairs: [string, Conv2d, string, BatchNorm2d][] = [];
  for (const s of steps) {
    if (s.op !== 'batchNorm2dForwardEval') continue;
    const input = (s.args[0] as OperandArg)?.operand;
    if (input?.src !== 'temp' || readers.get(input.id) !== 1) continue;
    const producer = writerOf.get(input.id);
    if (producer === undefined || steps[producer].op !== 'conv2dForward') continue;
    const conv = convOf.get(tensorOf(steps[producer].args[1] as OperandArg) as Tensor);
    const bn = bnOf.get(tensorOf(s.args[3] as OperandArg) as Tensor);
    if (!conv || !bn || bn[1].numFeatures !== conv[1].outChannels) continue;
    if (pairs.some((p) => p[1] === conv[1] || p[3] === bn[1])) continue;
    pairs.push([conv[0], conv[1], bn[0], bn[1]]);
  }
  for (const [, conv, bnName, bn] of pairs) {
    fold(conv, bn);
    replaceModule(model, bnName, bn, new FoldedBatchNorm());
  }
  invalidatePlans();
  return Object.assign(model, { fused: pairs.map(([c, , b]) => [c, b] as [string, string]) });
}

function fold(conv: Conv2d, bn: BatchNorm2d): void {
  const oc = conv.outChannels;
  const w = writableData(conv.weight);
  const per = w.length / oc;
  const mean = bn.runningMean?.data;
  const variance = bn.runningVar?.data;
  if (!mean || !variance) throw new Error('fuseConvBn: a batch norm without running statistics');
  const bias = conv.bias ?? zeros([oc]);
  const b = writableData(bias);
  for (let o = 0; o < oc; o++) {
    const gamma = bn.weight ? bn.weight.data[o] : 1;
    const beta = bn.bias ? bn.bias.data[o] : 0;
    const s = gamma / Math.sqrt(variance[o] + bn.eps);
    for (let k = 0; k < per; k++) w[o * per + k] *= s;
    b[o] = (b[o] - mean[o]) * s + beta;
  }
  if (!conv.bias) conv.setBias(bias);
}

/** Puts `next` where `old` was: the parent's child `name`, and any property or array holding it. */
function replaceModule(model: Module, path: string, old: Module, next: Module): void {
  const dot = path.lastIndexOf('.');
  const parent = dot < 0 ? model : model.getSubmodule(path.slice(0, dot));
  const name = path.slice(dot + 1);
  (parent as unknown as { addModule(n: string, m: Module): Module }).addModule(name, next);
  const holder = parent as unknown as Record<string, unknown>;
  for (const key of Object.keys(holder)) {
    const v = holder[key];
    if (v === old) holder[key] = next;
    else if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) if (v[i] === old) v[i] = next;
    }
  }
}
