//! The AVX-512 kernel set: one 512-bit vector holds a group's sixteen rows.

use std::arch::x86_64::*;
use std::ops::Range;

use super::kernel::{run_groups, Decoder, Job, Lanes, SharedOutput, F32_NAN_BITS, MAX_VECS};
use super::{PackedFormat, ScaleType};
use crate::formats::E2M1_VALUES;

impl Lanes for __m512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        _mm512_set1_ps(v)
    }

    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(a, b, c)
    }

    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm512_mul_ps(a, b)
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }

    #[inline(always)]
    unsafe fn scales(p: *const u8, kind: ScaleType) -> Self {
        match kind {
            ScaleType::E8M0 => {
                // Byte b into f32's exponent field; byte 0 (2^-127, a subnormal) comes out of
                // the maximum with its bit pattern, byte 0xFF is made NaN (once per block, so
                // the compare costs nothing in the loop).
                let wide = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
                let bits =
                    _mm512_max_epu32(_mm512_slli_epi32(wide, 23), _mm512_set1_epi32(0x0040_0000));
                let nan = _mm512_cmpeq_epi32_mask(wide, _mm512_set1_epi32(0xFF));
                let bits = _mm512_mask_mov_epi32(bits, nan, _mm512_set1_epi32(F32_NAN_BITS));
                _mm512_castsi512_ps(bits)
            }
            ScaleType::F32 => _mm512_loadu_ps(p.cast()),
        }
    }
}

/// One vector for one input.
#[inline(always)]
fn one(v: __m512) -> [[__m512; MAX_VECS]; 2] {
    [[v; MAX_VECS]; 2]
}

/// Vectors for two inputs.
#[inline(always)]
fn two(even: __m512, odd: __m512) -> [[__m512; MAX_VECS]; 2] {
    [[even; MAX_VECS], [odd; MAX_VECS]]
}

struct F32;
struct Bf16;
struct F16;
struct Fp8;
struct Fp4;

impl Decoder for F32 {
    type V = __m512;
    const VECS: usize = 1;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m512; MAX_VECS]; 2] {
        one(_mm512_loadu_ps(p.cast()))
    }
}

impl Decoder for Bf16 {
    type V = __m512;
    const VECS: usize = 1;
    const STEP: usize = 2;
    /// Each 32-bit lane holds a row's two values: the lower widens by a shift, the upper by a
    /// mask.
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m512; MAX_VECS]; 2] {
        let raw = _mm512_loadu_si512(p.cast());
        let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        two(
            _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16)),
            _mm512_castsi512_ps(_mm512_and_si512(raw, upper)),
        )
    }
}

impl Decoder for F16 {
    type V = __m512;
    const VECS: usize = 1;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m512; MAX_VECS]; 2] {
        one(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast())))
    }
}

impl Decoder for Fp8 {
    type V = __m512;
    const VECS: usize = 1;
    const STEP: usize = 1;
    const OFFSET: f32 = 256.0;
    /// Sixteen bytes sign-extended to 16 bits and shifted into FP16's fields (bit 14, a copy of
    /// the sign, cleared), then widened to f32 exactly: values times 2^-8.
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m512; MAX_VECS]; 2] {
        let wide = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
        let fields = _mm256_and_si256(
            _mm256_slli_epi16(wide, 7),
            _mm256_set1_epi16(0xBFFFu16 as i16),
        );
        one(_mm512_cvtph_ps(fields))
    }
}

impl Decoder for Fp4 {
    type V = __m512;
    const VECS: usize = 1;
    const STEP: usize = 2;
    /// Sixteen bytes widened to 32-bit lanes; the permute reads each lane's low four bits as an
    /// index into the sixteen E2M1 values, so the low nibble needs no mask and the high one a
    /// shift.
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[__m512; MAX_VECS]; 2] {
        let values = _mm512_loadu_ps(E2M1_VALUES.as_ptr());
        let codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
        two(
            _mm512_permutexvar_ps(codes, values),
            _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), values),
        )
    }
}

/// [`Job`]'s groups `range` against the `n` rows of `x`, in tiles of eight groups (one row) or
/// twelve rows: twelve accumulators and twelve totals fit the 32 registers.
///
/// SAFETY: the CPU has AVX-512 F and BW (and AVX2, FMA, F16C), and as [`run_groups`].
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(super) unsafe fn run(
    job: &Job,
    range: Range<usize>,
    x: &[f32],
    n: usize,
    output: &SharedOutput,
    scratch: &mut [f32],
) {
    match job.format {
        PackedFormat::F32 => run_groups::<F32, 8, 6, 2>(job, range, x, n, output, scratch),
        PackedFormat::Bf16 => run_groups::<Bf16, 8, 6, 2>(job, range, x, n, output, scratch),
        PackedFormat::F16 => run_groups::<F16, 8, 6, 2>(job, range, x, n, output, scratch),
        PackedFormat::Fp8 => run_groups::<Fp8, 8, 6, 2>(job, range, x, n, output, scratch),
        PackedFormat::Fp4 => run_groups::<Fp4, 8, 6, 2>(job, range, x, n, output, scratch),
    }
}
