// profile(): where a training step's time goes, layer by layer, as `caffe time` reports it for
// Caffe: each layer's forward and backward time (the median over iterations), its share of the
// step, and for convolutions their GFLOP/s and the algorithm the kernels chose. A step here is
// the eager forward and backward (with a gradient of ones at the output), every op attributed
// to the innermost layer call that ran it: its forward time is the call's own (children's time
// taken out), its backward time the summed backward of the ops it recorded. The eager step is
// what the layers cost; a compiled plan (fit's default) runs the same kernels with less
// overhead in between. The model is left as it was: modes, running statistics, gradients,
// fusion and the random generator are put back after every iteration, before the pause that
// lets other code run.
import { watchTape } from '../autograd.js';
import { describe } from '../describe.js';
import { Conv2d } from '../nn/conv2d.js';
import { type Module, observeCalls } from '../nn/module.js';
import { callPath, inspecting, relativePath, textTable } from './common.js';
import { conv2dAlgorithms } from '../ops/conv.js';
import { globalRng } from '../random.js';
import { randn, Tensor, writableData } from '../tensor.js';

export interface LayerTiming {
  /** State-dict path of the layer ('' for the model's own ops; a graph node's name for an imported model). */
  path: string;
  type: string;
  depth: number;
  outputShape: number[] | null;
  /** Median milliseconds of this call's own forward work (its children's excluded). */
  forwardMs: number;
  /** Median milliseconds of the backward of the ops this call ran (0 with backward off). */
  backwardMs: number;
  /** (forward + backward) / the whole step. */
  share: number;
  /** For a convolution: floating-point operations of its forward (2 per multiply-add). */
  flops?: number;
  /** For a convolution: its forward and backward speed. */
  gflops?: { forward: number; backward: number };
  /** For a convolution: the algorithms of [forward, backward data, backward weight]. */
  algorithms?: [string, string, string];
}

export interface ProfileOptions {
  /** Timed iterations (default 20); the medians are over these. */
  iterations?: number;
  /** Untimed iterations first (default 2): first-use allocations and caches. */
  warmup?: number;
  /** Time the backward pass too (default true). */
  backward?: boolean;
  /** 'train' (default, as a training step runs: batch norm on batch statistics) or 'eval'. */
  mode?: 'train' | 'eval';
}

/** The result of profile(): per-layer rows, whole-step medians, and `toString()` for a table. */
export class ProfileResult {
  constructor(
    readonly model: string,
    readonly inputShape: number[],
    readonly rows: LayerTiming[],
    /** Median milliseconds of the whole forward, the whole backward, and both. */
    readonly forwardMs: number,
    readonly backwardMs: number,
    readonly stepMs: number,
    readonly iterations: number,
  ) {}

  /** The table: the layers that did work, slowest first when `sort` (default: in call order). */
  toString(sort = false): string {
    const rows = this.rows.filter((r) => r.forwardMs > 0 || r.backwardMs > 0);
    if (sort) rows.sort((a, b) => b.forwardMs + b.backwardMs - (a.forwardMs + a.backwardMs));
    const ms = (v: number) => v.toFixed(3);
    const cells = rows.map((r) => [
      `${r.path || '(model)'} (${r.type})`,
      r.outputShape ? `[${r.outputShape.join(', ')}]` : '--',
      ms(r.forwardMs),
      ms(r.backwardMs),
      `${(100 * r.share).toFixed(1)}%`,
      r.gflops ? `${r.gflops.forward.toFixed(1)} / ${r.gflops.backward.toFixed(1)}` : '',
      r.algorithms ? r.algorithms.join(' / ') : '',
    ]);
    const head = ['Layer (type)', 'Output shape', 'Fwd ms', 'Bwd ms', 'Share', 'GFLOP/s f/b', 'Algorithm f/bd/bw'];
    return textTable(
      head,
      cells,
      [0, 1, 6],
      [
        [
          `${this.model} on [${this.inputShape.join(', ')}], median of ${this.iterations} iterations:`,
          `Average Forward pass: ${ms(this.forwardMs)} ms.`,
          `Average Backward pass: ${ms(this.backwardMs)} ms.`,
          `Average Forward-Backward: ${ms(this.stepMs)} ms.`,
        ],
      ],
    );
  }

  toJSON(): object {
    const { model, inputShape, rows, forwardMs, backwardMs, stepMs, iterations } = this;
    return { model, inputShape, iterations, forwardMs, backwardMs, stepMs, rows };
  }
}

