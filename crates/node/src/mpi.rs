//! MPI for data-parallel training: the handful of calls ferroconv needs (init, rank and size,
//! all-reduce, broadcast, barrier, finalize), from Open MPI's libmpi loaded at run time with
//! dlopen. Loading it lazily, rather than linking it, is what keeps the addon loadable on every
//! machine without MPI: single-process use never touches this file. Only Open MPI's ABI is
//! spoken (its predefined handles are the addresses of exported globals such as
//! `ompi_mpi_comm_world`; MPICH's are integer constants): a libmpi without those symbols is
//! refused with an Error saying so.
//!
//! Collectives block until every rank joins, so they run on a thread of their own, never on the
//! JavaScript thread; one lock serialises them (MPI_THREAD_SERIALIZED), in call order.
use crate::args::invalid;
use napi::bindgen_prelude::{Float32Array, Object};
use napi::Env;
use napi_derive::napi;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Handle = *mut c_void;
type InitThread = unsafe extern "C" fn(*mut c_int, *mut c_void, c_int, *mut c_int) -> c_int;
type CommQuery = unsafe extern "C" fn(Handle, *mut c_int) -> c_int;
type Allreduce =
    unsafe extern "C" fn(*const c_void, *mut c_void, c_int, Handle, Handle, Handle) -> c_int;
type Bcast = unsafe extern "C" fn(*mut c_void, c_int, Handle, c_int, Handle) -> c_int;
type Iallreduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    c_int,
    Handle,
    Handle,
    Handle,
    *mut Handle,
) -> c_int;
type Test = unsafe extern "C" fn(*mut Handle, *mut c_int, *mut c_void) -> c_int;
type Barrier = unsafe extern "C" fn(Handle) -> c_int;
type Finalize = unsafe extern "C" fn() -> c_int;

/// Open MPI's MPI_IN_PLACE (mpi.h: `#define MPI_IN_PLACE ((void *) 1)`; a dangling c_void pointer is address 1).
const IN_PLACE: *const c_void = std::ptr::dangling::<c_void>();
/// MPI_THREAD_SERIALIZED: calls from any thread, one at a time (the lock below).
const THREAD_SERIALIZED: c_int = 2;
/// The most elements one call moves (MPI counts are C ints); larger buffers go in pieces.
const MAX_COUNT: usize = 1 << 30;

struct Mpi {
    /// Kept loaded for the process's life (the function pointers point into it).
    _lib: libloading::Library,
    library: String,
    world: Handle,
    float: Handle,
    /// MPI_SUM, MPI_MAX, MPI_MIN.
    ops: [Handle; 3],
    allreduce: Allreduce,
    iallreduce: Iallreduce,
    test: Test,
    bcast: Bcast,
    barrier: Barrier,
    finalize: Finalize,
    rank: i32,
    size: i32,
}

// SAFETY: the handles are addresses of libmpi's static predefined objects, valid for the whole
// process and only passed back to libmpi; calls are serialised by CALLS.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

static MPI: OnceLock<Result<Mpi, String>> = OnceLock::new();
static CALLS: Mutex<bool> = Mutex::new(false); // true once finalized
/// Set when a blocking all-reduce gave up waiting: its request is still pending inside MPI, so
/// no later call may start (their messages would mix) and MPI_Finalize would wait forever.
static STUCK: AtomicBool = AtomicBool::new(false);

fn candidates() -> Vec<String> {
    if let Ok(path) = std::env::var("FERROCONV_MPI_LIBRARY") {
        return vec![path];
    }
    if cfg!(target_os = "macos") {
        vec!["libmpi.40.dylib".into(), "libmpi.dylib".into()]
    } else {
        vec!["libmpi.so.40".into(), "libmpi.so".into()]
    }
}

#[cfg(unix)]
fn open(name: &str) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // RTLD_GLOBAL: Open MPI's components (dlopened by libmpi) resolve their symbols in it.
    unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) }.map(Into::into)
}

#[cfg(not(unix))]
fn open(name: &str) -> Result<libloading::Library, libloading::Error> {
    unsafe { libloading::Library::new(name) }
}

