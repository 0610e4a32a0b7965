// Classification metrics over a batch of logits [N, C].
import { checkClassIndices } from '../ops/loss.js';
import type { Tensor } from '../tensor.js';

/**
 * Number of rows whose target is among the k largest logits. Targets must be class indices in
 * [0, C) or `ignoreIndex` (default -100, as the losses); an ignored row counts as not correct.
 */
export function topkCorrect(logits: Tensor, targets: Int32Array, k: number, ignoreIndex = -100): number {
  if (logits.ndim !== 2)
    throw new Error(`topkCorrect: logits: expected shape [N, C], got [${logits.shape.join(', ')}]`);
  const [n, c] = logits.shape;
  const t = checkClassIndices('topkCorrect', targets, n, c, ignoreIndex);
  const d = logits.data;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const target = t[i];
    if (target === ignoreIndex || target < 0 || target >= c) continue;
    const v = d[i * c + target];
    // The target is in the top k when fewer than k classes beat it (ties count for the target).
    let better = 0;
    for (let j = 0; j < c && better < k; j++) if (d[i * c + j] > v) better++;
    if (better < k) correct++;
  }
  return correct;
}
