//! Reading the config's fields that have two spellings (native and transformers) or a shape of
//! their own (lists of ratios, the YaRN block, the quantization block), each checked as read.

use serde_json::Value;

use super::{ConfigError, ExpertDtype, Fp8Quantization, ScoringFunc, YarnScaling};
use crate::json_fields::{show, JsonFields};

/// `qk_rope_head_dim`, or `head_dim × partial_rotary_factor` in the transformers spelling; both must agree.
pub(super) fn rope_head_dim(f: &JsonFields, head_dim: usize) -> Result<usize, ConfigError> {
    let native = f.opt_usize("qk_rope_head_dim")?;
    let from_factor = match f.opt_f64("partial_rotary_factor")? {
        None => None,
        Some(factor) => {
            let dims = factor * head_dim as f64;
            if factor <= 0.0 || factor > 1.0 || dims.fract() != 0.0 {
                return Err(f.invalid(
                    "partial_rotary_factor",
                    &Value::from(factor),
                    &format!(
                        "a fraction in (0, 1] that times head_dim = {head_dim} gives whole dims"
                    ),
                ));
            }
            Some(dims as usize)
        }
    };
    match (native, from_factor) {
        (Some(a), Some(b)) if a != b => Err(f.invalid(
            "partial_rotary_factor",
            f.get("partial_rotary_factor").unwrap_or(&Value::Null),
            &format!("qk_rope_head_dim / head_dim = {a}/{head_dim}, as qk_rope_head_dim says"),
        )),
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(ConfigError::Missing {
            field: "qk_rope_head_dim".into(),
        }),
    }
}

/// A count that transformers may spell under a second name.
pub(super) fn aliased_usize(
    f: &JsonFields,
    native: &str,
    alias: &str,
) -> Result<usize, ConfigError> {
    match f.opt_usize(native)? {
        Some(v) => Ok(v),
        None if f.has(alias) => f.usize(alias),
        None => f.usize(native),
    }
}

/// The per-layer compress ratios from `compress_ratios` or `layer_types` + `compress_rates`.
pub(super) fn compress_ratios(f: &JsonFields, layers: usize) -> Result<Vec<usize>, ConfigError> {
    let native = f.opt_usize_list("compress_ratios")?;
    let from_types = layer_type_ratios(f)?;
    let ratios = match (native, from_types) {
        (Some(native), Some(types)) => {
            if native.len() < types.len() || native[..types.len()] != types[..] {
                return Err(f.invalid(
                    "layer_types",
                    f.get("layer_types").unwrap_or(&Value::Null),
                    "the schedule that compress_ratios gives (the two fields disagree)",
                ));
            }
            native
        }
        (Some(native), None) => native,
        (None, Some(types)) => types,
        (None, None) => {
            return Err(ConfigError::Missing {
                field: "compress_ratios".into(),
            })
        }
    };
    if ratios.len() < layers {
        return Err(f.invalid(
            "compress_ratios",
            &Value::from(ratios.clone()),
            &format!("at least num_hidden_layers = {layers} entries, one per decoder layer"),
        ));
    }
    Ok(ratios)
}

