// Caffe's solver on ferroconv: a solver definition (solver.prototxt, SolverParameter) and its
// net train as Caffe trains them. The TRAIN-phase net owns the weights (from the layers' fillers,
// or a caffemodel), the TEST-phase nets share them by layer name, and each iteration runs
// Caffe's Solver::Step and SGDSolver::ApplyUpdate on ferroconv's ops and optimizers:
//   - forward/backward iter_size times, gradients summed; clip_gradients scales the sum to that
//     L2 norm; the sum is divided by iter_size; L2 weight decay joins the gradient (the
//     optimizers' weightDecay) and L1 adds decay * sign(w);
//   - the rate comes from lr_policy at the iteration (caffeLearningRate), times each blob's
//     lr_mult (the parameter group's lrMult), decay times decay_mult; lr_mult 0 freezes a blob;
//   - SGD and Nesterov are torch's SGD with Caffe's velocity: Caffe keeps V = momentum V + rate g
//     (the rate inside the velocity), torch v = momentum v + g with the rate applied after, which
//     is V = rate v while the rate is constant; when the rate changes, the buffers are rescaled
//     by old / new rate, so both keep the same V exactly (in real arithmetic). AdaGrad, RMSProp
//     and AdaDelta are torch's (same update with eps = delta); Adam is torch's with its eps set
//     each iteration to delta / sqrt(1 - momentum2^t), where Caffe's epsilon sits (inside the
//     bias correction).
// Losses are the net's loss layers (SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss)
// weighted by loss_weight; Accuracy layers are reported. Snapshots write the weights as a
// caffemodel Caffe reads and the solver state (iteration, optimizer buffers) as a ferroconv
// checkpoint to resume from.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { create, isFieldSet, toBinary } from '@bufbuild/protobuf';
import { fromText } from '@bufbuild/protobuf/txtpb';
import { noGrad } from '../../autograd.js';
import { crossEntropy, binaryCrossEntropyWithLogits } from '../../ops/loss.js';
import { add, assertFinite, mul, reshape, scale, sum, transpose } from '../../ops/elementwise.js';
import { sub } from '../../ops/nd.js';
import { Adadelta } from '../../optim/adadelta.js';
import { Adagrad } from '../../optim/adagrad.js';
import { Adam } from '../../optim/adam.js';
import { clipGradNorm } from '../../optim/clip.js';
import type { GroupOptions, Optimizer } from '../../optim/optimizer.js';
import { RMSprop } from '../../optim/rmsprop.js';
import { SGD } from '../../optim/sgd.js';
import { globalRng, manualSeed, Rng } from '../../random.js';
import { Tensor } from '../../tensor.js';
import { loadCheckpoint, saveCheckpoint } from '../../train/checkpoint.js';
import { writeFileAtomic } from '../atomic.js';
import { CaffeNet, parseCaffemodel, parsePrototxt } from './import.js';
import {
  BlobProtoSchema,
  type LayerParameter,
  LayerParameterSchema,
  LossParameter_NormalizationMode as Normalization,
  LossParameterSchema,
  type NetParameter,
  NetParameterSchema,
  type SolverParameter,
  SolverParameter_SolverType as SolverTypeEnum,
  SolverParameterSchema,
  AccuracyParameterSchema,
} from './gen/caffe_pb.js';

function fail(msg: string): never {
  throw new Error(`caffe solver: ${msg}`);
}

/** Reads a solver definition (solver.prototxt text). */
export function parseSolver(text: string): SolverParameter {
  try {
    return fromText(SolverParameterSchema, text);
  } catch (e) {
    return fail(`the solver definition does not parse: ${(e as Error).message}`);
  }
}

/** Caffe's learning-rate policies (SGDSolver::GetLearningRate), by name. */
const POLICIES = ['fixed', 'step', 'exp', 'inv', 'multistep', 'poly', 'sigmoid'];

function required(sp: SolverParameter, field: 'gamma' | 'power' | 'stepsize' | 'maxIter', policy: string): number {
  const f = SolverParameterSchema.field[field];
  if (!isFieldSet(sp, f)) fail(`lr_policy '${policy}' needs ${f.name}`);
  return Number(sp[field]);
}

