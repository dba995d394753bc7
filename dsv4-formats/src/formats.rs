//! The number formats of the V4 release (docs/model.md §3): FP8 E4M3 elements, UE8M0 power-of-two
//! scales, FP4 E2M1 elements packed two per byte, and the dequantization of block- and group-scaled
//! matrices built from them.

/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// Largest E2M1 value.
pub const E2M1_MAX: f32 = 6.0;
/// The UE8M0 byte that encodes NaN; a checkpoint holding it is corrupt.
pub const E8M0_NAN: u8 = 0xFF;
/// Edge of an FP8 weight scale block.
pub const FP8_BLOCK: usize = 128;
/// Inputs sharing one FP4 scale.
pub const FP4_GROUP: usize = 32;

/// E2M1 value of each 4-bit code; bit 3 is the sign.
pub const E2M1_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Value of an E4M3 (`float8_e4m3fn`) byte: bias 7, 3 mantissa bits, no infinities; 0x7F and
/// 0xFF are NaN.
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((byte >> 3) & 0x0F);
    let mantissa = f32::from(byte & 0x07);
    if exponent == 0x0F && mantissa == 7.0 {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        mantissa * (-9f32).exp2()
    } else {
        (1.0 + mantissa / 8.0) * ((exponent - 7) as f32).exp2()
    };
    sign * magnitude
}

/// Nearest E4M3 byte to `x`, ties to even; finite values beyond ±448 saturate, NaN maps to 0x7F.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7F;
    }
    let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7E;
    }
    let min_normal = (-6f32).exp2();
    let code = if a < min_normal {
        // Subnormals are multiples of 2^-9; code 8 is the smallest normal, which is consistent.
        (a * 512.0).round_ties_even() as u8
    } else {
        let exponent = a.log2().floor() as i32;
        // Guard against log2 rounding at exact powers of two.
        let exponent = if (exponent as f32).exp2() > a {
            exponent - 1
        } else {
            exponent
        };
        let scaled = a / (exponent as f32).exp2(); // in [1, 2)
        let mut mantissa = ((scaled - 1.0) * 8.0).round_ties_even() as i32;
        let mut biased = exponent + 7;
        if mantissa == 8 {
            mantissa = 0;
            biased += 1;
        }
        ((biased as u8) << 3) | mantissa as u8
    };
    sign | code.min(0x7E)
}

/// Multiplier of a UE8M0 scale byte, 2^(b − 127); `None` for the NaN byte 0xFF.
#[inline]
pub fn e8m0_to_f32(byte: u8) -> Option<f32> {
    match byte {
        E8M0_NAN => None,
        // 2^-127 is an f32 subnormal: only the mantissa's top bit set.
        0 => Some(f32::from_bits(0x0040_0000)),
        b => Some(f32::from_bits(u32::from(b) << 23)),
    }
}

/// The UE8M0 byte of a power of two, `None` when `x` is not a power of two in range.
pub fn f32_to_e8m0(x: f32) -> Option<u8> {
    if x == f32::from_bits(0x0040_0000) {
        return Some(0);
    }
    let bits = x.to_bits();
    let is_normal_power = x.is_normal() && x > 0.0 && bits & 0x007F_FFFF == 0;
    is_normal_power.then_some((bits >> 23) as u8)
}

/// Nearest E2M1 code to `x`, ties to even; magnitudes beyond 6 saturate.
pub fn f32_to_e2m1(x: f32) -> u8 {
    const MIDPOINTS: [f32; 7] = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let sign: u8 = if x.is_sign_negative() { 8 } else { 0 };
    let a = x.abs();
    let below = MIDPOINTS.iter().filter(|&&m| m < a).count();
    let code = match MIDPOINTS.get(below) {
        // Exactly between codes `below` and `below + 1`: keep the even one.
        Some(&m) if m == a && below % 2 == 1 => below + 1,
        _ => below,
    };
    sign | code as u8
}

/// The two E2M1 codes of a packed byte: `(element 2j, element 2j + 1)`, low nibble first.
pub fn fp4_unpack(byte: u8) -> (u8, u8) {
    (byte & 0x0F, byte >> 4)
}

/// Packs two E2M1 codes, the first into the low nibble.
pub fn fp4_pack(even: u8, odd: u8) -> u8 {
    (even & 0x0F) | (odd << 4)
}

/// `W[o, i] = e4m3(q[o, i]) · s[o / 128, i / 128]` for an `[out, inp]` FP8 matrix whose scales
/// (already multipliers) form a `[ceil(out/128), ceil(inp/128)]` grid.
pub fn dequant_fp8_block(q: &[u8], scales: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let cols = inp.div_ceil(FP8_BLOCK);
    let mut w = Vec::with_capacity(out * inp);
    for o in 0..out {
        let scale_row = &scales[(o / FP8_BLOCK) * cols..][..cols];
        for (i, &b) in q[o * inp..][..inp].iter().enumerate() {
            w.push(e4m3_to_f32(b) * scale_row[i / FP8_BLOCK]);
        }
    }
    w
}

