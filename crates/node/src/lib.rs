//! ferroconv's N-API binding. Thin by design: each entry converts JavaScript arguments, checks
//! them, runs a `ferroconv-kernels` function inside ferroconv's thread pool and returns. No math
//! lives here. Every entry is `catch_unwind`, so even a bug cannot take the process down: it
//! surfaces as a JavaScript Error.
#![deny(clippy::all)]

mod args;
mod conv;
mod norm;
mod pool;
mod runtime;

pub use conv::*;
pub use norm::*;
pub use pool::*;
pub use runtime::*;
