//! Run-time choice of the SIMD path. One binary runs on every x86-64 CPU: AVX2+FMA kernels are
//! used when the CPU has them, the portable scalar code otherwise. `FERROCONV_SIMD=scalar` (read
//! once) or [`set_level`] forces the fallback so tests can check that both paths agree.
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Scalar = 1,
    Avx2Fma = 2,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2+fma",
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
            return SimdLevel::Avx2Fma;
        }
    }
    SimdLevel::Scalar
}

/// The level kernels use now.
pub fn level() -> SimdLevel {
    match LEVEL.load(Ordering::Relaxed) {
        1 => SimdLevel::Scalar,
        2 => SimdLevel::Avx2Fma,
        _ => {
            let forced = std::env::var("FERROCONV_SIMD").ok();
            let lvl = match forced.as_deref() {
                Some("scalar") => SimdLevel::Scalar,
                _ => detected(),
            };
            LEVEL.store(lvl as u8, Ordering::Relaxed);
            lvl
        }
    }
}

/// Forces a level; asking for more than the CPU has falls back to what it has.
pub fn set_level(requested: SimdLevel) -> SimdLevel {
    let lvl = if requested == SimdLevel::Avx2Fma {
        detected()
    } else {
        SimdLevel::Scalar
    };
    LEVEL.store(lvl as u8, Ordering::Relaxed);
    lvl
}

/// True when the AVX2+FMA path should run.
#[inline]
pub fn use_avx2() -> bool {
    level() == SimdLevel::Avx2Fma
}
