//! The cache-sharing flags (`--share-kv`, `--indexer-reuse`), shared by `plan` (which prices a
//! policy) and the commands that run one.

use clap::{Args, ValueEnum};
use dsv4_cache::{KvSharing, ShareDirection, Sharing};

/// A request's cache-sharing policy.
#[derive(Debug, Clone, Args)]
pub struct SharingArgs {
    /// Cross-layer KV groups (CLA) of N layers of the same kind: one layer's window, entries
    /// and indexer keys serve the group.
    #[arg(long, value_name = "N")]
    share_kv: Option<usize>,
    /// Layers below this one keep their own cache under --share-kv.
    #[arg(long, value_name = "LAYER", default_value_t = 0, requires = "share_kv")]
    share_kv_min_layer: usize,
    /// Layers above this one keep their own cache under --share-kv.
    #[arg(long, value_name = "LAYER", requires = "share_kv")]
    share_kv_max_layer: Option<usize>,
    /// Which layer of a group is the source: `lower` (causal); `upper` is refused with its reason.
    #[arg(long, value_enum, default_value_t = Direction::Lower, requires = "share_kv")]
    share_kv_direction: Direction,
    /// One CSA layer in each run of N scores and selects; the others reuse its selection and
    /// store no indexer keys.
    #[arg(long, value_name = "N")]
    indexer_reuse: Option<usize>,
}

/// `--share-kv-direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Direction {
    /// The group's lowest layer is the source.
    Lower,
    /// The group's highest layer is the source.
    Upper,
}

impl SharingArgs {
    /// The policy, checked before anything loads: honourable, and asked of the CPU backend
    /// (the only one that runs it yet) when it shares anything.
    pub fn checked(&self, on_cpu: bool) -> anyhow::Result<Sharing> {
        let sharing = self.sharing();
        sharing.validate()?;
        if !on_cpu && !sharing.is_none() {
            anyhow::bail!("--share-kv and --indexer-reuse run on --device cpu only for now; the CUDA backend keeps every layer's cache");
        }
        Ok(sharing)
    }

    /// The policy the flags ask for (checked where it is applied).
    pub fn sharing(&self) -> Sharing {
        Sharing {
            kv: self.share_kv.map(|group| KvSharing {
                group,
                min_layer: self.share_kv_min_layer,
                max_layer: self.share_kv_max_layer,
                direction: match self.share_kv_direction {
                    Direction::Lower => ShareDirection::Lower,
                    Direction::Upper => ShareDirection::Upper,
                },
            }),
            indexer_reuse: self.indexer_reuse,
        }
    }
}
