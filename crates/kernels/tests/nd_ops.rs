//! Property tests of the N-D tensor kernels the ONNX importer needs, against loop nests written
//! here from their definitions: padding (every mode, negative pads) forward, and its backward by
//! the adjoint identity <pad(x), g> = <x, pad_backward(g)>; NumPy broadcasting of add, sub, mul
//! and div with both operands broadcast, and the sum back to an operand's shape; gather and its
//! scatter-add; batched matmul with broadcast batch dims. Random shapes and thread counts;
//! `PROPTEST_CASES=N` runs N per test.
mod common;

use common::{rand_vec, with_threads};
use ferroconv_kernels::broadcast::{
    binary_nd, broadcast_shape, gather_backward, gather_forward, sum_to, NdOp,
};
use ferroconv_kernels::linear::matmul_batched;
use ferroconv_kernels::pad::{pad_backward, pad_forward, padded_shape, PadMode};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// numpy.pad's index rule for one axis, written out case by case.
fn reference_index(mode: PadMode, i: i64, n: i64) -> Option<i64> {
    if (0..n).contains(&i) {
        return Some(i);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(if i < 0 { 0 } else { n - 1 }),
        PadMode::Wrap => Some(((i % n) + n) % n),
        PadMode::Reflect => {
            let mut j = i;
            if n == 1 {
                return Some(0);
            }
            // Bounce off the borders until inside.
            while !(0..n).contains(&j) {
                j = if j < 0 { -j } else { 2 * (n - 1) - j };
            }
            Some(j)
        }
    }
}

fn reference_pad(
    mode: PadMode,
    x: &[f32],
    shape: &[usize],
    begins: &[i64],
    out_shape: &[usize],
    value: f32,
) -> Vec<f32> {
    let n: usize = out_shape.iter().product();
    let (is, os) = (strides(shape), strides(out_shape));
    (0..n)
        .map(|flat| {
            let mut src = 0usize;
            for d in 0..shape.len() {
                let o = (flat / os[d]) % out_shape[d];
                match reference_index(mode, o as i64 - begins[d], shape[d] as i64) {
                    Some(i) => src += i as usize * is[d],
                    None => return value,
                }
            }
            x[src]
        })
        .collect()
}

fn mode_of(k: u8) -> PadMode {
    [
        PadMode::Constant,
        PadMode::Edge,
        PadMode::Reflect,
        PadMode::Wrap,
    ][k as usize % 4]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn pad_matches_numpy_rules(
        shape in prop::collection::vec(1usize..6, 0..5),
        raw in prop::collection::vec((-3i64..6, -3i64..6), 5),
        mode in 0u8..4,
        threads in 1usize..3,
        seed in 0u64..1000,
    ) {
        let mode = mode_of(mode);
        let rank = shape.len();
        // Crops no deeper than the axis.
        let begins: Vec<i64> = (0..rank).map(|d| raw[d].0.max(-(shape[d] as i64) / 2)).collect();
        let ends: Vec<i64> = (0..rank).map(|d| raw[d].1.max(-(shape[d] as i64) / 2)).collect();
        let out_shape = padded_shape(mode, &shape, &begins, &ends).unwrap();
        let x = rand_vec(shape.iter().product(), seed, 1.0);
        let want = reference_pad(mode, &x, &shape, &begins, &out_shape, 0.5);
        let mut got = vec![f32::NAN; want.len()];
        with_threads(threads, || pad_forward(mode, &x, &shape, &begins, &ends, 0.5, &mut got)).unwrap();
        prop_assert_eq!(&got, &want);

        // The adjoint identity, in f64.
        let g = rand_vec(want.len(), seed + 1, 1.0);
        let mut gx = vec![f32::NAN; x.len()];
        with_threads(threads, || pad_backward(mode, &g, &shape, &begins, &ends, &mut gx)).unwrap();
        let zero_fill = reference_pad(mode, &x, &shape, &begins, &out_shape, 0.0);
        let lhs: f64 = zero_fill.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum();
        let rhs: f64 = x.iter().zip(&gx).map(|(&a, &b)| a as f64 * b as f64).sum();
        prop_assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()), "adjoint: {} vs {}", lhs, rhs);
    }
}

