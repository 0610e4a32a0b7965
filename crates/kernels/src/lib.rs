//! ferroconv-kernels: the math of ferroconv, as plain Rust over `&[f32]` slices in NCHW layout.
//!
//! Every op family lives in its own module with its forward and backward. Entry points check
//! their arguments and return [`KernelError`] instead of panicking, so the N-API binding above
//! can hand any mistake back to JavaScript as an Error. Parallel loops use rayon's *current*
//! pool: callers choose the thread count by running kernels inside `ThreadPool::install`.
#![deny(clippy::all)]

pub mod activation;
pub mod batchnorm;
pub mod broadcast;
pub mod conv;
pub mod elementwise;
pub mod error;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod f8;
pub mod gemm;
pub mod linear;
pub mod lrn;
pub mod optim;
pub mod pad;
#[cfg(feature = "probes")]
pub mod peak;
pub mod plan;
pub mod pool;
pub mod quant;
pub mod recurrent;
pub mod reduce;
pub mod scratch;
pub mod simd;
pub mod softmax;
mod vmath;

pub use error::{KernelError, Result};
