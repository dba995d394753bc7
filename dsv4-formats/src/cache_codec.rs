//! Byte layouts of one cached entry (docs/model.md §6): KV entries (window tokens and compressed
//! entries) and Lightning Indexer keys, in every cache dtype the engine offers. The cache crate
//! maps its dtype enums onto [`KvFormat`] / [`IndexerFormat`] and sizes its pages with
//! [`kv_entry_bytes`] / [`indexer_key_bytes`], so byte counts and codecs live in one place.
//!
//! The quantized layouts use the same block rules as the reference numerics' simulations in
//! [`crate::quant`], so a cache stores exactly what `reference` mode computes: decoding an FP8
//! entry gives [`kv_fp8_sim`](crate::quant::kv_fp8_sim) of what was encoded (bit for bit, rope
//! dims rounded to BF16), and decoding an FP4 key gives [`fp4_sim`](crate::quant::fp4_sim).
//!
//! Each entry is self-contained (values, then its scales). vLLM's paged caches hold the same
//! per-entry bytes but group all of a page's scales after all of its values; a page writer that
//! wants that arrangement can split an entry at the documented offsets.
//!
//! Encoders and decoders work on caller-provided slices and never allocate.

use crate::formats::{e4m3_to_f32, e8m0_to_f32, fp4_pack, fp4_unpack, E2M1_VALUES, FP4_GROUP};
use crate::quant::{fp4_quantize_block, fp8_quantize_block, KV_FP8_BLOCK};
use half::bf16;

/// Scale bytes of an FP8 KV entry are zero-padded to a multiple of this (vLLM `fp8_ds_mla`: 7
/// scales + 1 pad byte), keeping entries 8-byte aligned.
pub const KV_FP8_SCALE_ALIGN: usize = 8;

/// Why an entry could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// More rotary dims than the entry has.
    #[error("{rope} rope dims do not fit in an entry of {width} values")]
    RopeExceedsWidth {
        /// Rotary dims asked for.
        rope: usize,
        /// Values per entry.
        width: usize,
    },
    /// The byte slice does not have the layout's size for this many values.
    #[error("an entry of {width} values takes {expected} bytes in this format, got {got}")]
    ByteCount {
        /// Values per entry.
        width: usize,
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes provided.
        got: usize,
    },
    /// A UE8M0 scale byte is 0xFF (NaN): the cache is corrupt.
    #[error("scale byte {block} of the entry is 0xFF (NaN)")]
    NanScale {
        /// Index of the scale (block) within the entry.
        block: usize,
    },
    /// The f32 scale of an FP8 indexer key is not a positive finite number.
    #[error("indexer key scale with bits {0:#010x} is not a positive finite number")]
    BadScale(
        /// Bit pattern of the scale.
        u32,
    ),
}

/// Storage of a KV entry of `width` values whose trailing `rope` dims are rotary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFormat {
    /// f32 little endian, `4·width` bytes: lossless, for the `exact` numerics mode.
    F32,
    /// bfloat16 little endian (round to nearest even), `2·width` bytes: the reference's storage.
    Bf16,
    /// vLLM's `fp8_ds_mla`: `[nope E4M3 bytes][rope BF16 bytes][UE8M0 scales + zero pad]`, one
    /// scale per 64 nope dims (the [`kv_fp8_sim`](crate::quant::kv_fp8_sim) rule), scale bytes
    /// padded to a multiple of 8. At V4 dims (512, 64): 448 + 128 + 8 = 584 bytes.
    Fp8,
}

/// Storage of a Lightning Indexer key of `width` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexerFormat {
    /// f32 little endian, `4·width` bytes: lossless, for the `exact` numerics mode.
    F32,
    /// bfloat16 little endian, `2·width` bytes: the reference's storage.
    Bf16,
    /// `[E4M3 bytes][f32 LE scale]`, `width + 4` bytes: one power-of-two scale for the whole key,
    /// `2^ceil(log2(max(amax, 1e-4) / 448))`, values `e4m3(clamp(x / s, ±448))` (RNE).
    ///
    /// This follows vLLM, whose DeepSeek-V4 compressor writes the indexer FP8 cache in
    /// `_fused_kv_compress_norm_rope_insert_indexer_attn`
    /// (`vllm/models/deepseek_v4/common/ops/fused_compress_quant_cache.py`): one quant block of
    /// 128 per key, `absmax = max(absmax, 1e-4)`, `exponent = ceil(log2(absmax / 448))`,
    /// `x · 2^-exponent` clamped to ±448 and cast to E4M3, and `2^exponent` stored as a float32.
    /// The generic `indexer_k_quant_and_cache_kernel` (`csrc/cache_kernels.cu`, V3.2's path)
    /// does the same when `use_ue8m0` is set (DeepSeek's `scale_fmt = ue8m0`); without it the
    /// scale would be the plain `amax / 448`. [`IndexerFormat::decode`] accepts either, since it
    /// only multiplies by the stored f32.
    Fp8,
    /// MXFP4: E2M1 codes packed two per byte (low nibble = even element), then one UE8M0 scale
    /// per 32 values (the [`fp4_sim`](crate::quant::fp4_sim) rule): `width/2 + width/32` bytes,
    /// 68 at `width` = 128.
    Fp4,
}

