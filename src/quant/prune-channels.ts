// Structured pruning: whole output channels of convs removed, with everything that reads them,
// so the model is genuinely smaller (fewer parameters and multiply-adds, not just zeros).
//
// Which channels must go together is read off the model's traced eval forward (fusion off, so
// every conv, batch norm, add and concat is its own call), as torch-pruning's dependency graph
// does: a conv's output channels form a group; batch norms, activations and pools carry a
// group's channels through unchanged; an add ties the groups of its two operands (a residual:
// both sides must keep the same channels); a concat lays its inputs' groups side by side; a conv
// or linear reading a group loses the matching input channels (a linear after a feature map,
// the matching blocks of H*W columns). A group that reaches anything else (the model's output, a
// grouped conv, a reshape the trace cannot follow) is left whole. Within each group the channels
// with the smallest importance go: the L1 norm of the producing convs' filters, or the |gamma|
// of the batch norms on them, summed over the group's producers.
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { traceEvalGraph } from '../nn/fuse.js';
import { Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import { invalidatePlans } from '../plan/index.js';
import type { Operand } from '../plan/trace.js';
import { Tensor, zeros } from '../tensor.js';

export interface ChannelPruneOptions {
  /** Fraction of each prunable group's channels to remove, in [0, 1). */
  amount: number;
  /** Rank channels by the L1 norm of their filters (default) or by batch norm's |gamma|. */
  criterion?: 'l1' | 'bn';
  /** One input's shape, batch first: the forward is traced once on zeros. */
  inputShape: readonly number[];
}

export interface ChannelPruneResult {
  /** Each pruned group: the convs producing it, channels before and after. */
  groups: { producers: string[]; before: number; after: number }[];
  parameters: { before: number; after: number };
  /** Multiply-adds of one forward of `inputShape` (convs and linears). */
  macs: { before: number; after: number };
}

interface Segment {
  group: number;
  offset: number;
  count: number;
}

type OperandArg = { operand: Operand } | null;

class Groups {
  readonly parent: number[] = [];
  readonly size: number[] = [];
  readonly frozen: boolean[] = [];
  readonly producers: Conv2d[][] = [];

  add(size: number, producer: Conv2d | null, frozen = false): number {
    const g = this.parent.length;
    this.parent.push(g);
    this.size.push(size);
    this.frozen.push(frozen);
    this.producers.push(producer ? [producer] : []);
    return g;
  }

  find(g: number): number {
    while (this.parent[g] !== g) {
      this.parent[g] = this.parent[this.parent[g]];
      g = this.parent[g];
    }
    return g;
  }

  union(a: number, b: number): void {
    const [ra, rb] = [this.find(a), this.find(b)];
    if (ra === rb) return;
    if (this.size[ra] !== this.size[rb]) {
      this.frozen[ra] = true;
      this.frozen[rb] = true;
      return;
    }
    this.parent[rb] = ra;
    this.frozen[ra] ||= this.frozen[rb];
    this.producers[ra].push(...this.producers[rb]);
  }

  freeze(segments: Segment[] | undefined): void {
    for (const s of segments ?? []) this.frozen[this.find(s.group)] = true;
  }
}

/** Multiply-adds of convs and linears in one traced forward. */
function macsOf(steps: { op: string; args: unknown[] }[]): number {
  let total = 0;
  for (const s of steps) {
    if (s.op === 'conv2dForward') {
      const a = s.args[4] as { inputShape: number[]; weightShape: number[] };
      const outLen = (s.args[3] as OperandArg)?.operand.len ?? 0;
      const [, icg, kh, kw] = a.weightShape;
      total += outLen * icg * kh * kw;
    } else if (s.op === 'linearForward') {
      const a = s.args[4] as { batch: number; inFeatures: number; outFeatures: number };
      total += a.batch * a.inFeatures * a.outFeatures;
    }
  }
  return total;
}

function traceEval(model: Module, shape: readonly number[]) {
  return traceEvalGraph(model, zeros([...shape]), false, 'pruneChannels');
}

const PASS_THROUGH: Record<string, [number, number]> = {
  activationForward: [1, 2],
  maxPool2dForwardNoIndices: [0, 1],
  avgPool2dForward: [0, 1],
  adaptiveAvgPool2dForward: [0, 1],
};

/**
 * Removes `amount` of the output channels of every prunable channel group of `model` (see the
 * top of this file), in place, and the matching input channels downstream. Returns the groups
 * pruned and the parameter and multiply-add counts before and after. Fine-tune afterwards.
 */
export function pruneChannels(model: Module, opts: ChannelPruneOptions): ChannelPruneResult {
  const { amount, criterion = 'l1', inputShape } = opts;
  if (!(typeof amount === 'number' && amount >= 0 && amount < 1)) {
    throw new Error(`pruneChannels: amount must be a number in [0, 1), got ${amount}`);
  }
  if (criterion !== 'l1' && criterion !== 'bn')
    throw new Error(`pruneChannels: criterion must be 'l1' or 'bn', got ${criterion}`);
  const g = traceEval(model, inputShape);
  const steps = g.rec.steps;
  const state = g.rec.usedState as Tensor[];
  const owner = new Map<Tensor, Module>();
  for (const [, m] of model.namedModules()) {
    if (m instanceof Conv2d || m instanceof Linear) owner.set(m.weight, m);
    if (m instanceof BatchNorm2d && m.runningMean) owner.set(m.runningMean, m);
  }
  const nameOf = new Map(model.namedModules().map(([n, m]) => [m, n]));
  const moduleAt = (a: unknown) => {
    const o = (a as OperandArg)?.operand;
    return o?.src === 'state' ? owner.get(state[o.id]) : undefined;
  };
  const groups = new Groups();
  const segs = new Map<number, Segment[]>();
  const tempOf = (a: unknown) => {
    const o = (a as OperandArg)?.operand;
    return o?.src === 'temp' && o.offset === 0 && o.len === g.rec.temps[o.id].length ? o.id : null;
  };
  const convIn: { conv: Conv2d; segments: Segment[] }[] = [];
  const linearIn: { linear: Linear; segments: Segment[]; plane: number }[] = [];
  const bns: { bn: BatchNorm2d; segments: Segment[] }[] = [];
  const claimed = new Set<Module>();
  const frozenWhole = (len: number) => [{ group: groups.add(len, null, true), offset: 0, count: len }];
  for (const s of steps) {
    const reads: number[] = [];
    for (const a of s.args) {
      const t = tempOf(a);
      if (t !== null) reads.push(t);
    }
    if (s.op === 'conv2dForward') {
      const conv = moduleAt(s.args[1]);
      const out = tempOf(s.args[3]);
      const a = s.args[4] as { weightShape: number[]; groups: number };
      const x = tempOf(s.args[0]);
      if (!(conv instanceof Conv2d) || out === null || a.groups !== 1 || claimed.has(conv)) {
        if (x !== null) groups.freeze(segs.get(x));
        if (conv) claimed.add(conv);
        if (out !== null) segs.set(out, frozenWhole(a.weightShape[0]));
        continue;
      }
      claimed.add(conv);
      if (x !== null && segs.get(x)) convIn.push({ conv, segments: segs.get(x) as Segment[] });
      segs.set(out, [{ group: groups.add(a.weightShape[0], conv), offset: 0, count: a.weightShape[0] }]);
      continue;
    }
    if (s.op === 'batchNorm2dForwardEval') {
      const bn = moduleAt(s.args[3]);
      const x = tempOf(s.args[0]);
      const out = tempOf(s.args[5]);
      const sx = x === null ? undefined : segs.get(x);
      if (!(bn instanceof BatchNorm2d) || out === null || !sx || claimed.has(bn)) {
        groups.freeze(sx);
        if (out !== null) segs.set(out, frozenWhole(sx?.reduce((n, q) => n + q.count, 0) ?? 1));
        continue;
      }
      claimed.add(bn);
      bns.push({ bn, segments: sx });
      segs.set(out, sx);
      continue;
    }
    if (s.op === 'reluInplace') continue;
    if (s.op in PASS_THROUGH) {
      const [i, o] = PASS_THROUGH[s.op];
      const x = tempOf(s.args[i]);
      const out = tempOf(s.args[o]);
      const sx = x === null ? undefined : segs.get(x);
      if (out !== null && sx) segs.set(out, sx);
      continue;
    }
    if (s.op === 'broadcastBinary' && s.args[0] === 'add') {
      const [a, b, out] = [tempOf(s.args[1]), tempOf(s.args[3]), tempOf(s.args[5])];
      const sa = a === null ? undefined : segs.get(a);
      const sb = b === null ? undefined : segs.get(b);
      const same = (s.args[2] as number[]).join() === (s.args[4] as number[]).join();
      if (sa && sb && same && sa.length === sb.length && sa.every((q, k) => q.count === sb[k].count)) {
        for (const [k, q] of sa.entries()) groups.union(q.group, sb[k].group);
        if (out !== null) segs.set(out, sa);
      } else {
        groups.freeze(sa);
        groups.freeze(sb);
        if (out !== null) segs.set(out, frozenWhole(1));
      }
      continue;
    }
    if (s.op === 'concatChannels') {
      const list = (s.args[0] as OperandArg[]).map((a) => tempOf(a));
      const out = tempOf(s.args[4]);
      const parts = list.map((t) => (t === null ? undefined : segs.get(t)));
      if (out !== null && parts.every((p) => p)) {
        const joined: Segment[] = [];
        let at = 0;
        for (const p of parts as Segment[][]) {
          for (const q of p) joined.push({ ...q, offset: at + q.offset });
          at += p.reduce((n, q) => n + q.count, 0);
        }
        segs.set(out, joined);
      } else for (const p of parts) groups.freeze(p);
      continue;
    }
    if (s.op === 'linearForward') {
      const linear = moduleAt(s.args[1]);
      const x = tempOf(s.args[0]);
      const sx = x === null ? undefined : segs.get(x);
      const a = s.args[4] as { inFeatures: number };
      const channels = sx?.reduce((n, q) => n + q.count, 0) ?? 0;
      if (linear instanceof Linear && sx && !claimed.has(linear) && a.inFeatures % channels === 0) {
        claimed.add(linear);
        linearIn.push({ linear, segments: sx, plane: a.inFeatures / channels });
      } else groups.freeze(sx);
      const out = tempOf(s.args[3]);
      if (out !== null) segs.set(out, frozenWhole(a.inFeatures));
      continue;
    }
    // Anything else: the channels it reads stay whole.
    for (const t of reads) groups.freeze(segs.get(t));
  }
  if (g.output.src === 'temp') groups.freeze(segs.get(g.output.id));
  // A conv feeding two groups' worth of reads is fine; a conv whose output reaches nothing
  // prunable is frozen by the rules above. Choose each free group's channels to keep.
  const keep = new Map<number, number[]>();
  const summary: ChannelPruneResult['groups'] = [];
  for (let k = 0; k < groups.parent.length; k++) {
    if (groups.find(k) !== k || groups.frozen[k] || groups.producers[k].length === 0) continue;
    const n = groups.size[k];
    const score = new Float64Array(n);
    if (criterion === 'l1') {
      for (const conv of groups.producers[k]) {
        const per = conv.weight.size / n;
        for (let c = 0; c < n; c++) for (let i = 0; i < per; i++) score[c] += Math.abs(conv.weight.data[c * per + i]);
      }
    } else {
      for (const { bn, segments } of bns) {
        for (const q of segments) {
          if (groups.find(q.group) !== k || !bn.weight) continue;
          for (let c = 0; c < q.count; c++) score[c] += Math.abs(bn.weight.data[q.offset + c]);
        }
      }
    }
    const kept = Math.max(1, n - Math.floor(amount * n));
    const order = Array.from(score.keys()).sort((a, b) => score[b] - score[a] || a - b);
    keep.set(
      k,
      order.slice(0, kept).sort((a, b) => a - b),
    );
    summary.push({ producers: groups.producers[k].map((c) => nameOf.get(c) ?? '?'), before: n, after: kept });
  }
  const keptOf = (segments: Segment[]) => {
    const idx: number[] = [];
    for (const q of segments) {
      const kk = keep.get(groups.find(q.group));
      for (const c of kk ?? Array.from({ length: q.count }, (_, i) => i)) idx.push(q.offset + c);
    }
    return idx;
  };
  const paramsBefore = model.numParameters();
  const macsBefore = macsOf(steps);
  // Producers lose output channels, consumers input channels, batch norms features.
  for (const [k, kk] of keep) {
    for (const conv of groups.producers[k]) {
      selectRows(conv, 'weight', kk);
      if (conv.bias) selectRows(conv, 'bias', kk);
      (conv as { outChannels: number }).outChannels = kk.length;
    }
  }
  for (const { bn, segments } of bns) {
    const idx = keptOf(segments);
    if (idx.length === bn.numFeatures) continue;
    for (const name of ['weight', 'bias', 'runningMean', 'runningVar'] as const)
      if (bn[name]) selectRows(bn, name, idx);
    (bn as { numFeatures: number }).numFeatures = idx.length;
  }
  for (const { conv, segments } of convIn) {
    const idx = keptOf(segments);
    if (idx.length === conv.inChannels) continue;
    selectColumns(conv, idx);
    (conv as { inChannels: number }).inChannels = idx.length;
  }
  for (const { linear, segments, plane } of linearIn) {
    const channels = keptOf(segments);
    if (channels.length * plane === linear.inFeatures) continue;
    const cols = channels.flatMap((c) => Array.from({ length: plane }, (_, p) => c * plane + p));
    selectColumns(linear, cols);
    (linear as { inFeatures: number }).inFeatures = cols.length;
  }
  invalidatePlans();
  const after = traceEval(model, inputShape);
  return {
    groups: summary,
    parameters: { before: paramsBefore, after: model.numParameters() },
    macs: { before: macsBefore, after: macsOf(after.rec.steps) },
  };
}

const KEYS: Record<string, string> = {
  weight: 'weight',
  bias: 'bias',
  runningMean: 'running_mean',
  runningVar: 'running_var',
};

/** Replaces `m[field]` (first dimension = channels) by the rows `idx`, re-registered. */
function selectRows(m: Module, field: 'weight' | 'bias' | 'runningMean' | 'runningVar', idx: number[]): void {
  const t = (m as unknown as Record<string, Tensor>)[field];
  const per = t.size / t.shape[0];
  const data = new Float32Array(idx.length * per);
  idx.forEach((c, i) => {
    data.set(t.data.subarray(c * per, (c + 1) * per), i * per);
  });
  replace(m, field, new Tensor(data, [idx.length, ...t.shape.slice(1)]), t.requiresGrad);
}

/** Keeps the input columns `idx` of a conv's [O, I, kh, kw] or a linear's [O, I] weight. */
function selectColumns(m: Conv2d | Linear, idx: number[]): void {
  const t = m.weight;
  const [o, i] = t.shape;
  const inner = t.size / (o * i);
  const data = new Float32Array(o * idx.length * inner);
  for (let r = 0; r < o; r++) {
    idx.forEach((c, j) => {
      data.set(t.data.subarray((r * i + c) * inner, (r * i + c + 1) * inner), (r * idx.length + j) * inner);
    });
  }
  replace(m, 'weight', new Tensor(data, [o, idx.length, ...t.shape.slice(2)]), t.requiresGrad);
}

function replace(m: Module, field: string, t: Tensor, requiresGrad: boolean): void {
  const reg = m as unknown as {
    addParameter(n: string, t: Tensor | null): Tensor | null;
    addBuffer(n: string, t: Tensor | null): Tensor | null;
  };
  const isBuffer = field === 'runningMean' || field === 'runningVar';
  const registered = isBuffer ? reg.addBuffer(KEYS[field], t) : reg.addParameter(KEYS[field], t);
  if (registered && !isBuffer) registered.requiresGrad = requiresGrad;
  (m as unknown as Record<string, Tensor>)[field] = t;
}

/**
 * Gives `model`'s convs, batch norms and linears the channel counts of `weights` (a state dict
 * saved after pruneChannels), so that a fresh instance of the architecture can load a
 * channel-pruned model: `quant.resizeToWeights(model, w)`, then `model.loadStateDict(w)`. Only
 * channel counts change, to zeros the load then overwrites; a shape that differs in anything
 * else (kernel size, a grouped conv, a linear's outputs) throws, changing nothing. Returns the
 * number of layers resized.
 */
export function resizeToWeights(model: Module, weights: ReadonlyMap<string, Tensor>): number {
  const changes: (() => void)[] = [];
  const shapeOf = (key: string) => weights.get(key)?.shape;
  const fail = (name: string, what: string): never => {
    throw new Error(`resizeToWeights: '${name}': ${what}`);
  };
  for (const [name, m] of model.namedModules()) {
    const at = (k: string) => (name ? `${name}.${k}` : k);
    if (m instanceof Conv2d) {
      const s = shapeOf(at('weight'));
      const groups = m.geometry.groups;
      if (!s || (s[0] === m.outChannels && s[1] * groups === m.inChannels)) continue;
      const w = m.weight.shape;
      if (s.length !== 4 || s[2] !== w[2] || s[3] !== w[3] || groups !== 1) {
        fail(
          at('weight'),
          `the weights have shape [${s.join(', ')}], which is not [${w.join(', ')}] with fewer channels`,
        );
      }
      changes.push(() => {
        replace(m, 'weight', zeros(s), m.weight.requiresGrad);
        if (m.bias) replace(m, 'bias', zeros([s[0]]), m.bias.requiresGrad);
        (m as { outChannels: number }).outChannels = s[0];
        (m as { inChannels: number }).inChannels = s[1];
      });
    } else if (m instanceof BatchNorm2d) {
      const s = shapeOf(at('running_mean')) ?? shapeOf(at('weight'));
      if (!s || s[0] === m.numFeatures) continue;
      if (s.length !== 1) fail(at('running_mean'), `expected one dimension, got [${s.join(', ')}]`);
      changes.push(() => {
        for (const field of ['weight', 'bias', 'runningMean', 'runningVar'] as const) {
          const t = m[field];
          if (t) replace(m, field, zeros(s), t.requiresGrad);
        }
        (m as { numFeatures: number }).numFeatures = s[0];
      });
    } else if (m instanceof Linear) {
      const s = shapeOf(at('weight'));
      if (!s || s[1] === m.inFeatures) continue;
      if (s.length !== 2 || s[0] !== m.outFeatures) {
        fail(at('weight'), `the weights have shape [${s.join(', ')}]; only the inputs of a linear can be fewer`);
      }
      changes.push(() => {
        replace(m, 'weight', zeros(s), m.weight.requiresGrad);
        (m as { inFeatures: number }).inFeatures = s[1];
      });
    }
  }
  for (const change of changes) change();
  if (changes.length) invalidatePlans();
  return changes.length;
}
