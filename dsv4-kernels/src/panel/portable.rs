//! The portable kernel set: sixteen lanes as a plain array, each operation lane by lane
//! (`f32::mul_add` rounds once, as the SIMD sets' fused multiply-adds do).

use std::ops::Range;

use super::kernel::{run_groups, Decoder, Job, Lanes, SharedOutput, F32_NAN_BITS, MAX_VECS};
use super::{PackedFormat, ScaleType};
use crate::formats::E2M1_VALUES;

/// Sixteen f32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct Lanes16([f32; 16]);

impl Lanes for Lanes16 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Self([0.0; 16])
    }

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Self([v; 16])
    }

    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Self(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
    }

    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        Self(std::array::from_fn(|i| a.0[i] * b.0[i]))
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(std::array::from_fn(|i| *p.add(i)))
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, 16);
    }

    #[inline(always)]
    unsafe fn scales(p: *const u8, kind: ScaleType) -> Self {
        Self(std::array::from_fn(|i| match kind {
            ScaleType::E8M0 => e8m0_multiplier(*p.add(i)),
            ScaleType::F32 => f32::from_le_bytes(bytes(p.add(4 * i))),
        }))
    }
}

/// A UE8M0 scale byte's multiplier as the SIMD sets decode it: 0xFF, which packing writes for
/// a block holding an E4M3 NaN byte, is NaN.
#[inline(always)]
fn e8m0_multiplier(b: u8) -> f32 {
    if b == 0xFF {
        return f32::from_bits(F32_NAN_BITS as u32);
    }
    // Byte 0 is 2^-127, the subnormal 0x0040_0000; every other byte is a normal power of two
    // (at least 0x0080_0000), so one maximum covers both without a branch.
    f32::from_bits((u32::from(b) << 23).max(0x0040_0000))
}

/// The four bytes at `p`.
#[inline(always)]
unsafe fn bytes(p: *const u8) -> [u8; 4] {
    [*p, *p.add(1), *p.add(2), *p.add(3)]
}

/// One input of sixteen rows: `lane(i)` is row `i`'s value.
#[inline(always)]
fn one(lane: impl Fn(usize) -> f32) -> [[Lanes16; MAX_VECS]; 2] {
    let v = Lanes16(std::array::from_fn(lane));
    [[v; MAX_VECS]; 2]
}

/// Two inputs of sixteen rows: `lanes(i)` is row `i`'s pair.
#[inline(always)]
fn two(lanes: impl Fn(usize) -> [f32; 2]) -> [[Lanes16; MAX_VECS]; 2] {
    let pairs: [[f32; 2]; 16] = std::array::from_fn(lanes);
    let even = Lanes16(std::array::from_fn(|i| pairs[i][0]));
    let odd = Lanes16(std::array::from_fn(|i| pairs[i][1]));
    [[even; MAX_VECS], [odd; MAX_VECS]]
}

/// The FP16 bits of an E4M3 byte, value times 2^-8: the byte's exponent and mantissa shifted into
/// FP16's fields (sign from the sign extension, bit 14 cleared).
#[inline(always)]
pub(crate) fn e4m3_as_f16(b: u8) -> u16 {
    ((i16::from(b as i8) << 7) as u16) & 0xBFFF
}

struct F32;
struct Bf16;
struct F16;
struct Fp8;
struct Fp4;

impl Decoder for F32 {
    type V = Lanes16;
    const VECS: usize = 1;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Lanes16; MAX_VECS]; 2] {
        one(|i| f32::from_le_bytes(bytes(p.add(4 * i))))
    }
}

impl Decoder for Bf16 {
    type V = Lanes16;
    const VECS: usize = 1;
    const STEP: usize = 2;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Lanes16; MAX_VECS]; 2] {
        two(|i| {
            let pair = u32::from_le_bytes(bytes(p.add(4 * i)));
            [
                f32::from_bits(pair << 16),
                f32::from_bits(pair & 0xFFFF_0000),
            ]
        })
    }
}

impl Decoder for F16 {
    type V = Lanes16;
    const VECS: usize = 1;
    const STEP: usize = 1;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Lanes16; MAX_VECS]; 2] {
        one(|i| half::f16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]).to_f32())
    }
}

impl Decoder for Fp8 {
    type V = Lanes16;
    const VECS: usize = 1;
    const STEP: usize = 1;
    const OFFSET: f32 = 256.0;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Lanes16; MAX_VECS]; 2] {
        one(|i| half::f16::from_bits(e4m3_as_f16(*p.add(i))).to_f32())
    }
}

impl Decoder for Fp4 {
    type V = Lanes16;
    const VECS: usize = 1;
    const STEP: usize = 2;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [[Lanes16; MAX_VECS]; 2] {
        two(|i| {
            let b = *p.add(i);
            [
                E2M1_VALUES[usize::from(b & 0xF)],
                E2M1_VALUES[usize::from(b >> 4)],
            ]
        })
    }
}

/// [`Job`]'s groups `range` against the `n` rows of `x`.
///
/// SAFETY: as [`run_groups`].
pub(super) unsafe fn run(
    job: &Job,
    range: Range<usize>,
    x: &[f32],
    n: usize,
    output: &SharedOutput,
    scratch: &mut [f32],
) {
    match job.format {
        PackedFormat::F32 => run_groups::<F32, 2, 4, 1>(job, range, x, n, output, scratch),
        PackedFormat::Bf16 => run_groups::<Bf16, 2, 4, 1>(job, range, x, n, output, scratch),
        PackedFormat::F16 => run_groups::<F16, 2, 4, 1>(job, range, x, n, output, scratch),
        PackedFormat::Fp8 => run_groups::<Fp8, 2, 4, 1>(job, range, x, n, output, scratch),
        PackedFormat::Fp4 => run_groups::<Fp4, 2, 4, 1>(job, range, x, n, output, scratch),
    }
}
