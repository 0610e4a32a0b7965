// Recurrent steps. A GRU step is two matrix products (in the caller: linear ops) and the gate
// math, which runs fused in crates/kernels/src/recurrent.rs, forward and backward.
import { record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';

/**
 * One GRU step as torch.nn.GRU computes it (gate order r, z, n): from gi = x W_ih^T + b_ih and
 * gh = h W_hh^T + b_hh ([N, 3H] each) and the state h [N, H], the next state [N, H]:
 * r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r gh_n),
 * h' = (1 - z) n + z h. Differentiable in gi, gh and h.
 */
export function gruCell(gi: Tensor, gh: Tensor, h: Tensor): Tensor {
  if (h.ndim !== 2) throw new Error(`gruCell: h: expected [N, H], got [${h.shape.join(', ')}]`);
  const [n, hidden] = h.shape;
  for (const [name, t] of [
    ['gi', gi],
    ['gh', gh],
  ] as const) {
    if (t.ndim !== 2 || t.shape[0] !== n || t.shape[1] !== 3 * hidden) {
      throw new Error(`gruCell: ${name}: expected [${n}, ${3 * hidden}], got [${t.shape.join(', ')}]`);
    }
  }
  const out = uninitialized(n * hidden, 'gruCell');
  const gates = uninitialized(n * 3 * hidden, 'gruCell');
  native.gruCellForward(gi.data, gh.data, h.data, [n, hidden], out, gates);
  return record('gruCell', new Tensor(out, [n, hidden]), [gi, gh, h], (g) => {
    const grads = uninitialized(n * 7 * hidden, 'gruCell');
    native.gruCellBackward(gates, gh.data, h.data, g, [n, hidden], grads);
    const ggi = uninitialized(n * 3 * hidden, 'gruCell');
    const ggh = uninitialized(n * 3 * hidden, 'gruCell');
    const gh0 = uninitialized(n * hidden, 'gruCell');
    for (let b = 0; b < n; b++) {
      const row = grads.subarray(b * 7 * hidden, (b + 1) * 7 * hidden);
      ggi.set(row.subarray(0, 3 * hidden), b * 3 * hidden);
      ggh.set(row.subarray(3 * hidden, 6 * hidden), b * 3 * hidden);
      gh0.set(row.subarray(6 * hidden), b * hidden);
    }
    return [ggi, ggh, gh0];
  });
}
