//! The thread pool every kernel runs in, and `info()`. One rayon pool for the process, sized from
//! `FERROCONV_NUM_THREADS` or the number of cores; `setNumThreads` swaps it for another size.
use crate::args::check_disjoint;
use crate::args::{invalid, size};
use ferroconv_kernels::scratch::OutOfMemory;
use ferroconv_kernels::{conv, simd};
use napi::bindgen_prelude::Float32Array;
use napi::{Error, Status};
use napi_derive::napi;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Once, OnceLock, RwLock};

static POOL: OnceLock<RwLock<Arc<ThreadPool>>> = OnceLock::new();

fn build_pool(threads: usize) -> napi::Result<Arc<ThreadPool>> {
    static TUNED: Once = Once::new();
    TUNED.call_once(tune_allocator);
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ferroconv-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| invalid(format!("thread pool: {e}")))
}

fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var("FERROCONV_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
    {
        Some(n) if n > 0 => n,
        _ => cores,
    }
}

/// Tensor buffers are Float32Arrays that V8 gets from calloc. glibc serves blocks above its
/// dynamic mmap threshold with fresh mmaps and trims the heap top back to the OS at 2x that
/// threshold, so a training step that frees and reallocates hundreds of MB of activations and
/// gradients page-faults every one of them in again (a large share of a ResNet-18 training step's
/// CPU time went to the kernel; README, FERROCONV_MALLOC_TUNE). Serving blocks up to 32 MiB
/// from the heap and keeping up to 256 MiB of free heap top lets the next step reuse the pages.
/// Peak RSS is unchanged (the pages were in use at the peak anyway). Opt out with
/// `FERROCONV_MALLOC_TUNE=0`.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("FERROCONV_MALLOC_TUNE").is_ok_and(|v| v.trim() == "0") {
            return;
        }
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        // SAFETY: mallopt only adjusts glibc's allocator parameters under its own lock; both
        // values are within the documented ranges. A failure (returns 0) leaves the defaults.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}

pub(crate) fn pool() -> napi::Result<Arc<ThreadPool>> {
    if let Some(lock) = POOL.get() {
        return Ok(lock
            .read()
            .map_err(|_| invalid("thread pool lock poisoned"))?
            .clone());
    }
    let fresh = build_pool(default_threads())?;
    let lock = POOL.get_or_init(|| RwLock::new(fresh));
    Ok(lock
        .read()
        .map_err(|_| invalid("thread pool lock poisoned"))?
        .clone())
}

/// Runs `f` on ferroconv's pool, so rayon loops inside the kernels use its threads. A panic
/// inside (a kernel bug, or scratch the allocator refused) comes back as an Error that starts
/// with `op`, the JavaScript name of the entry; the process goes on and nothing is printed.
pub fn run<T: Send>(op: &str, f: impl FnOnce() -> T + Send) -> napi::Result<T> {
    let pool = pool()?;
    std::panic::catch_unwind(AssertUnwindSafe(|| pool.install(f)))
        .map_err(|payload| Error::new(Status::GenericFailure, panic_message(op, payload)))
}

/// Runs `f` here (already on a kernel thread), turning a panic into an Error as [`run`] does.
pub(crate) fn caught<T>(op: &str, f: impl FnOnce() -> T) -> napi::Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|payload| Error::new(Status::GenericFailure, panic_message(op, payload)))
}

/// Runs kernel `op` on the kernel pool writing into `out` (named `out_name` in errors), after
/// checking that it shares no memory with `inputs`: the one place a JavaScript output array
/// becomes a `&mut [f32]` for a single-output kernel.
pub fn write_into<R: Send>(
    op: &str,
    out: (&str, &mut Float32Array),
    inputs: &[(&str, &Float32Array)],
    kernel: impl FnOnce(&mut [f32]) -> ferroconv_kernels::Result<R> + Send,
) -> napi::Result<R> {
    write_into_pair(op, out, ("", None), inputs, |y, _| kernel(y))
}

/// [`write_into`] for a kernel with a second, optional output (a bias gradient beside the
/// weight gradient): each output is checked disjoint from `inputs` and from the other.
pub fn write_into_pair<R: Send>(
    op: &str,
    (out_name, out): (&str, &mut Float32Array),
    (second_name, second): (&str, Option<&mut Float32Array>),
    inputs: &[(&str, &Float32Array)],
    kernel: impl FnOnce(&mut [f32], Option<&mut [f32]>) -> ferroconv_kernels::Result<R> + Send,
) -> napi::Result<R> {
    check_disjoint(out_name, out, inputs)?;
    if let Some(o) = &second {
        check_disjoint(second_name, o, inputs)?;
        check_disjoint(second_name, o, &[(out_name, out)])?;
    }
    // SAFETY: the outputs are disjoint from every input and from each other (checked above), and
    // the JavaScript thread is blocked in this call, so nothing else touches the buffers while
    // the kernel writes them.
    let y = unsafe { out.as_mut() };
    let y2 = second.map(|o| unsafe { o.as_mut() });
    run(op, || kernel(y, y2))?.map_err(crate::args::kernel_err)
}