/**
 * The learning rate at an iteration, as Caffe's SGDSolver::GetLearningRate:
 * fixed base_lr; step base_lr * gamma^floor(iter / stepsize); exp base_lr * gamma^iter;
 * inv base_lr * (1 + gamma * iter)^-power; multistep base_lr * gamma^(stepvalues passed);
 * poly base_lr * (1 - iter / max_iter)^power; sigmoid base_lr / (1 + exp(-gamma * (iter - stepsize))).
 */
export function caffeLearningRate(sp: SolverParameter, iter: number): number {
  const base = sp.baseLr;
  const policy = sp.lrPolicy || 'fixed';
  switch (policy) {
    case 'fixed':
      return base;
    case 'step':
      return base * required(sp, 'gamma', policy) ** Math.floor(iter / Math.max(required(sp, 'stepsize', policy), 1));
    case 'exp':
      return base * required(sp, 'gamma', policy) ** iter;
    case 'inv':
      return base * (1 + required(sp, 'gamma', policy) * iter) ** -required(sp, 'power', policy);
    case 'multistep': {
      const passed = sp.stepvalue.filter((v) => iter >= v).length;
      return base * required(sp, 'gamma', policy) ** passed;
    }
    case 'poly': {
      const max = required(sp, 'maxIter', policy);
      return base * (1 - iter / max) ** required(sp, 'power', policy);
    }
    case 'sigmoid':
      return base * (1 / (1 + Math.exp(-required(sp, 'gamma', policy) * (iter - required(sp, 'stepsize', policy)))));
    default:
      return fail(`unknown lr_policy '${policy}' (expected ${POLICIES.join(', ')})`);
  }
}

export type CaffeSolverType = 'SGD' | 'Nesterov' | 'AdaGrad' | 'RMSProp' | 'AdaDelta' | 'Adam';
const TYPES: CaffeSolverType[] = ['SGD', 'Nesterov', 'AdaGrad', 'RMSProp', 'AdaDelta', 'Adam'];

/** The solver's type: `type` (a string), else the deprecated solver_type enum. */
export function solverType(sp: SolverParameter): CaffeSolverType {
  if (isFieldSet(sp, SolverParameterSchema.field.type) || !isFieldSet(sp, SolverParameterSchema.field.solverType)) {
    const t = TYPES.find((x) => x.toLowerCase() === sp.type.toLowerCase());
    return t ?? fail(`unknown solver type '${sp.type}' (expected ${TYPES.join(', ')})`);
  }
  const byEnum: Record<number, CaffeSolverType> = {
    [SolverTypeEnum.SGD]: 'SGD',
    [SolverTypeEnum.NESTEROV]: 'Nesterov',
    [SolverTypeEnum.ADAGRAD]: 'AdaGrad',
    [SolverTypeEnum.RMSPROP]: 'RMSProp',
    [SolverTypeEnum.ADADELTA]: 'AdaDelta',
    [SolverTypeEnum.ADAM]: 'Adam',
  };
  return byEnum[sp.solverType] ?? fail(`unknown solver_type ${sp.solverType}`);
}

/** What the net's loss and accuracy layers computed: each top's value, and the weighted loss. */
export interface CaffeObjective {
  /** Sum of loss_weight * loss over the loss layers (differentiable). */
  loss: Tensor;
  /** Each loss or accuracy layer's top (or layer name) and its value. */
  outputs: { name: string; value: number; weight: number }[];
}

/** Class indices from a label blob (Caffe's labels are floats holding integers). */
function labelsOf(t: Tensor): Int32Array {
  return Int32Array.from(t.data, (v) => Math.round(v));
}

/** Scores [N, C, ...] along axis 1 as rows [N * spatial, C], the layout per-pixel labels follow. */
function rowsOf(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.ndim : axis;
  if (x.ndim === 2 && a === 1) return x;
  if (a !== 1) fail(`scores along axis ${axis} are not supported (axis 1 only)`);
  const spatial = x.size / (x.shape[0] * x.shape[1]);
  if (spatial === 1) return reshape(x, [x.shape[0], x.shape[1]]);
  const moved = transpose(reshape(x, [x.shape[0], x.shape[1], spatial]), [0, 2, 1]);
  return reshape(moved, [x.shape[0] * spatial, x.shape[1]]);
}

