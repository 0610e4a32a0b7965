//! Plumbing shared by the conv algorithms that run blocks in parallel (im2col, Winograd): a
//! per-thread scratch buffer and a pointer that tasks write through in disjoint pieces.
use std::cell::Cell;

thread_local! {
    // Block scratch reused by every block run on this thread. Taken out while in use, so a
    // nested use on the same thread (rayon work stealing) just allocates its own.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&SCRATCH, len, f)
}

/// Runs `f` on `len` floats of the thread-local buffer `key` (contents unspecified), taken out
/// while in use (a nested use on the same thread allocates its own) and put back trimmed.
pub(crate) fn with_buffer<R>(
    key: &'static std::thread::LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.take();
    crate::scratch::grow(&mut buf, len);
    let r = f(&mut buf[..len]);
    crate::scratch::trim(&mut buf);
    key.set(buf);
    r
}

/// Base pointer of a buffer that parallel tasks write in disjoint pieces.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: every user writes only pieces no other task touches; the buffer outlives them.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// # Safety
    /// `off` must lie inside the buffer.
    pub(crate) unsafe fn at(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// Sums `0..units` into `dst` over the pool: contiguous ranges per thread, `accumulate(dst,
/// range)` for the first (which overwrites) and into a private zeroed buffer of `dst`'s length
/// for each other, those added into `dst` at the end. For weight gradients, whose every unit
/// adds to all of `dst`.
pub(crate) fn sum_over_threads(
    units: usize,
    dst: &mut [f32],
    accumulate: impl Fn(&mut [f32], std::ops::Range<usize>) + Sync,
) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let len = dst.len();
    let ranges: Vec<std::ops::Range<usize>> = (0..threads)
        .map(|t| units * t / threads..units * (t + 1) / threads)
        .collect();
    let partials: Vec<Vec<f32>> = rayon::join(
        || accumulate(dst, ranges[0].clone()),
        || {
            ranges[1..]
                .par_iter()
                .map(|r| {
                    let mut part = crate::scratch::zeroed::<f32>(len);
                    accumulate(&mut part, r.clone());
                    part
                })
                .collect()
        },
    )
    .1;
    for part in &partials {
        dst.par_chunks_mut(4096)
            .zip(part.par_chunks(4096))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
    }
}
