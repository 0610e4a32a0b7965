// Knowledge transfer: fine-tuning a trained backbone on a new task (copy the features, new head,
// frozen or slowed-down layers), and knowledge distillation (Hinton, Vinyals and Dean 2015: a
// small student learns from a large teacher's softened outputs as well as from the labels).
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import { Flatten } from '../nn/flatten.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import type { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { add, mean, mul, scale } from '../ops/elementwise.js';
import { crossEntropy, logSoftmax, softmax } from '../ops/loss.js';
import { sumTo } from '../ops/nd.js';
import type { Tensor } from '../tensor.js';

/**
 * conv3x3 (no bias) - BN - ReLU - maxpool2 blocks of `widths` channels, each halving the side: the
 * trunk LocalizationNet, CaptionNet's encoder and canvasClassifier share (as a flat list, so the
 * state-dict names are `<i>.weight` inside whichever Sequential holds them).
 */
export function convPoolBlocks(inChannels: number, widths: readonly number[]): Module[] {
  return widths.flatMap((w, i) => [
    new Conv2d(i === 0 ? inChannels : widths[i - 1], w, 3, { padding: 1, bias: false }),
    new BatchNorm2d(w),
    new ReLU(),
    new MaxPool2d(2),
  ]);
}

/**
 * A classifier for canvases: `features` (conv-BN-ReLU-maxpool blocks of `widths` channels, each
 * halving the side) and `classifier` (flatten, dropout, linear to `hidden`, ReLU, linear to the
 * classes). The two names are what transfer works with: copyFeatures, freeze('features.').
 * Input [N, inChannels, size, size]; size must be divisible by 2^widths.length.
 */
export function canvasClassifier(opts: {
  numClasses: number;
  size?: number;
  widths?: number[];
  hidden?: number;
  inChannels?: number;
}): Sequential {
  const { numClasses, size = 64, widths = [16, 32, 64, 64], hidden = 128, inChannels = 1 } = opts;
  const cells = size / 2 ** widths.length;
  if (!Number.isInteger(cells) || cells < 1) {
    throw new Error(`canvasClassifier: size ${size} does not halve ${widths.length} times`);
  }
  return new Sequential(
    ['features', new Sequential(...convPoolBlocks(inChannels, widths))],
    [
      'classifier',
      new Sequential(
        new Flatten(),
        new Dropout(0.2),
        new Linear(widths[widths.length - 1] * cells * cells, hidden),
        new ReLU(),
        new Linear(hidden, numClasses),
      ),
    ],
  );
}

/**
 * Copies every parameter and buffer whose name starts with `prefix` (default 'features.') from
 * `source` into `target` (same names and shapes: the same architecture up to its head), and
 * returns how many tensors were copied. The rest of `target` (its new head) is left as it is.
 */
export function copyFeatures(source: Module, target: Module, prefix = 'features.'): number {
  const picked = new Map([...source.stateDict()].filter(([k]) => k.startsWith(prefix)));
  if (picked.size === 0) throw new Error(`copyFeatures: the source has nothing named '${prefix}...'`);
  const { unexpected } = target.validateStateDict(picked, false);
  if (unexpected.length) throw new Error(`copyFeatures: the target has no ${unexpected.slice(0, 3).join(', ')}`);
  target.loadStateDict(picked, false);
  return picked.size;
}

export interface DistillationOptions {
  /** Softmax temperature of both teacher and student in the soft term (default 4). */
  temperature?: number;
  /** Weight of the soft term; the label cross-entropy gets 1 - alpha (default 0.9). */
  alpha?: number;
}

/**
 * Knowledge-distillation loss: alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
 * (batch mean) + (1 - alpha) * CE(student, labels). The T^2 keeps the soft term's gradients
 * the size of the hard term's as T changes (Hinton et al.). As the usual PyTorch recipe
 * `F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction='batchmean') * T * T`.
 * The teacher's logits are constants (no gradient flows into the teacher).
 */
export function distillationLoss(
  studentLogits: Tensor,
  teacherLogits: Tensor,
  labels: Int32Array,
  opts: DistillationOptions = {},
): { loss: Tensor; parts: Record<string, Tensor> } {
  const T = opts.temperature ?? 4;
  const alpha = opts.alpha ?? 0.9;
  if (!(T > 0) || !(alpha >= 0 && alpha <= 1)) {
    throw new Error(`distillationLoss: temperature must be > 0 and alpha in [0, 1], got ${T} and ${alpha}`);
  }
  if (studentLogits.ndim !== 2 || studentLogits.shape.join() !== teacherLogits.shape.join()) {
    throw new Error(
      `distillationLoss: student [${studentLogits.shape.join(', ')}] and teacher [${teacherLogits.shape.join(', ')}] ` +
        'logits must both be [N, C]',
    );
  }
  const n = studentLogits.shape[0];
  const pt = softmax(scale(teacherLogits.detach(), 1 / T));
  const logPt = logSoftmax(scale(teacherLogits.detach(), 1 / T));
  const logPs = logSoftmax(scale(studentLogits, 1 / T));
  // KL(pt || ps) summed over classes, averaged over the batch: sum pt (log pt - log ps) / N.
  const kl = scale(sumTo(mul(pt, add(logPt, scale(logPs, -1))), [1, 1]), 1 / n);
  const soft = scale(mean(kl), T * T);
  const hard = crossEntropy(studentLogits, labels);
  return { loss: add(scale(soft, alpha), scale(hard, 1 - alpha)), parts: { kl: soft, ce: hard } };
}
