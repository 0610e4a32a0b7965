//! Dropout statistics and determinism, broadcast add/mul against a general NumPy-rule reference
//! (with finite-difference checks of the mul gradients), channel concat/split, scalar vs AVX2
//! and 1 vs 2 threads; fill, copy, the finite check and gradient clipping. Tests take LOCK
//! because they flip the process-global SIMD level.
use ferroconv_kernels::elementwise::{
    broadcast_binary, broadcast_binary_backward, check_finite, clip_grad_norm, concat_channels,
    copy, dropout_backward, dropout_forward, fill, split_channels, BinaryOp, Broadcast,
};
use ferroconv_kernels::simd::{self, SimdLevel};

mod common;
use common::{levels, lock, rand_vec, with_threads};

// ---------------------------------------------------------------------------------------------
// Dropout

fn dropout(x: &[f32], p: f64, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![f32::NAN; x.len()];
    let mut m = vec![f32::NAN; x.len()];
    dropout_forward(x, &mut y, &mut m, p, seed).unwrap();
    (y, m)
}

#[test]
fn dropout_statistics() {
    let _g = lock();
    let n = 400_000;
    let x = rand_vec(n, 1, 1.0);
    for p in [0.1, 0.5, 0.9, 0.999] {
        let (y, m) = dropout(&x, p, 42);
        let scale = (1.0 / (1.0 - p)) as f32;
        let dropped = m.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(
            dropped + m.iter().filter(|&&v| v == scale).count(),
            n,
            "p {p}: mask must be 0 or 1/(1-p)"
        );
        // Binomial(n, p): stay within 5 standard deviations.
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let expect = n as f64 * p;
        assert!(
            (dropped as f64 - expect).abs() < 5.0 * sd,
            "p {p}: {dropped} dropped, expected {expect} +- {sd}"
        );
        let mean: f64 = m.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let sd_mean = (p / (1.0 - p) / n as f64).sqrt();
        assert!(
            (mean - 1.0).abs() < 5.0 * sd_mean,
            "p {p}: mask mean {mean}"
        );
        for i in 0..n {
            assert_eq!(y[i], x[i] * m[i]);
        }
        // Neighbours are independent: P(both kept) ~ (1-p)^2.
        let both = m.windows(2).filter(|w| w[0] != 0.0 && w[1] != 0.0).count() as f64;
        let expect_both = (n - 1) as f64 * (1.0 - p).powi(2);
        assert!(
            (both - expect_both).abs() < 6.0 * expect_both.sqrt() + 10.0,
            "p {p}: {both} adjacent kept pairs, expected {expect_both}"
        );
    }
    // Two seeds give (nearly) independent masks.
    let (_, a) = dropout(&x, 0.5, 1);
    let (_, b) = dropout(&x, 0.5, 2);
    let agree = a.iter().zip(&b).filter(|(u, v)| u == v).count() as f64 / n as f64;
    assert!((agree - 0.5).abs() < 0.01, "seeds 1 and 2 agree on {agree}");
    // Seeds past 2^32 matter too.
    let (_, c) = dropout(&x, 0.5, 1 + (1 << 32));
    assert_ne!(a, c);
}

#[test]
fn dropout_is_deterministic_across_threads_and_simd_levels() {
    let _g = lock();
    let x = rand_vec(300_007, 2, 1.0);
    let mut results = Vec::new();
    for lvl in levels() {
        simd::set_level(lvl);
        for threads in [1, 2] {
            results.push(with_threads(threads, || dropout(&x, 0.3, 1234)));
        }
    }
    for r in &results[1..] {
        assert_eq!(r.0, results[0].0);
        assert_eq!(r.1, results[0].1);
    }
    // A prefix of a tensor gets the prefix of the mask: chunking does not shift the stream.
    let (_, short) = dropout(&x[..1000], 0.3, 1234);
    assert_eq!(short[..], results[0].1[..1000]);
}

#[test]
fn dropout_p0_is_identity_and_backward_applies_the_mask() {
    let _g = lock();
    let x = rand_vec(1000, 3, 1.0);
    let (y, m) = dropout(&x, 0.0, 9);
    assert_eq!(y, x);
    assert!(m.iter().all(|&v| v == 1.0));
    let (_, m) = dropout(&x, 0.25, 9);
    let g = rand_vec(1000, 4, 1.0);
    let mut gi = vec![0.0; 1000];
    dropout_backward(&g, &m, &mut gi).unwrap();
    for i in 0..1000 {
        assert_eq!(gi[i], g[i] * m[i]);
    }
    assert!(dropout_forward(&[], &mut [], &mut [], 0.5, 0).is_ok());
}

