//! Cache element formats and the bytes one cached entry takes in each (docs/model.md §6).

use std::fmt;
use std::str::FromStr;

use dsv4_formats::cache_codec::{indexer_key_bytes, kv_entry_bytes, IndexerFormat, KvFormat};
use serde::Serialize;

/// Storage of KV entries (window tokens and compressed entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// float32, 4·Dh bytes.
    F32,
    /// bfloat16, 2·Dh bytes (the reference's storage).
    Bf16,
    /// E4M3 nope dims in 64-blocks with UE8M0 scales + BF16 rope dims (vLLM's `fp8_ds_mla`).
    Fp8,
}

/// Storage of Lightning Indexer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexerCacheDtype {
    /// float32, 4·Di bytes (lossless: what `exact` numerics need).
    F32,
    /// bfloat16, 2·Di bytes.
    Bf16,
    /// E4M3 with one f32 scale per key, Di + 4 bytes.
    Fp8,
    /// E2M1 with one UE8M0 scale per 32 values, Di/2 + Di/32 bytes.
    Fp4,
}

impl KvCacheDtype {
    /// Bytes of one entry of `head_dim` values whose trailing `rope_dim` are rotary.
    pub fn entry_bytes(self, head_dim: usize, rope_dim: usize) -> u64 {
        kv_entry_bytes(self.format(), head_dim, rope_dim) as u64
    }

    /// The byte layout the kernels encode and decode.
    pub fn format(self) -> KvFormat {
        match self {
            Self::F32 => KvFormat::F32,
            Self::Bf16 => KvFormat::Bf16,
            Self::Fp8 => KvFormat::Fp8,
        }
    }

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Fp8 => "fp8",
        }
    }
}

impl IndexerCacheDtype {
    /// Bytes of one indexer key of `index_head_dim` values.
    pub fn key_bytes(self, index_head_dim: usize) -> u64 {
        indexer_key_bytes(self.format(), index_head_dim) as u64
    }

    /// The byte layout the kernels encode and decode.
    pub fn format(self) -> IndexerFormat {
        match self {
            Self::F32 => IndexerFormat::F32,
            Self::Bf16 => IndexerFormat::Bf16,
            Self::Fp8 => IndexerFormat::Fp8,
            Self::Fp4 => IndexerFormat::Fp4,
        }
    }

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Fp8 => "fp8",
            Self::Fp4 => "fp4",
        }
    }
}

/// A cache dtype name that is not one of the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`: expected one of {accepted}")]
pub struct UnknownDtype {
    what: &'static str,
    given: String,
    accepted: &'static str,
}

impl FromStr for KvCacheDtype {
    type Err = UnknownDtype;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::F32, Self::Bf16, Self::Fp8]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDtype {
                what: "KV cache dtype",
                given: s.to_string(),
                accepted: "f32, bf16, fp8",
            })
    }
}

impl FromStr for IndexerCacheDtype {
    type Err = UnknownDtype;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::F32, Self::Bf16, Self::Fp8, Self::Fp4]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDtype {
                what: "indexer cache dtype",
                given: s.to_string(),
                accepted: "f32, bf16, fp8, fp4",
            })
    }
}

impl fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for IndexerCacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The pair of cache formats a request runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheDtypes {
    /// KV entries.
    pub kv: KvCacheDtype,
    /// Indexer keys.
    pub indexer: IndexerCacheDtype,
}

impl Default for CacheDtypes {
    /// The reference's storage: BF16 entries and BF16 indexer keys.
    fn default() -> Self {
        Self {
            kv: KvCacheDtype::Bf16,
            indexer: IndexerCacheDtype::Bf16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes_match_contract_section_5_for_v4_dims() {
        // Dh = 512, Dr = 64, Di = 128 (docs/model.md §6).
        assert_eq!(KvCacheDtype::F32.entry_bytes(512, 64), 2048);
        assert_eq!(KvCacheDtype::Bf16.entry_bytes(512, 64), 1024);
        assert_eq!(KvCacheDtype::Fp8.entry_bytes(512, 64), 448 + 128 + 8);
        assert_eq!(IndexerCacheDtype::Bf16.key_bytes(128), 256);
        assert_eq!(IndexerCacheDtype::Fp8.key_bytes(128), 132);
        assert_eq!(IndexerCacheDtype::Fp4.key_bytes(128), 68);
    }

    #[test]
    fn fp8_scale_bytes_round_up_to_eight() {
        // Dh = 64, Dr = 16: 48 nope dims → 1 scale byte, padded to 8; rope 16 × 2 B.
        assert_eq!(KvCacheDtype::Fp8.entry_bytes(64, 16), 48 + 32 + 8);
        // 9 blocks of 64 nope dims → 9 scale bytes, padded to 16.
        assert_eq!(KvCacheDtype::Fp8.entry_bytes(576 + 64, 64), 576 + 128 + 16);
    }

    #[test]
    fn dtype_names_round_trip_and_reject_unknown() {
        for d in [KvCacheDtype::F32, KvCacheDtype::Bf16, KvCacheDtype::Fp8] {
            assert_eq!(d.name().parse::<KvCacheDtype>(), Ok(d));
        }
        for d in [
            IndexerCacheDtype::F32,
            IndexerCacheDtype::Bf16,
            IndexerCacheDtype::Fp8,
            IndexerCacheDtype::Fp4,
        ] {
            assert_eq!(d.name().parse::<IndexerCacheDtype>(), Ok(d));
        }
        let err = "fp16".parse::<KvCacheDtype>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown KV cache dtype `fp16`: expected one of f32, bf16, fp8"
        );
        assert!("f16".parse::<IndexerCacheDtype>().is_err());
    }
}
