//! Dot products of an f32 vector with weights in their stored formats (f32, BF16, E4M3, packed
//! E2M1), each with a portable scalar version and an AVX2+FMA version chosen at run time. Both
//! compute the same exact products; only the order of the f32 sums differs.

use std::sync::OnceLock;

/// E4M3 byte → f32 by moving its exponent and mantissa into f32's fields: the result is the
/// true value times 2^-120 (subnormals included, since f32 keeps them), so dots multiply by
/// [`E4M3_RESCALE`] once at the end.
#[inline]
pub fn e4m3_shifted(b: u8) -> f32 {
    let b = u32::from(b);
    f32::from_bits(((b & 0x7F) << 20) | ((b & 0x80) << 24))
}

/// 2^120: undoes the exponent offset of [`e4m3_shifted`].
pub const E4M3_RESCALE: f32 = f32::from_bits((127 + 120) << 23);

/// Twice each E2M1 value, as integers, so the SIMD version can look them up as bytes.
const E2M1_TIMES_TWO: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Whether the AVX2+FMA versions can run here (checked once).
pub fn has_avx2() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Scalar versions, the reference the SIMD versions are tested against.
pub mod scalar {
    use super::{e4m3_shifted, E2M1_TIMES_TWO, E4M3_RESCALE};

    /// Σ a·b.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Σ bf16(w)·x over little-endian BF16 bytes.
    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        w.chunks_exact(2)
            .zip(x)
            .map(|(c, x)| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16) * x)
            .sum()
    }

    /// Σ e4m3(q)·x.
    pub fn dot_e4m3(q: &[u8], x: &[f32]) -> f32 {
        q.iter()
            .zip(x)
            .map(|(&b, x)| e4m3_shifted(b) * x)
            .sum::<f32>()
            * E4M3_RESCALE
    }

    /// Σ e2m1(code)·x over packed bytes (low nibble = even element).
    pub fn dot_e2m1(packed: &[u8], x: &[f32]) -> f32 {
        let sum: f32 = packed
            .iter()
            .zip(x.chunks_exact(2))
            .map(|(&b, pair)| {
                f32::from(E2M1_TIMES_TWO[usize::from(b & 0xF)]) * pair[0]
                    + f32::from(E2M1_TIMES_TWO[usize::from(b >> 4)]) * pair[1]
            })
            .sum();
        sum * 0.5
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{E2M1_TIMES_TWO, E4M3_RESCALE};

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Σ a·b; lengths are equal.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                acc1,
            );
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    /// `w · xᵣ` for four vectors at once: `w` is loaded once per 8 values and the four
    /// accumulators are independent, which keeps the FMA units busy (the prefill path).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_f32(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
        let n = w.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 8 <= n {
            let wv = _mm256_loadu_ps(w.as_ptr().add(i));
            for (a, xr) in acc.iter_mut().zip(x) {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr.as_ptr().add(i)), *a);
            }
            i += 8;
        }
        let mut out = [0.0f32; 4];
        for ((o, a), xr) in out.iter_mut().zip(acc).zip(x) {
            *o = hsum(a) + super::scalar::dot_f32(&w[i..], &xr[i..n]);
        }
        out
    }

    /// `wⱼ · xᵣ` for two weight rows and four vectors: eight independent accumulators, each
    /// loaded value used by two or four FMAs (the prefill tile).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot2x4_f32(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
        let n = w[0].len();
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        let mut i = 0;
        while i + 8 <= n {
            let w0 = _mm256_loadu_ps(w[0].as_ptr().add(i));
            let w1 = _mm256_loadu_ps(w[1].as_ptr().add(i));
            for r in 0..4 {
                let xv = _mm256_loadu_ps(x[r].as_ptr().add(i));
                acc[0][r] = _mm256_fmadd_ps(w0, xv, acc[0][r]);
                acc[1][r] = _mm256_fmadd_ps(w1, xv, acc[1][r]);
            }
            i += 8;
        }
        let mut out = [[0.0f32; 4]; 2];
        for j in 0..2 {
            for r in 0..4 {
                out[j][r] = hsum(acc[j][r]) + super::scalar::dot_f32(&w[j][i..], &x[r][i..n]);
            }
        }
        out
    }

    /// Σ bf16(w)·x; `w` holds `x.len()` BF16 values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            let r0 = _mm_loadu_si128(w.as_ptr().add(2 * i) as *const __m128i);
            let r1 = _mm_loadu_si128(w.as_ptr().add(2 * i + 16) as *const __m128i);
            let f0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(r0), 16));
            let f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(r1), 16));
            acc0 = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x.as_ptr().add(i)), acc0);
            acc1 = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        sum += super::scalar::dot_bf16(&w[2 * i..2 * n], &x[i..]);
        sum
    }

    /// 16 E4M3 bytes as two vectors of 8 f32 (times 2^-120).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn e4m3x16(bytes: __m128i) -> (__m256, __m256) {
        let magnitude = _mm256_set1_epi32(0x7F);
        let sign = _mm256_set1_epi32(0x80);
        let v0 = _mm256_cvtepu8_epi32(bytes);
        let v1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
        let f0 = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_slli_epi32(_mm256_and_si256(v0, magnitude), 20),
            _mm256_slli_epi32(_mm256_and_si256(v0, sign), 24),
        ));
        let f1 = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_slli_epi32(_mm256_and_si256(v1, magnitude), 20),
            _mm256_slli_epi32(_mm256_and_si256(v1, sign), 24),
        ));
        (f0, f1)
    }

    /// FP8 row: per 128-block FMA into four block accumulators, then scaled into the total.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_fp8_row(q: &[u8], x: &[f32], scale: impl Fn(usize) -> f32) -> f32 {
        let n = x.len();
        let mut total = _mm256_setzero_ps();
        let mut tail = 0.0;
        for (b, start) in (0..n).step_by(128).enumerate() {
            let end = (start + 128).min(n);
            if end - start < 128 {
                tail += super::scalar::dot_e4m3(&q[start..end], &x[start..end]) * scale(b);
                continue;
            }
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = start;
            while i < end {
                let (f0, f1) = e4m3x16(_mm_loadu_si128(q.as_ptr().add(i) as *const __m128i));
                let (f2, f3) = e4m3x16(_mm_loadu_si128(q.as_ptr().add(i + 16) as *const __m128i));
                acc[0] = _mm256_fmadd_ps(f0, _mm256_loadu_ps(x.as_ptr().add(i)), acc[0]);
                acc[1] = _mm256_fmadd_ps(f1, _mm256_loadu_ps(x.as_ptr().add(i + 8)), acc[1]);
                acc[2] = _mm256_fmadd_ps(f2, _mm256_loadu_ps(x.as_ptr().add(i + 16)), acc[2]);
                acc[3] = _mm256_fmadd_ps(f3, _mm256_loadu_ps(x.as_ptr().add(i + 24)), acc[3]);
                i += 32;
            }
            let block = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            total = _mm256_fmadd_ps(block, _mm256_set1_ps(scale(b) * E4M3_RESCALE), total);
        }
        hsum(total) + tail
    }

    /// 32 E2M1 values (16 packed bytes) times `x[..32]`, as two partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn e2m1x32_dot(b: __m128i, lut: __m128i, x: *const f32) -> __m256 {
        let low = _mm_set1_epi8(0x0F);
        let even = _mm_shuffle_epi8(lut, _mm_and_si128(b, low));
        let odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), low));
        let first = _mm_unpacklo_epi8(even, odd);
        let second = _mm_unpackhi_epi8(even, odd);
        let a0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(first));
        let a1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(first, 8)));
        let a2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(second));
        let a3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(second, 8)));
        let p0 = _mm256_mul_ps(a0, _mm256_loadu_ps(x));
        let p1 = _mm256_mul_ps(a1, _mm256_loadu_ps(x.add(8)));
        let p0 = _mm256_fmadd_ps(a2, _mm256_loadu_ps(x.add(16)), p0);
        let p1 = _mm256_fmadd_ps(a3, _mm256_loadu_ps(x.add(24)), p1);
        _mm256_add_ps(p0, p1)
    }

    /// FP4 row: groups of 32 decoded by byte lookup, two groups per step into two register
    /// totals (no accumulator in memory), each group's sum scaled once.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_fp4_row(packed: &[u8], x: &[f32], scale: impl Fn(usize) -> f32) -> f32 {
        let n = x.len();
        let lut = _mm_loadu_si128(E2M1_TIMES_TWO.as_ptr() as *const __m128i);
        let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut g = 0;
        let groups = n / 32;
        while g + 2 <= groups {
            let i = 32 * g;
            let b0 = _mm_loadu_si128(packed.as_ptr().add(i / 2) as *const __m128i);
            let b1 = _mm_loadu_si128(packed.as_ptr().add(i / 2 + 16) as *const __m128i);
            let s0 = e2m1x32_dot(b0, lut, x.as_ptr().add(i));
            let s1 = e2m1x32_dot(b1, lut, x.as_ptr().add(i + 32));
            t0 = _mm256_fmadd_ps(s0, _mm256_set1_ps(scale(g) * 0.5), t0);
            t1 = _mm256_fmadd_ps(s1, _mm256_set1_ps(scale(g + 1) * 0.5), t1);
            g += 2;
        }
        if g < groups {
            let i = 32 * g;
            let b0 = _mm_loadu_si128(packed.as_ptr().add(i / 2) as *const __m128i);
            let s0 = e2m1x32_dot(b0, lut, x.as_ptr().add(i));
            t0 = _mm256_fmadd_ps(s0, _mm256_set1_ps(scale(g) * 0.5), t0);
        }
        hsum(_mm256_add_ps(t0, t1))
    }
}

