//! Dot products of an f32 vector with weights in their stored formats (f32, BF16, E4M3, packed
//! E2M1), each with a portable scalar version, an AVX2+FMA version and an AVX-512 one
//! ([`avx512`]), chosen at run time. All compute the same exact products; only the order of the
//! f32 sums differs.

use std::sync::OnceLock;

use crate::formats::E2M1_VALUES;
use crate::linear::Scales;

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

/// One byte of each E2M1 value's BF16 encoding (exact: E2M1 needs one mantissa bit), so the
/// SIMD version looks up both bytes and widens the pair to f32 by placing it in the upper half.
const fn e2m1_bf16_bytes(shift: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (E2M1_VALUES[i].to_bits() >> shift) as u8;
        i += 1;
    }
    out
}

/// Low bytes of the E2M1 values as BF16.
const E2M1_BF16_LOW: [u8; 16] = e2m1_bf16_bytes(16);
/// High bytes of the E2M1 values as BF16.
const E2M1_BF16_HIGH: [u8; 16] = e2m1_bf16_bytes(24);

/// How a row kernel wants its input vector laid out. Each SIMD decode produces weights in an
/// order of its own (whatever needs the fewest shuffles); rather than undo that per row, the
/// input is rearranged to match once per product, and every row of the matrix then reads it
/// in place. The layouts are the AVX2 decodes'; the AVX-512 kernels decode the same 32 bytes
/// into both halves of a register and keep one half's elements in each, so they read the same
/// layout, as do the scalar twins: all compute the same sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOrder {
    /// Element `i` at `i` (f32 and F16 rows).
    Natural,
    /// BF16 rows: in each whole 16-value block, the even elements then the odd ones (the two
    /// halves of each 32-bit pair widen to f32 with one shift or one mask).
    Bf16,
    /// FP8 rows: in each whole 128-block, each 32-value chunk holds bytes `4k`, `4k+2`,
    /// `4k+1`, `4k+3` for `k = 0..8` (what 16-bit shifts of 32 loaded bytes yield); a trailing
    /// partial block stays natural.
    Fp8,
    /// FP4 rows: in each whole pair of 32-groups (one group per 128-bit lane), the order the
    /// BF16 byte-table decode produces; a trailing unpaired group stays natural.
    Fp4,
}

/// A block permutation: inputs are rearranged in blocks of `source.len()` inside the first
/// `len / span · span` values (the rest stay in place); slot `j` of a block takes the block's
/// element `source[j]`.
struct Permutation {
    span: usize,
    source: &'static [u8],
}

/// Source element of each slot of a BF16 block: evens, then odds.
const BF16_SOURCE: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut k = 0;
    while k < 8 {
        t[k] = 2 * k as u8;
        t[8 + k] = 2 * k as u8 + 1;
        k += 1;
    }
    t
};

/// Source byte of each slot of an FP8 chunk: vectors take byte `4k + [0, 2, 1, 3][v]`.
const FP8_SOURCE: [u8; 32] = {
    let mut t = [0u8; 32];
    let byte_of_vector = [0u8, 2, 1, 3];
    let mut j = 0;
    while j < 32 {
        t[j] = 4 * (j % 8) as u8 + byte_of_vector[j / 8];
        j += 1;
    }
    t
};

/// Source element of each slot of an FP4 pair of groups. Element `r` lies in lane `r / 32`;
/// within it, byte `r % 32 / 2` and nibble `r % 2`. Looking up the even nibbles, then the odd
/// ones, and widening bytes 0..8 then 8..16 of each lane gives four 32-bit pairs per step: the
/// even halves of the pairs become one vector, the odd ones the next.
const FP4_SOURCE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut r = 0;
    while r < 64 {
        let (lane, k) = (r / 32, r % 32);
        let (parity, byte) = (k % 2, k / 2);
        let (half, within) = (byte / 8, byte % 8);
        let vector = 4 * parity + 2 * half + within % 2;
        t[8 * vector + 4 * lane + within / 2] = r as u8;
        r += 1;
    }
    t
};

impl InputOrder {
    fn permutation(self) -> Option<Permutation> {
        let (span, source): (usize, &'static [u8]) = match self {
            Self::Natural => return None,
            Self::Bf16 => (BF16_SOURCE.len(), &BF16_SOURCE),
            Self::Fp8 => (128, &FP8_SOURCE),
            Self::Fp4 => (FP4_SOURCE.len(), &FP4_SOURCE),
        };
        Some(Permutation { span, source })
    }