/// `W[o, k] = e2m1(code(o, k)) · s[o, k / 32]` for an `[out, inp]` FP4 matrix packed as
/// `[out, inp/2]` bytes with `[out, inp/32]` scales (multipliers).
pub fn dequant_fp4_group(packed: &[u8], scales: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let groups = inp / FP4_GROUP;
    let mut w = Vec::with_capacity(out * inp);
    for o in 0..out {
        let row_scales = &scales[o * groups..][..groups];
        for (j, &byte) in packed[o * inp / 2..][..inp / 2].iter().enumerate() {
            let scale = row_scales[2 * j / FP4_GROUP];
            let (even, odd) = fp4_unpack(byte);
            w.push(E2M1_VALUES[usize::from(even)] * scale);
            w.push(E2M1_VALUES[usize::from(odd)] * scale);
        }
    }
    w
}

/// An FP4 expert re-encoded as FP8 with 128×128 UE8M0 blocks (docs/model.md §3.2), losslessly.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Matrix {
    /// E4M3 elements, `[out, inp]`.
    pub q: Vec<u8>,
    /// UE8M0 scale bytes, `[ceil(out/128), ceil(inp/128)]`.
    pub scales: Vec<u8>,
}

/// Why an FP4 matrix could not be re-encoded as FP8 without loss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReencodeError {
    /// A scale byte is 0xFF (NaN).
    #[error("scale of row {row}, group {group} is NaN (byte 0xFF)")]
    NanScale {
        /// Output row.
        row: usize,
        /// Group of 32 inputs.
        group: usize,
    },
    /// An element would lose precision in its tile's scale.
    #[error("element [{row}, {col}] is not exact in E4M3 at its tile's scale")]
    Inexact {
        /// Output row.
        row: usize,
        /// Input column.
        col: usize,
    },
}

/// Re-encodes an FP4 matrix (`[out, inp/2]` packed, `[out, inp/32]` UE8M0 scale bytes) as FP8:
/// each 128×128 tile takes the largest of its group scales divided by 2^6, and every element
/// `fp4 · s_group / s_tile` is exact in E4M3 (at most 6 · 2^6 = 384 < 448) unless a group's scale
/// lies so far below its tile's largest that the element falls under E4M3's precision; that, and
/// a NaN scale byte, are errors rather than silent rounding.
pub fn fp4_to_fp8(
    packed: &[u8],
    scale_bytes: &[u8],
    out: usize,
    inp: usize,
) -> Result<Fp8Matrix, ReencodeError> {
    let groups = inp / FP4_GROUP;
    let (tile_rows, tile_cols) = (out.div_ceil(FP8_BLOCK), inp.div_ceil(FP8_BLOCK));
    let mut tile_max = vec![0u8; tile_rows * tile_cols];
    for o in 0..out {
        for g in 0..groups {
            let b = scale_bytes[o * groups + g];
            if b == E8M0_NAN {
                return Err(ReencodeError::NanScale { row: o, group: g });
            }
            let t = &mut tile_max[(o / FP8_BLOCK) * tile_cols + g * FP4_GROUP / FP8_BLOCK];
            *t = (*t).max(b);
        }
    }
    // Dividing by 2^6 lowers the exponent byte by 6 (never below the smallest scale).
    let tile_scales: Vec<u8> = tile_max.iter().map(|&b| b.saturating_sub(6)).collect();
    let mut q = Vec::with_capacity(out * inp);
    for o in 0..out {
        for (j, &byte) in packed[o * inp / 2..][..inp / 2].iter().enumerate() {
            let (even, odd) = fp4_unpack(byte);
            for (k, code) in [(2 * j, even), (2 * j + 1, odd)] {
                let group = scale_bytes[o * groups + k / FP4_GROUP];
                let tile = tile_scales[(o / FP8_BLOCK) * tile_cols + k / FP8_BLOCK];
                let ratio = (i32::from(group) - i32::from(tile)) as f32;
                let value = E2M1_VALUES[usize::from(code)] * ratio.exp2();
                let byte = f32_to_e4m3(value);
                if e4m3_to_f32(byte) != value {
                    return Err(ReencodeError::Inexact { row: o, col: k });
                }
                q.push(byte);
            }
        }
    }
    Ok(Fp8Matrix {
        q,
        scales: tile_scales,
    })
}

/// The UE8M0 byte of the smallest power of two at or above `x` (the reference's scale rule,
/// `2^ceil(log2(x))`); `x` is clamped into the finite scale range.
pub fn ue8m0_ceil(x: f32) -> u8 {
    let x = x.clamp(f32::from_bits(0x0040_0000), f32::MAX);
    if x < f32::MIN_POSITIVE {
        // Subnormal inputs: 2^-127 is the only scale below 2^-126.
        return if x <= f32::from_bits(0x0040_0000) {
            0
        } else {
            1
        };
    }
    let bits = x.to_bits();
    let exponent = (bits >> 23) as u8;
    if bits & 0x007F_FFFF == 0 {
        exponent
    } else {
        exponent.saturating_add(1).min(E8M0_NAN - 1)
    }
}
