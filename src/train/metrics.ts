// Classification metrics over a batch of logits [N, C].
import type { Tensor } from '../tensor.js';

/** Number of rows whose target is among the k largest logits. */
export function topkCorrect(logits: Tensor, targets: Int32Array, k: number): number {
  const [n, c] = logits.shape;
  const d = logits.data;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (t < 0 || t >= c) continue;
    const v = d[i * c + t];
    // The target is in the top k when fewer than k classes beat it (ties count for the target).
    let better = 0;
    for (let j = 0; j < c && better < k; j++) if (d[i * c + j] > v) better++;
    if (better < k) correct++;
  }
  return correct;
}