/// Ratios from transformers' `layer_types`, using `compress_rates` (default CSA 4, HCA 128).
fn layer_type_ratios(f: &JsonFields) -> Result<Option<Vec<usize>>, ConfigError> {
    let Some(types) = f.opt_str_list("layer_types")? else {
        return Ok(None);
    };
    let rates = f.opt_object("compress_rates")?;
    let rate = |key: &str, legacy: &str, default: usize| -> Result<usize, ConfigError> {
        if let Some(r) = rates.as_ref().and_then(|r| r.opt_usize(key).transpose()) {
            return r;
        }
        Ok(f.opt_usize(legacy)?.unwrap_or(default))
    };
    let csa = rate("compressed_sparse_attention", "compress_rate_csa", 4)?;
    let hca = rate("heavily_compressed_attention", "compress_rate_hca", 128)?;
    types
        .iter()
        .map(|t| match *t {
            "sliding_attention" => Ok(0),
            "compressed_sparse_attention" => Ok(csa),
            "heavily_compressed_attention" => Ok(hca),
            other => Err(f.invalid(
                "layer_types",
                &Value::from(other),
                "sliding_attention, compressed_sparse_attention or heavily_compressed_attention",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `num_hash_layers`, or the leading `hash_moe` run of transformers' `mlp_layer_types`.
pub(super) fn num_hash_layers(f: &JsonFields, layers: usize) -> Result<usize, ConfigError> {
    let native = f.opt_usize("num_hash_layers")?;
    let from_types = match f.opt_str_list("mlp_layer_types")? {
        None => None,
        Some(types) => {
            let value = f.get("mlp_layer_types").unwrap_or(&Value::Null);
            let leading = types.iter().take_while(|t| **t == "hash_moe").count();
            let well_formed = types.len() == layers && types[leading..].iter().all(|t| *t == "moe");
            if !well_formed {
                return Err(f.invalid(
                    "mlp_layer_types",
                    value,
                    &format!("{layers} entries: hash_moe layers first, then moe"),
                ));
            }
            Some(leading)
        }
    };
    match (native, from_types) {
        (Some(a), Some(b)) if a != b => Err(f.invalid(
            "num_hash_layers",
            &Value::from(a),
            &format!("{b}, the count of hash_moe entries in mlp_layer_types"),
        )),
        (Some(a), _) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(ConfigError::Missing {
            field: "num_hash_layers".into(),
        }),
    }
}

/// A RoPE base from the native key or from `rope_parameters.<kind>.rope_theta`.
pub(super) fn rope_theta(f: &JsonFields, native: &str, kind: &str) -> Result<f64, ConfigError> {
    if let Some(v) = f.opt_f64(native)? {
        return Ok(v);
    }
    if let Some(params) = f.opt_object("rope_parameters")? {
        if let Some(sub) = params.opt_object(kind)? {
            return sub.f64("rope_theta");
        }
    }
    Err(ConfigError::Missing {
        field: native.to_string(),
    })
}

/// YaRN parameters from `rope_scaling` or `rope_parameters.compress`.
pub(super) fn rope_scaling(f: &JsonFields) -> Result<Option<YarnScaling>, ConfigError> {
    let scaling = match f.opt_object("rope_scaling")? {
        Some(s) => s,
        None => match f.opt_object("rope_parameters")? {
            Some(params) => match params.opt_object("compress")? {
                Some(s) => s,
                None => return Ok(None),
            },
            None => return Ok(None),
        },
    };
    let kind = match scaling.opt_str("type")? {
        Some(t) => Some(t),
        None => scaling.opt_str("rope_type")?,
    };
    match kind {
        Some("yarn") => {}
        Some("default") | None if !scaling.has("factor") => return Ok(None),
        Some(other) => {
            return Err(scaling.invalid("type", &Value::from(other), "\"yarn\""));
        }
        None => {
            return Err(ConfigError::Missing {
                field: scaling.path("type"),
            })
        }
    }
    Ok(Some(YarnScaling {
        factor: scaling.f64("factor")?,
        original_max_position_embeddings: scaling.usize("original_max_position_embeddings")?,
        beta_fast: scaling.opt_f64("beta_fast")?.unwrap_or(32.0),
        beta_slow: scaling.opt_f64("beta_slow")?.unwrap_or(1.0),
    }))
}

pub(super) fn scoring_func(f: &JsonFields) -> Result<ScoringFunc, ConfigError> {
    match f.opt_str("scoring_func")? {
        Some("sqrtsoftplus") => Ok(ScoringFunc::SqrtSoftplus),
        Some(other) => Err(f.invalid(
            "scoring_func",
            &Value::from(other),
            "\"sqrtsoftplus\" (the only router V4 uses)",
        )),
        None => Err(ConfigError::Missing {
            field: "scoring_func".into(),
        }),
    }
}

pub(super) fn quantization(f: &JsonFields) -> Result<Option<Fp8Quantization>, ConfigError> {
    let Some(q) = f.opt_object("quantization_config")? else {
        return Ok(None);
    };
    for (key, want) in [
        ("quant_method", "fp8"),
        ("fmt", "e4m3"),
        ("scale_fmt", "ue8m0"),
    ] {
        if let Some(v) = q.opt_str(key)? {
            if v != want {
                return Err(q.invalid(key, &Value::from(v), &format!("\"{want}\"")));
            }
        }
    }
    let block = q
        .opt_usize_list("weight_block_size")?
        .unwrap_or(vec![128, 128]);
    let weight_block_size = match block[..] {
        [a, b] => [a, b],
        _ => {
            return Err(q.invalid(
                "weight_block_size",
                &Value::from(block),
                "two integers [out, in]",
            ))
        }
    };
    Ok(Some(Fp8Quantization { weight_block_size }))
}

pub(super) fn expert_dtype(f: &JsonFields) -> Result<Option<ExpertDtype>, ConfigError> {
    match f.opt_str("expert_dtype")? {
        None => Ok(None),
        Some("fp4") => Ok(Some(ExpertDtype::Fp4)),
        Some("fp8") => Ok(Some(ExpertDtype::Fp8)),
        Some(other) => Err(f.invalid("expert_dtype", &Value::from(other), "\"fp4\" or \"fp8\"")),
    }
}

/// Fields with a single legal value in V4; anything else would silently change the math.
pub(super) fn check_fixed_strings(f: &JsonFields) -> Result<(), ConfigError> {
    for (key, want) in [("hidden_act", "silu"), ("topk_method", "noaux_tc")] {
        if let Some(v) = f.opt_str(key)? {
            if v != want {
                return Err(f.invalid(key, &Value::from(v), &format!("\"{want}\"")));
            }
        }
    }
    if let Some(model_type) = f.get("model_type") {
        if model_type.as_str() != Some("deepseek_v4") {
            return Err(ConfigError::Invalid {
                field: "model_type".into(),
                value: show(model_type),
                expected: "\"deepseek_v4\"".into(),
            });
        }
    }
    Ok(())
}
