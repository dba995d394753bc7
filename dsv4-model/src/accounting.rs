//! Parameter and weight-byte accounting: totals and per-token active amounts by component, summed
//! over the tensor manifest so the figures cannot drift from what a checkpoint holds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Activity, Component, Manifest, ModelConfig, TensorSpec};

/// Parameters and bytes of one component (or of a whole model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Learned parameters held.
    pub params: u64,
    /// Parameters one token uses (K of E routed experts, one embedding row).
    pub active_params: u64,
    /// Bytes stored at release precision, scales and tables included.
    pub bytes: u64,
    /// Bytes one decoded token reads.
    pub active_bytes: u64,
}

impl Count {
    fn add(&mut self, other: Count) {
        self.params += other.params;
        self.active_params += other.active_params;
        self.bytes += other.bytes;
        self.active_bytes += other.active_bytes;
    }
}

/// The accounting of a model: the decoder by component, and the MTP stages apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    /// Decoder (embedding, layers, head), MTP excluded: what published totals count.
    pub model: Count,
    /// The same by component.
    pub components: BTreeMap<Component, Count>,
    /// MTP stages.
    pub mtp: Count,
    /// Everything in the checkpoint.
    pub checkpoint: Count,
}

impl ParamReport {
    /// Sums a manifest; routed experts count K/E active, lookup tables one row per token.
    pub fn new(config: &ModelConfig, manifest: &Manifest) -> Self {
        let mut components: BTreeMap<Component, Count> = BTreeMap::new();
        let mut model = Count::default();
        let mut mtp = Count::default();
        for tensor in &manifest.tensors {
            let count = tensor_count(config, tensor);
            if tensor.mtp {
                mtp.add(count);
            } else {
                model.add(count);
                components.entry(tensor.component).or_default().add(count);
            }
        }
        let mut checkpoint = model;
        checkpoint.add(mtp);
        Self {
            model,
            components,
            mtp,
            checkpoint,
        }
    }
}

fn tensor_count(config: &ModelConfig, tensor: &TensorSpec) -> Count {
    let bytes = tensor.bytes();
    let (active_params, active_bytes) = match tensor.activity {
        Activity::Full => (tensor.params, bytes),
        Activity::RoutedExpert => {
            // Each expert is one tensor: on average K/E of them are read per token.
            let (k, e) = (
                config.num_experts_per_tok as u64,
                config.n_routed_experts as u64,
            );
            (tensor.params * k / e, bytes * k / e)
        }
        Activity::RowLookup => {
            let rows = tensor.shape.first().copied().unwrap_or(1).max(1) as u64;
            (tensor.params / rows, bytes / rows)
        }
    };
    Count {
        params: tensor.params,
        active_params,
        bytes,
        active_bytes,
    }
}
