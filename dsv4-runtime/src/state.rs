//! Per-request decode state of every layer (spec §7): the window of raw keys, compressed entries,
//! indexer keys and compressor tails, and the absolute position reached.

use dsv4_model::{AttentionKind, ModelConfig};

use crate::compressor::CompressorState;

/// What one layer keeps for one request.
#[derive(Debug, Clone)]
pub struct LayerState {
    /// The last `W` keys by position (`position % W`), `W × Dh`.
    window: Vec<f32>,
    window_len: usize,
    head_dim: usize,
    /// Compressed entries, `count × Dh`, final once emitted.
    pub entries: Vec<f32>,
    /// Indexer keys, `count × Di` (CSA).
    pub index_keys: Vec<f32>,
    /// Main compressor tail.
    pub compressor: Option<CompressorState>,
    /// Indexer compressor tail.
    pub index_compressor: Option<CompressorState>,
}

impl LayerState {
    fn new(config: &ModelConfig, kind: AttentionKind) -> Self {
        let (w, dh) = (config.sliding_window, config.head_dim);
        Self {
            window: vec![0.0; w * dh],
            window_len: w,
            head_dim: dh,
            entries: Vec::new(),
            index_keys: Vec::new(),
            compressor: kind
                .ratio()
                .map(|m| CompressorState::new(m, dh, kind.has_indexer())),
            index_compressor: kind
                .has_indexer()
                .then(|| CompressorState::new(kind.ratio().unwrap_or(1), config.index_head_dim, true)),
        }
    }

    /// The key of `position`, which must be within the last `W` positions written.
    pub fn window_key(&self, position: usize) -> &[f32] {
        let slot = position % self.window_len;
        &self.window[slot * self.head_dim..(slot + 1) * self.head_dim]
    }

    /// Stores the key of `position`, replacing the one `W` positions before.
    pub fn write_window(&mut self, position: usize, key: &[f32]) {
        let slot = position % self.window_len;
        self.window[slot * self.head_dim..(slot + 1) * self.head_dim].copy_from_slice(key);
    }
}

/// The decode state of one request.
#[derive(Debug, Clone)]
pub struct SeqState {
    /// Per decoder layer.
    pub layers: Vec<LayerState>,
    /// Tokens processed so far (the next token's absolute position).
    pub position: usize,
}

impl SeqState {
    /// A fresh request.
    pub fn new(config: &ModelConfig) -> Self {
        let schedule = dsv4_model::LayerSchedule::new(config);
        Self {
            layers: schedule
                .layers
                .iter()
                .map(|l| LayerState::new(config, l.attention))
                .collect(),
            position: 0,
        }
    }
}
