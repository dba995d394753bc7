//! The reference numerics' quantize–dequantize simulations (docs/model.md §3.4–3.5): the values
//! stay f32 but afterwards hold exactly what the release's FP8/FP4 paths would have produced, so
//! the `reference` numerics mode (docs/model.md §5) can reproduce the official forward pass on any
//! backend, and an FP8/FP4 cache (see [`crate::cache_codec`]) stores them without further loss.
//!
//! Every block follows the same recipe: `a = max(max|x|, floor)`, a power-of-two scale `s =
//! 2^ceil(log2(a / qmax))` (a UE8M0 byte), `q = round_to_nearest_even(clamp(x / s))` in the element
//! format, `x ← q · s`. Dividing and multiplying by a power of two is exact, so the only rounding
//! is the element cast. Non-finite inputs are outside the reference's domain: NaN elements stay
//! NaN, infinities do not produce meaningful blocks.

use crate::formats::{
    e4m3_to_f32, e8m0_to_f32, f32_to_e2m1, f32_to_e4m3, ue8m0_ceil, E2M1_MAX, E2M1_VALUES,
    E4M3_MAX, FP4_GROUP, FP8_BLOCK,
};

/// Channels sharing one scale when an activation enters an FP8/FP4 GEMM (REF-K `act_quant`).
pub const ACT_BLOCK: usize = FP8_BLOCK;
/// Nope dims sharing one scale in the KV FP8 simulation and in the FP8 cache entry.
pub const KV_FP8_BLOCK: usize = 64;
/// Values sharing one scale in the FP4 simulation (indexer queries and keys).
pub const FP4_BLOCK: usize = FP4_GROUP;
/// Smallest amax an FP8 block is scaled for, so an all-zero block still gets a finite scale.
pub const FP8_AMAX_FLOOR: f32 = 1e-4;
/// Smallest amax an FP4 block is scaled for (`6 · 2^-126`: the scale never drops below the
/// smallest normal f32).
pub const FP4_AMAX_FLOOR: f32 = E2M1_MAX * f32::MIN_POSITIVE;

/// E4M3 code of `x` at scale `s`: the reference clamps to ±448 before the cast.
fn e4m3_code(x: f32, s: f32) -> u8 {
    f32_to_e4m3((x / s).clamp(-E4M3_MAX, E4M3_MAX))
}

/// E2M1 code of `x` at scale `s`, clamped to ±6 first.
fn e2m1_code(x: f32, s: f32) -> u8 {
    f32_to_e2m1((x / s).clamp(-E2M1_MAX, E2M1_MAX))
}

/// Multiplier of a scale byte made by [`ue8m0_ceil`], which never yields the NaN byte.
fn scale_of(byte: u8) -> f32 {
    e8m0_to_f32(byte).unwrap_or(f32::NAN)
}

/// Largest magnitude in `block`, at least `floor` (NaN elements are skipped).
fn amax(block: &[f32], floor: f32) -> f32 {
    block.iter().fold(floor, |m, v| m.max(v.abs()))
}

/// UE8M0 byte of an FP8 block's scale: `2^ceil(log2(max(amax, 1e-4) / 448))`.
///
/// Exposed so that the FP8 cache layouts and the simulation share one rule.
pub fn fp8_block_scale(block: &[f32]) -> u8 {
    ue8m0_ceil(amax(block, FP8_AMAX_FLOOR) / E4M3_MAX)
}

/// Quantizes one FP8 block: writes the E4M3 code of every value into `codes` (same length as
/// `block`; extra codes are left alone) and returns the UE8M0 scale byte. Decoding
/// `e4m3(code) · 2^(byte − 127)` gives what [`act_quant_fp8`] / [`kv_fp8_sim`] leave in place.
pub fn fp8_quantize_block(block: &[f32], codes: &mut [u8]) -> u8 {
    let byte = fp8_block_scale(block);
    let s = scale_of(byte);
    for (c, &x) in codes.iter_mut().zip(block) {
        *c = e4m3_code(x, s);
    }
    byte
}

