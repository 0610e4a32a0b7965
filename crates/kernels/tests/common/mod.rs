//! The one support module of the kernel tests: the SIMD-level lock and loop, fixed-size thread
//! pools, deterministic inputs, closeness checks, finite differences, and (in [`conv`]) the conv
//! case table every algorithm runs. Each test file includes it with `mod common;`.
#![allow(dead_code)]
pub mod conv;
pub mod gemm;

use ferroconv_kernels::batchnorm::{batch_norm2d_forward_train, BatchNorm2dParams};

use ferroconv_kernels::simd::{self, SimdLevel};
use std::sync::{Mutex, MutexGuard};

static SIMD_LOCK: Mutex<()> = Mutex::new(());

/// Held by every test whose results depend on the process-global SIMD level, so a test that
/// flips the level cannot change it under another. Dropping it puts the best level back, also
/// when the test panics.
pub struct SimdGuard(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Drop for SimdGuard {
    fn drop(&mut self) {
        simd::set_level(simd::detected());
    }
}

pub fn lock() -> SimdGuard {
    SimdGuard(SIMD_LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Every SIMD level this CPU has, the scalar fallback first. `FERROCONV_TEST_LEVELS` (level
/// names, comma-separated, e.g. `neon`) narrows the list, for runs under an emulator where each
/// level costs minutes and the scalar one is already tested natively.
pub fn levels() -> Vec<SimdLevel> {
    let all = simd::available();
    let Ok(names) = std::env::var("FERROCONV_TEST_LEVELS") else {
        return all;
    };
    let picked: Vec<SimdLevel> = all
        .iter()
        .copied()
        .filter(|l| names.split(',').any(|n| n.trim() == l.name()))
        .collect();
    // An empty list would let every level loop pass without running anything.
    assert!(
        !picked.is_empty(),
        "FERROCONV_TEST_LEVELS={names:?} names none of this CPU's levels {:?}",
        all.iter().map(|l| l.name()).collect::<Vec<_>>()
    );
    picked
}

/// Runs `f` once per SIMD level this CPU has, returning the results in order; the guard proves
/// the caller holds [`lock`].
pub fn for_each_level<T>(_held: &SimdGuard, mut f: impl FnMut(SimdLevel) -> T) -> Vec<T> {
    levels()
        .into_iter()
        .map(|lvl| {
            assert_eq!(simd::set_level(lvl), lvl);
            f(lvl)
        })
        .collect()
}

/// Runs `f` inside a fresh rayon pool of `n` threads.
pub fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

/// Deterministic values in [-1, 1]: a cheap hash, not a sine, so neighbouring values are
/// unrelated and a misplaced index shows.
pub fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let mut h = i.wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B);
            h ^= h >> 15;
            h = h.wrapping_mul(0x2C1B_3C6D);
            h ^= h >> 12;
            (h % 20001) as f32 / 10000.0 - 1.0
        })
        .collect()
}

/// Smooth values in about [-1, 1] (for kernels whose finite differences want no sharp ties).
pub fn smooth(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (i as f32 * 0.37 + seed as f32 * 1.3).sin() * 0.7 + (i as f32 * 0.11).cos() * 0.3)
        .collect()
}

/// Deterministic pseudo-random floats in [-scale, scale) (xorshift).
pub fn rand_vec(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// All-distinct values at least 0.01 apart, in a scrambled order: no ties for max pooling,
/// and a finite-difference step of 1e-3 never changes which element is largest.
pub fn distinct(len: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len)
        .map(|i| i as f32 * 0.01 - len as f32 * 0.005)
        .collect();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..len).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (s >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Largest `|got - want|` divided by the largest `|want|` (normwise error), after checking that
/// every value is finite.
pub fn norm_err(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let mut worst = 0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(a.is_finite(), "{what}: element {i} is {a}");
        worst = worst.max((a as f64 - b as f64).abs());
    }
    if scale == 0.0 {
        worst
    } else {
        worst / scale
    }
}

/// Asserts `|got - want| <= rtol * |want| + atol * max|want|` element-wise.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let (a, b) = (a as f64, b as f64);
        let tol = rtol * b.abs() + atol * scale;
        assert!(
            (a - b).abs() <= tol,
            "{what}: element {i}: got {a}, want {b} (tol {tol:e})"
        );
    }
}