function headLoss(l: LayerParameter, bottoms: Tensor[]): Tensor | null {
  const [x, target] = bottoms;
  const p = l.lossParam;
  const ignore = p && isFieldSet(p, LossParameterSchema.field.ignoreLabel) ? p.ignoreLabel : null;
  // Caffe's normalization: `normalization` if set, else `normalize: false` means BATCH_SIZE.
  const mode = (dflt: Normalization) =>
    p && isFieldSet(p, LossParameterSchema.field.normalization)
      ? p.normalization
      : p && isFieldSet(p, LossParameterSchema.field.normalize) && !p.normalize
        ? Normalization.BATCH_SIZE
        : dflt;
  switch (l.type) {
    case 'SoftmaxWithLoss': {
      const rows = rowsOf(x, l.softmaxParam?.axis ?? 1);
      const labels = labelsOf(target);
      if (labels.length !== rows.shape[0])
        fail(`layer '${l.name}': ${labels.length} labels for ${rows.shape[0]} scores`);
      const m = mode(Normalization.VALID);
      if (m === Normalization.VALID) return crossEntropy(rows, labels, { ignoreIndex: ignore ?? -100 });
      const total = crossEntropy(rows, labels, { ignoreIndex: ignore ?? -100, reduction: 'sum' });
      const d = m === Normalization.FULL ? rows.shape[0] : m === Normalization.BATCH_SIZE ? x.shape[0] : 1;
      return scale(total, 1 / d);
    }
    case 'EuclideanLoss': {
      if (!target || target.size !== x.size) fail(`layer '${l.name}': the two bottoms differ in size`);
      const d = sub(x, reshape(target, x.shape));
      return scale(sum(mul(d, d)), 1 / (2 * x.shape[0]));
    }
    case 'SigmoidCrossEntropyLoss': {
      if (!target || target.size !== x.size) fail(`layer '${l.name}': the two bottoms differ in size`);
      const total = binaryCrossEntropyWithLogits(x, reshape(target, x.shape), { reduction: 'sum' });
      if (ignore !== null) fail(`layer '${l.name}': ignore_label is not supported for SigmoidCrossEntropyLoss`);
      const m = mode(Normalization.BATCH_SIZE);
      const d =
        m === Normalization.VALID || m === Normalization.FULL
          ? x.size
          : m === Normalization.BATCH_SIZE
            ? x.shape[0]
            : 1;
      return scale(total, 1 / d);
    }
    case 'Accuracy':
    case 'Silence':
      return null;
    default:
      return fail(`layer '${l.name}' (${l.type}): this loss is not supported for training`);
  }
}

/** Top-k accuracy as Caffe's Accuracy layer computes it (ignore_label left out of the count). */
function accuracy(l: LayerParameter, scores: Tensor, target: Tensor): number {
  const p = l.accuracyParam;
  const k = p?.topK ?? 1;
  const ignore = p && isFieldSet(p, AccuracyParameterSchema.field.ignoreLabel) ? p.ignoreLabel : null;
  const rows = rowsOf(scores, p?.axis ?? 1);
  const [n, c] = rows.shape;
  const labels = labelsOf(target);
  if (labels.length !== n) fail(`layer '${l.name}': ${labels.length} labels for ${n} scores`);
  let right = 0;
  let counted = 0;
  for (let i = 0; i < n; i++) {
    if (labels[i] === ignore) continue;
    counted++;
    const truth = rows.data[i * c + labels[i]];
    let above = 0;
    for (let j = 0; j < c; j++) if (rows.data[i * c + j] > truth) above++;
    if (above < k) right++;
  }
  return counted ? right / counted : 0;
}

/** Evaluates a net's loss and accuracy layers on its blobs (from CaffeNet.forwardBlobs). */
export function caffeObjective(net: CaffeNet, blobs: Map<string, Tensor>): CaffeObjective {
  let loss: Tensor | null = null;
  const outputs: CaffeObjective['outputs'] = [];
  for (const l of net.heads) {
    const bottoms = l.bottom.map((b) => blobs.get(b) ?? fail(`layer '${l.name}': blob '${b}' is not computed`));
    const name = l.top[0] ?? l.name;
    if (l.type !== 'Silence' && bottoms.length < 2) fail(`layer '${l.name}' (${l.type}) needs two bottoms`);
    if (l.type === 'Accuracy') {
      outputs.push({ name, value: noGrad(() => accuracy(l, bottoms[0], bottoms[1])), weight: 0 });
      continue;
    }
    let value: Tensor | null;
    try {
      value = headLoss(l, bottoms);
    } catch (e) {
      const msg = (e as Error).message;
      throw msg.startsWith('caffe solver: ') ? e : new Error(`caffe solver: layer '${l.name}' (${l.type}): ${msg}`);
    }
    if (!value) continue;
    const weight = l.lossWeight[0] ?? 1;
    outputs.push({ name, value: value.data[0], weight });
    if (weight === 0) continue;
    const term = weight === 1 ? value : scale(value, weight);
    loss = loss ? add(loss, term) : term;
  }
  return { loss: loss ?? new Tensor(new Float32Array(1), []), outputs };
}