#[test]
fn dropout_bad_arguments() {
    let _g = lock();
    let x = [1.0; 4];
    for (p, msg) in [
        (1.0, "p: expected a probability in [0, 1), got 1"),
        (-0.1, "p: expected a probability in [0, 1), got -0.1"),
        (f64::NAN, "p: expected a probability in [0, 1), got NaN"),
    ] {
        let e = dropout_forward(&x, &mut [0.0; 4], &mut [0.0; 4], p, 0)
            .unwrap_err()
            .0;
        assert_eq!(e, msg);
    }
    let e = dropout_forward(&x, &mut [0.0; 4], &mut [0.0; 3], 0.5, 0)
        .unwrap_err()
        .0;
    assert_eq!(e, "mask: expected 4 elements, got 3");
    let e = dropout_backward(&x, &[0.0; 4], &mut [0.0; 5])
        .unwrap_err()
        .0;
    assert_eq!(e, "gradInput: expected 4 elements, got 5");
}

// ---------------------------------------------------------------------------------------------
// Broadcast

/// Index into b of a's flat element `i` under NumPy's rules (b right-aligned, size-1 dims of b
/// repeat).
fn b_index(a_shape: &[usize], b_shape: &[usize], mut i: usize) -> usize {
    let off = a_shape.len() - b_shape.len();
    let mut idx = vec![0; a_shape.len()];
    for d in (0..a_shape.len()).rev() {
        idx[d] = i % a_shape[d];
        i /= a_shape[d];
    }
    let mut j = 0;
    for (d, &bd) in b_shape.iter().enumerate() {
        j = j * bd + if bd == 1 { 0 } else { idx[d + off] };
    }
    j
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// (a shape, b shape): every pattern a CNN uses, plus awkward sizes and a shape big enough to
/// be split into many parallel chunks.
fn broadcast_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![2, 3, 4, 5], vec![2, 3, 4, 5]),
        (vec![2, 3, 4, 5], vec![1, 3, 1, 1]),
        (vec![2, 3, 4, 5], vec![2, 3, 1, 1]),
        (vec![2, 3, 4, 5], vec![3, 1, 1]),
        (vec![2, 3, 4, 5], vec![5]),
        (vec![2, 3, 4, 5], vec![1]),
        (vec![2, 3, 4, 5], vec![]),
        (vec![2, 3, 4, 5], vec![1, 1, 4, 5]),
        (vec![2, 3, 4, 5], vec![2, 1, 1, 1]),
        (vec![7, 10], vec![10]),
        (vec![7, 10], vec![7, 1]),
        (vec![1, 9, 1, 1], vec![9, 1, 1]),
        (vec![1, 13, 1, 1], vec![1, 13, 1, 1]),
        (vec![3, 1, 6, 6], vec![1, 1, 1, 1]),
        (vec![4, 13, 37, 41], vec![1, 13, 1, 1]),
        (vec![4, 13, 37, 41], vec![4, 13, 1, 1]),
        (vec![3000, 33], vec![33]),
        (vec![2, 5, 70, 70], vec![2, 5, 70, 70]),
        (vec![40_000], vec![40_000]),
    ]
}