/// A UE8M0 scale byte's multiplier without branches on the common path (checked checkpoints
/// hold no 0xFF).
#[inline(always)]
pub fn e8m0_multiplier(b: u8) -> f32 {
    if b == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits(u32::from(b) << 23)
    }
}

/// Σ over 128-blocks of `scale(b) · Σ e4m3(q)·x` for one FP8 row.
pub fn dot_fp8_row(q: &[u8], x: &[f32], scale: impl Fn(usize) -> f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && q.len() == x.len() {
        // SAFETY: AVX2 and FMA were detected; one byte per value.
        return unsafe { avx2::dot_fp8_row(q, x, scale) };
    }
    q.chunks(128)
        .zip(x.chunks(128))
        .enumerate()
        .map(|(b, (q, x))| scalar::dot_e4m3(q, x) * scale(b))
        .sum()
}

/// Σ over 32-groups of `scale(g) · Σ e2m1(code)·x` for one packed FP4 row.
pub fn dot_fp4_row(packed: &[u8], x: &[f32], scale: impl Fn(usize) -> f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && x.len() % 32 == 0 && packed.len() == x.len() / 2 {
        // SAFETY: AVX2 and FMA were detected; one byte per pair, whole groups.
        return unsafe { avx2::dot_fp4_row(packed, x, scale) };
    }
    packed
        .chunks(16)
        .zip(x.chunks(32))
        .enumerate()
        .map(|(g, (p, x))| scalar::dot_e2m1(p, x) * scale(g))
        .sum()
}