    /// Where the element at slot `j` of a row of `len` inputs comes from: `out[j] =
    /// x[order.source(j, len)]`.
    #[inline]
    pub fn source(self, j: usize, len: usize) -> usize {
        match self.permutation() {
            Some(p) if j < len / p.span * p.span => {
                let block = p.source.len();
                j / block * block + usize::from(p.source[j % block])
            }
            _ => j,
        }
    }

    /// `x` rearranged into this order (`out` as long as `x`): done once per input vector.
    pub fn arrange(self, x: &[f32], out: &mut [f32]) {
        let Some(p) = self.permutation() else {
            out.copy_from_slice(x);
            return;
        };
        let whole = x.len() / p.span * p.span;
        let block = p.source.len();
        for (xs, os) in x[..whole]
            .chunks_exact(block)
            .zip(out.chunks_exact_mut(block))
        {
            for (o, &s) in os.iter_mut().zip(p.source) {
                *o = xs[usize::from(s)];
            }
        }
        out[whole..].copy_from_slice(&x[whole..]);
    }
}

/// Set (to anything) to run the portable versions even where AVX2 exists: how the fallback is
/// tested end to end on an AVX2 machine.
pub const NO_SIMD_ENV: &str = "DSV4_NO_SIMD";

/// Set (to anything) to keep to the AVX2 versions where AVX-512 exists: how the two are
/// compared on one machine.
pub const NO_AVX512_ENV: &str = "DSV4_NO_AVX512";

/// Whether the AVX2+FMA versions can run here and are not switched off by [`NO_SIMD_ENV`]
/// (checked once).
#[inline]
pub fn has_avx2() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        if std::env::var_os(NO_SIMD_ENV).is_some() {
            return false;
        }
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

/// The instruction set the kernels run with here, for reports (`dsv4 bench` prints it): the
/// speed of every kernel depends on it.
pub fn kernel_instruction_set() -> &'static str {
    if has_avx512() {
        "AVX-512"
    } else if has_avx2() {
        "AVX2+FMA"
    } else {
        "portable"
    }
}

/// Scalar versions, the reference the SIMD versions are tested against.
pub mod scalar {
    use super::{e4m3_shifted, InputOrder, E2M1_VALUES, E4M3_RESCALE};
    use crate::linear::Scales;

    /// Σ a·b.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// The largest value of `x`, NaN never winning a comparison; −∞ when there is none.
    pub fn max_f32(x: &[f32]) -> f32 {
        x.iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
    }

    /// Σ w·x over little-endian F32 bytes `w`.
    pub fn dot_f32_le(w: &[u8], x: &[f32]) -> f32 {
        w.chunks_exact(4)
            .zip(x)
            .map(|(c, x)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x)
            .sum()
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

    /// Σ bf16(w)·x over little-endian BF16 bytes, `x` in natural order.
    pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        w.chunks_exact(2).zip(x).map(|(c, x)| bf16(c) * x).sum()
    }

