// summary(): a model's layer table, as torchinfo prints it for PyTorch. One eval forward on a
// zero input, run eagerly with inference fusion off so that every layer is entered through its
// own call(), is watched twice: at the module level (observeCalls: the rows, output shapes,
// parameters, multiply-accumulates) and at the op level (the tape: receptive fields travel
// through every op, so residual adds and concats merge them). Nothing of the model changes:
// modes, fusion and gradients are put back, and no running statistic moves (eval mode).
import { watchTape } from '../autograd.js';
import { describe } from '../describe.js';
import { type Module, observeCalls } from '../nn/module.js';
import { callPath, inspecting, relativePath, textTable } from './common.js';
import { Tensor, zeros } from '../tensor.js';
import { INPUT_FIELD, layerField, type ReceptiveField, unionField } from './receptive-field.js';

export interface SummaryRow {
  /** Dotted path as in the state dict ('' for the model itself). */
  path: string;
  /** The module's class name. */
  type: string;
  /** Nesting depth of the call: 0 for the model, 1 for its children, ... */
  depth: number;
  /** Shape of the (first) output, or null when the output is not a tensor. */
  outputShape: number[] | null;
  /** Parameters of this module and of its children. */
  params: number;
  /** Of which trainable (requiresGrad). */
  trainable: number;
  /**
   * Multiply-accumulates of this call, by torchinfo's rule: a convolution's weight and bias
   * elements times N*H_out*W_out, any other layer's times N; a container's is the sum of its
   * children's.
   */
  macs: number;
  /** The output's size in bytes (float32). */
  activationBytes: number;
  /** What one unit of the output sees of the input (4-D outputs), per axis [height, width]. */
  receptiveField: ReceptiveField | null;
  /** True for a module without children. */
  leaf: boolean;
}

export interface SummaryOptions {
  /** Rows deeper than this are left out of the printed table (default 3); totals count them. */
  depth?: number;
}

const MB = 1024 * 1024;

/** The result of summary(): the rows, the totals, and `toString()` for the printed table. */
export class ModelSummary {
  constructor(
    readonly model: string,
    readonly inputShapes: number[][],
    readonly rows: SummaryRow[],
    /** Unique parameter elements of the model (shared tensors counted once). */
    readonly totalParams: number,
    readonly trainableParams: number,
    /** Sum of the leaf rows' multiply-accumulates. */
    readonly totalMacs: number,
    /** Bytes of the inputs, of every leaf layer's output, and of the parameters. */
    readonly bytes: { input: number; activations: number; params: number },
    private readonly printDepth: number,
  ) {}

  get frozenParams(): number {
    return this.totalParams - this.trainableParams;
  }

  /** The table: one row per layer call up to `depth`, then the totals. */
  toString(depth = this.printDepth): string {
    const shown = this.rows.filter((r) => r.depth <= depth);
    const cells = shown.map((r) => [
      `${'  '.repeat(r.depth)}${r.depth === 0 ? r.type : `${r.path.split('.').at(-1)} (${r.type})`}`,
      r.outputShape ? `[${r.outputShape.join(', ')}]` : '--',
      r.params ? r.params.toLocaleString('en-US') : '--',
      r.macs ? r.macs.toLocaleString('en-US') : '--',
      r.receptiveField ? formatField(r.receptiveField) : '--',
    ]);
    const head = ['Layer (type)', 'Output shape', 'Param #', 'Mult-adds', 'Receptive field (size/jump/start)'];
    const fmtMb = (b: number) => (b / MB).toFixed(2);
    const macs =
      this.totalMacs >= 1e9
        ? `Total mult-adds (G): ${(this.totalMacs / 1e9).toFixed(2)}`
        : `Total mult-adds (M): ${(this.totalMacs / 1e6).toFixed(2)}`;
    return textTable(
      head,
      cells,
      [0, 4],
      [
        [
          `Total params: ${this.totalParams.toLocaleString('en-US')}`,
          `Trainable params: ${this.trainableParams.toLocaleString('en-US')}`,
          `Non-trainable params: ${this.frozenParams.toLocaleString('en-US')}`,
          macs,
        ],
        [
          `Input size (MB): ${fmtMb(this.bytes.input)}`,
          `Forward pass size (MB): ${fmtMb(this.bytes.activations)}`,
          `Params size (MB): ${fmtMb(this.bytes.params)}`,
          `Estimated total size (MB): ${fmtMb(this.bytes.input + this.bytes.activations + this.bytes.params)}`,
        ],
      ],
    );
  }

  toJSON(): object {
    return {
      model: this.model,
      inputShapes: this.inputShapes,
      totalParams: this.totalParams,
      trainableParams: this.trainableParams,
      frozenParams: this.frozenParams,
      totalMacs: this.totalMacs,
      bytes: this.bytes,
      rows: this.rows,
    };
  }
}

/** `35/8/0.5` when both axes agree, `35x19/8x4/0.5x0.5` otherwise. */
function formatField(f: ReceptiveField): string {
  const num = (v: number) => String(Math.round(v * 1000) / 1000);
  const both = (k: 'size' | 'jump' | 'start') =>
    f[0][k] === f[1][k] ? num(f[0][k]) : `${num(f[0][k])}x${num(f[1][k])}`;
  return `${both('size')}/${both('jump')}/${both('start')}`;
}

/** Multiply-accumulates of one call of `m` (its own parameters only), by torchinfo's rule. */
function ownMacs(m: Module, out: readonly number[]): number {
  const conv = m.constructor.name.includes('Conv');
  let macs = 0;
  for (const [name, p] of m.namedParameters()) {
    if (name.includes('.')) continue; // a child's
    if (name === 'weight' || name === 'bias') {
      macs += conv ? p.size * out[0] * out.slice(2).reduce((a, b) => a * b, 1) : p.size * out[0];
    } else if (name.includes('weight') || name.includes('bias')) {
      macs += p.size * out[0] * (out[1] ?? 1); // recurrent layers' weight_ih_l0 and the like
    }
  }
  return macs;
}