/// Bytes of one KV entry of `width` values whose trailing `rope` dims are rotary (docs/model.md §6).
/// `rope` beyond `width` counts as `width` rotary dims; [`KvFormat::encode`] rejects it.
pub fn kv_entry_bytes(kind: KvFormat, width: usize, rope: usize) -> usize {
    match kind {
        KvFormat::F32 => 4 * width,
        KvFormat::Bf16 => 2 * width,
        KvFormat::Fp8 => {
            let rope = rope.min(width);
            let nope = width - rope;
            nope + 2 * rope + fp8_scale_area(nope)
        }
    }
}

/// Bytes of one indexer key of `width` values (docs/model.md §6).
pub fn indexer_key_bytes(kind: IndexerFormat, width: usize) -> usize {
    match kind {
        IndexerFormat::F32 => 4 * width,
        IndexerFormat::Bf16 => 2 * width,
        IndexerFormat::Fp8 => width + 4,
        IndexerFormat::Fp4 => width.div_ceil(2) + width.div_ceil(FP4_GROUP),
    }
}

/// Scale bytes (with padding) of an FP8 entry with `nope` quantized dims.
fn fp8_scale_area(nope: usize) -> usize {
    nope.div_ceil(KV_FP8_BLOCK)
        .next_multiple_of(KV_FP8_SCALE_ALIGN)
}

fn check_bytes(width: usize, expected: usize, got: usize) -> Result<(), CodecError> {
    if expected == got {
        Ok(())
    } else {
        Err(CodecError::ByteCount {
            width,
            expected,
            got,
        })
    }
}

fn check_rope(width: usize, rope: usize) -> Result<(), CodecError> {
    if rope <= width {
        Ok(())
    } else {
        Err(CodecError::RopeExceedsWidth { rope, width })
    }
}

fn scale_value(byte: u8, block: usize) -> Result<f32, CodecError> {
    e8m0_to_f32(byte).ok_or(CodecError::NanScale { block })
}

