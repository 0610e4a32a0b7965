//! Run-time choice of the SIMD path, and the one mechanism every kernel uses to compile and pick
//! its per-level code.
//!
//! One binary runs on every CPU of its platform: on x86-64 the AVX-512 level where the CPU has
//! AVX-512 (F, VL, BW, DQ), else AVX2+FMA where it has that; the NEON level on aarch64; the
//! portable scalar code otherwise. The AVX-512 level is AVX2+FMA plus hand-written 512-bit
//! kernels where they pay (the SGEMM and indirect-conv tiles, the FMA-peak probe): every kernel
//! without an `avx512` arm runs its AVX2 code there. `FERROCONV_SIMD=scalar` (read once) or
//! [`set_level`] forces the fallback, `FERROCONV_SIMD=avx2` the AVX2 level on an AVX-512 CPU, so
//! tests can check that the paths agree.
//!
//! Inside the crate a kernel never tests the CPU itself. It takes an [`Isa`] (made only by
//! [`isa`], so it always names a level this CPU has) and is written in one of two ways:
//! - [`kernel!`]: one body, compiled once per level inside a `target_feature` wrapper so LLVM
//!   vectorises it for that level. A body that has hand-written intrinsics for some level
//!   declares a type parameter `[T]` and branches on `T::AVX2` (a compile-time constant).
//! - [`dispatch!`]: a `match` on the level for code that has a separate hand-written function per
//!   level (micro-kernels, `exp`).
//!
//! A new level (NEON intrinsics) is a new arm in these two macros and new `T::NEON` branches in
//! the kernels that want it; no call site changes.
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Scalar = 1,
    Avx2Fma = 2,
    Neon = 3,
    Avx512 = 4,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2+fma",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn from_u8(v: u8) -> Option<SimdLevel> {
        match v {
            1 => Some(SimdLevel::Scalar),
            2 => Some(SimdLevel::Avx2Fma),
            3 => Some(SimdLevel::Neon),
            4 => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

const UNSET: u8 = 0;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

/// The best level this CPU supports, ignoring any override.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                return SimdLevel::Avx512;
            }
            return SimdLevel::Avx2Fma;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return SimdLevel::Neon;
        }
    }
    SimdLevel::Scalar
}

/// Every level this CPU can run, the scalar fallback first: what tests loop over. An AVX-512
/// CPU also runs the AVX2+FMA level (what an AVX2-only CPU gets), so tests cover both.
pub fn available() -> Vec<SimdLevel> {
    let mut levels = vec![SimdLevel::Scalar];
    if detected() == SimdLevel::Avx512 {
        levels.push(SimdLevel::Avx2Fma);
    }
    if detected() != SimdLevel::Scalar {
        levels.push(detected());
    }
    levels
}

/// This CPU's name (the x86 brand string; the architecture elsewhere), which the conv
/// autotuner's cache files are kept per.
pub fn cpu_name() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaves 0x80000002-4 hold the brand string where the maximum extended leaf reaches
        // them (CPUID itself exists on every x86-64 CPU).
        let brand = {
            use std::arch::x86_64::__cpuid;
            if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
                let mut bytes = Vec::with_capacity(48);
                for leaf in 0x8000_0002u32..=0x8000_0004 {
                    let r = __cpuid(leaf);
                    for v in [r.eax, r.ebx, r.ecx, r.edx] {
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Some(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                None
            }
        };
        if let Some(b) = brand {
            let name: String = b
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if !name.is_empty() {
                return name;
            }
        }
    }
    format!("{} cpu", std::env::consts::ARCH)
}

/// The level kernels use now.
pub fn level() -> SimdLevel {
    if let Some(lvl) = SimdLevel::from_u8(LEVEL.load(Ordering::Relaxed)) {
        return lvl;
    }
    let forced = std::env::var("FERROCONV_SIMD").ok();
    let lvl = match forced.as_deref() {
        Some("scalar") => SimdLevel::Scalar,
        Some("avx2") | Some("avx2+fma") if available().contains(&SimdLevel::Avx2Fma) => {
            SimdLevel::Avx2Fma
        }
        _ => detected(),
    };
    LEVEL.store(lvl as u8, Ordering::Relaxed);
    lvl
}

