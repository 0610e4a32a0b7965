// mnistNet: the small CNN behind ferroconv's main job (MNIST to 99%+ in a few minutes on 2 cores).
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import { Flatten } from '../nn/flatten.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';

/**
 * Three 3x3 conv blocks (conv-BN-ReLU-maxpool: 16, 32, 64 channels) and a linear classifier.
 * Input [N, inChannels, 28, 28] -> logits [N, numClasses]. 29,178 parameters for 10 classes and
 * ~4 MFLOP per image forward.
 */
export function mnistNet(opts: { numClasses?: number; inChannels?: number; dropout?: number } = {}): Sequential {
  const { numClasses = 10, inChannels = 1, dropout = 0.1 } = opts;
  const block = (cin: number, cout: number): [Conv2d, BatchNorm2d, ReLU, MaxPool2d] => [
    new Conv2d(cin, cout, 3, { padding: 1, bias: false }),
    new BatchNorm2d(cout),
    new ReLU(),
    new MaxPool2d(2),
  ];
  return new Sequential(
    ...block(inChannels, 16), // 28 -> 14
    ...block(16, 32), // 14 -> 7
    ...block(32, 64), // 7 -> 3
    new Flatten(),
    new Dropout(dropout),
    new Linear(64 * 3 * 3, numClasses),
  );
}