/// UE8M0 byte of an FP4 block's scale: `2^ceil(log2(max(amax, 6·2^-126) / 6))`.
pub fn fp4_block_scale(block: &[f32]) -> u8 {
    ue8m0_ceil(amax(block, FP4_AMAX_FLOOR) / E2M1_MAX)
}

/// Quantizes one FP4 block: writes the 4-bit E2M1 code of every value into `codes` (one code
/// per byte, unpacked) and returns the UE8M0 scale byte.
pub fn fp4_quantize_block(block: &[f32], codes: &mut [u8]) -> u8 {
    let byte = fp4_block_scale(block);
    let s = scale_of(byte);
    for (c, &x) in codes.iter_mut().zip(block) {
        *c = e2m1_code(x, s);
    }
    byte
}

/// FP8 quantize–dequantize of each block of `block_len` consecutive values (last one shorter).
fn fp8_sim_blocks(x: &mut [f32], block_len: usize) {
    for block in x.chunks_mut(block_len) {
        let s = scale_of(fp8_block_scale(block));
        for v in block.iter_mut() {
            *v = e4m3_to_f32(e4m3_code(*v, s)) * s;
        }
    }
}

/// The input quantization the reference applies before every FP8/FP4 GEMM (docs/model.md §3.4), in
/// place: blocks of 128 contiguous channels (the last may be shorter), each scaled by its
/// power-of-two UE8M0 scale and rounded to E4M3.
///
/// Pass one activation row (or rows whose length is a multiple of 128): blocks never straddle
/// a row in the reference.
pub fn act_quant_fp8(x: &mut [f32]) {
    fp8_sim_blocks(x, ACT_BLOCK);
}

/// The QAT simulation of a KV entry (docs/model.md §3.5: window KV and compressed KV after norm + RoPE):
/// the first `nope` dims in blocks of 64 go through the FP8 rule, the rotary dims after them are
/// left untouched. `nope` larger than the entry is treated as the whole entry.
pub fn kv_fp8_sim(entry: &mut [f32], nope: usize) {
    let nope = nope.min(entry.len());
    fp8_sim_blocks(&mut entry[..nope], KV_FP8_BLOCK);
}

/// The FP4 simulation of the indexer's queries and keys (docs/model.md §3.5), in place: blocks of 32
/// values (the last may be shorter), power-of-two scale of `amax / 6` (amax floored at
/// `6·2^-126`), E2M1 round-to-nearest-even.
pub fn fp4_sim(x: &mut [f32]) {
    for block in x.chunks_mut(FP4_BLOCK) {
        let s = scale_of(fp4_block_scale(block));
        for v in block.iter_mut() {
            *v = E2M1_VALUES[usize::from(e2m1_code(*v, s))] * s;
        }
    }
}

/// A Hadamard transform was asked for a length that is not a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Hadamard transform needs a power-of-two length, got {0}")]
pub struct NotPowerOfTwo(pub usize);

/// The normalized Walsh–Hadamard transform (REF `rotate_activation`), in place:
/// `y = (x · H_n) · n^-1/2` with `H_n` in Sylvester order (`H_2n = [[H, H], [H, −H]]`).
///
/// The indexer rotates queries and keys with it before the FP4 simulation: it is orthogonal (so
/// q·k is unchanged in exact arithmetic) and spreads outliers across a block, which is what
/// makes the FP4 rounding benign. Computed with the usual in-place butterflies in f32, then one
/// multiplication by `n^-1/2`; applying it twice returns the input up to f32 rounding.
///
/// # Errors
/// [`NotPowerOfTwo`] when `x.len()` is not a power of two (0 included); `x` is then unchanged.
pub fn hadamard(x: &mut [f32]) -> Result<(), NotPowerOfTwo> {
    let n = x.len();
    if !n.is_power_of_two() {
        return Err(NotPowerOfTwo(n));
    }
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = pair.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (u, v) = (*a, *b);
                *a = u + v;
                *b = u - v;
            }
        }
        h *= 2;
    }
    let norm = (n as f64).sqrt().recip() as f32;
    for v in x.iter_mut() {
        *v *= norm;
    }
    Ok(())
}