#[test]
fn broadcast_forward_and_backward_match_reference() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (k, (ash, bsh)) in broadcast_cases().into_iter().enumerate() {
            let (na, nb) = (numel(&ash), numel(&bsh));
            let a = rand_vec(na, 10 + k as u64, 2.0);
            let b = rand_vec(nb, 20 + k as u64, 2.0);
            let g = rand_vec(na, 30 + k as u64, 1.0);
            for op in [BinaryOp::Add, BinaryOp::Mul] {
                let what = format!("{op:?} {ash:?} {bsh:?} {lvl:?}");
                let mut out = vec![f32::NAN; na];
                broadcast_binary(op, &a, &ash, &b, &bsh, &mut out).unwrap();
                let mut ga = vec![f32::NAN; na];
                let mut gb = vec![f32::NAN; nb];
                broadcast_binary_backward(op, &a, &ash, &b, &bsh, &g, Some(&mut ga), Some(&mut gb))
                    .unwrap();
                let mut want_gb = vec![0.0f64; nb];
                for i in 0..na {
                    let j = b_index(&ash, &bsh, i);
                    let (want, want_ga) = match op {
                        BinaryOp::Add => (a[i] + b[j], g[i]),
                        BinaryOp::Mul => (a[i] * b[j], g[i] * b[j]),
                    };
                    assert_eq!(out[i], want, "{what} forward at {i}");
                    assert_eq!(ga[i], want_ga, "{what} gradA at {i}");
                    want_gb[j] += match op {
                        BinaryOp::Add => g[i] as f64,
                        BinaryOp::Mul => g[i] as f64 * a[i] as f64,
                    };
                }
                for j in 0..nb {
                    let err = (gb[j] as f64 - want_gb[j]).abs();
                    assert!(
                        err <= 1e-5 * want_gb[j].abs() + 1e-5,
                        "{what} gradB at {j}: {} vs {}",
                        gb[j],
                        want_gb[j]
                    );
                }
            }
        }
    }
}