fn load() -> Result<Mpi, String> {
    let mut tried = Vec::new();
    let (lib, library) = candidates()
        .into_iter()
        .find_map(|name| match open(&name) {
            Ok(lib) => Some((lib, name)),
            Err(e) => {
                tried.push(format!("{name}: {e}"));
                None
            }
        })
        .ok_or_else(|| {
            format!(
                "MPI: cannot load Open MPI's libmpi (install Open MPI, e.g. apt-get install \
                 openmpi-bin, or set FERROCONV_MPI_LIBRARY): {}",
                tried.join("; ")
            )
        })?;
    // SAFETY: each symbol is read with the type Open MPI's mpi.h gives it.
    unsafe {
        // A predefined handle is the address of a global: Symbol<*mut T> derefs to that address.
        let handle = |name: &[u8]| -> Result<Handle, String> {
            lib.get::<*mut c_void>(name).map(|s| *s).map_err(|_| {
                format!(
                    "MPI: {library} is not Open MPI's libmpi (it has no {}); only Open MPI is supported",
                    String::from_utf8_lossy(&name[..name.len() - 1])
                )
            })
        };
        let world = handle(b"ompi_mpi_comm_world\0")?;
        let float = handle(b"ompi_mpi_float\0")?;
        let ops = [
            handle(b"ompi_mpi_op_sum\0")?,
            handle(b"ompi_mpi_op_max\0")?,
            handle(b"ompi_mpi_op_min\0")?,
        ];
        fn func<T: Copy>(
            lib: &libloading::Library,
            library: &str,
            name: &[u8],
        ) -> Result<T, String> {
            // SAFETY: T is the function's type as mpi.h declares it (checked by the callers).
            unsafe { lib.get::<T>(name) }
                .map(|s| *s)
                .map_err(|e| format!("MPI: {library}: {e}"))
        }
        let init_thread: InitThread = func(&lib, &library, b"MPI_Init_thread\0")?;
        let comm_rank: CommQuery = func(&lib, &library, b"MPI_Comm_rank\0")?;
        let comm_size: CommQuery = func(&lib, &library, b"MPI_Comm_size\0")?;
        let allreduce: Allreduce = func(&lib, &library, b"MPI_Allreduce\0")?;
        let iallreduce: Iallreduce = func(&lib, &library, b"MPI_Iallreduce\0")?;
        let test: Test = func(&lib, &library, b"MPI_Test\0")?;
        let bcast: Bcast = func(&lib, &library, b"MPI_Bcast\0")?;
        let barrier: Barrier = func(&lib, &library, b"MPI_Barrier\0")?;
        let finalize: Finalize = func(&lib, &library, b"MPI_Finalize\0")?;
        let mut provided: c_int = 0;
        let rc = init_thread(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            THREAD_SERIALIZED,
            &mut provided,
        );
        if rc != 0 {
            return Err(format!("MPI: MPI_Init_thread failed (error {rc})"));
        }
        if provided < THREAD_SERIALIZED {
            return Err(format!(
                "MPI: the library gives thread level {provided}, ferroconv needs \
                 MPI_THREAD_SERIALIZED ({THREAD_SERIALIZED})"
            ));
        }
        let (mut rank, mut size) = (0, 0);
        if comm_rank(world, &mut rank) != 0 || comm_size(world, &mut size) != 0 {
            return Err("MPI: cannot read the rank and size of MPI_COMM_WORLD".into());
        }
        Ok(Mpi {
            _lib: lib,
            library,
            world,
            float,
            ops,
            allreduce,
            iallreduce,
            test,
            bcast,
            barrier,
            finalize,
            rank,
            size,
        })
    }
}

fn mpi() -> napi::Result<&'static Mpi> {
    MPI.get_or_init(load)
        .as_ref()
        .map_err(|e| invalid(e.clone()))
}

#[napi(object)]
pub struct MpiWorld {
    pub rank: i32,
    pub size: i32,
    /// The libmpi loaded.
    pub library: String,
}

/// Loads Open MPI's libmpi and initialises MPI (once per process): this process's rank and the
/// world's size. An Error when libmpi is absent or not Open MPI's.
#[napi(catch_unwind, js_name = "mpiInit")]
pub fn mpi_init() -> napi::Result<MpiWorld> {
    let m = mpi()?;
    Ok(MpiWorld {
        rank: m.rank,
        size: m.size,
        library: m.library.clone(),
    })
}

/// An element-wise reduction over the ranks.
#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    Sum,
    Max,
    Min,
    /// The sum divided by the world's size.
    Mean,
}

impl Reduce {
    /// The MPI_Op handle (the mean is a sum, divided afterwards).
    fn handle(self, m: &Mpi) -> Handle {
        match self {
            Reduce::Sum | Reduce::Mean => m.ops[0],
            Reduce::Max => m.ops[1],
            Reduce::Min => m.ops[2],
        }
    }
}

/// The arrays end to end in one buffer: one collective per MAX_COUNT elements, not per array.
fn gather(arrays: &[Float32Array]) -> Result<Vec<f32>, String> {
    let total: usize = arrays.iter().map(|a| a.len()).sum();
    let mut bucket: Vec<f32> = Vec::new();
    bucket
        .try_reserve_exact(total)
        .map_err(|_| format!("MPI: cannot allocate {total} floats"))?;
    for a in arrays {
        bucket.extend_from_slice(a);
    }
    Ok(bucket)
}

