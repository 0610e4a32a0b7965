// Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth") for residual
// branches, with torchvision's `stochastic_depth(..., mode='row')` convention: in training each
// sample's branch is kept with probability p and then scaled by 1/p, or dropped (zeroed, so the
// block passes its shortcut through); in eval the branch is used as is. Scaling at training time
// rather than multiplying by p at test time (the paper's formulation; same expectation) means an
// eval-mode network is exactly the plain one, so weights move freely between the two.
import { record } from '../autograd.js';
import type { Rng } from '../random.js';
import { allocate, Tensor, uninitialized } from '../tensor.js';

/**
 * Per-sample keep-or-drop of a residual branch x [N, ...] -> same shape. `survivalProb` in
 * (0, 1]; identity when not training or when survivalProb is 1.
 */
export function stochasticDepth(x: Tensor, survivalProb: number, training: boolean, rng: Rng): Tensor {
  if (!(survivalProb > 0 && survivalProb <= 1)) {
    throw new Error(`stochasticDepth: survivalProb must be in (0, 1], got ${survivalProb}`);
  }
  if (!training || survivalProb === 1) return x;
  if (x.ndim < 1) throw new Error('stochasticDepth: expected a batch [N, ...], got a 0-d tensor');
  const n = x.shape[0];
  const row = n === 0 ? 0 : x.size / n;
  const scale = uninitialized(n, 'stochasticDepth');
  for (let i = 0; i < n; i++) scale[i] = rng.next() < survivalProb ? 1 / survivalProb : 0;
  // Dropped samples' rows stay zero, here and in the gradient.
  const out = allocate(x.size, 'stochasticDepth');
  for (let i = 0; i < n; i++) {
    const s = scale[i];
    if (s === 0) continue;
    for (let j = i * row; j < (i + 1) * row; j++) out[j] = x.data[j] * s;
  }
  return record('stochasticDepth', new Tensor(out, x.shape), [x], (g) => {
    const gx = allocate(g.length, 'stochasticDepth');
    for (let i = 0; i < n; i++) {
      const s = scale[i];
      if (s === 0) continue;
      for (let j = i * row; j < (i + 1) * row; j++) gx[j] = g[j] * s;
    }
    return [gx];
  });
}

/**
 * Survival probability of residual block l (1-based) of L under the linear decay rule
 * p_l = 1 - (l / L) * (1 - pL): from p_0 = 1 at the input down to pL at the last block.
 */
export function linearSurvivalProb(l: number, total: number, last: number): number {
  if (!(last > 0 && last <= 1)) throw new Error(`stochasticDepth.survivalProb must be in (0, 1], got ${last}`);
  return 1 - (l / total) * (1 - last);
}
