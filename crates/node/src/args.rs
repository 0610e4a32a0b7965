//! Argument checks shared by every entry: numbers that must be sizes, buffers that must not
//! overlap, and the mapping of kernel errors to JavaScript errors.
use ferroconv_kernels::KernelError;
use napi::bindgen_prelude::Float32Array;
use napi::{Error, Status};

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, msg.into())
}

pub fn kernel_err(e: KernelError) -> Error {
    invalid(e.0)
}

/// A non-negative integer that fits `usize`, from a JavaScript number.
pub fn size(name: &str, v: f64) -> napi::Result<usize> {
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > 9.007_199_254_740_991e15 {
        return Err(invalid(format!(
            "{name}: expected a non-negative integer, got {v}"
        )));
    }
    Ok(v as usize)
}

/// Exactly `N` sizes, e.g. the four dims of an NCHW shape.
pub fn sizes<const N: usize>(name: &str, v: &[f64]) -> napi::Result<[usize; N]> {
    if v.len() != N {
        return Err(invalid(format!(
            "{name}: expected {N} numbers, got {}",
            v.len()
        )));
    }
    let mut out = [0usize; N];
    for (i, &x) in v.iter().enumerate() {
        out[i] = size(&format!("{name}[{i}]"), x)?;
    }
    Ok(out)
}

/// Fails when an output buffer shares memory with an input: kernels read inputs while writing
/// outputs, so aliasing would give wrong answers (and is undefined behaviour in Rust).
pub fn check_disjoint(
    out_name: &str,
    out: &Float32Array,
    inputs: &[(&str, &Float32Array)],
) -> napi::Result<()> {
    let o = out.as_ptr_range();
    let o = (o.start as usize, o.end as usize);
    for (name, inp) in inputs {
        let r = inp.as_ptr_range();
        let r = (r.start as usize, r.end as usize);
        // Empty views hold no memory (and get a length error from the kernel instead).
        if o.0 < o.1 && r.0 < r.1 && o.0 < r.1 && r.0 < o.1 {
            return Err(invalid(format!(
                "{out_name}: must not share memory with {name}"
            )));
        }
    }
    Ok(())
}
