//! Validating a checkpoint against its config before any compute: storage formats detected from
//! the tensors themselves, then every expected tensor's presence, shape and dtype, and every
//! scale's bytes. All problems are collected, each naming its file and tensor.

use std::collections::HashSet;

use dsv4_formats::formats::E8M0_NAN;

use crate::checkpoint::{Checkpoint, Problem, TensorView};
use crate::{DType, ExpertDtype, LinearFormat, Manifest, ModelConfig, TensorKind, WeightFormats};

/// What a checkpoint holds, as checked against its config.
pub struct CheckReport {
    /// Storage formats found (`None` when they could not be told).
    pub formats: Option<WeightFormats>,
    /// The expected tensors for those formats (MTP stages only when the checkpoint has them),
    /// with the dtypes actually stored where they are acceptable.
    pub manifest: Manifest,
    /// Whether `mtp.*` tensors are present.
    pub has_mtp: bool,
    /// Everything wrong, opening problems first.
    pub problems: Vec<Problem>,
    /// Tensors present that the model does not use.
    pub unused: Vec<String>,
}

impl CheckReport {
    /// Whether the checkpoint can be used as is.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `checkpoint` against `config`.
pub fn check(config: &ModelConfig, checkpoint: &Checkpoint) -> CheckReport {
    check_with_progress(config, checkpoint, |_, _| {})
}

/// [`check`], calling `progress(done, total)` with the tensors checked so far, for a progress
/// bar over checkpoints whose scales take a while to read.
pub fn check_with_progress(
    config: &ModelConfig,
    checkpoint: &Checkpoint,
    mut progress: impl FnMut(usize, usize),
) -> CheckReport {
    let mut problems = checkpoint.problems.clone();
    let formats = detect_formats(config, checkpoint, &mut problems);
    let has_mtp = checkpoint.names().any(|n| n.starts_with("mtp."));
    let mut manifest = Manifest::new(config, formats.unwrap_or(WeightFormats::release(config)));
    if !has_mtp {
        manifest.tensors.retain(|t| !t.mtp);
    }
    if formats.is_some() {
        let total = manifest.tensors.len();
        for (done, spec) in manifest.tensors.iter_mut().enumerate() {
            progress(done, total);
            let Some(view) = checkpoint.tensor(&spec.name) else {
                problems.push(Problem::tensor(None, &spec.name, "missing"));
                continue;
            };
            if !spec.kind.accepts(view.dtype) {
                let message = format!(
                    "dtype {} where {} is expected",
                    view.dtype.safetensors_name(),
                    expected_dtypes(spec.kind)
                );
                problems.push(Problem::tensor(Some(view.file), view.name, message));
                continue;
            }
            if view.shape != spec.shape.as_slice() {
                let message = format!("shape {:?} where {:?} is expected", view.shape, spec.shape);
                problems.push(Problem::tensor(Some(view.file), view.name, message));
                continue;
            }
            let bad_values = match spec.kind {
                TensorKind::Scale => bad_scale(&view),
                TensorKind::Index => bad_expert_ids(&view, config.n_routed_experts),
                _ => None,
            };
            if let Some(message) = bad_values {
                problems.push(Problem::tensor(Some(view.file), view.name, message));
            }
            // Account for what is stored (an F32 export of a BF16 tensor takes twice the bytes).
            spec.dtype = view.dtype;
        }
    }
    progress(manifest.tensors.len(), manifest.tensors.len());
    let expected: HashSet<&str> = manifest.tensors.iter().map(|t| t.name.as_str()).collect();
    let unused = checkpoint
        .names()
        .filter(|name| !expected.contains(name))
        .map(str::to_string)
        .collect();
    CheckReport {
        formats,
        manifest,
        has_mtp,
        problems,
        unused,
    }
}

fn expected_dtypes(kind: TensorKind) -> &'static str {
    match kind {
        TensorKind::Float => "BF16, F16 or F32",
        TensorKind::Fp8 => "F8_E4M3",
        TensorKind::Fp4Packed => "I8 or U8 (packed FP4)",
        TensorKind::Scale => "F8_E8M0 or F32",
        TensorKind::Index => "I64 or I32",
    }
}

/// Reads the storage of the dense linears and of the routed experts off probe tensors, and
/// checks them against what the config declares.
fn detect_formats(
    config: &ModelConfig,
    checkpoint: &Checkpoint,
    problems: &mut Vec<Problem>,
) -> Option<WeightFormats> {
    let dense = detect(checkpoint, "layers.0.attn.wq_a", problems)?;
    if dense == LinearFormat::Fp4Group {
        problems.push(Problem::tensor(
            None,
            "layers.0.attn.wq_a.weight",
            "packed FP4, but only routed experts may be FP4",
        ));
        return None;
    }
    let experts = detect(checkpoint, "layers.0.ffn.experts.0.w1", problems)?;
    let declared = match config.expert_dtype {
        Some(ExpertDtype::Fp4) => Some(LinearFormat::Fp4Group),
        Some(ExpertDtype::Fp8) => Some(LinearFormat::Fp8Block),
        None => None,
    };
    if let Some(declared) = declared.filter(|d| *d != experts) {
        problems.push(Problem::tensor(
            None,
            "layers.0.ffn.experts.0.w1.weight",
            format!(
                "stored as {}, but config.json declares expert_dtype {}",
                experts.name(),
                declared.name()
            ),
        ));
        return None;
    }
    Some(WeightFormats { dense, experts })
}

fn detect(
    checkpoint: &Checkpoint,
    base: &str,
    problems: &mut Vec<Problem>,
) -> Option<LinearFormat> {
    let name = format!("{base}.weight");
    let Some(view) = checkpoint.tensor(&name) else {
        let message = "missing, so the storage format of the weights cannot be told";
        problems.push(Problem::tensor(None, &name, message));
        return None;
    };
    match view.dtype {
        DType::F8E4M3 => Some(LinearFormat::Fp8Block),
        DType::I8 | DType::U8 => Some(LinearFormat::Fp4Group),
        d if d.is_plain_float() => Some(LinearFormat::Float),
        d => {
            let message = format!(
                "dtype {} is no linear storage dsv4 knows",
                d.safetensors_name()
            );
            problems.push(Problem::tensor(Some(view.file), &name, message));
            None
        }
    }
}

/// Why a hash-routing table (`tid2eid`, token × slot → expert) is unusable: an id that names no
/// expert.
fn bad_expert_ids(view: &TensorView, experts: usize) -> Option<String> {
    let cols = view.shape.last().copied().unwrap_or(1).max(1);
    let ids = view.to_i64()?;
    let (i, e) = ids
        .iter()
        .enumerate()
        .find(|(_, &e)| usize::try_from(e).map_or(true, |e| e >= experts))?;
    Some(format!(
        "token {}, slot {} names expert {e}, but there are {experts}",
        i / cols,
        i % cols
    ))
}

/// Why a scale tensor's values are unusable: a NaN byte, or a non-positive or non-finite f32.
fn bad_scale(view: &TensorView) -> Option<String> {
    let cols = view.shape.last().copied().unwrap_or(1).max(1);
    let at = |i: usize| format!("[{}, {}]", i / cols, i % cols);
    match view.dtype {
        DType::F8E8M0 => view
            .data
            .iter()
            .position(|&b| b == E8M0_NAN)
            .map(|i| format!("scale byte 0xFF (NaN) at {}", at(i))),
        DType::F32 => view
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .position(|s| !(s.is_finite() && s > 0.0))
            .map(|i| format!("scale at {} is not a positive finite number", at(i))),
        _ => None,
    }
}