/** A net's weights as a caffemodel (a binary NetParameter of the layers with blobs), as Caffe snapshots them. */
export function toCaffemodel(net: CaffeNet, name = 'ferroconv'): Uint8Array {
  const layers = net
    .layers()
    .filter((l) => l.weights)
    .map(({ layer, weights }) => {
      const state = weights!.stateDict();
      const order = ['weight', 'bias', 'mean', 'variance', 'scale_factor'].filter((k) => state.has(k));
      // A Scale with two bottoms holds only its bias, which is then its first blob.
      const blobs = order.map((k) => {
        const t = state.get(k)!;
        return create(BlobProtoSchema, { shape: { dim: t.shape.map(BigInt) }, data: Array.from(t.data) });
      });
      return create(LayerParameterSchema, { name: layer.name, type: layer.type, blobs });
    });
  return toBinary(NetParameterSchema, create(NetParameterSchema, { name, layer: layers }));
}

/** One batch for a net: a tensor per blob name (the data layer's tops: data and label). */
export type CaffeFeed = Record<string, Tensor>;

export interface CaffeSolverOptions {
  /** The folder relative paths in the solver start from when they do not exist from the working directory. */
  baseDir?: string;
  /** Random numbers for the fillers and dropout (default: the global generator; random_seed reseeds it). */
  rng?: Rng;
  /** Lines as Caffe's solver logs them (default: none). */
  log?: (line: string) => void;
}

/** A path from the solver: as given when it exists from the working directory, else from baseDir. */
function pathFrom(p: string, baseDir: string | undefined): string {
  if (existsSync(p) || !baseDir) return p;
  return resolve(baseDir, p);
}

/** A Caffe solver running on ferroconv. */
export class CaffeSolver {
  readonly param: SolverParameter;
  readonly type: CaffeSolverType;
  /** The TRAIN-phase net; it owns the weights. */
  readonly net: CaffeNet;
  /** The TEST-phase nets (one per test_iter), sharing the train net's weights. */
  readonly testNets: CaffeNet[];
  /** Completed iterations. */
  iter = 0;
  private optimizer: Optimizer<GroupOptions> | null = null;
  private rate = Number.NaN;
  private readonly losses: number[] = [];
  private readonly log: (line: string) => void;
  private readonly rng: Rng;
  private pendingRestore: string | null = null;
  private readonly baseDir: string | undefined;

  /** `solver`: a solver.prototxt path, its text, or a parsed SolverParameter. */
  constructor(solver: string | SolverParameter, opts: CaffeSolverOptions = {}) {
    let baseDir = opts.baseDir;
    if (typeof solver === 'string') {
      const isText = /[\n:]/.test(solver) && !existsSync(solver);
      if (!isText) baseDir ??= dirname(resolve(solver));
      solver = parseSolver(isText ? solver : readText(solver, 'solver'));
    }
    this.param = solver;
    this.type = solverType(solver);
    this.log = opts.log ?? (() => {});
    // random_seed seeds the fillers and (through the global generator) dropout, as in Caffe.
    if (solver.randomSeed >= 0n) manualSeed(Number(solver.randomSeed));
    this.rng = solver.randomSeed >= 0n ? new Rng(Number(solver.randomSeed)) : (opts.rng ?? globalRng);
    if (!(solver.baseLr > 0) && !isFieldSet(solver, SolverParameterSchema.field.baseLr)) fail('base_lr is required');
    if (solver.maxIter <= 0) fail('max_iter is required (a positive number of iterations)');
    if (solver.regularizationType !== 'L2' && solver.regularizationType !== 'L1') {
      fail(`regularization_type '${solver.regularizationType}' (expected L1 or L2)`);
    }
    caffeLearningRate(solver, 0); // an unknown policy or a missing field is an Error now
    const def = (which: 'train' | 'test'): NetParameter => {
      const inline = which === 'train' ? solver.trainNetParam : solver.testNetParam[0];
      if (inline) return inline;
      if (solver.netParam) return solver.netParam;
      const file = (which === 'train' ? solver.trainNet : solver.testNet[0]) || solver.net;
      if (!file) fail('the solver names no net (net, train_net or net_param)');
      return parsePrototxt(readText(pathFrom(file, baseDir), 'net'));
    };
    this.net = new CaffeNet(def('train'), { phase: 'TRAIN' });
    const tests = solver.testIter.length;
    this.testNets = Array.from({ length: tests }, () => new CaffeNet(def('test'), { shareWeights: this.net }));
    this.baseDir = baseDir;
  }