/**
 * Multiply-accumulates of an imported graph's node by the same rule, its weights being its
 * inputs after the first: Conv and ConvTranspose (weight and bias times N*H_out*W_out), Gemm,
 * MatMul and BatchNormalization (their parameters times N, the running statistics excluded).
 */
function stepMacs(type: string, ins: readonly Tensor[], out: readonly number[]): number {
  const sizes = ins.slice(1).map((t) => (t instanceof Tensor ? t.size : 0));
  const n = out[0] ?? 1;
  if (type === 'Conv' || type === 'ConvTranspose') {
    return (sizes[0] + (sizes[1] ?? 0)) * n * out.slice(2).reduce((a, b) => a * b, 1);
  }
  if (type === 'Gemm') return (sizes[0] + (sizes[1] ?? 0)) * n;
  if (type === 'MatMul') return sizes[0] * n;
  if (type === 'BatchNormalization') return (sizes[0] + sizes[1]) * n;
  return 0;
}

/**
 * The layer table of `model` for an input of `inputShape` ([N, C, H, W]; or the input tensors
 * themselves): per layer call its path, type, output shape, parameters (trainable and frozen),
 * multiply-accumulates, output memory and receptive field, plus totals. The counts follow
 * torchinfo's (ResNet-50 at [1, 3, 224, 224]: 25,557,032 parameters, 4.09 G mult-adds).
 * `String(summary(model, shape))` is the printed table.
 */
export function summary(
  model: Module,
  input: readonly number[] | Tensor | Tensor[],
  opts: SummaryOptions = {},
): ModelSummary {
  const inputs =
    input instanceof Tensor ? [input] : Array.isArray(input) && input[0] instanceof Tensor ? (input as Tensor[]) : null;
  const xs = inputs ?? [shapeInput(input as readonly number[])];
  const depth = opts.depth ?? 3;
  if (!Number.isInteger(depth) || depth < 0)
    throw new Error(`summary: depth must be a non-negative integer, got ${depth}`);

  const rows: SummaryRow[] = [];
  const open: { row: SummaryRow; start: number }[] = [];
  const fields = new WeakMap<Tensor, ReceptiveField>();
  // Inputs that need a gradient make every op record itself on the tape, where fields travel.
  const watched = xs.map((x) => {
    const t = new Tensor(x.data, x.shape);
    t.requiresGrad = true;
    if (t.ndim === 4) fields.set(t, INPUT_FIELD);
    return t;
  });
  const relPath = relativePath(model);
  inspecting(model, { training: false }, () =>
    watchTape(
      {
        recorded(fn, out) {
          if (fields.has(out)) return;
          const seen = fn.inputs.flatMap((t) => (t && fields.has(t) ? [fields.get(t)!] : []));
          if (seen.length && out.ndim === 4) fields.set(out, seen.length === 1 ? seen[0] : unionField(seen));
        },
      },
      () =>
        observeCalls(
          {
            enter(m, _ins, step) {
              const params = step ? [] : m.parameters();
              const own = relPath(m);
              const row: SummaryRow = {
                path: callPath(own, step),
                type: step ? step.type : m.constructor.name,
                depth: open.length,
                outputShape: null,
                params: params.reduce((a, p) => a + p.size, 0),
                trainable: params.reduce((a, p) => a + (p.requiresGrad ? p.size : 0), 0),
                macs: 0,
                activationBytes: 0,
                receptiveField: null,
                leaf: true,
              };
              open.push({ row, start: rows.length });
              rows.push(row);
            },
            exit(m, ins, y, step) {
              const { row, start } = open.pop()!;
              // A leaf is a call with no calls inside it (a layer, or a step of an imported graph).
              row.leaf = rows.length === start + 1;
              const out = y instanceof Tensor ? y : null;
              // Its children have added theirs already; the caller gets the whole.
              if (out) row.macs += step ? stepMacs(step.type, ins, out.shape) : ownMacs(m, out.shape);
              const parent = open.at(-1);
              if (parent) parent.row.macs += row.macs;
              if (!out) return undefined;
              row.outputShape = [...out.shape];
              row.activationBytes = out.size * 4;
              const x = ins[0];
              const before = x instanceof Tensor ? fields.get(x) : undefined;
              if (before && out.ndim === 4 && !step) {
                const after = layerField(m, before, x.shape, out.shape);
                if (after) fields.set(out, after);
              }
              // A graph step's field would need its op's geometry: not shown rather than wrong.
              row.receptiveField = out.ndim === 4 && !step ? (fields.get(out) ?? null) : null;
              return undefined;
            },
          },
          () => model.call(...watched),
        ),
    ),
  );
  const unique = new Set(model.parameters());
  let total = 0;
  let trainable = 0;
  for (const p of unique) {
    total += p.size;
    if (p.requiresGrad) trainable += p.size;
  }
  const leaves = rows.filter((r) => r.leaf);
  return new ModelSummary(
    model.constructor.name,
    xs.map((x) => [...x.shape]),
    rows,
    total,
    trainable,
    leaves.reduce((a, r) => a + r.macs, 0),
    {
      input: xs.reduce((a, x) => a + x.size * 4, 0),
      activations: leaves.reduce((a, r) => a + r.activationBytes, 0),
      params: total * 4,
    },
    depth,
  );
}

function shapeInput(shape: readonly number[]): Tensor {
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(
      `summary: expected an input shape of positive integers such as [1, 3, 224, 224], got ${describe(shape)}`,
    );
  }
  return zeros(shape);
}