/// Forces a level; asking for one the CPU does not have gives the best one it has.
pub fn set_level(requested: SimdLevel) -> SimdLevel {
    let lvl = if available().contains(&requested) {
        requested
    } else {
        detected()
    };
    LEVEL.store(lvl as u8, Ordering::Relaxed);
    lvl
}

/// Which int8 kernels run (see `quant`'s documentation): the portable ones, AVX2's (16-bit
/// `vpmaddwd`), AVX-512 VNNI's (`vpdpbusd`, an extra x86-64 level used by the int8 kernels
/// alone), or NEON's (16-bit `smlal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Path {
    Scalar,
    Avx2,
    Vnni,
    Neon,
}

impl Int8Path {
    pub fn name(self) -> &'static str {
        match self {
            Int8Path::Scalar => "scalar",
            Int8Path::Avx2 => "avx2 (16-bit vpmaddwd)",
            Int8Path::Vnni => "avx512-vnni (vpdpbusd)",
            Int8Path::Neon => "neon (16-bit smlal)",
        }
    }
}

static VNNI_ALLOWED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn vnni_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The int8 path kernels use now: the SIMD level's (scalar when it is forced to scalar), and
/// VNNI on top of AVX2 when the CPU has it and [`set_int8_vnni`] has not turned it off.
pub fn int8_path() -> Int8Path {
    match level() {
        SimdLevel::Avx2Fma | SimdLevel::Avx512
            if VNNI_ALLOWED.load(Ordering::Relaxed) && vnni_detected() =>
        {
            Int8Path::Vnni
        }
        SimdLevel::Avx2Fma | SimdLevel::Avx512 => Int8Path::Avx2,
        SimdLevel::Neon => Int8Path::Neon,
        _ => Int8Path::Scalar,
    }
}

/// Allows or forbids the VNNI path (tests use it to reach the AVX2 path on a VNNI CPU); returns
/// the previous setting.
pub fn set_int8_vnni(allowed: bool) -> bool {
    VNNI_ALLOWED.swap(allowed, Ordering::Relaxed)
}

/// A SIMD level this CPU has. Only [`isa`] makes one, which is what makes the `unsafe` calls
/// into `target_feature` code in [`kernel!`] and [`dispatch!`] sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isa(SimdLevel);

impl Isa {
    #[inline]
    pub(crate) fn level(self) -> SimdLevel {
        self.0
    }
}

/// The level kernels use now, as a token kernels can dispatch on.
#[inline]
pub(crate) fn isa() -> Isa {
    Isa(level())
}

/// The level a [`kernel!`] body is compiled for, as a type, so `if T::AVX2 { ... }` is decided
/// at compile time inside the body. Each architecture uses only its own level's constant and
/// marker, hence the `dead_code` allowances.
#[allow(dead_code)]
pub(crate) trait Target {
    const LEVEL: SimdLevel;
    const AVX2: bool = matches!(Self::LEVEL, SimdLevel::Avx2Fma | SimdLevel::Avx512);
    const NEON: bool = matches!(Self::LEVEL, SimdLevel::Neon);
}

pub(crate) struct Scalar;
#[allow(dead_code)]
pub(crate) struct Avx2;
#[allow(dead_code)]
pub(crate) struct Neon;

impl Target for Scalar {
    const LEVEL: SimdLevel = SimdLevel::Scalar;
}
impl Target for Avx2 {
    const LEVEL: SimdLevel = SimdLevel::Avx2Fma;
}
impl Target for Neon {
    const LEVEL: SimdLevel = SimdLevel::Neon;
}

