//! Tensor names: the native release spelling (the manifest's), transformers' in-memory spelling
//! (docs/model.md §2.4, as `DeepseekV4ForCausalLM` names its parameters), and what transformers'
//! `save_pretrained` writes. Everything read from a checkpoint is normalised to native names.

/// Native ↔ transformers names of tensors inside `layers.N.` (whole remainders, no prefix).
const LAYER_NAMES: [(&str, &str); 23] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("hc_attn_fn", "attn_hc.fn"),
    ("hc_attn_base", "attn_hc.base"),
    ("hc_attn_scale", "attn_hc.scale"),
    ("hc_ffn_fn", "ffn_hc.fn"),
    ("hc_ffn_base", "ffn_hc.base"),
    ("hc_ffn_scale", "ffn_hc.scale"),
    ("attn.attn_sink", "self_attn.sinks"),
    ("attn.q_norm.weight", "self_attn.q_a_norm.weight"),
    ("attn.kv_norm.weight", "self_attn.kv_norm.weight"),
    ("attn.compressor.ape", "self_attn.compressor.position_bias"),
    (
        "attn.compressor.norm.weight",
        "self_attn.compressor.kv_norm.weight",
    ),
    (
        "attn.compressor.wkv.weight",
        "self_attn.compressor.kv_proj.weight",
    ),
    (
        "attn.compressor.wgate.weight",
        "self_attn.compressor.gate_proj.weight",
    ),
    (
        "attn.indexer.compressor.ape",
        "self_attn.compressor.indexer.position_bias",
    ),
    (
        "attn.indexer.compressor.norm.weight",
        "self_attn.compressor.indexer.kv_norm.weight",
    ),
    (
        "attn.indexer.compressor.wkv.weight",
        "self_attn.compressor.indexer.kv_proj.weight",
    ),
    (
        "attn.indexer.compressor.wgate.weight",
        "self_attn.compressor.indexer.gate_proj.weight",
    ),
    (
        "attn.indexer.weights_proj.weight",
        "self_attn.compressor.indexer.scorer.weights_proj.weight",
    ),
    ("ffn.gate.weight", "mlp.gate.weight"),
    ("ffn.gate.bias", "mlp.gate.e_score_correction_bias"),
    ("ffn.gate.tid2eid", "mlp.gate.tid2eid"),
];

/// Native ↔ transformers bases of the dense linears inside `layers.N.` (`.weight` follows).
const LINEAR_NAMES: [(&str, &str); 9] = [
    ("attn.wq_a", "self_attn.q_a_proj"),
    ("attn.wq_b", "self_attn.q_b_proj"),
    ("attn.wkv", "self_attn.kv_proj"),
    ("attn.wo_a", "self_attn.o_a_proj"),
    ("attn.wo_b", "self_attn.o_b_proj"),
    ("attn.indexer.wq_b", "self_attn.compressor.indexer.q_b_proj"),
    ("ffn.shared_experts.w1", "mlp.shared_experts.gate_proj"),
    ("ffn.shared_experts.w3", "mlp.shared_experts.up_proj"),
    ("ffn.shared_experts.w2", "mlp.shared_experts.down_proj"),
];

/// Native ↔ transformers names of the global tensors (transformers' under `model.` except the head).
const GLOBAL_NAMES: [(&str, &str); 6] = [
    ("embed.weight", "model.embed_tokens.weight"),
    ("head.weight", "lm_head.weight"),
    ("norm.weight", "model.norm.weight"),
    ("hc_head_fn", "model.hc_head.hc_fn"),
    ("hc_head_base", "model.hc_head.hc_base"),
    ("hc_head_scale", "model.hc_head.hc_scale"),
];

/// Which routed-expert projection a slice of a fused transformers tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertPart {
    /// `w1`: rows `0..I` of `gate_up_proj[e]`.
    Gate,
    /// `w3`: rows `I..2I` of `gate_up_proj[e]`.
    Up,
    /// `w2`: all of `down_proj[e]`.
    Down,
}

/// Where a native tensor lives in a transformers model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformersName {
    /// A tensor of its own.
    Tensor(String),
    /// A slice of a fused routed-expert tensor (`[E, 2I, D]` gate_up, `[E, D, I]` down).
    FusedExpert {
        /// The fused tensor.
        tensor: String,
        /// Expert index.
        expert: usize,
        /// Which projection.
        part: ExpertPart,
    },
}

/// Splits `layers.N.rest` into `(N, rest)`.
fn layer_parts(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("layers.")?;
    let dot = rest.find('.')?;
    let (layer, tail) = rest.split_at(dot);
    layer.parse::<usize>().ok()?;
    Some((layer, &tail[1..]))
}

