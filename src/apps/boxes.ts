// Boxes for localization and detection: IoU as a number (metrics), and the differentiable box
// losses (GIoU as torchvision.ops.generalized_box_iou_loss). Boxes are [x1, y1, x2, y2] with
// x1 <= x2 and y1 <= y2, in any unit (pixels or fractions of the image), as torchvision's.
import { relu } from '../ops/activation.js';
import { add, cat, mul, narrow, mean, reshape, scale, sum } from '../ops/elementwise.js';
import { div, sub } from '../ops/nd.js';
import type { Reduction } from '../ops/loss.js';
import { Tensor } from '../tensor.js';

/** Intersection over union of two boxes [x1, y1, x2, y2] (0 when they do not overlap). */
export function boxIoU(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const iw = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

function checkBoxes(op: string, boxes: Tensor, name: string): void {
  if (boxes.ndim !== 2 || boxes.shape[1] !== 4) {
    throw new Error(`${op}: ${name}: expected boxes [N, 4] (x1, y1, x2, y2), got [${boxes.shape.join(', ')}]`);
  }
}

/**
 * Generalized IoU loss (Rezatofighi et al. 2019): 1 - GIoU per pair of boxes, where
 * GIoU = IoU - (C - U) / C with C the area of the smallest box enclosing both and U the union.
 * As torchvision.ops.generalized_box_iou_loss (eps 1e-7). Unlike smooth-L1 on coordinates it is
 * scale-invariant and, unlike 1 - IoU, still has a gradient when the boxes do not overlap.
 * pred and target [N, 4]; returns a scalar ('mean', 'sum') or [N] ('none').
 */
export function giouLoss(pred: Tensor, target: Tensor, reduction: Reduction = 'mean', eps = 1e-7): Tensor {
  checkBoxes('giouLoss', pred, 'pred');
  checkBoxes('giouLoss', target, 'target');
  if (pred.shape[0] !== target.shape[0]) {
    throw new Error(`giouLoss: ${pred.shape[0]} predicted boxes but ${target.shape[0]} targets`);
  }
  const col = (t: Tensor, i: number) => narrow(t, 1, i, 1);
  const [px1, py1, px2, py2] = [0, 1, 2, 3].map((i) => col(pred, i));
  const [tx1, ty1, tx2, ty2] = [0, 1, 2, 3].map((i) => col(target, i));
  // max/min as (a + b +- |a - b|) / 2 with |d| = relu(d) + relu(-d): at a tie each side gets
  // half the gradient, as torch.maximum/minimum give (the subgradient torchvision's loss has).
  const absDiff = (a: Tensor, b: Tensor) => add(relu(sub(a, b)), relu(sub(b, a)));
  const max = (a: Tensor, b: Tensor) => scale(add(add(a, b), absDiff(a, b)), 0.5);
  const min = (a: Tensor, b: Tensor) => scale(sub(add(a, b), absDiff(a, b)), 0.5);
  const areaP = mul(sub(px2, px1), sub(py2, py1));
  const areaT = mul(sub(tx2, tx1), sub(ty2, ty1));
  const iw = relu(sub(min(px2, tx2), max(px1, tx1)));
  const ih = relu(sub(min(py2, ty2), max(py1, ty1)));
  const inter = mul(iw, ih);
  const union = sub(add(areaP, areaT), inter);
  const epsT = new Tensor(new Float32Array([eps]), [1]);
  const iou = div(inter, add(union, epsT));
  const cw = sub(max(px2, tx2), min(px1, tx1));
  const ch = sub(max(py2, ty2), min(py1, ty1));
  const areaC = mul(cw, ch);
  const giou = sub(iou, div(sub(areaC, union), add(areaC, epsT)));
  const loss = sub(new Tensor(new Float32Array([1]), [1]), giou);
  if (reduction === 'none') return reshape(loss, [pred.shape[0]]);
  return reduction === 'sum' ? sum(loss) : mean(loss);
}

/**
 * Corner boxes [N, 4] from centre-size boxes [N, 4] (cx, cy, w, h), differentiably: the form a
 * box head predicts in (sigmoid centre and size keep every box valid, x1 <= x2).
 */
export function cxcywhToXyxy(boxes: Tensor): Tensor {
  checkBoxes('cxcywhToXyxy', boxes, 'boxes');
  const col = (i: number) => narrow(boxes, 1, i, 1);
  const hw = scale(col(2), 0.5);
  const hh = scale(col(3), 0.5);
  return cat([sub(col(0), hw), sub(col(1), hh), add(col(0), hw), add(col(1), hh)], 1);
}
