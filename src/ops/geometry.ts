// Window geometry of convolution and pooling, in one place. Options are normalised and checked
// once, when a layer is built (as PyTorch's `_pair` in `_ConvNd.__init__`), into plain pairs and
// four-sided padding; output sizes come from the kernel crate (its `validate`, the rules the
// kernels run with, ceil-mode corners included), never from a second formula here.
import { native } from '../native.js';

export type Pair = number | readonly [number, number];
export type Padding = number | readonly [number, number] | readonly [number, number, number, number];

/** A convolution's normalised hyper-parameters. */
export interface ConvGeometry {
  readonly stride: [number, number];
  /** [top, bottom, left, right] */
  readonly padding: [number, number, number, number];
  readonly dilation: [number, number];
  readonly groups: number;
}

/** A max or average pool's normalised hyper-parameters. */
export interface PoolGeometry {
  readonly kernel: [number, number];
  readonly stride: [number, number];
  /** [h, w], on both sides */
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly ceilMode: boolean;
}

/** `v` as written: NaN stays NaN, arrays as [a, b]. */
function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  return typeof v === 'number' ? String(v) : (JSON.stringify(v) ?? String(v));
}

function integer(name: string, v: unknown, min: number, got: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new Error(`${name}: expected ${min === 0 ? 'non-negative' : 'positive'} integers, got ${show(got)}`);
  }
  return v;
}

/** `v` as [h, w]: a number for both, or a pair; each an integer >= `min` (`dflt` when absent). */
export function pair(name: string, v: Pair | undefined, dflt: number, min = 1): [number, number] {
  if (v === undefined) return [dflt, dflt];
  if (typeof v === 'number') return [integer(name, v, min, v), integer(name, v, min, v)];
  if (!Array.isArray(v) || v.length !== 2) throw new Error(`${name}: expected a number or [h, w], got ${show(v)}`);
  return [integer(name, v[0], min, v), integer(name, v[1], min, v)];
}

/** Zero padding as [top, bottom, left, right], from a number, [h, w] or the four sides. */
export function padding4(v: Padding | undefined, name = 'padding'): [number, number, number, number] {
  if (v === undefined) return [0, 0, 0, 0];
  const sides =
    typeof v === 'number' ? [v, v, v, v] : Array.isArray(v) && v.length === 2 ? [v[0], v[0], v[1], v[1]] : v;
  if (!Array.isArray(sides) || sides.length !== 4) {
    throw new Error(`${name}: expected a number, [h, w] or [top, bottom, left, right], got ${show(v)}`);
  }
  return sides.map((s) => integer(name, s, 0, v)) as [number, number, number, number];
}

/** `build()`, with `name` (an op's or a layer's) in front of any Error it throws. */
export function named<T>(name: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`, { cause: e });
  }
}

/** Checks and normalises conv options (stride, padding, dilation, groups). */
export function convGeometry(opts: {
  stride?: Pair;
  padding?: Padding;
  dilation?: Pair;
  groups?: number;
}): ConvGeometry {
  return {
    stride: pair('stride', opts.stride, 1),
    padding: padding4(opts.padding),
    dilation: pair('dilation', opts.dilation, 1),
    groups: integer('groups', opts.groups ?? 1, 1, opts.groups),
  };
}

/** Checks and normalises pooling options; the stride defaults to the kernel size, as in torch. */
export function poolGeometry(
  kernelSize: Pair,
  opts: { stride?: Pair; padding?: Pair; dilation?: Pair; ceilMode?: boolean },
): PoolGeometry {
  const kernel = pair('kernelSize', kernelSize, 1);
  return {
    kernel,
    stride: opts.stride === undefined ? kernel : pair('stride', opts.stride, 1),
    padding: pair('padding', opts.padding, 0, 0),
    dilation: pair('dilation', opts.dilation, 1),
    ceilMode: opts.ceilMode ?? false,
  };
}

/** The binding's conv2d arguments for this input, weight and geometry. */
export function convArgs(inputShape: number[], weightShape: number[], g: ConvGeometry, algo = 'auto') {
  return {
    inputShape,
    weightShape,
    stride: g.stride,
    padding: g.padding,
    dilation: g.dilation,
    groups: g.groups,
    algo,
  };
}

/** [H_out, W_out] of a conv2d, or an Error naming what does not fit. */
export function convOutputSize(inputShape: number[], weightShape: number[], g: ConvGeometry): [number, number] {
  const [oh, ow] = native.conv2dOutputSize(convArgs(inputShape, weightShape, g));
  return [oh, ow];
}

/** [H_out, W_out] of a max or average pool, or an Error naming what does not fit. */
export function poolOutputSize(inputShape: number[], g: PoolGeometry): [number, number] {
  const [oh, ow] = native.pool2dOutputSize({ inputShape, ...g });
  return [oh, ow];
}