/// Writes the reduced bucket back into the arrays (divided by the world's size for a mean).
///
/// # Safety
/// Nothing else reads or writes the arrays meanwhile (JavaScript waits for the call).
unsafe fn scatter(m: &Mpi, op: Option<Reduce>, mut bucket: Vec<f32>, arrays: &mut [Float32Array]) {
    if op == Some(Reduce::Mean) {
        let scale = 1.0 / m.size as f32;
        for v in bucket.iter_mut() {
            *v *= scale;
        }
    }
    let mut at = 0;
    for a in arrays.iter_mut() {
        let n = a.len();
        a.as_mut().copy_from_slice(&bucket[at..at + n]);
        at += n;
    }
}

/// What one collective does, run on its own thread with CALLS held.
enum Collective {
    Allreduce(Reduce),
    Broadcast(i32),
    Barrier,
}

fn run(m: &Mpi, what: &Collective, arrays: &mut [Float32Array]) -> Result<(), String> {
    let done = CALLS
        .lock()
        .map_err(|_| "MPI: a previous call panicked".to_string())?;
    if *done {
        return Err("MPI: already finalized".into());
    }
    if STUCK.load(Ordering::SeqCst) {
        return Err("MPI: an earlier all-reduce timed out".into());
    }
    let check = |rc: c_int, name: &str| {
        if rc == 0 {
            Ok(())
        } else {
            Err(format!("MPI: {name} failed (error {rc})"))
        }
    };
    match what {
        Collective::Barrier => check(unsafe { (m.barrier)(m.world) }, "MPI_Barrier"),
        Collective::Allreduce(_) | Collective::Broadcast(_) => {
            let mut bucket = gather(arrays)?;
            for piece in bucket.chunks_mut(MAX_COUNT) {
                let n = piece.len() as c_int;
                let rc = match what {
                    Collective::Allreduce(op) => unsafe {
                        (m.allreduce)(
                            IN_PLACE,
                            piece.as_mut_ptr().cast(),
                            n,
                            m.float,
                            op.handle(m),
                            m.world,
                        )
                    },
                    Collective::Broadcast(root) => unsafe {
                        (m.bcast)(piece.as_mut_ptr().cast(), n, m.float, *root, m.world)
                    },
                    Collective::Barrier => 0,
                };
                check(
                    rc,
                    if matches!(what, Collective::Allreduce(_)) {
                        "MPI_Allreduce"
                    } else {
                        "MPI_Bcast"
                    },
                )?;
            }
            let op = match what {
                Collective::Allreduce(op) => Some(*op),
                _ => None,
            };
            // SAFETY: the TypeScript side neither reads nor writes these arrays until the
            // promise settles; the napi references keep them alive.
            unsafe { scatter(m, op, bucket, arrays) };
            Ok(())
        }
    }
}

fn spawn<'env>(
    env: &'env Env,
    what: Collective,
    mut arrays: Vec<Float32Array>,
) -> napi::Result<Object<'env>> {
    let m = mpi()?;
    let (deferred, promise) = env.create_deferred::<(), fn(Env) -> napi::Result<()>>()?;
    std::thread::Builder::new()
        .name("ferroconv-mpi".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(m, &what, &mut arrays)
            }));
            match r {
                Ok(Ok(())) => deferred.resolve(|_| Ok(())),
                Ok(Err(e)) => deferred.reject(invalid(e)),
                Err(_) => deferred.reject(invalid("MPI: the collective panicked")),
            }
            drop(arrays);
        })
        .map_err(|e| invalid(format!("MPI: cannot start a thread: {e}")))?;
    Ok(promise)
}

/// Every array replaced, element by element, by its `op` ('sum', 'mean', 'max' or 'min') over
/// the ranks, as one bucketed MPI_Allreduce off the JavaScript thread. Every rank must pass
/// arrays of the same lengths.
#[napi(
    catch_unwind,
    js_name = "mpiAllreduce",
    ts_return_type = "Promise<void>"
)]
pub fn mpi_allreduce<'env>(
    env: &'env Env,
    arrays: Vec<Float32Array>,
    op: String,
) -> napi::Result<Object<'env>> {
    let op = reduce_op("mpiAllreduce", &op)?;
    spawn(env, Collective::Allreduce(op), arrays)
}

/// Every array replaced by rank `root`'s, as one bucketed MPI_Bcast off the JavaScript thread.
#[napi(
    catch_unwind,
    js_name = "mpiBroadcast",
    ts_return_type = "Promise<void>"
)]
pub fn mpi_broadcast(env: &Env, arrays: Vec<Float32Array>, root: i32) -> napi::Result<Object<'_>> {
    let m = mpi()?;
    if root < 0 || root >= m.size {
        return Err(invalid(format!(
            "mpiBroadcast: root must be a rank in [0, {}), got {root}",
            m.size
        )));
    }
    spawn(env, Collective::Broadcast(root), arrays)
}

