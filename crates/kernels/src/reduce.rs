//! Full reductions of a tensor to one number.

/// Sum of `x` in double precision, added left to right from +0. This is the definition the
/// TypeScript API has always had (`s += x[i]` over a Float32Array), kept bit for bit: a parallel
/// or lane-split sum rounds differently, so the loop is sequential on purpose.
pub fn sum(x: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for &v in x {
        s += v as f64;
    }
    s
}