/// The named buffers that were passed (optional arguments left out), for the disjointness checks.
pub fn given<'a>(bufs: &[(&'a str, Option<&'a Float32Array>)]) -> Vec<(&'a str, &'a Float32Array)> {
    bufs.iter()
        .filter_map(|&(name, b)| Some((name, b?)))
        .collect()
}

/// The Error message for a caught panic: out of memory says so; anything else is a bug.
fn panic_message(op: &str, payload: Box<dyn Any + Send>) -> String {
    if let Some(oom) = payload.downcast_ref::<OutOfMemory>() {
        return format!("{op}: {oom}");
    }
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!(
        "{op}: internal error in ferroconv's native code ({what}); the process is unharmed, \
         please report this with the shapes and options of the call"
    )
}

/// Panics are caught at every entry ([`run`], and napi's `catch_unwind` around argument
/// conversion) and returned to JavaScript as Errors, so the default hook's message and backtrace
/// on stderr would only alarm users of a process that is fine. `FERROCONV_DEBUG_PANICS=1` keeps
/// the default hook for debugging ferroconv itself.
#[napi_derive::module_init]
fn quiet_panics() {
    init_tuning();
    if std::env::var("FERROCONV_DEBUG_PANICS").is_ok_and(|v| v.trim() == "1") {
        return;
    }
    std::panic::set_hook(Box::new(|_| {}));
}

/// Why `FERROCONV_TUNE_CACHE` could not be used, if it could not (shown by `nativeInfo`: a
/// module's load cannot throw).
static TUNE_CACHE_ERROR: OnceLock<String> = OnceLock::new();

/// `auto` conv choices are tuned per shape unless `FERROCONV_DETERMINISTIC=1`;
/// `FERROCONV_TUNE_CACHE` names a file the choices persist in.
fn init_tuning() {
    let deterministic = std::env::var("FERROCONV_DETERMINISTIC").is_ok_and(|v| v.trim() == "1");
    conv::tune::set_enabled(!deterministic);
    if let Some(path) = std::env::var_os("FERROCONV_TUNE_CACHE").filter(|p| !p.is_empty()) {
        if let Err(e) = conv::tune::set_cache_file(Some(std::path::Path::new(&path))) {
            let _ = TUNE_CACHE_ERROR.set(e.0);
        }
    }
}

/// Replaces the pool with one of `threads` threads (1..=1024).
#[napi(catch_unwind)]
pub fn set_num_threads(threads: f64) -> napi::Result<()> {
    let n = size("threads", threads)?;
    if n == 0 || n > 1024 {
        return Err(invalid(format!("threads: expected 1..1024, got {threads}")));
    }
    let fresh = build_pool(n)?;
    let lock = POOL.get_or_init(|| RwLock::new(fresh.clone()));
    *lock
        .write()
        .map_err(|_| invalid("thread pool lock poisoned"))? = fresh;
    Ok(())
}

/// Forces the scalar path (`'scalar'`), a level below the best (`'avx2+fma'` on an AVX-512
/// CPU), or returns to the best one the CPU has (`'auto'`); a level the CPU lacks gives the best
/// it has. Returns the level now in use.
#[napi(catch_unwind)]
pub fn set_simd(level: String) -> napi::Result<String> {
    let lvl = match level.as_str() {
        "scalar" => simd::SimdLevel::Scalar,
        "auto" => simd::detected(),
        "avx2+fma" => simd::SimdLevel::Avx2Fma,
        "avx512" => simd::SimdLevel::Avx512,
        "neon" => simd::SimdLevel::Neon,
        other => {
            return Err(invalid(format!(
                "level: expected 'auto', 'scalar', 'avx2+fma', 'avx512' or 'neon', got '{other}'"
            )))
        }
    };
    Ok(simd::set_level(lvl).name().to_string())
}

#[napi(object)]
pub struct NativeInfo {
    /// Threads in the kernel pool.
    pub threads: u32,
    /// SIMD path in use: 'avx512', 'avx2+fma', 'neon' or 'scalar'.
    pub simd: String,
    /// Best SIMD path this CPU supports.
    pub simd_detected: String,
    /// Version of the native addon.
    pub version: String,
    pub arch: String,
    pub os: String,
    /// The CPU's name (its brand string on x86-64), which tuning cache entries are kept for.
    pub cpu: String,
    /// Whether `auto` follows fixed rules (true) or tunes per shape (false).
    pub deterministic_algos: bool,
    /// The tuning cache file in use, if any.
    pub tune_cache: Option<String>,
    /// Why `FERROCONV_TUNE_CACHE` could not be used, if it could not.
    pub tune_cache_error: Option<String>,
}

#[napi(catch_unwind)]
pub fn native_info() -> napi::Result<NativeInfo> {
    Ok(NativeInfo {
        threads: pool()?.current_num_threads() as u32,
        simd: simd::level().name().to_string(),
        simd_detected: simd::detected().name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        arch: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
        cpu: simd::cpu_name(),
        deterministic_algos: !conv::tune::enabled(),
        tune_cache: conv::tune::cache_file().map(|p| p.display().to_string()),
        tune_cache_error: TUNE_CACHE_ERROR.get().cloned(),
    })
}
