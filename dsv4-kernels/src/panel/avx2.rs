//! The AVX2 kernel set: 256-bit vectors of eight rows, two per group of sixteen (four per FP4
//! group of thirty-two, whose layout suits a byte-table decode).

use std::arch::x86_64::*;
use std::ops::Range;

use super::kernel::{run_groups, Decoder, Job, Lanes, SharedOutput, F32_NAN_BITS, MAX_VECS};
use super::{Layout, PackedFormat, ScaleType};
use crate::formats::E2M1_VALUES;

impl Lanes for __m256 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm256_set1_ps(v)
    }

    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm256_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }

    #[inline(always)]
    unsafe fn scales(p: *const u8, kind: ScaleType) -> Self {
        match kind {
            ScaleType::E8M0 => {
                // As in the AVX-512 set: byte into the exponent field, byte 0 a subnormal,
                // byte 0xFF NaN.
                let wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
                let bits =
                    _mm256_max_epu32(_mm256_slli_epi32(wide, 23), _mm256_set1_epi32(0x0040_0000));
                let nan = _mm256_cmpeq_epi32(wide, _mm256_set1_epi32(0xFF));
                let bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(F32_NAN_BITS), nan);
                _mm256_castsi256_ps(bits)
            }
            ScaleType::F32 => _mm256_loadu_ps(p.cast()),
        }
    }
}

/// One byte of each E2M1 value's BF16 encoding (exact: E2M1 needs one mantissa bit), so the
/// FP4 decode looks up both bytes and widens the pair to f32 by placing it in the upper half.
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

/// Which row each byte of an FP4 step of 32 rows holds. Byte `q = 16L + 8u + 2d + s` (128-bit
/// lane `L`, unpack half `u`, 32-bit lane `d`, half of it `s`) becomes element `4L + d` of
/// vector `2u + s` in [`Fp4::decode`], so it holds row `8(2u + s) + 4L + d`: each vector then
/// covers eight consecutive rows.
const FP4_ROW_AT: [u8; 32] = {
    let mut t = [0u8; 32];
    let mut q = 0;
    while q < 32 {
        let (lane, u, d, s) = (q / 16, q % 16 / 8, q % 8 / 2, q % 2);
        t[q] = (8 * (2 * u + s) + 4 * lane + d) as u8;
        q += 1;
    }
    t
};

/// The AVX2 set's FP4 layout: 32 rows a group, two inputs a step.
pub(super) const FP4_LAYOUT: Layout = Layout {
    rows: 32,
    step: 2,
    row_at: Some(&FP4_ROW_AT),
};

/// Two vectors (sixteen rows) for one input.
#[inline(always)]
fn one(v: [__m256; 2]) -> [[__m256; MAX_VECS]; 2] {
    let row = [v[0], v[1], v[0], v[1]];
    [row, row]
}

struct F32;
struct Bf16;
struct F16;
struct Fp8;
struct Fp4;

impl Decoder for F32 {
    type V = __m256;
    const VECS: usize = 2;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m256; MAX_VECS]; 2] {
        one([_mm256_loadu_ps(p.cast()), _mm256_loadu_ps(p.add(32).cast())])
    }
}

impl Decoder for Bf16 {
    type V = __m256;
    const VECS: usize = 2;
    const STEP: usize = 2;
    /// Each 32-bit lane holds a row's two values: the lower widens by a shift, the upper by a
    /// mask.
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m256; MAX_VECS]; 2] {
        let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        let (r0, r1) = (
            _mm256_loadu_si256(p.cast()),
            _mm256_loadu_si256(p.add(32).cast()),
        );
        let even = [
            _mm256_castsi256_ps(_mm256_slli_epi32(r0, 16)),
            _mm256_castsi256_ps(_mm256_slli_epi32(r1, 16)),
        ];
        let odd = [
            _mm256_castsi256_ps(_mm256_and_si256(r0, upper)),
            _mm256_castsi256_ps(_mm256_and_si256(r1, upper)),
        ];
        [
            [even[0], even[1], even[0], even[1]],
            [odd[0], odd[1], odd[0], odd[1]],
        ]
    }
}

