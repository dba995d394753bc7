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

/// Scalar versions, the reference the SIMD versions are tested against.
pub mod scalar {

    /// Σ a·b.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The largest value of `x`, NaN never winning a comparison; −∞ when there is none.
    pub fn max_f32(x: &[f32]) -> f32 {
        x.iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
    }

    /// `out[i] = Σⱼ weights[j] · row(j)[offset + i]`.
    pub fn weighted_sum<'r>(
        row: impl Fn(usize) -> &'r [f32],
        weights: &[f32],
        out: &mut [f32],
        offset: usize,
    ) {
        out.fill(0.0);
        for (j, &w) in weights.iter().enumerate() {
            for (o, &v) in out.iter_mut().zip(&row(j)[offset..]) {
                *o += w * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// [`super::scalar::max_f32`] in four running maxima of eight lanes. `max(v, m)` returns
    /// `m` unless `v > m`, so NaN never wins here either.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max_f32(x: &[f32]) -> f32 {
        let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
        let mut i = 0;
        while i + 32 <= x.len() {
            for (k, m) in m.iter_mut().enumerate() {
                *m = _mm256_max_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8 * k)), *m);
            }
            i += 32;
        }
        let v = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        let lanes = super::scalar::max_f32(&lanes);
        let rest = super::scalar::max_f32(&x[i..]);
        if rest > lanes {
            rest
        } else {
            lanes
        }
    }

    /// Σ a·b; lengths are equal.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        dot_f32_at(a.as_ptr(), b)
    }

    /// Σ a·b for `b.len()` values of `a` from `a`, which need not be aligned.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32_at(a: *const f32, b: &[f32]) -> f32 {
        let n = b.len();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += a.add(i).read_unaligned() * b[i];
            i += 1;
        }
        sum
    }

    /// `wₖ · xᵣ` for `K` rows against four vectors at once: each load feeds several FMAs, and
    /// the `4K` accumulators are independent chains (with one row, four chains cannot cover the
    /// FMA latency; with two, eight can).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots4<const K: usize>(w: [&[f32]; K], x: [&[f32]; 4]) -> [[f32; 4]; K] {
        let n = w.first().map_or(0, |r| r.len());
        let mut acc = [[_mm256_setzero_ps(); 4]; K];
        let mut i = 0;
        while i + 8 <= n {
            let xs = x.map(|r| _mm256_loadu_ps(r.as_ptr().add(i)));
            for (a, row) in acc.iter_mut().zip(w) {
                let wv = _mm256_loadu_ps(row.as_ptr().add(i));
                for (a, xv) in a.iter_mut().zip(xs) {
                    *a = _mm256_fmadd_ps(wv, xv, *a);
                }
            }
            i += 8;
        }
        // Plain loops rather than closures over `acc`, which kept it in memory inside the
        // loop above.
        let mut out = [[0.0f32; 4]; K];
        for ((o, a), row) in out.iter_mut().zip(acc).zip(w) {
            for ((o, a), xr) in o.iter_mut().zip(a).zip(x) {
                *o = hsum(a) + super::scalar::dot_f32(&row[i..], &xr[i..n]);
            }
        }
        out
    }

    /// `out = Σⱼ weights[j] · row(j)`, 64 outputs at a time held in registers over all rows.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum<'r>(
        row: impl Fn(usize) -> &'r [f32],
        weights: &[f32],
        out: &mut [f32],
    ) {
        let n = out.len();
        let mut start = 0;
        while start + 64 <= n {
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &w) in weights.iter().enumerate() {
                let wv = _mm256_set1_ps(w);
                let r = row(j)[start..start + 64].as_ptr();
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r.add(8 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * i), *a);
            }
            start += 64;
        }
        super::scalar::weighted_sum(row, weights, &mut out[start..], start);
    }

    /// Four heads' weighted sums at once (`weights` and `out` four rows each): 16 outputs of
    /// each head in registers, each loaded row block feeding all four heads.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum4<'r>(
        row: impl Fn(usize) -> &'r [f32],
        weights: [&[f32]; 4],
        mut out: [&mut [f32]; 4],
    ) {
        let d = out[0].len();
        let mut start = 0;
        while start + 16 <= d {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for j in 0..weights[0].len() {
                let r = row(j)[start..start + 16].as_ptr();
                let (v0, v1) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
                for (a, w) in acc.iter_mut().zip(weights) {
                    let wv = _mm256_set1_ps(w[j]);
                    a[0] = _mm256_fmadd_ps(wv, v0, a[0]);
                    a[1] = _mm256_fmadd_ps(wv, v1, a[1]);
                }
            }
            for (a, o) in acc.iter().zip(out.iter_mut()) {
                // Bounds: start + 16 <= d, every output `d` long.
                _mm256_storeu_ps(o[start..start + 16].as_mut_ptr(), a[0]);
                _mm256_storeu_ps(o[start + 8..start + 16].as_mut_ptr(), a[1]);
            }
            start += 16;
        }
        for (w, o) in weights.into_iter().zip(out) {
            super::scalar::weighted_sum(&row, w, &mut o[start..], start);
        }
    }
}

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