/// Panics unless `|got - want| <= atol + rtol * |want|` everywhere against an f64 reference
/// (equal infinities and NaN against NaN pass), naming the worst element.
pub fn assert_close_f64(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g as f64 - w).abs() - (atol + rtol * w.abs());
        // Equal infinities make `excess` NaN, hence the explicit equality.
        let ok = excess <= 0.0 || (g.is_nan() && w.is_nan()) || g as f64 == w;
        if !ok && worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("{what}: element {i} is {}, expected {}", got[i], want[i]);
    }
}

/// Central finite differences of `loss` with respect to every element of `x`.
pub fn fd_grad(x: &[f32], eps: f32, loss: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            let (hi, lo) = (orig + eps, orig - eps);
            xp[i] = hi;
            let up = loss(&xp);
            xp[i] = lo;
            let down = loss(&xp);
            xp[i] = orig;
            // Divide by the step f32 really took, not the one asked for.
            (up - down) / (hi as f64 - lo as f64)
        })
        .collect()
}

/// Central differences of `loss` at the elements `at` of `x` against the analytic gradient `grad`:
/// `|fd - grad| <= 2e-3 + 1e-2 |fd|` (for losses in f64 of O(1) inputs and steps of about 1e-2).
pub fn check_fd(
    what: &str,
    x: &[f32],
    grad: &[f32],
    eps: f32,
    at: impl IntoIterator<Item = usize>,
    loss: impl Fn(&[f32]) -> f64,
) {
    let mut xp = x.to_vec();
    for i in at {
        xp[i] = x[i] + eps;
        let up = loss(&xp);
        xp[i] = x[i] - eps;
        let down = loss(&xp);
        xp[i] = x[i];
        let fd = (up - down) / (2.0 * eps as f64);
        let err = (fd - grad[i] as f64).abs();
        assert!(
            err <= 2e-3 + 1e-2 * fd.abs(),
            "{what} at {i}: finite difference {fd}, backward {}",
            grad[i]
        );
    }
}

/// Process CPU time (all threads) in seconds, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Best wall time of one call, and mean CPU seconds per call (all threads), over at least 20
/// calls and half a second. On a shared machine the CPU time says what the kernel costs when
/// its threads are not waiting for a core.
pub fn time(mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (start, cpu0) = (std::time::Instant::now(), cpu_seconds());
    let (mut best, mut calls) = (f64::INFINITY, 0);
    while calls < 20 || start.elapsed().as_secs_f64() < 0.5 {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    (best, (cpu_seconds() - cpu0) / calls as f64)
}

/// Prints throughput for `bytes` moved per call, from the best wall time and from CPU time
/// shared over 2 threads.
pub fn report(name: &str, bytes: f64, wall: f64, cpu: f64) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{name}: best wall {:.2} ms = {:.1} GB/s; cpu {:.2} ms/call = {:.1} GB/s on 2 free cores (loadavg {})",
        wall * 1e3,
        bytes / wall / 1e9,
        cpu * 1e3,
        bytes / (cpu / 2.0) / 1e9,
        load.split_whitespace().next().unwrap_or("?")
    );
}

/// What a batch-norm training forward writes.
pub struct BnTrainOut {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    pub rm: Vec<f32>,
    pub rv: Vec<f32>,
}

/// The batch-norm training forward on fresh (NaN-filled) outputs and copies of the running
/// statistics `rm`, `rv`.
pub fn bn_train(
    p: &BatchNorm2dParams,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    rm: &[f32],
    rv: &[f32],
) -> BnTrainOut {
    let c = p.channels;
    let mut o = BnTrainOut {
        y: vec![f32::NAN; x.len()],
        mean: vec![f32::NAN; c],
        invstd: vec![f32::NAN; c],
        rm: rm.to_vec(),
        rv: rv.to_vec(),
    };
    batch_norm2d_forward_train(
        p,
        x,
        w,
        b,
        Some(&mut o.rm),
        Some(&mut o.rv),
        &mut o.y,
        &mut o.mean,
        &mut o.invstd,
    )
    .unwrap();
    o
}
