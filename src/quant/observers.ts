// Calibration observers: what range of an activation tensor its uint8 quantization covers.
// Each observer sees the tensor's values over the calibration batches and gives the affine
// parameters real = scale * (q - zeroPoint), q in 0..255, with 0.0 exactly representable (zero
// padding and ReLU's floor must stay exact), as PyTorch's observers and ONNX Runtime's
// calibrators do:
//   - 'minmax': the smallest and largest values seen;
//   - 'percentile': the range holding all but the given share of values (clips rare outliers);
//   - 'entropy': the clipping threshold whose quantized distribution is closest, by
//     Kullback-Leibler divergence, to the observed one (TensorRT's calibration, which ONNX
//     Runtime's CalibrationMethod.Entropy also implements). quantize() keeps min-max for the
//     graph's input: clipping the input loses what every layer sees, for little resolution.
// The last two keep a histogram of 2048 bins over a range symmetric about 0 that doubles (two
// bins merged into one, exactly) whenever a batch exceeds it.

export type ObserverKind = 'minmax' | 'percentile' | 'entropy';

export interface QParams {
  scale: number;
  zeroPoint: number;
}

/** The uint8 parameters covering [lo, hi] (widened to include 0), as torch's MinMaxObserver. */
export function affineParams(lo: number, hi: number): QParams {
  const min = Math.min(lo, 0);
  const max = Math.max(hi, 0);
  // An all-zero tensor still needs a positive scale; any works, as every value is the zero point.
  const scale = max > min ? (max - min) / 255 : 1;
  const f32 = Math.fround(scale);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-min / f32)));
  return { scale: f32, zeroPoint };
}

export interface Observer {
  observe(values: Float32Array): void;
  /** The observed range as [lo, hi]; throws when nothing (or only NaN) was observed. */
  range(): [number, number];
  qparams(): QParams;
}

const BINS = 2048;

export class MinMaxObserver implements Observer {
  private lo = Number.POSITIVE_INFINITY;
  private hi = Number.NEGATIVE_INFINITY;

  observe(values: Float32Array): void {
    let lo = this.lo;
    let hi = this.hi;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.lo = lo;
    this.hi = hi;
  }

  range(): [number, number] {
    if (!(this.lo <= this.hi)) throw new Error('observer: no finite values observed');
    if (!Number.isFinite(this.lo) || !Number.isFinite(this.hi)) {
      throw new Error(`observer: the values reach ${this.lo}..${this.hi}; calibration needs finite activations`);
    }
    return [this.lo, this.hi];
  }

  qparams(): QParams {
    const [lo, hi] = this.range();
    return affineParams(lo, hi);
  }
}

/** A histogram over [-limit, limit] in BINS bins, widened by doubling. */
export class HistogramObserver implements Observer {
  readonly counts = new Float64Array(BINS);
  limit = 0;
  private readonly minmax = new MinMaxObserver();

  constructor(
    readonly kind: 'percentile' | 'entropy',
    /** Percentile: the share of values kept, in percent (default 99.99). */
    readonly percentile = 99.99,
  ) {
    if (!(percentile > 50 && percentile <= 100)) {
      throw new Error(`observer: percentile must be in (50, 100], got ${percentile}`);
    }
  }

  observe(values: Float32Array): void {
    this.minmax.observe(values);
    const [lo, hi] = this.minmax.range();
    const need = Math.max(Math.abs(lo), Math.abs(hi));
    if (this.limit === 0) this.limit = need > 0 ? need : 1;
    while (need > this.limit) this.widen();
    const width = (2 * this.limit) / BINS;
    const counts = this.counts;
    for (let i = 0; i < values.length; i++) {
      const b = Math.floor((values[i] + this.limit) / width);
      counts[b < 0 ? 0 : b >= BINS ? BINS - 1 : b]++;
    }
  }

  /** Doubles the range: bins 2j and 2j+1 become bin j/2 + BINS/4. */
  private widen(): void {
    const old = this.counts.slice();
    this.counts.fill(0);
    for (let j = 0; j < BINS; j++) this.counts[BINS / 4 + (j >> 1)] += old[j];
    this.limit *= 2;
  }

  range(): [number, number] {
    const [lo, hi] = this.minmax.range();
    if (this.kind === 'percentile') return this.percentileRange(lo, hi);
    return this.entropyRange(lo, hi);
  }