/// loss = sum(out * w): gradients of mul by central differences in f64 on the f32 kernel.
#[test]
fn broadcast_mul_gradients_match_finite_differences() {
    let _g = lock();
    for (ash, bsh) in [
        (vec![2, 3, 4, 5], vec![1, 3, 1, 1]),
        (vec![2, 3, 4, 5], vec![2, 3, 1, 1]),
        (vec![6, 10], vec![10]),
        (vec![2, 3, 2, 2], vec![2, 3, 2, 2]),
        (vec![3, 4], vec![1]),
    ] {
        let (na, nb) = (numel(&ash), numel(&bsh));
        let a = rand_vec(na, 1, 2.0);
        let b = rand_vec(nb, 2, 2.0);
        let w = rand_vec(na, 3, 1.0);
        let loss = |a: &[f32], b: &[f32]| -> f64 {
            let mut out = vec![0.0; na];
            broadcast_binary(BinaryOp::Mul, a, &ash, b, &bsh, &mut out).unwrap();
            out.iter().zip(&w).map(|(&o, &v)| o as f64 * v as f64).sum()
        };
        let mut ga = vec![0.0; na];
        let mut gb = vec![0.0; nb];
        broadcast_binary_backward(
            BinaryOp::Mul,
            &a,
            &ash,
            &b,
            &bsh,
            &w,
            Some(&mut ga),
            Some(&mut gb),
        )
        .unwrap();
        let eps = 1e-2f32;
        // Central differences along each element of a (operand 0) and of b (operand 1).
        for (which, grad) in [("gradA", &ga), ("gradB", &gb)] {
            for i in 0..grad.len() {
                let at = |d: f32| {
                    let mut ab = [a.clone(), b.clone()];
                    ab[(which == "gradB") as usize][i] += d;
                    loss(&ab[0], &ab[1])
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                let err = (fd - grad[i] as f64).abs();
                assert!(
                    err <= 1e-3 + 1e-3 * fd.abs(),
                    "{ash:?} {bsh:?} {which}[{i}]: fd {fd}, backward {}",
                    grad[i]
                );
            }
        }
    }
}

#[test]
fn broadcast_results_do_not_depend_on_thread_count_or_simd_level() {
    let _g = lock();
    for (ash, bsh) in [
        (vec![8, 64, 56, 56], vec![1, 64, 1, 1]),
        (vec![20_000, 10], vec![10]),
        (vec![300_000], vec![300_000]),
    ] {
        let (na, nb) = (numel(&ash), numel(&bsh));
        let a = rand_vec(na, 5, 1.0);
        let b = rand_vec(nb, 6, 1.0);
        let g = rand_vec(na, 7, 1.0);
        let run = |lvl: SimdLevel, threads: usize| {
            simd::set_level(lvl);
            with_threads(threads, || {
                let mut out = vec![0.0; na];
                broadcast_binary(BinaryOp::Mul, &a, &ash, &b, &bsh, &mut out).unwrap();
                let mut ga = vec![0.0; na];
                let mut gb = vec![0.0; nb];
                broadcast_binary_backward(
                    BinaryOp::Mul,
                    &a,
                    &ash,
                    &b,
                    &bsh,
                    &g,
                    Some(&mut ga),
                    Some(&mut gb),
                )
                .unwrap();
                let mut gb_add = vec![0.0; nb];
                broadcast_binary_backward(
                    BinaryOp::Add,
                    &a,
                    &ash,
                    &b,
                    &bsh,
                    &g,
                    None,
                    Some(&mut gb_add),
                )
                .unwrap();
                (out, ga, gb, gb_add)
            })
        };
        let first = run(simd::detected(), 1);
        for (lvl, threads) in [
            (simd::detected(), 2),
            (SimdLevel::Scalar, 1),
            (SimdLevel::Scalar, 2),
        ] {
            let r = run(lvl, threads);
            // The same additions in the same order on every path: bit-for-bit equal.
            assert_eq!(r, first, "{ash:?} {bsh:?} {lvl:?} {threads} threads");
        }
    }
}

#[test]
fn broadcast_plans_and_errors() {
    let _g = lock();
    let plan = |a: &[usize], b: &[usize]| Broadcast::plan(a, b);
    let bc = |outer, mid, inner| Broadcast { outer, mid, inner };
    assert_eq!(plan(&[2, 3, 4, 5], &[1, 3, 1, 1]).unwrap(), bc(2, 3, 20));
    assert_eq!(plan(&[2, 3, 4, 5], &[2, 3, 1, 1]).unwrap(), bc(1, 6, 20));
    assert_eq!(plan(&[2, 3, 4, 5], &[2, 3, 4, 5]).unwrap(), bc(1, 120, 1));
    assert_eq!(plan(&[8, 10], &[10]).unwrap(), bc(8, 10, 1));
    assert_eq!(plan(&[2, 3, 4, 5], &[1]).unwrap(), bc(1, 1, 120));
    assert_eq!(plan(&[1, 3, 1, 1], &[3, 1, 1]).unwrap(), bc(1, 3, 1));
    // NumPy aligns b from the right: [C] is a bias for [N, C], not a channel bias for NCHW.
    assert!(plan(&[2, 3, 4, 4], &[3]).is_err());
    assert_eq!(plan(&[2, 3, 4, 3], &[3]).unwrap(), bc(24, 3, 1));
    let err = |a: &[usize], b: &[usize]| plan(a, b).unwrap_err().0;
    assert_eq!(
        err(&[2, 3, 4, 5], &[3]),
        "bShape: [3] does not broadcast to aShape [2, 3, 4, 5] (dim 3 of a: b has 3, a has 5)"
    );
    assert_eq!(
        err(&[3], &[1, 3]),
        "bShape: [1, 3] has more dims than aShape [3]; b must broadcast to a's shape"
    );
    assert!(err(&[2, 3, 4, 5], &[2, 1, 4, 5]).starts_with(
        "bShape: broadcasting [2, 1, 4, 5] to [2, 3, 4, 5] is not supported: the dims where b is not 1 must be adjacent"
    ));
    assert!(err(&[1 << 40, 1 << 40], &[1]).contains("too many elements"));
    assert_eq!(
        BinaryOp::parse("sub").unwrap_err().0,
        "op: expected one of 'add', 'mul', got 'sub'"
    );
    // a [2, 3] (6 values) + b [3]: the lengths of b and the output are checked.
    let add = |b_len: usize, out_len: usize| {
        let (b, mut out) = (vec![0.0; b_len], vec![0.0; out_len]);
        broadcast_binary(BinaryOp::Add, &[0.0; 6], &[2, 3], &b, &[3], &mut out)
            .unwrap_err()
            .0
    };
    assert_eq!(add(2, 6), "b: expected 3 elements, got 2");
    assert_eq!(add(3, 5), "output: expected 6 elements, got 5");
    let e = broadcast_binary_backward(
        BinaryOp::Mul,
        &[0.0; 6],
        &[2, 3],
        &[0.0; 3],
        &[3],
        &[0.0; 6],
        None,
        Some(&mut [0.0; 6]),
    )
    .unwrap_err()
    .0;
    assert_eq!(e, "gradB: expected 3 elements, got 6");
    // Empty a: nothing to do, b's gradient is zero.
    let mut gb = [5.0; 3];
    broadcast_binary_backward(
        BinaryOp::Mul,
        &[],
        &[0, 3],
        &[1.0; 3],
        &[3],
        &[],
        None,
        Some(&mut gb),
    )
    .unwrap();
    assert_eq!(gb, [0.0; 3]);
}

// ---------------------------------------------------------------------------------------------
// Concat / split

fn ref_concat(inputs: &[Vec<f32>], channels: &[usize], batch: usize, plane: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for n in 0..batch {
        for (x, &c) in inputs.iter().zip(channels) {
            out.extend_from_slice(&x[n * c * plane..(n + 1) * c * plane]);
        }
    }
    out
}

#[test]
fn concat_and_split_match_reference_and_round_trip() {
    let _g = lock();
    for (channels, batch, plane) in [
        (vec![3usize, 5], 2usize, 16usize),
        (vec![1], 1, 1),
        (vec![7, 0, 2, 9], 3, 1),
        (vec![64, 32, 32, 96], 2, 28 * 28),
        (vec![13, 1], 5, 7 * 9),
        (vec![256, 512], 1, 14 * 14),
    ] {
        let inputs: Vec<Vec<f32>> = channels
            .iter()
            .enumerate()
            .map(|(k, &c)| rand_vec(batch * c * plane, k as u64 + 1, 1.0))
            .collect();
        let want = ref_concat(&inputs, &channels, batch, plane);
        let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
        for threads in [1, 2] {
            let (out, parts) = with_threads(threads, || {
                let mut out = vec![f32::NAN; want.len()];
                concat_channels(&refs, &channels, batch, plane, &mut out).unwrap();
                let mut parts: Vec<Vec<f32>> =
                    inputs.iter().map(|v| vec![f32::NAN; v.len()]).collect();
                let mut views: Vec<&mut [f32]> =
                    parts.iter_mut().map(|v| v.as_mut_slice()).collect();
                split_channels(&out, &mut views, &channels, batch, plane).unwrap();
                (out, parts)
            });
            assert_eq!(out, want, "concat {channels:?} x {batch} x {plane}");
            assert_eq!(parts, inputs, "split {channels:?} x {batch} x {plane}");
        }
    }
}

#[test]
fn concat_and_split_errors() {
    let _g = lock();
    let a = [0.0; 6];
    let b = [0.0; 4];
    let mut out = [0.0; 10];
    let e = concat_channels(&[&a, &b], &[3], 1, 2, &mut out)
        .unwrap_err()
        .0;
    assert_eq!(e, "channels: expected 2 numbers (one per input), got 1");
    let e = concat_channels(&[&a, &b], &[3, 3], 1, 2, &mut out)
        .unwrap_err()
        .0;
    assert_eq!(e, "inputs[1]: expected 6 elements, got 4");
    let e = concat_channels(&[&a, &b], &[3, 2], 1, 2, &mut [0.0; 9])
        .unwrap_err()
        .0;
    assert_eq!(e, "output: expected 10 elements, got 9");
    let e = concat_channels(&[], &[], 1, 2, &mut out).unwrap_err().0;
    assert_eq!(e, "channels: expected at least one tensor, got none");
    let e = concat_channels(&[&a], &[3], 0, 2, &mut out).unwrap_err().0;
    assert_eq!(e, "batch: expected a positive size, got 0");
    let e = concat_channels(&[&a], &[usize::MAX], 1, 2, &mut out)
        .unwrap_err()
        .0;
    assert!(e.contains("too many elements"), "{e}");
    let mut p0 = [0.0; 6];
    let mut p1 = [0.0; 3];
    let e = split_channels(&out, &mut [&mut p0, &mut p1], &[3, 2], 1, 2)
        .unwrap_err()
        .0;
    assert_eq!(e, "outputs[1]: expected 4 elements, got 3");
    let e = split_channels(&out[..9], &mut [&mut p0, &mut p1], &[3, 2], 1, 2)
        .unwrap_err()
        .0;
    assert_eq!(e, "input: expected 10 elements, got 9");
}

// ---------------------------------------------------------------------------------------------
// The small entries a compiled training step needs: fill, copy, the loss check, clipping

#[test]
fn fill_copy_and_the_finite_check() {
    let mut y = vec![0.0f32; 70_000]; // more than one parallel chunk
    fill(&mut y, 1.0 / 3.0);
    assert!(y.iter().all(|&v| v == (1.0f64 / 3.0) as f32));
    let x = rand_vec(70_001, 4, 1.0);
    let mut z = vec![0.0f32; 70_001];
    copy(&x, &mut z).unwrap();
    assert_eq!(x, z);
    assert!(copy(&x, &mut z[..5]).is_err());
    assert!(check_finite(&x, "x").is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = x.clone();
        w[1234] = bad;
        let e = check_finite(&w, "the loss").unwrap_err().0;
        assert!(
            e.starts_with("the loss is not finite: element 1234 is"),
            "{e}"
        );
    }
}

#[test]
fn clip_grad_norm_scales_only_above_the_limit() {
    let a = rand_vec(1000, 1, 1.0);
    let b = rand_vec(37, 2, 1.0);
    let norm = (a
        .iter()
        .chain(&b)
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>())
    .sqrt();
    // Above the limit: every element times max / (norm + 1e-6), rounded once.
    let (mut ca, mut cb) = (a.clone(), b.clone());
    let max = norm / 4.0;
    let got = clip_grad_norm(&mut [&mut ca[..], &mut cb[..]], max);
    assert_eq!(got, norm);
    let s = max / (norm + 1e-6);
    for (c, v) in ca.iter().chain(&cb).zip(a.iter().chain(&b)) {
        assert_eq!(*c, (*v as f64 * s) as f32);
    }
    let clipped = (ca
        .iter()
        .chain(&cb)
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>())
    .sqrt();
    assert!((clipped - max).abs() < 1e-4 * max, "{clipped} vs {max}");
    // At or below it: untouched.
    let (mut ca, mut cb) = (a.clone(), b.clone());
    clip_grad_norm(&mut [&mut ca[..], &mut cb[..]], norm);
    assert_eq!((ca, cb), (a, b));
}

/// Transpose against a direct index computation, over ranks 0 to 6, every permutation of small
/// ranks, sizes past a parallel chunk (so the odometer restarts mid-axis), 1 and 2 threads.
#[test]
fn transpose_matches_direct_indexing() {
    use ferroconv_kernels::elementwise::transpose;
    let _g = lock();
    let naive = |x: &[f32], shape: &[usize], perm: &[usize]| -> Vec<f32> {
        let rank = shape.len();
        let out_dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let n: usize = shape.iter().product();
        let mut y = vec![0.0; n];
        for (flat, out) in y.iter_mut().enumerate() {
            let mut rest = flat;
            let mut coord = vec![0; rank];
            for d in (0..rank).rev() {
                coord[d] = rest % out_dims[d];
                rest /= out_dims[d];
            }
            let mut src = 0;
            for (d, &size) in shape.iter().enumerate() {
                let axis = perm.iter().position(|&p| p == d).unwrap();
                src = src * size + coord[axis];
            }
            *out = x[src];
        }
        y
    };
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![], vec![]),
        (vec![5], vec![0]),
        (vec![3, 4], vec![1, 0]),
        (vec![2, 3, 4], vec![2, 0, 1]),
        (vec![2, 3, 4], vec![1, 2, 0]),
        (vec![2, 3, 4], vec![0, 2, 1]),
        (vec![1, 116, 2, 28, 28], vec![0, 2, 1, 3, 4]),
        (vec![3, 1, 70, 300], vec![0, 3, 1, 2]),
        (vec![2, 3, 1, 4, 5, 2], vec![5, 3, 0, 4, 2, 1]),
        (vec![4, 0, 3], vec![2, 1, 0]),
    ];
    for (shape, perm) in cases {
        let n: usize = shape.iter().product();
        let x = rand_vec(n, 3, 1.0);
        let want = naive(&x, &shape, &perm);
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; n];
            with_threads(threads, || transpose(&x, &shape, &perm, &mut y)).unwrap();
            assert_eq!(y, want, "shape {shape:?} perm {perm:?} threads {threads}");
        }
    }
    let mut y = vec![0.0; 6];
    let err = |r: ferroconv_kernels::Result<()>| r.unwrap_err().0;
    assert_eq!(
        err(transpose(&[0.0; 6], &[2, 3], &[0, 0], &mut y)),
        "perm: expected a permutation of 0..2, got [0, 0]"
    );
    assert_eq!(
        err(transpose(&[0.0; 6], &[2, 3], &[1], &mut y)),
        "perm: expected 2 axes, got 1"
    );
    assert_eq!(
        err(transpose(&[0.0; 5], &[2, 3], &[1, 0], &mut y)),
        "input: expected 6 elements, got 5"
    );
}
