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
    let mut buf = SCRATCH.take();
    crate::scratch::grow(&mut buf, len);
    let r = f(&mut buf[..len]);
    crate::scratch::trim(&mut buf);
    SCRATCH.set(buf);
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