/// Resolves when every rank has called it.
#[napi(catch_unwind, js_name = "mpiBarrier", ts_return_type = "Promise<void>")]
pub fn mpi_barrier(env: &Env) -> napi::Result<Object<'_>> {
    spawn(env, Collective::Barrier, Vec::new())
}

/// Ends MPI for this process (at exit); later collectives fail. Does nothing if MPI never
/// started, and returns false without waiting when a collective is still under way (one that
/// timed out, waiting for a rank that is gone): MPI_Finalize would wait for it forever, and
/// the launcher ends the job of a process that exits without it.
#[napi(catch_unwind, js_name = "mpiFinalize")]
pub fn mpi_finalize() -> bool {
    let Some(Ok(m)) = MPI.get() else {
        return true;
    };
    let Ok(mut done) = CALLS.try_lock() else {
        return false;
    };
    if STUCK.load(Ordering::SeqCst) {
        return false;
    }
    if !*done {
        *done = true;
        unsafe { (m.finalize)() };
    }
    true
}

/// Parses an all-reduce's `op` argument.
fn reduce_op(who: &str, op: &str) -> napi::Result<Reduce> {
    Ok(match op {
        "sum" => Reduce::Sum,
        "mean" => Reduce::Mean,
        "max" => Reduce::Max,
        "min" => Reduce::Min,
        _ => {
            return Err(invalid(format!(
                "{who}: op must be 'sum', 'mean', 'max' or 'min', got '{op}'"
            )))
        }
    })
}

/// The blocking form of mpiAllreduce, for the few floats a collective inside a forward or
/// backward pass needs (synchronized batch norm's statistics): it runs on the calling thread
/// and returns when every rank has joined, or fails after `timeoutMs` milliseconds (an
/// MPI_Iallreduce polled with MPI_Test, so the wait has a limit), after which no further MPI
/// call of this process runs.
#[napi(catch_unwind, js_name = "mpiAllreduceSync")]
pub fn mpi_allreduce_sync(
    mut arrays: Vec<Float32Array>,
    op: String,
    timeout_ms: f64,
) -> napi::Result<()> {
    let op = reduce_op("mpiAllreduceSync", &op)?;
    if !(timeout_ms.is_finite() && timeout_ms > 0.0) {
        return Err(invalid(format!(
            "mpiAllreduceSync: timeoutMs must be a positive number, got {timeout_ms}"
        )));
    }
    let m = mpi()?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_ms / 1000.0);
    // Another collective (an asynchronous one on its thread) may hold the lock for a while.
    let done = loop {
        match CALLS.try_lock() {
            Ok(g) => break g,
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err(invalid("MPI: a previous call panicked"))
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                if Instant::now() > deadline {
                    return Err(invalid(
                        "MPI: all-reduce: another collective of this process did not finish in time",
                    ));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    };
    if *done {
        return Err(invalid("MPI: already finalized"));
    }
    if STUCK.load(Ordering::SeqCst) {
        return Err(invalid("MPI: an earlier all-reduce timed out"));
    }
    let mut bucket = gather(&arrays).map_err(invalid)?;
    let handle = op.handle(m);
    for piece in bucket.chunks_mut(MAX_COUNT) {
        let mut request: Handle = std::ptr::null_mut();
        // SAFETY: as in `run`; `piece` outlives the request (we wait for it or never return to
        // a state that frees it: a timeout marks the process STUCK and leaks the bucket).
        let rc = unsafe {
            (m.iallreduce)(
                IN_PLACE,
                piece.as_mut_ptr().cast(),
                piece.len() as c_int,
                m.float,
                handle,
                m.world,
                &mut request,
            )
        };
        if rc != 0 {
            return Err(invalid(format!("MPI: MPI_Iallreduce failed (error {rc})")));
        }
        loop {
            let mut flag: c_int = 0;
            // MPI_STATUS_IGNORE is a null pointer in Open MPI's mpi.h.
            let rc = unsafe { (m.test)(&mut request, &mut flag, std::ptr::null_mut()) };
            if rc != 0 {
                return Err(invalid(format!("MPI: MPI_Test failed (error {rc})")));
            }
            if flag != 0 {
                break;
            }
            if Instant::now() > deadline {
                STUCK.store(true, Ordering::SeqCst);
                std::mem::forget(bucket);
                return Err(invalid(format!(
                    "MPI: all-reduce did not complete within {} s: another rank has failed, hung or \
                     fallen behind",
                    timeout_ms / 1000.0
                )));
            }
            std::thread::yield_now();
        }
    }
    drop(done);
    // SAFETY: a synchronous call: JavaScript cannot touch the arrays meanwhile.
    unsafe { scatter(m, Some(op), bucket, &mut arrays) };
    Ok(())
}
