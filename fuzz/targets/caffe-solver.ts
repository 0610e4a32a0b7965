// Target `caffe-solver`: a Caffe solver definition (solver.prototxt text, with its net inline as
// net_param) through parseSolver and the CaffeSolver constructor, then, when the net's inputs
// are declared and small, one training iteration and one test pass on zeros. Every failure must
// be the solver's or the net's own Error ('caffe solver: ...', 'loadCaffe: ...', 'CaffeNet: ...').
import { CaffeSolver, parseSolver } from '../../src/io/caffe/solver.js';
import { Rng } from '../../src/random.js';
import { Tensor } from '../../src/tensor.js';
import { InvariantError, type Target } from '../engine.js';
import { utf8 } from '../mutate.js';

const WORDS = [
  'base_lr: 0.01',
  'max_iter: 3',
  'lr_policy: "step"',
  'lr_policy: "poly"',
  'lr_policy: "multistep"',
  'gamma: 0.5',
  'power: 2',
  'stepsize: 1',
  'stepvalue: 1',
  'momentum: 0.9',
  'weight_decay: 0.1',
  'regularization_type: "L1"',
  'iter_size: 2',
  'clip_gradients: 0.1',
  'type: "Adam"',
  'type: "AdaDelta"',
  'solver_type: NESTEROV',
  'test_iter: 1',
  'test_interval: 1',
  'param { lr_mult: 0 }',
  'param { lr_mult: 2 decay_mult: 0 }',
  'weight_filler { type: "xavier" }',
  'weight_filler { type: "bilinear" }',
  'loss_weight: 0.5',
  'loss_param { ignore_label: 1 }',
  'type: "EuclideanLoss"',
  'type: "Accuracy"',
];

/** Largest input a step is tried on. */
const MAX_INPUT = 1 << 12;

export function createTarget(): Target {
  return {
    name: 'caffe-solver',
    dictionary: WORDS.map(utf8),
    isParserError: (message) =>
      message.startsWith('caffe solver: ') || message.startsWith('loadCaffe: ') || message.startsWith('CaffeNet: '),
    extension: () => 'prototxt',
    execute(input) {
      const param = parseSolver(new TextDecoder().decode(input));
      // Nothing on disk: no snapshots.
      param.snapshot = 0;
      param.snapshotAfterTrain = false;
      const solver = new CaffeSolver(param, { rng: new Rng(1) });
      const net = solver.net;
      const feed: Record<string, Tensor> = {};
      for (const [i, name] of net.inputNames.entries()) {
        const shape = net.inputShapes[i];
        if (!shape?.every((d) => Number.isSafeInteger(d) && d > 0)) return;
        const n = shape.reduce((a, b) => a * b, 1);
        if (n > MAX_INPUT) return;
        feed[name] = new Tensor(new Float32Array(n), shape);
      }
      for (const l of net.dataLayers) {
        const label = l.tops[1];
        if (label && !feed[label]) feed[label] = new Tensor(new Float32Array(l.batchSize ?? 1), [l.batchSize ?? 1]);
      }
      const loss = solver.step(Array.from({ length: Math.max(param.iterSize, 1) }, () => feed));
      if (!Number.isFinite(loss)) throw new InvariantError(`a step on zeros gave the loss ${loss}`);
      if (solver.testNets.length) solver.test([feed]);
    },
  };
}
