//! Every conv algorithm (direct, im2col, FFT, Winograd, and `Auto`) on the one case table of
//! `common/conv.rs`: forward, input, weight and bias gradients against the reference loop nest
//! on every SIMD level and on 1 and 2 threads; finite differences of each algorithm's own
//! forward; the SIMD levels agree; 1 and 2 threads agree (exactly where the algorithm promises). Shapes an algorithm does not
//! handle itself fall back (to im2col), and must still be right.
//!
//! Tolerances: normwise, `atol(algo)` of the largest wanted value plus 1e-5 relative; the
//! measurements behind them are in conv_fft.rs and conv_winograd.rs.
mod common;

use common::conv::*;
use common::*;
use ferroconv_kernels::conv::{Choice, ConvAlgo};

/// Every algorithm, and im2col's other path for each pass where it has two (indirect tiles or
/// the GEMM; the input gradient as a forward conv or through col2im; the weight gradient from
/// padded planes or lowered rows), as the autotuner may pick it.
#[test]
fn every_algorithm_matches_reference_on_every_level_and_thread_count() {
    let _guard = lock();
    let alt = Choice {
        algo: ConvAlgo::Im2col,
        alt: true,
    };
    let choices: Vec<Choice> = ALGORITHMS
        .map(Choice::from)
        .into_iter()
        .chain([alt])
        .collect();
    let cases = cases();
    let want: Vec<Outputs> = cases.iter().map(|c| run_reference(&c.p)).collect();
    for_each_level(&_guard, |lvl| {
        for threads in [1, 2] {
            with_threads(threads, || {
                for (c, want) in cases.iter().zip(&want) {
                    for &choice in &choices {
                        let path = if choice.alt { ", alt path" } else { "" };
                        let name = format!("{} ({}{path}, {threads} threads)", c.name, lvl.name());
                        let got = run_choice(&c.p, choice);
                        let tol = atol_for(choice.algo, &c.p);
                        compare(&name, &c.p, choice.algo, &got, want, 1e-5, tol);
                    }
                }
            })
        }
    });
}

#[test]
fn every_algorithm_matches_finite_differences() {
    let _guard = lock();
    for c in cases().iter().step_by(3) {
        for algo in ALGORITHMS {
            check_finite_differences(&c.p, c.name, algo, 2e-3);
        }
    }
}

#[test]
fn simd_levels_agree() {
    let _guard = lock();
    for c in cases() {
        for algo in ALGORITHMS {
            let runs = for_each_level(&_guard, |_| run(&c.p, algo));
            let (s, v) = (&runs[0], runs.last().unwrap());
            for (what, a, b) in [
                ("y", &s.y, &v.y),
                ("dx", &s.dx, &v.dx),
                ("dw", &s.dw, &v.dw),
            ] {
                let tol = atol_for(algo, &c.p);
                assert_close(&format!("{} {algo:?} {what}", c.name), a, b, 1e-5, tol);
            }
            assert_eq!(s.db, v.db, "{} {algo:?} bias gradient", c.name);
        }
    }
}

#[test]
fn one_and_two_threads_agree() {
    // Every output float of the forward and input gradient is computed by one task in a fixed
    // order whatever the pool size (the GEMMs split C, never the sum), and so are direct's and
    // FFT's weight gradients. im2col's weight gradient (also Winograd's and Auto's) adds
    // per-thread partial sums, so it agrees to rounding only.
    let _guard = lock();
    for c in cases() {
        for algo in ALGORITHMS {
            let one = with_threads(1, || run(&c.p, algo));
            let two = with_threads(2, || run(&c.p, algo));
            let tag = format!("{} {algo:?}", c.name);
            assert_eq!(one.y, two.y, "{tag} forward");
            assert_eq!(one.dx, two.dx, "{tag} backward data");
            if matches!(algo, ConvAlgo::Direct | ConvAlgo::Fft) {
                assert_eq!(one.dw, two.dw, "{tag} backward weight");
                assert_eq!(one.db, two.db, "{tag} backward bias");
            } else {
                let tol = atol_for(algo, &c.p);
                assert_close(
                    &format!("{tag} backward weight"),
                    &two.dw,
                    &one.dw,
                    1e-5,
                    tol,
                );
                assert_close(&format!("{tag} backward bias"), &two.db, &one.db, 1e-5, tol);
            }
        }
    }
}

#[test]
fn auto_uses_direct_for_depthwise_and_im2col_for_small_ordinary_convs() {
    // Winograd needs 64+ channels and FFT 32+ (see their own tests); below that, im2col.
    let (mut direct, mut im2col) = (0, 0);
    for c in cases() {
        let p = &c.p;
        let depthwise = p.groups > 1 && p.groups == p.in_channels;
        let got = ConvAlgo::Auto.resolve(p);
        if depthwise {
            assert_eq!(got, ConvAlgo::Direct, "{}", c.name);
            direct += 1;
        } else if p.in_channels / p.groups < 32 && p.out_channels / p.groups < 32 {
            assert_eq!(got, ConvAlgo::Im2col, "{}", c.name);
            im2col += 1;
        }
    }
    // The rule is exercised, not skipped: the table has shapes of both kinds.
    assert!(
        direct >= 4 && im2col >= 20,
        "{direct} depthwise, {im2col} small cases"
    );
}