  qparams(): QParams {
    const [lo, hi] = this.range();
    return affineParams(lo, hi);
  }

  private edge(bin: number): number {
    return -this.limit + (bin * 2 * this.limit) / BINS;
  }

  private percentileRange(lo: number, hi: number): [number, number] {
    const total = this.counts.reduce((a, b) => a + b, 0);
    const tail = (total * (100 - this.percentile)) / 100 / 2;
    let acc = 0;
    let first = 0;
    while (first < BINS - 1 && acc + this.counts[first] <= tail) acc += this.counts[first++];
    acc = 0;
    let last = BINS - 1;
    while (last > 0 && acc + this.counts[last] <= tail) acc += this.counts[last--];
    return [Math.max(lo, this.edge(first)), Math.min(hi, this.edge(last + 1))];
  }

  /**
   * TensorRT's search over the |x| histogram: for each candidate threshold (a bin count i from
   * the number of levels up), the reference distribution is the first i bins with the clipped
   * tail added to the last; the candidate is those bins merged into as many groups as uint8 has
   * levels for the data (255 steps for data that is never negative, 127 a side otherwise), each
   * group's count spread over its non-empty bins; the threshold with the smallest
   * KL(reference || candidate) wins. The bin holding 0.0 is a group of its own: zero is exact in
   * this quantization, and after a ReLU it holds a large share of the values, which merged into
   * its neighbours would drag every threshold down.
   */
  private entropyRange(lo: number, hi: number): [number, number] {
    const half = BINS / 2;
    const abs = new Float64Array(half);
    for (let j = 0; j < half; j++) abs[j] = this.counts[half + j] + this.counts[half - 1 - j];
    let top = half;
    while (top > 1 && abs[top - 1] === 0) top--;
    const levels = lo >= 0 ? 255 : 127;
    if (top <= levels + 1) return [lo, hi];
    let best = top;
    let bestKl = Number.POSITIVE_INFINITY;
    const p = new Float64Array(half);
    const q = new Float64Array(half);
    for (let i = levels + 1; i <= top; i++) {
      p.set(abs.subarray(0, i));
      let outliers = 0;
      for (let j = i; j < top; j++) outliers += abs[j];
      p[i - 1] += outliers;
      q.fill(0, 0, i);
      q[0] = abs[0];
      const per = (i - 1) / levels;
      for (let l = 0; l < levels; l++) {
        const a = 1 + Math.floor(l * per);
        const b = l === levels - 1 ? i : 1 + Math.floor((l + 1) * per);
        let sum = 0;
        let nonzero = 0;
        for (let j = a; j < b; j++) {
          sum += abs[j];
          if (abs[j] !== 0) nonzero++;
        }
        if (nonzero === 0) continue;
        for (let j = a; j < b; j++) if (abs[j] !== 0) q[j] = sum / nonzero;
      }
      const kl = divergence(p, q, i);
      if (kl < bestKl) {
        bestKl = kl;
        best = i;
      }
    }
    const threshold = (best * this.limit) / half;
    return [Math.max(lo, -threshold), Math.min(hi, threshold)];
  }
}

/** KL(p || q) over the first n bins, each normalised to sum 1; bins where p is 0 add nothing. */
function divergence(p: Float64Array, q: Float64Array, n: number): number {
  let sp = 0;
  let sq = 0;
  for (let j = 0; j < n; j++) {
    sp += p[j];
    sq += q[j];
  }
  if (sp === 0 || sq === 0) return Number.POSITIVE_INFINITY;
  let kl = 0;
  for (let j = 0; j < n; j++) {
    if (p[j] === 0) continue;
    const pj = p[j] / sp;
    // A bin the candidate left empty costs as if it held a tiny share (TensorRT smooths the same way).
    const qj = q[j] === 0 ? 1e-4 / sq : q[j] / sq;
    kl += pj * Math.log(pj / qj);
  }
  return kl;
}

/** A new observer of `kind`. */
export function makeObserver(kind: ObserverKind, percentile?: number): Observer {
  switch (kind) {
    case 'minmax':
      return new MinMaxObserver();
    case 'percentile':
      return new HistogramObserver('percentile', percentile);
    case 'entropy':
      return new HistogramObserver('entropy');
    default:
      throw new Error(`quantize: observer must be 'minmax', 'percentile' or 'entropy', got ${JSON.stringify(kind)}`);
  }
}