function median(v: number[]): number {
  if (v.length === 0) return 0;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Times `model` layer by layer on a random input of `inputShape` (see the top of this file).
 * Yields to the event loop between iterations; an iteration itself runs on this thread.
 */
export async function profile(
  model: Module,
  inputShape: readonly number[],
  opts: ProfileOptions = {},
): Promise<ProfileResult> {
  const iterations = opts.iterations ?? 20;
  const warmup = opts.warmup ?? 2;
  const backward = opts.backward ?? true;
  const mode = opts.mode ?? 'train';
  if (!Number.isInteger(iterations) || iterations < 1) {
    throw new Error(`profile: iterations must be a positive integer, got ${describe(iterations)}`);
  }
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new Error(`profile: warmup must be a non-negative integer, got ${describe(warmup)}`);
  }
  if (mode !== 'train' && mode !== 'eval')
    throw new Error(`profile: mode must be 'train' or 'eval', got ${describe(mode)}`);
  if (!Array.isArray(inputShape) || inputShape.length === 0 || !inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(
      `profile: expected an input shape of positive integers such as [8, 3, 224, 224], got ${describe(inputShape)}`,
    );
  }

  const x = randn([...inputShape]);
  x.requiresGrad = backward; // so that every layer's backward runs, the first one's data gradient too
  const rel = relativePath(model);
  interface Slot {
    row: LayerTiming;
    fwd: number[];
    bwd: number[];
    conv: Conv2d | null;
    bwdPasses: number;
  }
  const slots: Slot[] = [];
  const fwdTotals: number[] = [];
  const bwdTotals: number[] = [];

  /** One step, timed layer by layer; the iteration number says whether rows are made. */
  const step = (it: number) => {
    let call = 0;
    const stack: { slot: number; t0: number; inner: number }[] = [];
    const fwdSelf = new Map<number, number>();
    const bwdSelf = new Map<number, number>();
    const owner = new WeakMap<object, number>();
    const t0 = performance.now();
    let t1 = t0;
    watchTape(
      {
        recorded(fn) {
          const top = stack.at(-1);
          if (top) owner.set(fn, top.slot);
        },
        backward(fn, run) {
          const s = performance.now();
          const r = run();
          const at = owner.get(fn);
          if (at !== undefined) bwdSelf.set(at, (bwdSelf.get(at) ?? 0) + performance.now() - s);
          return r;
        },
      },
      () => {
        const y = observeCalls(
          {
            enter(m, ins, callStep) {
              const slot = call++;
              if (it === 0) {
                const conv = !callStep && m instanceof Conv2d ? m : null;
                slots.push({
                  row: {
                    path: callPath(rel(m), callStep),
                    type: callStep ? callStep.type : m.constructor.name,
                    depth: stack.length,
                    outputShape: null,
                    forwardMs: 0,
                    backwardMs: 0,
                    share: 0,
                  },
                  fwd: [],
                  bwd: [],
                  conv,
                  bwdPasses: conv && ins[0] instanceof Tensor && ins[0].requiresGrad ? 2 : 1,
                });
              } else if (slot >= slots.length) {
                throw new Error('profile: the forward made different layer calls from one iteration to the next');
              }
              stack.push({ slot, t0: performance.now(), inner: 0 });
            },
            exit(_m, ins, out) {
              const top = stack.pop()!;
              const total = performance.now() - top.t0;
              fwdSelf.set(top.slot, total - top.inner);
              const parent = stack.at(-1);
              if (parent) parent.inner += total;
              const slot = slots[top.slot];
              if (it === 0 && out instanceof Tensor) {
                slot.row.outputShape = [...out.shape];
                const x0 = ins[0];
                if (slot.conv && x0 instanceof Tensor) {
                  const c = slot.conv;
                  const [, cin, kh, kw] = c.weight.shape;
                  slot.row.flops = 2 * out.size * cin * kh * kw;
                  slot.row.algorithms = conv2dAlgorithms(x0.shape, c.weight.shape, c.geometry, c.opts.algo);
                }
              }
              return undefined;
            },
          },
          () => model.call(x),
        );
        t1 = performance.now();
        if (backward) {
          if (!(y instanceof Tensor)) throw new Error('profile: the model did not return a tensor');
          if (!y.requiresGrad) throw new Error('profile: the output needs no gradient (is every parameter frozen?)');
          y.backward(new Tensor(new Float32Array(y.size).fill(1), y.shape));
        }
      },
    );
    const t2 = performance.now();
    if (it < warmup) return;
    fwdTotals.push(t1 - t0);
    bwdTotals.push(t2 - t1);
    slots.forEach((s, i) => {
      s.fwd.push(fwdSelf.get(i) ?? 0);
      s.bwd.push(bwdSelf.get(i) ?? 0);
    });
  };

  const params = model.parameters();
  for (let it = 0; it < warmup + iterations; it++) {
    // What a step changes (running statistics, gradients, the random generator; modes and fusion
    // by inspecting) is put back after each one, before other code can run in the pause.
    const buffers = model.namedBuffers().map(([, b]) => [b, b.data.slice()] as const);
    const grads = params.map((p) => p.grad);
    const rng = globalRng.getState();
    try {
      inspecting(model, { training: mode === 'train' }, () => step(it));
    } finally {
      for (const [b, data] of buffers) writableData(b).set(data);
      params.forEach((p, i) => {
        p.grad = grads[i];
      });
      globalRng.setState(rng);
    }
    await yieldToEventLoop();
  }
  const forwardMs = median(fwdTotals);
  const backwardMs = median(bwdTotals);
  const stepMs = median(fwdTotals.map((f, i) => f + bwdTotals[i]));
  const rows = slots.map((s) => {
    const r = s.row;
    r.forwardMs = median(s.fwd);
    r.backwardMs = median(s.bwd);
    r.share = stepMs > 0 ? (r.forwardMs + r.backwardMs) / stepMs : 0;
    if (r.flops !== undefined) {
      r.gflops = {
        forward: r.forwardMs > 0 ? r.flops / r.forwardMs / 1e6 : 0,
        backward: r.backwardMs > 0 ? (s.bwdPasses * r.flops) / r.backwardMs / 1e6 : 0,
      };
    }
    return r;
  });
  return new ProfileResult(model.constructor.name, [...inputShape], rows, forwardMs, backwardMs, stepMs, iterations);
}