  /** The learning rate of the last update (NaN before the first). */
  get learningRate(): number {
    return this.rate;
  }

  /**
   * Copies weights from a caffemodel (path or bytes) into the nets, by layer name; layers it
   * lacks keep their fillers' values.
   */
  loadWeights(caffemodel: string | Uint8Array): void {
    const bytes = typeof caffemodel === 'string' ? readFileSync(caffemodel) : caffemodel;
    this.net.loadWeights(parseCaffemodel(bytes), false);
  }

  /** Resumes from a solver state written by snapshot() (applied when the first batch gives the shapes). */
  restore(path: string): void {
    if (!existsSync(path)) fail(`no solver state at ${path}`);
    this.pendingRestore = path;
  }

  /** Creates missing weights from the fillers and the optimizer, once the input shapes are known. */
  private ready(feed: CaffeFeed): Optimizer<GroupOptions> {
    if (this.optimizer) return this.optimizer;
    const shapes = Object.fromEntries(Object.entries(feed).map(([k, t]) => [k, t.shape]));
    this.net.initialize({ shapes, rng: this.rng });
    const opt = this.buildOptimizer();
    this.optimizer = opt;
    if (this.pendingRestore) {
      const state = loadCheckpoint(this.pendingRestore, this.net);
      const iter = Number(state.iter);
      if (!Number.isSafeInteger(iter) || iter < 0) fail(`${this.pendingRestore}: not a solver state (no iteration)`);
      opt.loadStateDict(state.optimizer as never);
      this.iter = iter;
      this.rate = Number(state.rate ?? Number.NaN);
      this.pendingRestore = null;
    }
    return opt;
  }

  /** The optimizer of the solver type, one parameter group per (lr_mult, decay_mult). */
  private buildOptimizer(): Optimizer<GroupOptions> {
    const sp = this.param;
    const groups = new Map<string, { params: Tensor[]; lrMult: number; decayMult: number }>();
    for (const { layer, weights } of this.net.layers()) {
      if (!weights) continue;
      const blobs = [...weights.namedParameters()];
      blobs.forEach(([, t], i) => {
        const spec = layer.param[i];
        const lrMult = spec?.lrMult ?? 1;
        const decayMult = spec?.decayMult ?? 1;
        if (lrMult === 0) {
          t.requiresGrad_(false);
          return;
        }
        const key = `${lrMult}/${decayMult}`;
        const g = groups.get(key) ?? { params: [], lrMult, decayMult };
        g.params.push(t);
        groups.set(key, g);
      });
    }
    if (groups.size === 0) fail('the net has no blob to train (every lr_mult is 0)');
    const l2 = sp.regularizationType === 'L2' ? sp.weightDecay : 0;
    const list = [...groups.values()];
    const lr = caffeLearningRate(sp, this.iter);
    const momentum = sp.momentum;
    const delta = sp.delta;
    switch (this.type) {
      case 'SGD':
      case 'Nesterov':
        return new SGD(list, { lr, momentum, weightDecay: l2, nesterov: this.type === 'Nesterov' && momentum > 0 });
      case 'AdaGrad':
        return new Adagrad(list, { lr, eps: delta, weightDecay: l2 });
      case 'RMSProp':
        return new RMSprop(list, { lr, alpha: sp.rmsDecay, eps: delta, weightDecay: l2 });
      case 'AdaDelta':
        return new Adadelta(list, { lr, rho: momentum, eps: delta, weightDecay: l2 });
      case 'Adam':
        return new Adam(list, { lr, betas: [momentum, sp.momentum2], eps: delta, weightDecay: l2 });
    }
  }

