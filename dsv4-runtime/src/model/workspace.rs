//! The buffers a forward pass reuses from call to call. A request's state keeps them, so once
//! the first decode step has grown them to a step's sizes, later steps allocate nothing.

use dsv4_kernels::sample::SampleScratch;

use crate::model::attention::AttentionBuffers;
use crate::model::mhc::HcMixes;
use crate::model::moe::MoeBuffers;

/// Every intermediate of a forward pass, by stage.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Residual streams, `T × n·D`.
    pub(crate) x: Vec<f32>,
    /// A sublayer's input, `T × D`.
    pub(crate) h: Vec<f32>,
    /// A sublayer's output, `T × D`.
    pub(crate) y: Vec<f32>,
    /// Normed final vectors of the rows whose logits are wanted.
    pub(crate) u: Vec<f32>,
    /// Their logits, `rows × V`.
    pub(crate) logits: Vec<f32>,
    /// The sampler's buffers.
    pub(crate) sample: SampleScratch,
    /// Hyper-connection mixes of the current sublayer (and the final collapse's scratch).
    pub(crate) mixes: HcMixes,
    /// Attention intermediates (layers run one after another and share them).
    pub(crate) attention: AttentionBuffers,
    /// MoE intermediates.
    pub(crate) moe: MoeBuffers,
}