fn encode_f32(values: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(values) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

fn decode_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

fn encode_bf16(values: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(values) {
        o.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
    }
}

fn decode_bf16(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

impl KvFormat {
    /// Bytes of one entry; see [`kv_entry_bytes`].
    pub fn entry_bytes(self, width: usize, rope: usize) -> usize {
        kv_entry_bytes(self, width, rope)
    }

    /// Encodes one entry (`values.len()` = width, the last `rope` of them rotary) into `out`,
    /// which must be exactly [`Self::entry_bytes`] long.
    ///
    /// # Errors
    /// [`CodecError::RopeExceedsWidth`] or [`CodecError::ByteCount`]; `out` is then untouched.
    pub fn encode(self, values: &[f32], rope: usize, out: &mut [u8]) -> Result<(), CodecError> {
        let width = values.len();
        check_rope(width, rope)?;
        check_bytes(width, self.entry_bytes(width, rope), out.len())?;
        match self {
            Self::F32 => encode_f32(values, out),
            Self::Bf16 => encode_bf16(values, out),
            Self::Fp8 => {
                let nope = width - rope;
                let (codes, rest) = out.split_at_mut(nope);
                let (rope_bytes, scales) = rest.split_at_mut(2 * rope);
                scales.fill(0);
                for (b, (block, block_codes)) in values[..nope]
                    .chunks(KV_FP8_BLOCK)
                    .zip(codes.chunks_mut(KV_FP8_BLOCK))
                    .enumerate()
                {
                    scales[b] = fp8_quantize_block(block, block_codes);
                }
                encode_bf16(&values[nope..], rope_bytes);
            }
        }
        Ok(())
    }

    /// Decodes one entry of `out.len()` values (the last `rope` rotary) from `bytes`, which must
    /// be exactly [`Self::entry_bytes`] long.
    ///
    /// # Errors
    /// [`CodecError::RopeExceedsWidth`], [`CodecError::ByteCount`], or
    /// [`CodecError::NanScale`] for a corrupt FP8 scale byte (`out` may then be partly written).
    pub fn decode(self, bytes: &[u8], rope: usize, out: &mut [f32]) -> Result<(), CodecError> {
        let width = out.len();
        check_rope(width, rope)?;
        check_bytes(width, self.entry_bytes(width, rope), bytes.len())?;
        match self {
            Self::F32 => decode_f32(bytes, out),
            Self::Bf16 => decode_bf16(bytes, out),
            Self::Fp8 => {
                let nope = width - rope;
                let (codes, rest) = bytes.split_at(nope);
                let (rope_bytes, scales) = rest.split_at(2 * rope);
                let (out_nope, out_rope) = out.split_at_mut(nope);
                for (b, (block_out, block_codes)) in out_nope
                    .chunks_mut(KV_FP8_BLOCK)
                    .zip(codes.chunks(KV_FP8_BLOCK))
                    .enumerate()
                {
                    let s = scale_value(scales[b], b)?;
                    for (o, &c) in block_out.iter_mut().zip(block_codes) {
                        *o = e4m3_to_f32(c) * s;
                    }
                }
                decode_bf16(rope_bytes, out_rope);
            }
        }
        Ok(())
    }
}

impl IndexerFormat {
    /// Bytes of one key; see [`indexer_key_bytes`].
    pub fn key_bytes(self, width: usize) -> usize {
        indexer_key_bytes(self, width)
    }

    /// Encodes one key of `values.len()` values into `out`, which must be exactly
    /// [`Self::key_bytes`] long.
    ///
    /// # Errors
    /// [`CodecError::ByteCount`]; `out` is then untouched.
    pub fn encode(self, values: &[f32], out: &mut [u8]) -> Result<(), CodecError> {
        let width = values.len();
        check_bytes(width, self.key_bytes(width), out.len())?;
        match self {
            Self::F32 => encode_f32(values, out),
            Self::Bf16 => encode_bf16(values, out),
            Self::Fp8 => {
                let (codes, scale) = out.split_at_mut(width);
                let byte = fp8_quantize_block(values, codes);
                // ue8m0_ceil never yields the NaN byte, so the multiplier always exists.
                let s = e8m0_to_f32(byte).unwrap_or(f32::NAN);
                scale.copy_from_slice(&s.to_le_bytes());
            }
            Self::Fp4 => {
                let (packed, scales) = out.split_at_mut(width.div_ceil(2));
                packed.fill(0);
                let mut codes = [0u8; FP4_GROUP];
                for (b, block) in values.chunks(FP4_GROUP).enumerate() {
                    scales[b] = fp4_quantize_block(block, &mut codes);
                    // Groups hold an even number of values, so a byte never straddles two groups;
                    // an odd last value leaves the high nibble of the last byte zero.
                    let first = b * FP4_GROUP / 2;
                    for (byte, pair) in packed[first..]
                        .iter_mut()
                        .zip(codes[..block.len()].chunks(2))
                    {
                        *byte = fp4_pack(pair[0], pair.get(1).copied().unwrap_or(0));
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes one key of `out.len()` values from `bytes`, which must be exactly
    /// [`Self::key_bytes`] long.
    ///
    /// # Errors
    /// [`CodecError::ByteCount`], [`CodecError::NanScale`] (FP4) or [`CodecError::BadScale`]
    /// (FP8) for a corrupt scale (`out` may then be partly written).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) -> Result<(), CodecError> {
        let width = out.len();
        check_bytes(width, self.key_bytes(width), bytes.len())?;
        match self {
            Self::F32 => decode_f32(bytes, out),
            Self::Bf16 => decode_bf16(bytes, out),
            Self::Fp8 => {
                let (codes, scale) = bytes.split_at(width);
                let s = f32::from_le_bytes([scale[0], scale[1], scale[2], scale[3]]);
                if !(s.is_finite() && s > 0.0) {
                    return Err(CodecError::BadScale(s.to_bits()));
                }
                for (o, &c) in out.iter_mut().zip(codes) {
                    *o = e4m3_to_f32(c) * s;
                }
            }
            Self::Fp4 => {
                let (packed, scales) = bytes.split_at(width.div_ceil(2));
                for (b, block_out) in out.chunks_mut(FP4_GROUP).enumerate() {
                    let s = scale_value(scales[b], b)?;
                    let first = b * FP4_GROUP / 2;
                    for (pair, &byte) in block_out.chunks_mut(2).zip(&packed[first..]) {
                        let (even, odd) = fp4_unpack(byte);
                        pair[0] = E2M1_VALUES[usize::from(even)] * s;
                        if let Some(o) = pair.get_mut(1) {
                            *o = E2M1_VALUES[usize::from(odd)] * s;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