    /// A little-endian BF16 value.
    fn bf16(c: &[u8]) -> f32 {
        f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)
    }

    /// Σ bf16(w)·x for one row, `x` in [`InputOrder::Bf16`].
    pub fn dot_bf16_row(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        x.iter()
            .enumerate()
            .map(|(j, v)| {
                let i = InputOrder::Bf16.source(j, n);
                bf16(&w[2 * i..2 * i + 2]) * v
            })
            .sum()
    }

    /// Σ e4m3(q)·x, `x` in natural order.
    pub fn dot_e4m3(q: &[u8], x: &[f32]) -> f32 {
        q.iter()
            .zip(x)
            .map(|(&b, x)| e4m3_shifted(b) * x)
            .sum::<f32>()
            * E4M3_RESCALE
    }

    /// Σ over 128-blocks of `scale(b) · Σ e4m3(q)·x`, `x` in [`InputOrder::Fp8`] (which
    /// keeps every element in its block).
    pub fn dot_fp8_row(q: &[u8], x: &[f32], scales: Scales) -> f32 {
        let n = x.len();
        x.chunks(128)
            .enumerate()
            .map(|(b, xs)| {
                let sum: f32 = xs
                    .iter()
                    .enumerate()
                    .map(|(k, v)| e4m3_shifted(q[InputOrder::Fp8.source(128 * b + k, n)]) * v)
                    .sum();
                sum * E4M3_RESCALE * scales.multiplier(b)
            })
            .sum()
    }

    /// The FP8 row kernels' ending: each row's sum of whole blocks (`sums`) plus its last
    /// partial block (widths that are not a multiple of 128), scaled by `multiplier(row,
    /// block)`.
    #[inline(always)]
    pub fn with_fp8_partial_block<const R: usize>(
        q: [&[u8]; R],
        x: &[f32],
        multiplier: impl Fn(usize, usize) -> f32,
        mut sums: [f32; R],
    ) -> [f32; R] {
        let whole = x.len() / 128;
        let start = 128 * whole;
        if start < x.len() {
            for (r, sum) in sums.iter_mut().enumerate() {
                *sum += dot_e4m3(&q[r][start..], &x[start..]) * multiplier(r, whole);
            }
        }
        sums
    }

    /// Σ e2m1(code)·x over packed bytes (low nibble = even element), `x` in natural order.
    pub fn dot_e2m1(packed: &[u8], x: &[f32]) -> f32 {
        packed
            .iter()
            .zip(x.chunks_exact(2))
            .map(|(&b, pair)| {
                E2M1_VALUES[usize::from(b & 0xF)] * pair[0]
                    + E2M1_VALUES[usize::from(b >> 4)] * pair[1]
            })
            .sum()
    }

    /// Σ over 32-groups of `scale(g) · Σ e2m1(code)·x`, `x` in [`InputOrder::Fp4`] (which
    /// keeps every element in its pair of groups).
    pub fn dot_fp4_row(packed: &[u8], x: &[f32], scales: Scales) -> f32 {
        let n = x.len();
        let code = |i: usize| {
            let byte = packed[i / 2];
            let nibble = if i.is_multiple_of(2) {
                byte & 0xF
            } else {
                byte >> 4
            };
            E2M1_VALUES[usize::from(nibble)]
        };
        let mut total = 0.0;
        for (pair, xs) in x.chunks(64).enumerate() {
            let mut sums = [0.0f32; 2];
            for (k, v) in xs.iter().enumerate() {
                let i = InputOrder::Fp4.source(64 * pair + k, n);
                sums[i / 32 - 2 * pair] += code(i) * v;
            }
            total += sums[0] * scales.multiplier(2 * pair);
            if xs.len() > 32 {
                total += sums[1] * scales.multiplier(2 * pair + 1);
            }
        }
        total
    }

    /// [`dot_fp4_row`] over groups `first..` only, which lie in natural order: the AVX-512
    /// kernel's trailing unpaired group. (The AVX2 kernel sums its own inline: calling this
    /// there made its whole-group rows 4% slower in `cargo bench --bench linear`.)
    pub fn dot_fp4_groups(packed: &[u8], x: &[f32], scales: Scales, first: usize) -> f32 {
        packed[16 * first..]
            .chunks(16)
            .zip(x[32 * first..].chunks(32))
            .enumerate()
            .map(|(k, (p, xs))| dot_e2m1(p, xs) * scales.multiplier(first + k))
            .sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{E2M1_BF16_HIGH, E2M1_BF16_LOW, E4M3_RESCALE};
    use crate::linear::Scales;

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

    /// Σ w·x over little-endian F32 bytes (`w` holds four per value of `x`), read in place
    /// whatever their alignment.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32_le(w: &[u8], x: &[f32]) -> f32 {
        dot_f32_at(w.as_ptr().cast(), x)
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

    /// BF16 row, `x` in [`InputOrder::Bf16`]: each 32-bit pair of BF16 values widens to two
    /// f32 with one shift (the lower) and one mask (the upper); no shuffles.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16_row(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        let mut acc = [_mm256_setzero_ps(); 4];
        let block = |i: usize, [even, odd]: [__m256; 2]| {
            let raw = _mm256_loadu_si256(w.as_ptr().add(2 * i).cast());
            let lower = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
            let higher = _mm256_castsi256_ps(_mm256_and_si256(raw, upper));
            [
                _mm256_fmadd_ps(lower, _mm256_loadu_ps(x.as_ptr().add(i)), even),
                _mm256_fmadd_ps(higher, _mm256_loadu_ps(x.as_ptr().add(i + 8)), odd),
            ]
        };
        let mut i = 0;
        // Two blocks per step into four accumulators, so the FMA chains overlap.
        while i + 32 <= n {
            [acc[0], acc[1]] = block(i, [acc[0], acc[1]]);
            [acc[2], acc[3]] = block(i + 16, [acc[2], acc[3]]);
            i += 32;
        }
        if i + 16 <= n {
            [acc[0], acc[1]] = block(i, [acc[0], acc[1]]);
            i += 16;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + super::scalar::dot_bf16(&w[2 * i..], &x[i..])
    }

    /// 8 E4M3 bytes at `p` as 8 f32 (times 2^-120): each byte sign-extended to 32 bits and
    /// shifted so its exponent and mantissa land in f32's fields; the mask keeps the sign (from
    /// the extension) and those fields. Three instructions, the load folded into the first.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn e4m3x8(p: *const u8) -> __m256 {
        let wide = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i));
        let fields = _mm256_set1_epi32(0x87F0_0000u32 as i32);
        _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(wide, 20), fields))
    }

    /// `R` FP8 rows against one `x` in [`InputOrder::Fp8`]: per 128-block, 32 bytes of each
    /// row at a time become four vectors by shifts ([`e4m3x32`]). The rows share each load of
    /// `x` and the loop around them, so two rows run well over twice as fast as one (the
    /// single-row loop is bound by its own overhead, not by memory). Kept out of line, so its
    /// registers are allocated for its own loop whatever the caller holds.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_fp8_rows<const R: usize>(
        q: [&[u8]; R],
        x: &[f32],
        scales: [Scales; R],
    ) -> [f32; R] {
        match super::Fp8Multipliers::settle(scales, x.len()) {
            super::Fp8Multipliers::E8M0(bytes) => {
                fp8_blocks(q, x, |r, b| super::e8m0_multiplier(bytes[r][b]))
            }
            super::Fp8Multipliers::Other(scales) => {
                fp8_blocks(q, x, |r, b| scales[r].multiplier(b))
            }
        }
    }

    /// [`dot_fp8_rows`] with block `b` of row `r` scaled by `multiplier(r, b)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fp8_blocks<const R: usize>(
        q: [&[u8]; R],
        x: &[f32],
        multiplier: impl Fn(usize, usize) -> f32,
    ) -> [f32; R] {
        let n = x.len();
        let whole = n / 128;
        let fields = _mm256_set1_epi32(0x87F0_0000u32 as i32);
        let mut total = [_mm256_setzero_ps(); R];
        // Whole blocks: four steps of 32 values each, no bounds in the loop.
        for b in 0..whole {
            let start = 128 * b;
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            for step in (start..start + 128).step_by(32) {
                let mut w = [[_mm256_setzero_ps(); 4]; R];
                for (w, row) in w.iter_mut().zip(&q) {
                    *w = e4m3x32(row.as_ptr().add(step), fields);
                }
                for j in 0..4 {
                    let xs = _mm256_loadu_ps(x.as_ptr().add(step + 8 * j));
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(w[r][j], xs, acc[r][j]);
                    }
                }
            }
            for r in 0..R {
                let a = acc[r];
                let block = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
                let m = _mm256_set1_ps(multiplier(r, b) * E4M3_RESCALE);
                total[r] = _mm256_fmadd_ps(block, m, total[r]);
            }
        }
        let mut sums = [0.0f32; R];
        for (sum, total) in sums.iter_mut().zip(total) {
            *sum = hsum(total);
        }
        super::scalar::with_fp8_partial_block(q, x, multiplier, sums)
    }

    /// 32 E4M3 bytes at `p` as four f32 vectors (times 2^-120, as from [`e4m3x8`]) holding
    /// bytes `4k`, `4k+2`, `4k+1`, `4k+3` (`k = 0..8`). An arithmetic shift right by 4 puts a
    /// 16-bit lane's upper byte's exponent and mantissa into BF16's fields with its sign smeared
    /// above them; the lower byte gets the same after a shift left by 8. A 32-bit lane's upper
    /// BF16 is then an f32 once masked (`fields`), its lower one after a shift by 16.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn e4m3x32(p: *const u8, fields: __m256i) -> [__m256; 4] {
        let raw = _mm256_loadu_si256(p.cast());
        let upper = _mm256_srai_epi16(raw, 4);
        let lower = _mm256_srai_epi16(_mm256_slli_epi16(raw, 8), 4);
        [
            _mm256_slli_epi32(lower, 16),
            lower,
            _mm256_slli_epi32(upper, 16),
            upper,
        ]
        .map(|w| _mm256_castsi256_ps(_mm256_and_si256(w, fields)))
    }

    /// FP4 row, `x` in [`InputOrder::Fp4`]: two groups per step, one per 128-bit lane. Each code
    /// is looked up as the two bytes of its BF16 value, and unpacking the byte pairs against
    /// zero yields f32 directly. Eight groups' multipliers are decoded at once, and each step's
    /// two lane sums are scaled into the total by one FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_fp4_row(packed: &[u8], x: &[f32], scales: Scales) -> f32 {
        let groups = x.len() / 32;
        let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(E2M1_BF16_LOW.as_ptr().cast()));
        let high = _mm256_broadcastsi128_si256(_mm_loadu_si128(E2M1_BF16_HIGH.as_ptr().cast()));
        let nibble = _mm256_set1_epi8(0x0F);
        let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        // The lane sums of groups g and g + 1 (unscaled).
        let pair = |g: usize| {
            let bytes = _mm256_loadu_si256(packed.as_ptr().add(16 * g).cast());
            let even = _mm256_and_si256(bytes, nibble);
            let odd = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
            let xs = x.as_ptr().add(32 * g);
            let mut w = [_mm256_setzero_ps(); 8];
            for (parity, codes) in [even, odd].into_iter().enumerate() {
                let lo = _mm256_shuffle_epi8(low, codes);
                let hi = _mm256_shuffle_epi8(high, codes);
                let halves = [_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi)];
                for (half, bf16) in halves.into_iter().enumerate() {
                    let j = 4 * parity + 2 * half;
                    w[j] = _mm256_castsi256_ps(_mm256_slli_epi32(bf16, 16));
                    w[j + 1] = _mm256_castsi256_ps(_mm256_and_si256(bf16, upper));
                }
            }
            // Two product chains of four.
            let mut a = _mm256_mul_ps(w[0], _mm256_loadu_ps(xs));
            let mut b = _mm256_mul_ps(w[1], _mm256_loadu_ps(xs.add(8)));
            for j in (2..8).step_by(2) {
                a = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xs.add(8 * j)), a);
                b = _mm256_fmadd_ps(w[j + 1], _mm256_loadu_ps(xs.add(8 * j + 8)), b);
            }
            _mm256_add_ps(a, b)
        };
        // Lanes 0–3 take the first group's multiplier, lanes 4–7 the second's.
        let spread = |m: __m256, p: i32| {
            let index = _mm256_setr_epi32(p, p, p, p, p + 1, p + 1, p + 1, p + 1);
            _mm256_permutevar8x32_ps(m, index)
        };
        // Two running totals, so the FMAs of consecutive pairs do not wait on each other.
        let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut g = 0;
        while g + 8 <= groups {
            let m = multipliers8(scales, g);
            t0 = _mm256_fmadd_ps(pair(g), spread(m, 0), t0);
            t1 = _mm256_fmadd_ps(pair(g + 2), spread(m, 2), t1);
            t0 = _mm256_fmadd_ps(pair(g + 4), spread(m, 4), t0);
            t1 = _mm256_fmadd_ps(pair(g + 6), spread(m, 6), t1);
            g += 8;
        }
        while g + 2 <= groups {
            let m = _mm256_setr_m128(
                _mm_set1_ps(scales.multiplier(g)),
                _mm_set1_ps(scales.multiplier(g + 1)),
            );
            t0 = _mm256_fmadd_ps(pair(g), m, t0);
            g += 2;
        }
        let mut sum = hsum(_mm256_add_ps(t0, t1));
        if g < groups {
            let (p, xs) = (&packed[16 * g..16 * g + 16], &x[32 * g..32 * g + 32]);
            sum += super::scalar::dot_e2m1(p, xs) * scales.multiplier(g);
        }
        sum
    }

    /// The multipliers of scales `g..g + 8` (which must exist). UE8M0 bytes widen and shift
    /// into f32's exponent field; byte 0 (2^-127, a subnormal) comes out of the maximum with
    /// its bit pattern.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn multipliers8(scales: Scales, g: usize) -> __m256 {
        match scales {
            Scales::E8M0(bytes) => {
                let b = &bytes[g..g + 8];
                let wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast()));
                let bits =
                    _mm256_max_epu32(_mm256_slli_epi32(wide, 23), _mm256_set1_epi32(0x0040_0000));
                _mm256_castsi256_ps(bits)
            }
            Scales::F32(bytes) => _mm256_loadu_ps(bytes[4 * g..4 * (g + 8)].as_ptr().cast()),
        }
    }
}

