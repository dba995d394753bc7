//! Cache sharing across layers, opt-in per request: cross-layer KV groups (CLA: a group's other
//! layers read one source layer's window, compressed entries and indexer keys instead of
//! storing their own) and indexer top-k reuse (one CSA layer of each run scores and selects, the
//! next ones reuse its selection and store no indexer keys). This module says which layer reads
//! which; the schema prices what each layer then stores.

use dsv4_model::{AttentionKind, LayerSpec};
use serde::Serialize;

/// Which layer of a CLA group stores the keys the others read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareDirection {
    /// The group's lowest layer: causal within one forward, since the source layer runs first.
    Lower,
    /// The group's highest layer (the seed's default). Refused: in a forward over a pretrained
    /// model its keys do not exist yet when the lower layers need them.
    Upper,
}

/// Cross-layer KV groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvSharing {
    /// Layers per group (2 or more).
    pub group: usize,
    /// Layers below this one keep their own cache (attention sinks live in the bottom layers).
    pub min_layer: usize,
    /// Layers above this one keep their own cache (`None`: no upper bound).
    pub max_layer: Option<usize>,
    /// Which layer of a group is the source.
    pub direction: ShareDirection,
}

/// The sharing policy of a request; the default shares nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sharing {
    /// Cross-layer KV groups, if any.
    pub kv: Option<KvSharing>,
    /// CSA layers per indexer-selection run (`None` or 1: every CSA layer selects).
    pub indexer_reuse: Option<usize>,
}

/// A sharing policy dsv4 cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingError {
    /// A group of fewer than 2 layers.
    #[error("--share-kv {0}: a group needs at least 2 layers")]
    GroupTooSmall(usize),
    /// A run of no CSA layers.
    #[error("--indexer-reuse 0: expected at least 1 (1 = every CSA layer selects)")]
    EmptyRun,
    /// The upper direction on a pretrained model.
    #[error("--share-kv-direction upper: the group's lower layers would read keys of a layer above them, which a forward over a pretrained model computes after them; only `lower` (causal) is supported")]
    Upper,
    /// Both policies at once.
    #[error("--share-kv and --indexer-reuse together are not supported: a layer reading another's keys could be asked to select over keys nobody stored")]
    Both,
    /// `max_layer` below `min_layer`.
    #[error("--share-kv-max-layer {max} is below --share-kv-min-layer {min}")]
    EmptyRange {
        /// The lower bound.
        min: usize,
        /// The upper bound.
        max: usize,
    },
}

/// Where each layer's shared state comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    /// The layer whose window, entries and indexer keys this one reads (CLA).
    pub kv: Option<usize>,
    /// The layer whose indexer selection this one reuses.
    pub indexer: Option<usize>,
}

impl Sharing {
    /// CLA groups of `group` layers, the lowest the source, from layer 0 up.
    pub fn kv_groups(group: usize) -> Self {
        Self {
            kv: Some(KvSharing {
                group,
                min_layer: 0,
                max_layer: None,
                direction: ShareDirection::Lower,
            }),
            indexer_reuse: None,
        }
    }

    /// One indexer selection per run of `run` CSA layers.
    pub fn indexer_runs(run: usize) -> Self {
        Self {
            kv: None,
            indexer_reuse: Some(run),
        }
    }

    /// Checks the policy.
    pub fn validate(&self) -> Result<(), SharingError> {
        if let Some(kv) = self.kv {
            if kv.group < 2 {
                return Err(SharingError::GroupTooSmall(kv.group));
            }
            if kv.direction == ShareDirection::Upper {
                return Err(SharingError::Upper);
            }
            if let Some(max) = kv.max_layer.filter(|&max| max < kv.min_layer) {
                return Err(SharingError::EmptyRange {
                    min: kv.min_layer,
                    max,
                });
            }
        }
        match self.indexer_reuse {
            Some(0) => Err(SharingError::EmptyRun),
            Some(n) if n > 1 && self.kv.is_some() => Err(SharingError::Both),
            _ => Ok(()),
        }
    }

    /// Whether the policy shares anything.
    pub fn is_none(&self) -> bool {
        self.kv.is_none() && self.indexer_reuse.unwrap_or(1) <= 1
    }

    /// Each layer's sources (by position in `layers`) under this (validated) policy. CLA groups form among consecutive
    /// layers of the same attention kind and ratio within `[min_layer, max_layer]` (V4
    /// alternates CSA and HCA, so layer 2's partner is layer 4); indexer runs among consecutive
    /// CSA layers. The lowest layer of a group or run is its source.
    pub fn sources(&self, layers: &[LayerSpec]) -> Vec<Sources> {
        let mut sources = vec![Sources::default(); layers.len()];
        let mut kinds: Vec<AttentionKind> = Vec::new();
        for spec in layers {
            if !kinds.contains(&spec.attention) {
                kinds.push(spec.attention);
            }
        }
        if let Some(kv) = self.kv {
            let within = |i: usize| i >= kv.min_layer && kv.max_layer.is_none_or(|max| i <= max);
            for &kind in &kinds {
                let members: Vec<usize> = (0..layers.len())
                    .filter(|&i| layers[i].attention == kind && within(layers[i].index))
                    .collect();
                for group in members.chunks(kv.group) {
                    for &i in &group[1..] {
                        sources[i].kv = Some(layers[group[0]].index);
                    }
                }
            }
        }
        if let Some(run) = self.indexer_reuse.filter(|&n| n > 1) {
            let csa: Vec<usize> = (0..layers.len())
                .filter(|&i| layers[i].attention.has_indexer())
                .collect();
            for group in csa.chunks(run) {
                for &i in &group[1..] {
                    sources[i].indexer = Some(layers[group[0]].index);
                }
            }
        }
        sources
    }
}