/// Defines `fn name(isa: Isa, args..)` whose body is compiled once per SIMD level, each inside
/// a `target_feature` wrapper where LLVM's vectoriser uses that level's registers, and picked by
/// `isa` at run time. Written `fn name(..)` for bodies the compiler vectorises by itself, or
/// `fn name<[T], const C: ty, ..>(..)` when the body branches on `T::AVX2` / `T::NEON` to reach
/// hand-written intrinsics (and takes the listed const generics along). `unsafe fn` kernels
/// keep their contract: the generated function is `unsafe` too.
macro_rules! kernel {
    (@gen [$(#[$m:meta])*] $vis:vis [$($u:tt)?] $name:ident [$t:ident] [$($c:ident : $ct:ty),*]
        ($($arg:ident : $ty:ty),*) [$($ret:ty)?] $body:block) => {
        $(#[$m])*
        #[allow(unused_variables, unused_unsafe, clippy::too_many_arguments)]
        $vis $($u)? fn $name<$(const $c: $ct),*>(isa: $crate::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            $($u)? fn body<$t: $crate::simd::Target, $(const $c: $ct),*>($($arg: $ty),*) $(-> $ret)?
                $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$(const $c: $ct),*>($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::Avx2, $($c),*>($($arg),*)
            }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn neon<$(const $c: $ct),*>($($arg: $ty),*) $(-> $ret)? {
                body::<$crate::simd::Neon, $($c),*>($($arg),*)
            }
            match isa.level() {
                // SAFETY: an Isa is made only by simd::isa(), which gives levels the CPU has (and
                // an `unsafe fn` kernel's caller upholds its contract, which `body` inherits).
                // (The AVX-512 level runs the AVX2 build of a `kernel!` body.)
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx2Fma | $crate::simd::SimdLevel::Avx512 => unsafe {
                    avx2::<$($c),*>($($arg),*)
                },
                // SAFETY: as above.
                #[cfg(target_arch = "aarch64")]
                $crate::simd::SimdLevel::Neon => unsafe { neon::<$($c),*>($($arg),*) },
                // SAFETY: as above.
                _ => unsafe { body::<$crate::simd::Scalar, $($c),*>($($arg),*) },
            }
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$(const $c:ident : $ct:ty),+ $(,)?>)?
        ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd::kernel!(@gen [$(#[$m])*] $vis [] $name [_Level] [$($($c : $ct),+)?]
            ($($arg : $ty),*) [$($ret)?] $body);
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident <[$t:ident] $(, const $c:ident : $ct:ty)* $(,)?>
        ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd::kernel!(@gen [$(#[$m])*] $vis [] $name [$t] [$($c : $ct),*]
            ($($arg : $ty),*) [$($ret)?] $body);
    };
    ($(#[$m:meta])* $vis:vis unsafe fn $name:ident $(<$(const $c:ident : $ct:ty),+ $(,)?>)?
        ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd::kernel!(@gen [$(#[$m])*] $vis [unsafe] $name [_Level] [$($($c : $ct),+)?]
            ($($arg : $ty),*) [$($ret)?] $body);
    };
    ($(#[$m:meta])* $vis:vis unsafe fn $name:ident <[$t:ident] $(, const $c:ident : $ct:ty)* $(,)?>
        ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd::kernel!(@gen [$(#[$m])*] $vis [unsafe] $name [$t] [$($c : $ct),*]
            ($($arg : $ty),*) [$($ret)?] $body);
    };
}
pub(crate) use kernel;

/// `dispatch!(isa, avx2 => expr, _ => expr)`: evaluates the arm for the level `isa` names. The
/// `avx2` arm is compiled only on x86-64 and may call `target_feature(enable = "avx2,fma")`
/// functions in an `unsafe` block (sound: an [`Isa`] only names levels the CPU has). An
/// `avx512 =>` arm before it may call `target_feature(enable = "avx512f,avx512vl,avx512bw,
/// avx512dq,avx2,fma")` functions; without one, the AVX-512 level takes the `avx2` arm. A
/// `neon =>` arm slots in the same way on aarch64; levels without an arm take `_`.
macro_rules! dispatch {
    ($isa:expr, $(avx512 => $avx512:expr,)? avx2 => $avx:expr, $(neon => $neon:expr,)? _ => $other:expr $(,)?) => {
        match $isa.level() {
            $(
                #[cfg(target_arch = "x86_64")]
                $crate::simd::SimdLevel::Avx512 => $avx512,
            )?
            // Unreachable for the AVX-512 level when an `avx512` arm came first.
            #[cfg(target_arch = "x86_64")]
            #[allow(unreachable_patterns)]
            $crate::simd::SimdLevel::Avx2Fma | $crate::simd::SimdLevel::Avx512 => $avx,
            $(
                #[cfg(target_arch = "aarch64")]
                $crate::simd::SimdLevel::Neon => $neon,
            )?
            _ => $other,
        }
    };
}
pub(crate) use dispatch;
