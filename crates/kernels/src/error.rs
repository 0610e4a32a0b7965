//! The one error type of the kernels: a message that names the argument, what was expected
//! and what was got. The binding turns it into a JavaScript `Error` unchanged.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

pub type Result<T> = std::result::Result<T, KernelError>;

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// Returns an error built from a format string: `bail!("x must be > 0, got {x}")`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::KernelError(format!($($arg)*)))
    };
}

/// Checks that buffer `name` holds exactly `expected` floats.
pub fn check_len(name: &str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        bail!("{name}: expected {expected} elements, got {got}");
    }
    Ok(())
}

/// Checks that a size argument is at least 1.
pub fn check_positive(name: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("{name}: expected a positive size, got 0");
    }
    Ok(())
}

/// Product of dimensions, or an error when it overflows `usize` (hostile shapes).
pub fn numel(name: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError(format!("{name}: shape {dims:?} has too many elements")))
}