#[test]
fn pad_rejects_bad_arguments() {
    let x = [1.0f32; 4];
    let mut y = [0.0f32; 4];
    let err = pad_forward(
        PadMode::Constant,
        &x,
        &[2, 2],
        &[-3, 0],
        &[0, 0],
        0.0,
        &mut y,
    )
    .unwrap_err();
    assert!(err.0.contains("axis 0"), "{err}");
    let err = pad_forward(PadMode::Edge, &[], &[0, 2], &[1, 0], &[0, 0], 0.0, &mut y).unwrap_err();
    assert!(err.0.contains("empty"), "{err}");
    let err = pad_forward(
        PadMode::Constant,
        &x,
        &[2, 2],
        &[1, 0],
        &[0, 0],
        0.0,
        &mut y,
    )
    .unwrap_err();
    assert!(err.0.contains("output"), "{err}");
    assert!(PadMode::parse("mirror").is_err());
}

/// Offset in `shape` (right-aligned in `out`, size-1 dims broadcast) of the out coordinate `c`.
fn offset_of(shape: &[usize], out: &[usize], c: &[usize]) -> usize {
    let off = out.len() - shape.len();
    let st = strides(shape);
    (0..shape.len())
        .map(|d| if shape[d] == 1 { 0 } else { c[d + off] * st[d] })
        .sum()
}

fn coords(out: &[usize], flat: usize) -> Vec<usize> {
    let st = strides(out);
    (0..out.len()).map(|d| (flat / st[d]) % out[d]).collect()
}

