//! The machine's ceilings, measured: the FMA peak (GFLOP/s) and the memory bandwidth (GB/s) that
//! `threads` threads reach on this CPU. Benchmarks divide kernel throughput by these to report a
//! fraction of peak (GEMM-bound conv, SGEMM) or of bandwidth (pooling, batch norm), which means
//! more than a raw number on a shared or throttled machine.
//!
//! Both run on their own `threads` OS threads, not on rayon's current pool: a ceiling must have
//! exactly that many threads busy at once, whatever the pool size, and nothing else queued
//! behind them.
use crate::{bail, simd, Result};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const MAX_THREADS: usize = 1024;
const MAX_MILLIS: usize = 60_000;

/// Independent accumulator chains: enough to cover FMA latency (4-5 cycles) times the number of
/// FMA ports (2) on current x86 cores, so the loop is bound by throughput, not latency.
const CHAINS: usize = 10;
const LANES: usize = 8;
/// FMA rounds between two looks at the clock (~0.2 ms per block on a 3 GHz core).
const ROUNDS_PER_BLOCK: usize = 100_000;

/// f32 elements per bandwidth array: 64 MiB each, 192 MiB for the three, far beyond any L3.
const STREAM_LEN: usize = 16 << 20;
const STREAM_REPS: usize = 8;

fn check_threads(threads: usize) -> Result<()> {
    if threads == 0 || threads > MAX_THREADS {
        bail!("threads: expected 1..={MAX_THREADS}, got {threads}");
    }
    Ok(())
}

/// Floating-point operations per second, in GFLOP/s, that `threads` threads reach with
/// back-to-back fused multiply-adds (512-bit at the AVX-512 level, 256-bit at AVX2+FMA, else
/// whatever the portable loop compiles to), each thread running for about `millis` milliseconds (1..=60000).
pub fn fma_peak_gflops(threads: usize, millis: usize) -> Result<f64> {
    check_threads(threads)?;
    if millis == 0 || millis > MAX_MILLIS {
        bail!("millis: expected 1..={MAX_MILLIS}, got {millis}");
    }
    let budget = Duration::from_millis(millis as u64);
    let isa = simd::isa();
    let start = Barrier::new(threads);
    let per_thread = run_threads(threads, |_| {
        start.wait();
        let t0 = Instant::now();
        let mut flops = 0.0f64;
        loop {
            flops += fma_block(isa);
            let dt = t0.elapsed();
            if dt >= budget {
                return (flops, dt.as_secs_f64());
            }
        }
    })?;
    let flops: f64 = per_thread.iter().map(|r| r.0).sum();
    let secs = per_thread.iter().map(|r| r.1).fold(0.0, f64::max);
    Ok(flops / secs / 1e9)
}

/// Best STREAM-style triad bandwidth (`a[i] = b[i] + s * c[i]` over three 64 MiB arrays), in
/// GB/s, with the arrays split evenly over `threads` threads. Bytes counted as STREAM counts them:
/// 12 per element (two reads, one write; no write-allocate traffic), the same way the benchmarks
/// count bytes for pooling and batch norm.
pub fn memory_bandwidth_gbs(threads: usize) -> Result<f64> {
    check_threads(threads)?;
    let n = STREAM_LEN;
    let mut a = vec![0.0f32; n];
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let chunk = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    // The first pass faults the pages in; it is timed like the others but rarely the best.
    for _ in 0..STREAM_REPS {
        let t0 = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let mut handles = Vec::with_capacity(threads);
            for ((ai, bi), ci) in a
                .chunks_mut(chunk)
                .zip(b.chunks(chunk))
                .zip(c.chunks(chunk))
            {
                let h = std::thread::Builder::new()
                    .spawn_scoped(s, move || triad(ai, bi, ci, 0.5))
                    .map_err(|e| crate::KernelError(format!("threads: cannot start: {e}")))?;
                handles.push(h);
            }
            for h in handles {
                if h.join().is_err() {
                    bail!("memory bandwidth: a worker thread failed");
                }
            }
            Ok(())
        })?;
        best = best.min(t0.elapsed().as_secs_f64());
        black_box(&a);
    }
    Ok((3 * n * std::mem::size_of::<f32>()) as f64 / best / 1e9)
}

fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
        *x = y + s * z;
    }
}

/// Runs `f(i)` on `threads` scoped OS threads and collects the results in order.
fn run_threads<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let f = &f;
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let h = std::thread::Builder::new()
                .spawn_scoped(s, move || f(i))
                .map_err(|e| {
                    crate::KernelError(format!("threads: cannot start thread {i}: {e}"))
                })?;
            handles.push(h);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| crate::KernelError("fma peak: a worker thread failed".to_string()))
            })
            .collect()
    })
}

/// One block of `ROUNDS_PER_BLOCK` rounds over all chains; returns the flops it did.
fn fma_block(isa: simd::Isa) -> f64 {
    simd::dispatch!(isa,
        // SAFETY: the avx512 arm runs only on CPUs with AVX-512 F.
        avx512 => unsafe { fma_block_avx512() },
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { fma_block_avx2() },
        _ => fma_block_portable(),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_block_avx2() -> f64 {
    use std::arch::x86_64::*;
    // x <- x * m + a with m just under 1 converges to a / (1 - m): no overflow, no denormals.
    let m = _mm256_set1_ps(0.999_99);
    let add = _mm256_set1_ps(1e-6);
    let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
    for _ in 0..ROUNDS_PER_BLOCK {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, m, add);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    let mut lanes = [0.0f32; LANES];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    black_box(lanes);
    (ROUNDS_PER_BLOCK * CHAINS * LANES * 2) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fma_block_avx512() -> f64 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(0.999_99);
    let add = _mm512_set1_ps(1e-6);
    let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
    for _ in 0..ROUNDS_PER_BLOCK {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, m, add);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    black_box(_mm512_reduce_add_ps(sum));
    (ROUNDS_PER_BLOCK * CHAINS * 2 * LANES * 2) as f64
}

fn fma_block_portable() -> f64 {
    let mut acc = [[black_box(1.0f32); LANES]; CHAINS];
    for _ in 0..ROUNDS_PER_BLOCK {
        for chain in acc.iter_mut() {
            for x in chain.iter_mut() {
                *x = *x * 0.999_99 + 1e-6;
            }
        }
    }
    black_box(acc);
    (ROUNDS_PER_BLOCK * CHAINS * LANES * 2) as f64
}