  /**
   * One iteration: forward and backward over `feeds` (iter_size batches), then the update.
   * Returns the iteration's loss (the mean over its batches).
   */
  step(feeds: CaffeFeed[]): number {
    const sp = this.param;
    if (feeds.length !== Math.max(sp.iterSize, 1))
      fail(`step: expected ${Math.max(sp.iterSize, 1)} batches (iter_size), got ${feeds.length}`);
    const opt = this.ready(feeds[0]);
    this.net.train();
    opt.zeroGrad();
    let total = 0;
    const outputs = new Map<string, { value: number; weight: number }>();
    for (const feed of feeds) {
      const { loss, outputs: outs } = caffeObjective(this.net, this.net.forwardBlobs(feed));
      assertFinite(loss, `the loss at iteration ${this.iter}`);
      if (loss.requiresGrad) loss.backward();
      total += loss.data[0];
      for (const o of outs) {
        const prev = outputs.get(o.name);
        outputs.set(o.name, { value: (prev?.value ?? 0) + o.value / feeds.length, weight: o.weight });
      }
    }
    const loss = total / feeds.length;
    this.losses.push(loss);
    if (this.losses.length > Math.max(sp.averageLoss, 1)) this.losses.shift();
    const display = sp.display > 0 && this.iter % sp.display === 0;
    if (display) {
      const smoothed = this.losses.reduce((a, b) => a + b, 0) / this.losses.length;
      this.log(`Iteration ${this.iter}, loss = ${fmt(smoothed)}`);
      [...outputs].forEach(([name, o], i) => {
        const w = o.weight ? ` (* ${fmt(o.weight)} = ${fmt(o.value * o.weight)} loss)` : '';
        this.log(`    Train net output #${i}: ${name} = ${fmt(o.value)}${w}`);
      });
    }
    this.applyUpdate(opt, feeds.length);
    if (display) this.log(`Iteration ${this.iter}, lr = ${fmt(this.rate)}`);
    this.iter++;
    if (sp.snapshot > 0 && this.iter % sp.snapshot === 0) this.snapshot();
    return loss;
  }

  /** SGDSolver::ApplyUpdate: rate, clipping, normalization, regularization, update. */
  private applyUpdate(opt: Optimizer<GroupOptions>, iterSize: number): void {
    const sp = this.param;
    const rate = caffeLearningRate(sp, this.iter);
    const params = opt.paramGroups.flatMap((g) => g.params);
    if (sp.clipGradients >= 0) clipGradNorm(params, sp.clipGradients);
    for (const group of opt.paramGroups) {
      for (const p of group.params) {
        if (!p.grad) continue;
        const g = p.grad.data;
        if (iterSize > 1) for (let i = 0; i < g.length; i++) g[i] /= iterSize;
        if (sp.regularizationType === 'L1' && sp.weightDecay) {
          const d = sp.weightDecay * group.decayMult;
          for (let i = 0; i < g.length; i++) g[i] += d * Math.sign(p.data[i]);
        }
      }
    }
    // Caffe's velocity holds the rate; torch's does not (see the file's head).
    if (opt instanceof SGD && Number.isFinite(this.rate) && this.rate !== rate && this.rate > 0 && rate > 0) {
      opt.scaleMomentum(this.rate / rate);
    }
    for (const group of opt.paramGroups) group.lr = rate;
    if (opt instanceof Adam) {
      // Caffe's epsilon sits inside the bias correction: torch's eps / sqrt(1 - beta2^t) is it.
      const t = this.iter + 1;
      for (const group of opt.paramGroups) (group as { eps: number }).eps = sp.delta / Math.sqrt(1 - sp.momentum2 ** t);
    }
    this.rate = rate;
    opt.step();
  }

  /** Runs test net `index` for its test_iter batches; returns each output's mean. */
  test(feeds: CaffeFeed[], index = 0): { name: string; value: number; weight: number }[] {
    const net = this.testNets[index] ?? fail(`no test net #${index}`);
    this.ready(feeds[0] ?? fail('test: no batches'));
    net.eval();
    const sums = new Map<string, { value: number; weight: number }>();
    for (const feed of feeds) {
      const { outputs } = noGrad(() => caffeObjective(net, net.forwardBlobs(feed)));
      for (const o of outputs) {
        const prev = sums.get(o.name);
        sums.set(o.name, { value: (prev?.value ?? 0) + o.value / feeds.length, weight: o.weight });
      }
    }
    return [...sums].map(([name, o]) => ({ name, ...o }));
  }

