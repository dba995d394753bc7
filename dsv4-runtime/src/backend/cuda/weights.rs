//! The model's weights on the device, uploaded once as stored: each linear's FP8/FP4 bytes and
//! scales or floats (never dequantized, never repacked), the embedding table, and device copies
//! of the small f32 vectors (norms, biases, sinks, mixing parameters) the kernels read.

use dsv4_kernels::cuda::linear::GroupedWeight;
use dsv4_kernels::cuda::moe::{upload_tid2eid, ExpertTable};
use dsv4_kernels::cuda::weights::DeviceWeight;
use dsv4_kernels::cuda::{DeviceBuffer, DeviceError, Gpu};
use dsv4_kernels::linear::LinearView;
use dsv4_kernels::moe::ExpertWeights;

use crate::model::load::LoadedCheckpoint;
use crate::model::weights::{
    CompressorWeights, HcWeights, LayerWeights, LinearRows, LinearSource, ModelWeights,
    WeightsError,
};

/// Binding with uploads: each linear's rows go to the device as stored.
struct Upload<'g>(&'g Gpu);

impl<'a> LinearSource<'a> for Upload<'_> {
    type Linear = DeviceWeight;

    fn linear(&self, name: &str, rows: LinearRows<'a>) -> Result<DeviceWeight, WeightsError> {
        DeviceWeight::upload_rows(self.0, &rows.view, rows.first, rows.count).map_err(|e| {
            WeightsError::Invalid {
                tensor: name.to_string(),
                message: format!("cannot upload: {e}"),
            }
        })
    }

    /// One weight of every group: the grouped kernel applies each group's rows.
    fn linear_groups(
        &self,
        name: &str,
        view: LinearView<'a>,
        _groups: usize,
    ) -> Result<Vec<DeviceWeight>, WeightsError> {
        Ok(vec![self.linear(name, LinearRows::all(view))?])
    }
}

/// A hyper-connection's mixing parameters on the device.
#[derive(Debug)]
pub struct HcVectors {
    /// Bias per row of the projection.
    pub base: DeviceBuffer,
    /// Scales of the pre, post and comb parts.
    pub scale: DeviceBuffer,
}

/// A compressor's vectors on the device.
#[derive(Debug)]
pub struct CompressorVectors {
    /// `[m, c·w]` gate bias by position in window.
    pub ape: DeviceBuffer,
    /// RMSNorm weight `[w]`.
    pub norm: DeviceBuffer,
}

/// One layer's vectors on the device.
#[derive(Debug)]
pub struct LayerVectors {
    /// Pre-attention RMSNorm.
    pub attn_norm: DeviceBuffer,
    /// Pre-MoE RMSNorm.
    pub ffn_norm: DeviceBuffer,
    /// Hyper-connection around attention.
    pub hc_attn: HcVectors,
    /// Hyper-connection around the MoE.
    pub hc_ffn: HcVectors,
    /// Query latent RMSNorm.
    pub q_norm: DeviceBuffer,
    /// Window key RMSNorm.
    pub kv_norm: DeviceBuffer,
    /// Per-head sink logits.
    pub sink: DeviceBuffer,
    /// The grouped output projection (taken out of the bound weights' `wo_a`).
    pub wo_a: GroupedWeight,
    /// Main compressor (CSA, HCA).
    pub compressor: Option<CompressorVectors>,
    /// The indexer's compressor (CSA).
    pub indexer_compressor: Option<CompressorVectors>,
    /// Router selection bias (routed layers).
    pub bias: Option<DeviceBuffer>,
    /// Token id → experts table as u32 (hash layers).
    pub tid2eid: Option<DeviceBuffer>,
    /// The shared and routed experts (taken out of the bound weights).
    pub experts: ExpertTable,
}

/// Every weight of the model on the device.
pub struct CudaWeights<'a> {
    /// The linears (on the device) and the host copies of the small vectors, as the CPU binds
    /// them.
    pub model: ModelWeights<'a, DeviceWeight>,
    /// The embedding table.
    pub embed: DeviceWeight,
    /// Final RMSNorm.
    pub norm: DeviceBuffer,
    /// Final stream collapse.
    pub hc_head: HcVectors,
    /// Per decoder layer.
    pub layers: Vec<LayerVectors>,
}

