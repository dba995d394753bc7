//! The layer schedule: what kind of attention, RoPE and MLP each decoder layer and MTP stage runs
//! (docs/model.md §1.2), derived once from the config so no other code re-reads `compress_ratios`.

use serde::Serialize;

use crate::ModelConfig;

/// The compress ratio that makes a layer CSA (overlapping compressor + Lightning Indexer).
pub const CSA_RATIO: usize = 4;

/// Attention of one layer, keyed by its compress ratio m (docs/model.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AttentionKind {
    /// m = 0: sliding window only.
    Window,
    /// m = 4: window + overlapping two-series compressor + indexer top-k.
    Csa {
        /// Tokens per compressed entry (4).
        ratio: usize,
    },
    /// any other m > 0: window + non-overlapping compressor, every entry attended.
    Hca {
        /// Tokens per compressed entry.
        ratio: usize,
    },
}

impl AttentionKind {
    /// The kind a compress ratio names.
    pub fn from_ratio(ratio: usize) -> Self {
        match ratio {
            0 => Self::Window,
            CSA_RATIO => Self::Csa { ratio },
            _ => Self::Hca { ratio },
        }
    }

    /// Tokens per compressed entry; `None` for window-only layers.
    pub fn ratio(self) -> Option<usize> {
        match self {
            Self::Window => None,
            Self::Csa { ratio } | Self::Hca { ratio } => Some(ratio),
        }
    }

    /// Short name as in the paper: `SWA`, `CSA`, `HCA`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Window => "SWA",
            Self::Csa { .. } => "CSA",
            Self::Hca { .. } => "HCA",
        }
    }

    /// Whether the layer has a Lightning Indexer.
    pub fn has_indexer(self) -> bool {
        matches!(self, Self::Csa { .. })
    }
}

/// Which RoPE table a layer uses for every rotation inside it (docs/model.md §4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeKind {
    /// `rope_theta`, no YaRN: window-only and MTP layers.
    Main,
    /// `compress_rope_theta` with YaRN: every layer with m > 0.
    Compress,
}

/// How a layer's MoE picks its experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// Fixed experts per token id from `tid2eid`.
    Hash,
    /// Top-K of bias-corrected router scores.
    Routed,
}

/// One decoder layer or MTP stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Layer id: 0..L for the decoder, L + k for MTP stage k.
    pub index: usize,
    /// Attention kind and ratio.
    pub attention: AttentionKind,
    /// RoPE table.
    pub rope: RopeKind,
    /// Expert selection.
    pub mlp: MlpKind,
}

impl LayerSpec {
    fn new(index: usize, ratio: usize, hash: bool) -> Self {
        let attention = AttentionKind::from_ratio(ratio);
        Self {
            index,
            attention,
            rope: match attention {
                AttentionKind::Window => RopeKind::Main,
                _ => RopeKind::Compress,
            },
            mlp: if hash { MlpKind::Hash } else { MlpKind::Routed },
        }
    }
}

/// The decoder layers and the MTP stages of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerSchedule {
    /// Decoder layers in order.
    pub layers: Vec<LayerSpec>,
    /// MTP stages in order (never hash-routed).
    pub mtp: Vec<LayerSpec>,
}

impl LayerSchedule {
    /// Derives the schedule of a validated config.
    pub fn new(config: &ModelConfig) -> Self {
        let layers = config
            .decoder_ratios()
            .iter()
            .enumerate()
            .map(|(i, &ratio)| LayerSpec::new(i, ratio, i < config.num_hash_layers))
            .collect();
        let mtp = (0..config.num_nextn_predict_layers)
            .map(|k| LayerSpec::new(config.num_hidden_layers + k, config.mtp_ratio(k), false))
            .collect();
        Self { layers, mtp }
    }

    /// Decoder layers with the given attention label (`SWA`, `CSA`, `HCA`).
    pub fn count(&self, label: &str) -> usize {
        self.layers
            .iter()
            .filter(|l| l.attention.label() == label)
            .count()
    }
}
