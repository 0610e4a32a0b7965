// NLL, MSE, L1, smooth L1 and BCE-with-logits (src/ops/loss.ts) against PyTorch
// (test/fixtures/gen_losses_extra.py): outputs and input gradients for every reduction.
import { describe, expect, it } from 'vitest';
import {
  binaryCrossEntropyWithLogits,
  l1Loss,
  logSoftmax,
  mseLoss,
  nllLoss,
  noGrad,
  smoothL1Loss,
  Tensor,
  type Reduction,
} from '../src/index.js';
import { det, expectClose, loadFixture, type FixtureTensor } from './helpers.js';

interface Case {
  kind: string;
  reduction: Reduction;
  output: FixtureTensor;
  grad: FixtureTensor;
}
const { cases, targets } = loadFixture<{ cases: Case[]; targets: number[] }>('losses_extra.json');

describe('losses vs PyTorch', () => {
  it.each(cases.map((c) => [`${c.kind} ${c.reduction}`, c] as const))('%s', (_n, c) => {
    const x0 = det([5, 4], 1, 3);
    const t = det([5, 4], 2, 3);
    const w = new Tensor(
      det([4], 3)
        .data.map(Math.abs)
        .map((v) => v + 0.5),
      [4],
    );
    const binary = new Tensor(
      t.data.map((v) => (v > 0 ? 1 : 0)),
      t.shape,
    );
    const nll = c.kind.startsWith('nll');
    // NLL takes log-probabilities: the leaf is log_softmax(x), as in the generator.
    const x = (nll ? noGrad(() => logSoftmax(x0)) : x0.clone()).requiresGrad_();
    const out = {
      mse: () => mseLoss(x, t, c.reduction),
      l1: () => l1Loss(x, t, c.reduction),
      smooth_l1: () => smoothL1Loss(x, t, 1, c.reduction),
      smooth_l1_b05: () => smoothL1Loss(x, t, 0.5, c.reduction),
      bce: () => binaryCrossEntropyWithLogits(x, binary, { reduction: c.reduction }),
      bce_pw: () => binaryCrossEntropyWithLogits(x, binary, { posWeight: w, reduction: c.reduction }),
      nll: () => nllLoss(x, targets, { reduction: c.reduction }),
      nll_w_ignore: () => nllLoss(x, [1, -100, 3, 2, 1], { weight: w, reduction: c.reduction }),
    }[c.kind]!();
    expect(out.shape).toEqual(c.output.shape);
    expectClose(out.data, c.output.data, 1e-5, 1e-6, 'loss');
    const up = c.reduction === 'none' ? new Tensor(det([5, 4], 9).data.slice(0, out.size), out.shape) : undefined;
    out.backward(up);
    expectClose(x.grad!.data, c.grad.data, 1e-4, 1e-6, 'grad');
  });

  it('rejects mismatched shapes and bad targets', () => {
    const a = det([2, 3], 1);
    expect(() => mseLoss(a, det([3, 2], 1))).toThrow(
      'mseLoss: input [2, 3] and target [3, 2] must have the same shape',
    );
    expect(() => nllLoss(a, [0, 5])).toThrow('nllLoss: targets[1] = 5 is not a class index in [0, 3)');
    expect(() => nllLoss(a, [0])).toThrow('targets: expected 2 class indices, got 1');
  });
});