  /** The snapshot prefix (snapshot_prefix, else the solver's net name). */
  private prefix(): string {
    const p = this.param.snapshotPrefix || 'snapshot';
    return existsSync(dirname(p)) || !this.baseDir ? p : resolve(this.baseDir, p);
  }

  /**
   * Writes `<prefix>_iter_<N>.caffemodel` (the weights, which Caffe and loadCaffe read) and
   * `<prefix>_iter_<N>.solverstate.safetensors` (weights, optimizer state and iteration, which
   * restore() resumes from). Returns the two paths.
   */
  snapshot(): { caffemodel: string; state: string } {
    if (!this.optimizer) fail('snapshot: nothing trained yet');
    const base = `${this.prefix()}_iter_${this.iter}`;
    mkdirSync(dirname(base), { recursive: true });
    const caffemodel = `${base}.caffemodel`;
    const state = `${base}.solverstate.safetensors`;
    this.log(`Snapshotting to binary proto file ${caffemodel}`);
    writeFileAtomic(caffemodel, [toCaffemodel(this.net)]);
    saveCheckpoint(state, this.net, {
      epoch: this.iter,
      iter: this.iter,
      rate: this.rate,
      optimizer: this.optimizer.stateDict(),
    });
    this.log(`Snapshotting solver state to ${state}`);
    return { caffemodel, state };
  }

  private runTests(test: ((index: number) => CaffeFeed[] | Promise<CaffeFeed[]>) | undefined): Promise<void> | void {
    if (!test) return;
    return (async () => {
      for (let i = 0; i < this.testNets.length; i++) {
        this.log(`Iteration ${this.iter}, Testing net (#${i})`);
        const outs = this.test(await test(i), i);
        outs.forEach((o, k) => {
          const w = o.weight ? ` (* ${fmt(o.weight)} = ${fmt(o.value * o.weight)} loss)` : '';
          this.log(`    Test net output #${k}: ${o.name} = ${fmt(o.value)}${w}`);
        });
        this.lastTest[i] = outs;
      }
    })();
  }

  /** The outputs of the last test of each test net. */
  readonly lastTest: { name: string; value: number; weight: number }[][] = [];

  /**
   * Solver::Solve: steps to max_iter, testing every test_interval (and first, unless
   * test_initialization is false) and snapshotting every `snapshot` iterations and at the end.
   * `train()` gives the next training batch; `test(i)` the test_iter[i] batches of test net i.
   * Yields to the event loop between iterations. `maxIter` stops earlier than max_iter (the
   * schedules still use max_iter); `finalTest` tests at the end even off a test_interval.
   */
  async solve(
    train: () => CaffeFeed | Promise<CaffeFeed>,
    test?: (index: number) => CaffeFeed[] | Promise<CaffeFeed[]>,
    opts: { maxIter?: number; finalTest?: boolean } = {},
  ): Promise<void> {
    const sp = this.param;
    const stop = opts.maxIter ?? sp.maxIter;
    const testing = sp.testInterval > 0 && this.testNets.length > 0;
    // The first batch gives the input shapes: weights and a restored state exist from here on.
    let first: CaffeFeed | null = await train();
    this.ready(first);
    this.log(`Solving with ${this.type} to iteration ${stop} (from ${this.iter})`);
    while (this.iter < stop) {
      if (testing && this.iter % sp.testInterval === 0 && (this.iter > 0 || sp.testInitialization)) {
        await this.runTests(test);
      }
      const feeds: CaffeFeed[] = [];
      for (let k = 0; k < Math.max(sp.iterSize, 1); k++) {
        feeds.push(first ?? (await train()));
        first = null;
      }
      this.step(feeds);
      await new Promise((r) => setImmediate(r));
    }
    if (sp.snapshotAfterTrain && !(sp.snapshot > 0 && this.iter % sp.snapshot === 0)) this.snapshot();
    // Caffe tests at the end only on a test_interval boundary; finalTest always does.
    if (testing && (this.iter % sp.testInterval === 0 || opts.finalTest)) await this.runTests(test);
    this.log('Optimization Done.');
  }
}

function fmt(v: number): string {
  return Number(v.toPrecision(6)).toString();
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    return fail(`${what} ${path}: ${(e as Error).message}`);
  }
}