impl Decoder for F16 {
    type V = __m256;
    const VECS: usize = 2;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m256; MAX_VECS]; 2] {
        one([
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast())),
        ])
    }
}

impl Decoder for Fp8 {
    type V = __m256;
    const VECS: usize = 2;
    const STEP: usize = 1;
    const OFFSET: f32 = 256.0;
    /// As in the AVX-512 set: sixteen bytes sign-extended to 16 bits and shifted into FP16's
    /// fields, then each half widened to f32 exactly (values times 2^-8).
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m256; MAX_VECS]; 2] {
        let wide = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
        let fields = _mm256_and_si256(
            _mm256_slli_epi16(wide, 7),
            _mm256_set1_epi16(0xBFFFu16 as i16),
        );
        one([
            _mm256_cvtph_ps(_mm256_castsi256_si128(fields)),
            _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(fields)),
        ])
    }
}

impl Decoder for Fp4 {
    type V = __m256;
    const VECS: usize = 4;
    const STEP: usize = 2;
    /// 32 bytes (32 rows, [`FP4_ROW_AT`]): each nibble is looked up as the two bytes of its
    /// BF16 value, the byte pairs unpacked into 16-bit values, and each 32-bit pair of those
    /// widened to two f32 by a shift and a mask.
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m256; MAX_VECS]; 2] {
        let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(E2M1_BF16_LOW.as_ptr().cast()));
        let high = _mm256_broadcastsi128_si256(_mm_loadu_si128(E2M1_BF16_HIGH.as_ptr().cast()));
        let nibble = _mm256_set1_epi8(0x0F);
        let raw = _mm256_loadu_si256(p.cast());
        let even = _mm256_and_si256(raw, nibble);
        let odd = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        [fp4_values(low, high, even), fp4_values(low, high, odd)]
    }
}

/// The four vectors of one input from its 32 codes (one per byte): looked up as BF16 bytes,
/// unpacked to 16-bit values, widened by a shift (lower half of a 32-bit lane) and a mask
/// (upper half).
#[inline(always)]
unsafe fn fp4_values(low: __m256i, high: __m256i, codes: __m256i) -> [__m256; MAX_VECS] {
    let upper = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
    let lo = _mm256_shuffle_epi8(low, codes);
    let hi = _mm256_shuffle_epi8(high, codes);
    let a = _mm256_unpacklo_epi8(lo, hi);
    let b = _mm256_unpackhi_epi8(lo, hi);
    [
        _mm256_castsi256_ps(_mm256_slli_epi32(a, 16)),
        _mm256_castsi256_ps(_mm256_and_si256(a, upper)),
        _mm256_castsi256_ps(_mm256_slli_epi32(b, 16)),
        _mm256_castsi256_ps(_mm256_and_si256(b, upper)),
    ]
}

/// [`Job`]'s groups `range` against the `n` rows of `x`: sixteen-row groups in tiles of four
/// groups (one row) or six rows, FP4's 32-row groups in tiles of two groups or three rows
/// (eight independent sums for one row, twelve accumulators of the sixteen registers for
/// several).
///
/// SAFETY: the CPU has AVX2, FMA and F16C, and as [`run_groups`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run(
    job: &Job,
    range: Range<usize>,
    x: &[f32],
    n: usize,
    output: &SharedOutput,
    scratch: &mut [f32],
) {
    match job.format {
        PackedFormat::F32 => run_groups::<F32, 4, 6, 1>(job, range, x, n, output, scratch),
        PackedFormat::Bf16 => run_groups::<Bf16, 4, 5, 1>(job, range, x, n, output, scratch),
        PackedFormat::F16 => run_groups::<F16, 4, 6, 1>(job, range, x, n, output, scratch),
        PackedFormat::Fp8 => run_groups::<Fp8, 4, 6, 1>(job, range, x, n, output, scratch),
        PackedFormat::Fp4 => run_groups::<Fp4, 2, 2, 1>(job, range, x, n, output, scratch),
    }
}
