// The conv layer shapes the comparison measures, taken from the zoo itself rather than typed in:
// each model runs one forward on [1, 3, 224, 224] with every Conv2d's forward replaced by a stub
// that records the layer's input shape and hyper-parameters and returns zeros of the right
// output shape (no conv math, so even VGG-16 takes only its construction time). Identical shapes
// are merged; each keeps the list of layers that use it.
import { Conv2d, models, noGrad, zeros, type Module, type Tensor } from '../../src/index.js';
import { padding4, pair, type ConvGeometry } from '../../src/ops/geometry.js';
import { native } from '../../src/native.js';

export const ZOO = ['alexnet', 'vgg16', 'googlenet', 'resnet50', 'densenet121'] as const;
export type ZooName = (typeof ZOO)[number];

export interface ConvShape extends ConvGeometry {
  /** Stable identity: input channels and size, output channels, window, stride, padding... */
  key: string;
  c: number;
  h: number;
  w: number;
  oc: number;
  kh: number;
  kw: number;
  outH: number;
  outW: number;
  /** `model:layer` of every conv with this shape, in the order met. */
  uses: string[];
}

/** Short label, e.g. `3x3 s1 64->64 @56x56`. */
export function label(s: ConvShape): string {
  const st = s.stride[0] === s.stride[1] ? `s${s.stride[0]}` : `s${s.stride.join('x')}`;
  const g = s.groups > 1 ? ` g${s.groups}` : '';
  return `${s.kh}x${s.kw} ${st} ${s.c}->${s.oc} @${s.h}x${s.w}${g}`;
}

/** Which layers use the shape: the first `model:layer`, and how many more. */
export function usedIn(s: ConvShape): string {
  const models = [...new Set(s.uses.map((u) => u.split(':')[0]))];
  const more = s.uses.length > 1 ? ` (+${s.uses.length - 1})` : '';
  return `${s.uses[0]}${more}${models.length > 1 ? ` [${models.join(', ')}]` : ''}`;
}

/** Multiply-adds times two, for a batch of `n`. */
export function convFlops(s: ConvShape, n: number): number {
  return 2 * n * s.oc * s.outH * s.outW * (s.c / s.groups) * s.kh * s.kw;
}

export function buildZooModel(name: ZooName): Module {
  switch (name) {
    case 'alexnet':
      return models.alexnet();
    case 'vgg16':
      return models.vgg16();
    case 'googlenet':
      return models.googlenet();
    case 'resnet50':
      return models.resnet50();
    case 'densenet121':
      return models.densenet121();
  }
}

/** Distinct conv shapes of the given zoo models (at batch 1; the bench chooses the batch). */
export function zooConvShapes(names: readonly ZooName[], log: (msg: string) => void = () => {}): ConvShape[] {
  const byKey = new Map<string, ConvShape>();
  for (const name of names) {
    const t0 = performance.now();
    const model = buildZooModel(name);
    model.eval();
    let count = 0;
    for (const [path, m] of model.namedModules()) {
      if (!(m instanceof Conv2d)) continue;
      // The instance property shadows the prototype method (and any wrapper the zoo installed).
      m.forward = (x: Tensor): Tensor => {
        const [, c, h, w] = x.shape;
        const [oc, , kh, kw] = m.weight.shape;
        const stride = pair('stride', m.opts.stride, 1);
        const padding = padding4(m.opts.padding);
        const dilation = pair('dilation', m.opts.dilation, 1);
        const groups = m.opts.groups ?? 1;
        const [outH, outW] = native.conv2dOutputSize({
          inputShape: [1, c, h, w],
          weightShape: m.weight.shape,
          stride,
          padding,
          dilation,
          groups,
        });
        const key = `c${c}_${h}x${w}_oc${oc}_k${kh}x${kw}_s${stride.join('x')}_p${padding.join('-')}_d${dilation.join('x')}_g${groups}`;
        const seen = byKey.get(key);
        if (seen) seen.uses.push(`${name}:${path}`);
        else
          byKey.set(key, {
            key,
            c,
            h,
            w,
            oc,
            kh,
            kw,
            stride,
            padding,
            dilation,
            groups,
            outH,
            outW,
            uses: [`${name}:${path}`],
          });
        count++;
        return zeros([x.shape[0], oc, outH, outW]);
      };
    }
    noGrad(() => model.forward(zeros([1, 3, 224, 224])));
    log(`shapes: ${name}: ${count} convs in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  return [...byKey.values()];
}

/** ResNet's stem max pool (3x3, stride 2, padding 1) over an NCHW `inputShape`: the pooling row
 * both benchmarks measure. */
export function stemPool(inputShape: number[]) {
  return { inputShape, kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1], ceilMode: false };
}

/** The batch-norm rows both benchmarks measure over ResNet's stem output (an NCHW `inputShape`):
 * the train and eval forwards of a fresh layer (weight 1, bias 0, running mean 0, running
 * variance 1) from `x` into `y`. */
export function stemBatchNorm(inputShape: number[]) {
  const c = inputShape[1];
  const weight = new Float32Array(c).fill(1);
  const bias = new Float32Array(c);
  const runningMean = new Float32Array(c);
  const runningVar = new Float32Array(c).fill(1);
  const saveMean = new Float32Array(c);
  const saveInvstd = new Float32Array(c);
  const args = { inputShape, momentum: 0.1, eps: 1e-5 };
  return {
    train: (x: Float32Array, y: Float32Array) =>
      native.batchNorm2dForwardTrain(x, weight, bias, runningMean, runningVar, y, saveMean, saveInvstd, args),
    eval: (x: Float32Array, y: Float32Array) =>
      native.batchNorm2dForwardEval(x, weight, bias, runningMean, runningVar, y, args),
  };
}
