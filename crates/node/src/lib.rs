//! ferroconv's N-API binding. Thin by design: each entry converts JavaScript arguments, checks
//! them, runs a `ferroconv-kernels` function inside ferroconv's thread pool and returns. No math
//! lives here. Every entry is `catch_unwind`, so even a bug cannot take the process down: it
//! surfaces as a JavaScript Error.
#![deny(clippy::all)]

mod activation;
mod args;
mod conv;
mod conv_transpose;
mod elementwise;
mod linalg;
mod mpi;
mod nd;
mod norm;
mod optim;
mod plan;
mod pool;
mod quant;
mod recurrent;
mod runtime;

pub use activation::*;
pub use conv::*;
pub use conv_transpose::*;
pub use elementwise::*;
pub use linalg::*;
pub use mpi::*;
pub use nd::*;
pub use norm::*;
pub use optim::*;
pub use plan::*;
pub use pool::*;
pub use quant::*;
pub use recurrent::*;
pub use runtime::*;