/// A random shape `b` that broadcasts with `a`: some dims dropped from the front, some set to 1.
fn partner(a: &[usize], drop: usize, ones: u32) -> Vec<usize> {
    a[drop.min(a.len())..]
        .iter()
        .enumerate()
        .map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn binary_nd_broadcasts_both_ways(
        full in prop::collection::vec(1usize..5, 0..5),
        drop_a in 0usize..3, ones_a in 0u32..32,
        drop_b in 0usize..3, ones_b in 0u32..32,
        op in 0usize..4,
        seed in 0u64..1000,
    ) {
        let (sa, sb) = (partner(&full, drop_a, ones_a), partner(&full, drop_b, ones_b));
        let out = broadcast_shape(&sa, &sb).unwrap();
        let a = rand_vec(sa.iter().product(), seed, 1.0);
        let b: Vec<f32> = rand_vec(sb.iter().product(), seed + 7, 1.0).iter().map(|v| v + 2.0).collect();
        let op = [NdOp::Add, NdOp::Sub, NdOp::Mul, NdOp::Div][op];
        let n: usize = out.iter().product();
        let mut got = vec![f32::NAN; n];
        binary_nd(op, &a, &sa, &b, &sb, &mut got).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let c = coords(&out, i);
            let (x, y) = (a[offset_of(&sa, &out, &c)], b[offset_of(&sb, &out, &c)]);
            let want = match op { NdOp::Add => x + y, NdOp::Sub => x - y, NdOp::Mul => x * y, NdOp::Div => x / y };
            prop_assert_eq!(g, want, "at {:?}", c);
        }
        // sum_to(g, out -> sa) is the adjoint of broadcasting sa to out.
        let g = rand_vec(n, seed + 3, 1.0);
        let mut red = vec![f32::NAN; a.len()];
        sum_to(&g, &out, &sa, &mut red).unwrap();
        let mut want = vec![0f64; a.len()];
        for (i, &v) in g.iter().enumerate() {
            want[offset_of(&sa, &out, &coords(&out, i))] += v as f64;
        }
        for (r, w) in red.iter().zip(&want) {
            prop_assert!((*r as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()));
        }
    }

    #[test]
    fn gather_takes_rows_and_scatters_back(
        outer in 1usize..4, axis_len in 1usize..6, inner in 0usize..4,
        raw in prop::collection::vec(-6i64..6, 0..7),
        seed in 0u64..1000,
    ) {
        let n = axis_len as i64;
        let idx: Vec<i64> = raw.iter().map(|&i| i.rem_euclid(2 * n) - n).collect();
        let x = rand_vec(outer * axis_len * inner, seed, 1.0);
        let mut y = vec![f32::NAN; outer * idx.len() * inner];
        gather_forward(&x, outer, axis_len, inner, &idx, &mut y).unwrap();
        let mut gx = vec![f32::NAN; x.len()];
        gather_backward(&y, outer, axis_len, inner, &idx, &mut gx).unwrap();
        let mut want_gx = vec![0f32; x.len()];
        for o in 0..outer {
            for (j, &i) in idx.iter().enumerate() {
                let i = i.rem_euclid(n) as usize;
                for t in 0..inner {
                    prop_assert_eq!(y[(o * idx.len() + j) * inner + t], x[(o * axis_len + i) * inner + t]);
                    want_gx[(o * axis_len + i) * inner + t] += x[(o * axis_len + i) * inner + t];
                }
            }
        }
        prop_assert_eq!(gx, want_gx);
    }

    #[test]
    fn matmul_batched_matches_loops(
        m in 1usize..7, n in 1usize..7, k in 1usize..40,
        trans_a: bool, trans_b: bool,
        na in 1usize..3, nb in 1usize..3,
        threads in 1usize..3,
        seed in 0u64..1000,
    ) {
        // Every (a, b) pair once, and a second pass summing all products per a (a broadcast
        // operand's gradient).
        let a = rand_vec(na * m * k, seed, 1.0);
        let b = rand_vec(nb * k * n, seed + 1, 1.0);
        let pairs: Vec<[usize; 3]> = (0..na * nb).map(|i| [i / nb, i % nb, i]).collect();
        let sums: Vec<[usize; 3]> = (0..na * nb).map(|i| [i / nb, i % nb, i / nb]).collect();
        let mut c = vec![f32::NAN; na * nb * m * n];
        let mut s = vec![f32::NAN; na * m * n];
        with_threads(threads, || {
            matmul_batched(trans_a, trans_b, m, n, k, &a, &b, &mut c, &pairs).unwrap();
            matmul_batched(trans_a, trans_b, m, n, k, &a, &b, &mut s, &sums).unwrap();
        });
        let at = |i: usize, r: usize, q: usize| a[i * m * k + if trans_a { q * m + r } else { r * k + q }] as f64;
        let bt = |i: usize, q: usize, col: usize| b[i * k * n + if trans_b { col * k + q } else { q * n + col }] as f64;
        let mut want_s = vec![0f64; na * m * n];
        for [ia, ib, ic] in pairs {
            for r in 0..m {
                for col in 0..n {
                    let v: f64 = (0..k).map(|q| at(ia, r, q) * bt(ib, q, col)).sum();
                    prop_assert!((c[ic * m * n + r * n + col] as f64 - v).abs() <= 1e-4 * (1.0 + v.abs()));
                    want_s[ia * m * n + r * n + col] += v;
                }
            }
        }
        for (g, w) in s.iter().zip(&want_s) {
            prop_assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()));
        }
    }
}

#[test]
fn broadcast_kernels_reject_bad_arguments() {
    let mut y = [0.0f32; 6];
    assert!(broadcast_shape(&[2, 3], &[3, 2])
        .unwrap_err()
        .0
        .contains("do not broadcast"));
    assert!(binary_nd(NdOp::Add, &[0.0; 6], &[2, 3], &[0.0; 2], &[2], &mut y).is_err());
    assert!(sum_to(&[0.0; 3], &[3], &[2, 3], &mut y)
        .unwrap_err()
        .0
        .contains("does not broadcast"));
    assert!(gather_forward(&[0.0; 6], 1, 6, 1, &[6], &mut y[..1])
        .unwrap_err()
        .0
        .contains("out of range"));
    assert!(gather_forward(&[0.0; 6], 1, 6, 1, &[-7], &mut y[..1]).is_err());
    let err = matmul_batched(
        false,
        false,
        1,
        1,
        1,
        &[1.0],
        &[1.0],
        &mut y[..1],
        &[[1, 0, 0]],
    )
    .unwrap_err();
    assert!(err.0.contains("out of range"), "{err}");
    assert!(NdOp::parse("pow").is_err());
}