/// `wⱼ · xᵣ` for two weight rows of equal length and four vectors at least as long.
pub fn dot2x4_f32(w: [&[f32]; 2], x: [&[f32]; 4]) -> [[f32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w[1].len() == w[0].len() && x.iter().all(|r| r.len() >= w[0].len()) {
        // SAFETY: AVX2 and FMA were detected; lengths checked above.
        return unsafe { avx2::dot2x4_f32(w, x) };
    }
    w.map(|wj| x.map(|r| scalar::dot_f32(wj, r)))
}

/// `w · xᵣ` for four vectors of `w.len()` values.
pub fn dot4_f32(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && x.iter().all(|r| r.len() >= w.len()) {
        // SAFETY: AVX2 and FMA were detected; every vector is at least as long as `w`.
        return unsafe { avx2::dot4_f32(w, x) };
    }
    x.map(|r| scalar::dot_f32(w, r))
}

/// Σ a·b.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && a.len() == b.len() {
        // SAFETY: AVX2 and FMA were detected; the slices have equal lengths.
        return unsafe { avx2::dot_f32(a, b) };
    }
    scalar::dot_f32(a, b)
}

/// Σ bf16(w)·x; `w` holds `x.len()` little-endian BF16 values.
pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.len() == 2 * x.len() {
        // SAFETY: AVX2 and FMA were detected; `w` has two bytes per value of `x`.
        return unsafe { avx2::dot_bf16(w, x) };
    }
    scalar::dot_bf16(w, x)
}