/// A UE8M0 scale byte's multiplier, branch-free for the row kernels' loops (checked
/// checkpoints hold no 0xFF, the NaN byte, so it is not looked for).
#[inline(always)]
pub fn e8m0_multiplier(b: u8) -> f32 {
    // Byte 0 is 2^-127, the subnormal 0x0040_0000; every other byte is a normal power of two
    // (at least 0x0080_0000), so one maximum covers both without a branch.
    f32::from_bits((u32::from(b) << 23).max(0x0040_0000))
}

/// An FP8 row kernel's block multipliers, settled once per call outside its loop, so the loop
/// has no branch between its loads: UE8M0 bytes (every checkpoint's) decode inline.
pub(crate) enum Fp8Multipliers<'a, const R: usize> {
    /// Every row's UE8M0 bytes, one per block.
    E8M0([&'a [u8]; R]),
    /// Anything else, read through [`Scales::multiplier`].
    Other([Scales<'a>; R]),
}

impl<'a, const R: usize> Fp8Multipliers<'a, R> {
    /// The multipliers of rows `len` values wide.
    #[inline(always)]
    pub(crate) fn settle(scales: [Scales<'a>; R], len: usize) -> Self {
        let blocks = len.div_ceil(128);
        // (Plain loops: a closure through `array::map` here was left uninlined.)
        let mut bytes: [&[u8]; R] = [&[]; R];
        for (row_bytes, row_scales) in bytes.iter_mut().zip(scales) {
            match row_scales {
                Scales::E8M0(b) if b.len() >= blocks => *row_bytes = b,
                _ => return Self::Other(scales),
            }
        }
        Self::E8M0(bytes)
    }
}

// The dispatchers below are called once per row or pair of rows and are marked inline: left
// as calls, with their array arguments passed through memory, they made a cached one-row FP8
// product (`cargo bench --bench linear`) take 149 µs instead of 136.

/// Σ over 128-blocks of `scale(b) · Σ e4m3(q)·x` for one FP8 row, `x` in
/// [`InputOrder::Fp8`].
#[inline]
pub fn dot_fp8_row(q: &[u8], x: &[f32], scales: Scales) -> f32 {
    let [dot] = dot_fp8_rows([q], x, [scales]);
    dot
}

/// [`dot_fp8_row`] of `R` rows against the same `x`, faster per row than one at a time.
#[inline]
pub fn dot_fp8_rows<const R: usize>(q: [&[u8]; R], x: &[f32], scales: [Scales; R]) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && q.iter().all(|row| row.len() == x.len()) {
        // SAFETY: the instruction sets were detected; one byte per value in every row.
        return unsafe {
            if has_avx512() {
                avx512::dot_fp8_rows(q, x, scales)
            } else {
                avx2::dot_fp8_rows(q, x, scales)
            }
        };
    }
    std::array::from_fn(|r| scalar::dot_fp8_row(q[r], x, scales[r]))
}

/// Σ over 32-groups of `scale(g) · Σ e2m1(code)·x` for one packed FP4 row, `x` in
/// [`InputOrder::Fp4`].
#[inline]
pub fn dot_fp4_row(packed: &[u8], x: &[f32], scales: Scales) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && x.len().is_multiple_of(32) && packed.len() == x.len() / 2 {
        // SAFETY: the instruction sets were detected; one byte per pair, whole groups.
        return unsafe {
            if has_avx512() {
                avx512::dot_fp4_row(packed, x, scales)
            } else {
                avx2::dot_fp4_row(packed, x, scales)
            }
        };
    }
    scalar::dot_fp4_row(packed, x, scales)
}

/// Σ bf16(w)·x for one BF16 row (`x.len()` little-endian values), `x` in
/// [`InputOrder::Bf16`].
#[inline]
pub fn dot_bf16_row(w: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.len() == 2 * x.len() {
        // SAFETY: the instruction sets were detected; `w` has two bytes per value of `x`.
        return unsafe {
            if has_avx512() {
                avx512::dot_bf16_row(w, x)
            } else {
                avx2::dot_bf16_row(w, x)
            }
        };
    }
    scalar::dot_bf16_row(w, x)
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

/// Σ w·x over little-endian F32 bytes `w` (four per value of `x`), read in place: F32 weights
/// (hyper-connection projections) need no decoded copy.
#[inline]
pub fn dot_f32_le(w: &[u8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.len() == 4 * x.len() {
        // SAFETY: the instruction sets were detected; `w` has four bytes per value of `x`.
        return unsafe {
            if has_avx512() {
                avx512::dot_f32_at(w.as_ptr().cast(), x)
            } else {
                avx2::dot_f32_le(w, x)
            }
        };
    }
    scalar::dot_f32_le(w, x)
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
