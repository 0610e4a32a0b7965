// Float32 arithmetic as PyTorch's CPU kernels do it, so optimizer updates match torch's to the
// last bit or two. JavaScript computes in double; each helper rounds where the torch kernel
// rounds. Python-float hyper-parameters (lr, betas, eps...) reach the kernels as float32 scalars.
// Measured on torch 1.13 (x86-64, AVX2 build): `add(x, alpha=a)` and `addcmul` are fused
// multiply-adds (one rounding; a double sum of an exact float*float product, then fround, gives
// the same result except in vanishingly rare double-rounding ties); `addcdiv` rounds after the
// multiply, the divide and the add; dividing by a Python float divides by it rounded to float32.

export const f32 = Math.fround;

/** x.add_(y, alpha=a): fma(a, y, x). */
export function addScaled(x: number, alpha: number, y: number): number {
  return f32(x + f32(alpha) * y);
}

/** x.addcmul_(t1, t2, value=v): x + (v * t1) * t2, the last step fused. */
export function addcmul(x: number, value: number, t1: number, t2: number): number {
  return f32(x + f32(f32(value) * t1) * t2);
}

/** x.addcdiv_(t1, t2, value=v): x + (v * t1) / t2, rounding after each operation. */
export function addcdiv(x: number, value: number, t1: number, t2: number): number {
  return f32(x + f32(f32(f32(value) * t1) / t2));
}

/** x.mul_(s) with a Python-float s. */
export function mulScalar(x: number, s: number): number {
  return f32(x * f32(s));
}

/** x.add_(s) with a Python-float s. */
export function addScalar(x: number, s: number): number {
  return f32(x + f32(s));
}

/** x / s with a Python-float s. */
export function divScalar(x: number, s: number): number {
  return f32(x / f32(s));
}

/** x.sqrt(). */
export function sqrt(x: number): number {
  return f32(Math.sqrt(x));
}