/// The transformers name of a native tensor (decoder only; transformers keeps no MTP tensors).
pub fn transformers_name(native: &str) -> Option<TransformersName> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(n, _)| *n == native) {
        return Some(TransformersName::Tensor((*hf).to_string()));
    }
    let (layer, rest) = layer_parts(native)?;
    let prefix = format!("model.layers.{layer}.");
    if let Some((_, hf)) = LAYER_NAMES.iter().find(|(n, _)| *n == rest) {
        return Some(TransformersName::Tensor(format!("{prefix}{hf}")));
    }
    for (base, hf) in LINEAR_NAMES {
        if let Some(suffix) = rest.strip_prefix(base) {
            let suffix = match suffix {
                ".weight" => ".weight",
                ".scale" => ".weight_scale_inv",
                _ => continue,
            };
            return Some(TransformersName::Tensor(format!("{prefix}{hf}{suffix}")));
        }
    }
    let expert = rest.strip_prefix("ffn.experts.")?;
    let (index, projection) = expert.split_once('.')?;
    let expert: usize = index.parse().ok()?;
    let (tensor, part) = match projection {
        "w1.weight" => ("gate_up_proj", ExpertPart::Gate),
        "w3.weight" => ("gate_up_proj", ExpertPart::Up),
        "w2.weight" => ("down_proj", ExpertPart::Down),
        _ => return None,
    };
    Some(TransformersName::FusedExpert {
        tensor: format!("{prefix}mlp.experts.{tensor}"),
        expert,
        part,
    })
}

/// The native name of a stored tensor name, for tensors of their own. Accepts the release
/// spelling, transformers' in-memory names, and what `save_pretrained` writes (release names
/// under `model.`, with `embed_tokens`, `hc_head.hc_*`, `lm_head`, and `attn.norm` for the
/// attention's kv_norm); `weight_scale_inv` reads as `scale`. Fused expert tensors are not
/// single tensors: see [`fused_experts`].
pub fn native_name(stored: &str) -> String {
    if let Some((native, _)) = GLOBAL_NAMES.iter().find(|(_, hf)| *hf == stored) {
        return (*native).to_string();
    }
    let name = stored.strip_prefix("model.").unwrap_or(stored);
    // save_pretrained keeps these transformers spellings under the prefix.
    let global = match name {
        "embed_tokens.weight" => Some("embed.weight"),
        "lm_head.weight" => Some("head.weight"),
        "hc_head.hc_fn" => Some("hc_head_fn"),
        "hc_head.hc_base" => Some("hc_head_base"),
        "hc_head.hc_scale" => Some("hc_head_scale"),
        _ => None,
    };
    if let Some(native) = global {
        return native.to_string();
    }
    let Some((layer, rest)) = layer_parts(name) else {
        return name.to_string();
    };
    let rest = match rest.strip_suffix(".weight_scale_inv") {
        Some(base) => format!("{base}.scale"),
        None => rest.to_string(),
    };
    let native = if let Some((n, _)) = LAYER_NAMES.iter().find(|(_, hf)| *hf == rest) {
        (*n).to_string()
    } else if rest == "attn.norm.weight" {
        "attn.kv_norm.weight".to_string()
    } else if rest == "self_attn.compressor.indexer.weights_proj.weight" {
        // The name before transformers moved weights_proj under `scorer` (docs/model.md §2.4).
        "attn.indexer.weights_proj.weight".to_string()
    } else {
        LINEAR_NAMES
            .iter()
            .find_map(|(n, hf)| rest.strip_prefix(hf).map(|suffix| format!("{n}{suffix}")))
            .unwrap_or(rest)
    };
    format!("layers.{layer}.{native}")
}

/// The layer of a fused transformers expert tensor and whether it is `gate_up_proj` (else
/// `down_proj`); `None` for every other name.
pub fn fused_experts(stored: &str) -> Option<(usize, bool)> {
    let name = stored.strip_prefix("model.").unwrap_or(stored);
    let (layer, rest) = layer_parts(name)?;
    let layer = layer.parse().ok()?;
    match rest {
        "mlp.experts.gate_up_proj" => Some((layer, true)),
        "mlp.experts.down_proj" => Some((layer, false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_transformers_names_round_trip() {
        for native in [
            "embed.weight",
            "head.weight",
            "hc_head_fn",
            "layers.3.attn.wq_b.weight",
            "layers.3.attn.wq_b.scale",
            "layers.2.attn.indexer.weights_proj.weight",
            "layers.0.ffn.gate.tid2eid",
            "layers.7.hc_ffn_scale",
        ] {
            let Some(TransformersName::Tensor(hf)) = transformers_name(native) else {
                panic!("{native} has no transformers name");
            };
            assert_eq!(native_name(&hf), native, "via {hf}");
        }
    }

    #[test]
    fn save_pretrained_quirks() {
        assert_eq!(
            native_name("model.layers.1.attn.norm.weight"),
            "layers.1.attn.kv_norm.weight"
        );
        assert_eq!(native_name("model.embed_tokens.weight"), "embed.weight");
        assert_eq!(native_name("head.weight"), "head.weight");
        assert_eq!(
            native_name("model.layers.1.attn.compressor.norm.weight"),
            "layers.1.attn.compressor.norm.weight"
        );
        assert_eq!(native_name("mtp.0.e_proj.scale"), "mtp.0.e_proj.scale");
    }

    #[test]
    fn experts_map_to_fused_slices() {
        assert_eq!(
            transformers_name("layers.4.ffn.experts.17.w3.weight"),
            Some(TransformersName::FusedExpert {
                tensor: "model.layers.4.mlp.experts.gate_up_proj".into(),
                expert: 17,
                part: ExpertPart::Up,
            })
        );
        assert_eq!(
            fused_experts("model.layers.4.mlp.experts.down_proj"),
            Some((4, false))
        );
        assert_eq!(fused_experts("model.layers.4.mlp.gate.weight"), None);
    }
}
