//! Which kernel set runs ([`KernelSet`], chosen once per process from the CPU and the
//! environment), and the vector kernels of attention and sampling: dot products, weighted sums
//! and the maximum, each with a portable scalar version, an AVX2+FMA version and an AVX-512 one
//! ([`avx512`]). The linears' kernels are in [`crate::panel`].

use std::sync::OnceLock;

/// Set (to anything) to run the portable versions even where AVX2 exists: how the fallback is
/// tested end to end on an AVX2 machine.
pub const NO_SIMD_ENV: &str = "DSV4_NO_SIMD";

/// Set (to anything) to keep to the AVX2 versions where AVX-512 exists: how the two are
/// compared on one machine.
pub const NO_AVX512_ENV: &str = "DSV4_NO_AVX512";

/// Whether the AVX2+FMA versions (with F16C's conversions) can run here and are not switched
/// off by [`NO_SIMD_ENV`] (checked once).
#[inline]
pub fn has_avx2() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        if std::env::var_os(NO_SIMD_ENV).is_some() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether the AVX-512 (F and BW) kernels can run here and are switched off by neither
/// [`NO_SIMD_ENV`] nor [`NO_AVX512_ENV`] (checked once).
#[inline]
pub fn has_avx512() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        if !has_avx2() || std::env::var_os(NO_AVX512_ENV).is_some() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A set of kernels, one per instruction set: which one runs is chosen once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSet {
    /// Plain Rust, any CPU.
    Portable,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 F and BW.
    Avx512,
}

impl KernelSet {
    /// The set this CPU runs (and the environment allows).
    pub fn current() -> Self {
        if has_avx512() {
            Self::Avx512
        } else if has_avx2() {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// The sets this CPU can run (the environment's switches included), slowest first.
    pub fn available() -> Vec<Self> {
        let mut sets = vec![Self::Portable];
        if has_avx2() {
            sets.push(Self::Avx2);
        }
        if has_avx512() {
            sets.push(Self::Avx512);
        }
        sets
    }

    /// Whether this CPU can run the set (and the environment allows it).
    pub fn is_available(self) -> bool {
        match self {
            Self::Portable => true,
            Self::Avx2 => has_avx2(),
            Self::Avx512 => has_avx512(),
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "AVX-512",
            Self::Avx2 => "AVX2+FMA",
            Self::Portable => "portable",
        }
    }
}

/// The instruction set the kernels run with here, for reports (`dsv4 bench` prints it): the
/// speed of every kernel depends on it.
pub fn kernel_instruction_set() -> &'static str {
    KernelSet::current().name()
}

pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx512;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

/// Σ a·b.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && a.len() == b.len() {
        // SAFETY: the instruction sets were detected; the slices have equal lengths.
        return unsafe {
            if has_avx512() {
                avx512::dot_f32_at(a.as_ptr(), b)
            } else {
                avx2::dot_f32(a, b)
            }
        };
    }
    scalar::dot_f32(a, b)
}

/// The largest value of `x`, NaN never winning a comparison; −∞ when there is none (greedy
/// sampling scans the whole vocabulary every step).
pub fn max_f32(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the instruction sets were detected.
        return unsafe {
            if has_avx512() {
                avx512::max_f32(x)
            } else {
                avx2::max_f32(x)
            }
        };
    }
    scalar::max_f32(x)
}

/// `wₖ · xᵣ` for `K` rows of equal length against four vectors of at least that length.
#[inline]
pub fn dots4<const K: usize>(w: [&[f32]; K], x: [&[f32]; 4]) -> [[f32; 4]; K] {
    let n = w.first().map_or(0, |r| r.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.iter().all(|r| r.len() == n) && x.iter().all(|r| r.len() >= n) {
        // SAFETY: the instruction sets were detected; the rows share a length every vector
        // reaches.
        return unsafe {
            if has_avx512() {
                avx512::dots4(w, x)
            } else {
                avx2::dots4(w, x)
            }
        };
    }
    w.map(|row| x.map(|r| scalar::dot_f32(row, r)))
}

/// `out[h] = Σⱼ weights[h][j] · row(j)` over `n` rows for each head `h`: `weights` is `H × n`,
/// `out` is `H × d`, every row at least `d` long. Attention's weighted sum of values: four heads
/// per pass over the rows where the CPU allows, so each row block is read once per four heads.
pub fn weighted_sums<'r>(
    row: impl Fn(usize) -> &'r [f32] + Copy,
    n: usize,
    weights: &[f32],
    out: &mut [f32],
) {
    let heads = weights.len().checked_div(n).unwrap_or(0);
    if heads == 0 {
        out.fill(0.0);
        return;
    }
    let d = out.len() / heads;
    let mut outs = out.chunks_mut(d);
    let mut ws = weights.chunks(n);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        let wide = has_avx512();
        for _ in 0..heads / 4 {
            let (Some(o0), Some(o1), Some(o2), Some(o3)) =
                (outs.next(), outs.next(), outs.next(), outs.next())
            else {
                break;
            };
            let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (ws.next(), ws.next(), ws.next(), ws.next())
            else {
                break;
            };
            let (w, o) = ([w0, w1, w2, w3], [o0, o1, o2, o3]);
            // SAFETY: the instruction sets were detected; rows are sliced (bounds-checked) per
            // block.
            unsafe {
                if wide {
                    avx512::weighted_sum4(row, w, o)
                } else {
                    avx2::weighted_sum4(row, w, o)
                }
            };
        }
        for (w, o) in ws.zip(outs) {
            // SAFETY: as above.
            unsafe {
                if wide {
                    avx512::weighted_sum(row, w, o)
                } else {
                    avx2::weighted_sum(row, w, o)
                }
            };
        }
        return;
    }
    for (w, o) in ws.zip(outs) {
        scalar::weighted_sum(row, w, o, 0);
    }
}