fn hc(gpu: &Gpu, w: &HcWeights<DeviceWeight>) -> Result<HcVectors, DeviceError> {
    Ok(HcVectors {
        base: gpu.upload_f32(&w.base)?,
        scale: gpu.upload_f32(&w.scale)?,
    })
}

fn compressor(
    gpu: &Gpu,
    w: Option<&CompressorWeights<DeviceWeight>>,
) -> Result<Option<CompressorVectors>, DeviceError> {
    w.map(|w| {
        Ok(CompressorVectors {
            ape: gpu.upload_f32(&w.ape)?,
            norm: gpu.upload_f32(&w.norm)?,
        })
    })
    .transpose()
}

fn layer(
    gpu: &Gpu,
    w: &mut LayerWeights<DeviceWeight>,
    groups: usize,
) -> Result<LayerVectors, DeviceError> {
    let wo_a = std::mem::take(&mut w.attn.wo_a)
        .pop()
        .ok_or_else(|| DeviceError::Driver("wo_a was not bound".into()))?;
    let tid2eid = w
        .moe
        .tid2eid
        .as_ref()
        .map(|table| upload_tid2eid(gpu, table))
        .transpose()?;
    let routed = std::mem::take(&mut w.moe.experts)
        .into_iter()
        .map(Some)
        .collect();
    let shared = std::mem::replace(&mut w.moe.shared, placeholder_expert(gpu)?);
    let experts = ExpertTable::new(gpu, shared, routed)?;
    Ok(LayerVectors {
        attn_norm: gpu.upload_f32(&w.attn_norm)?,
        ffn_norm: gpu.upload_f32(&w.ffn_norm)?,
        hc_attn: hc(gpu, &w.hc_attn)?,
        hc_ffn: hc(gpu, &w.hc_ffn)?,
        q_norm: gpu.upload_f32(&w.attn.q_norm)?,
        kv_norm: gpu.upload_f32(&w.attn.kv_norm)?,
        sink: gpu.upload_f32(&w.attn.sink)?,
        wo_a: GroupedWeight::new(wo_a, groups)?,
        compressor: compressor(gpu, w.attn.compressor.as_ref())?,
        indexer_compressor: compressor(gpu, w.attn.indexer.as_ref().map(|ix| &ix.compressor))?,
        bias: w.moe.bias.as_ref().map(|b| gpu.upload_f32(b)).transpose()?,
        tid2eid,
        experts,
    })
}

/// An empty expert left in the bound weights once the real one moved into the expert table.
fn placeholder_expert(gpu: &Gpu) -> Result<ExpertWeights<DeviceWeight>, DeviceError> {
    let empty = || DeviceWeight::empty(gpu);
    Ok(ExpertWeights {
        w1: empty()?,
        w2: empty()?,
        w3: empty()?,
    })
}

/// Uploads a loaded, checked checkpoint's weights.
pub fn upload<'a>(
    gpu: &Gpu,
    loaded: &'a LoadedCheckpoint,
) -> Result<CudaWeights<'a>, WeightsError> {
    let mut model = ModelWeights::bind_with(
        &loaded.config,
        &loaded.checkpoint,
        &loaded.report,
        &Upload(gpu),
    )?;
    let device = |e: DeviceError| WeightsError::Invalid {
        tensor: "(upload)".into(),
        message: e.to_string(),
    };
    let embed = DeviceWeight::upload(gpu, &model.embed).map_err(device)?;
    let groups = loaded.config.o_groups;
    let layers = model
        .layers
        .iter_mut()
        .map(|l| layer(gpu, l, groups))
        .collect::<Result<Vec<_>, _>>()
        .map_err(device)?;
    Ok(CudaWeights {
        norm: gpu.upload_f32(&model.norm).map_err(device)?,
        hc_head: hc(gpu, &model.hc_head).map_err(device)?,
        embed,
        layers,
        model,
    })
}
