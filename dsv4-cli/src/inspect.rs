//! `dsv4 inspect`: what a checkpoint holds and everything wrong with it, before any compute.

use dsv4_model::shown_path;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use dsv4_model::{
    check, clip, scan_values, Checkpoint, LayerSchedule, LinearFormat, ModelConfig, ParamReport,
    WeightFormats,
};
use dsv4_runtime::Tokenizer;
use serde::Serialize;

use crate::model_source::read_config;
use crate::units::{binary, grouped};

/// Problems printed in full before the rest are counted.
const PROBLEMS_SHOWN: usize = 50;

/// Flags of `dsv4 inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint directory.
    #[arg(long, value_name = "DIR")]
    weights: PathBuf,
    /// Also read every stored value for NaN and infinity encodings (E4M3, BF16, F16, F32,
    /// E8M0); reads the whole checkpoint.
    #[arg(long)]
    deep: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DtypeCount {
    tensors: usize,
    bytes: u64,
}

#[derive(Serialize)]
struct LayerLine {
    index: usize,
    attention: &'static str,
    ratio: usize,
    rope: String,
    mlp: String,
}

#[derive(Serialize)]
struct Inspection {
    weights: String,
    files: Vec<String>,
    formats: Option<WeightFormats>,
    has_mtp: bool,
    total_params: u64,
    active_params_per_token: u64,
    mtp_params: u64,
    weight_bytes: u64,
    weight_bytes_read_per_token: u64,
    dtypes: BTreeMap<&'static str, DtypeCount>,
    layers: Vec<LayerLine>,
    unused_tensors: Vec<String>,
    /// Ids of `tokenizer.json`; `None` when the checkpoint has none (or it is unusable).
    tokenizer_ids: Option<usize>,
    problems: Vec<String>,
    config: ModelConfig,
}

/// Runs `dsv4 inspect`; fails (after printing the report) when problems were found.
pub fn run(args: &InspectArgs) -> Result<()> {
    let dir = &args.weights;
    let config_path = dir.join("config.json");
    let config = read_config(&config_path)?;
    let checkpoint = Checkpoint::open(dir)?;
    let mut report = check(&config, &checkpoint);
    if args.deep {
        report.problems.extend(scan_values(&checkpoint));
    }
    let params = ParamReport::new(&config, &report.manifest);
    let (tokenizer_ids, tokenizer_problem) = check_tokenizer(dir, config.vocab_size);
    let mut dtypes: BTreeMap<&'static str, DtypeCount> = BTreeMap::new();
    let mut weight_bytes = 0;
    for name in checkpoint.names() {
        if let Some(view) = checkpoint.tensor(name) {
            let entry = dtypes
                .entry(view.dtype.safetensors_name())
                .or_insert(DtypeCount {
                    tensors: 0,
                    bytes: 0,
                });
            entry.tensors += 1;
            entry.bytes += view.data.len() as u64;
            weight_bytes += view.data.len() as u64;
        }
    }
    let schedule = LayerSchedule::new(&config);
    let layers = schedule
        .layers
        .iter()
        .chain(if report.has_mtp {
            &schedule.mtp[..]
        } else {
            &[]
        })
        .map(|l| LayerLine {
            index: l.index,
            attention: l.attention.label(),
            ratio: l.attention.ratio().unwrap_or(0),
            rope: format!("{:?}", l.rope).to_lowercase(),
            mlp: format!("{:?}", l.mlp).to_lowercase(),
        })
        .collect();
    let inspection = Inspection {
        weights: shown_path(dir),
        files: checkpoint.file_names().map(str::to_string).collect(),
        formats: report.formats,
        has_mtp: report.has_mtp,
        total_params: params.model.params,
        active_params_per_token: params.model.active_params,
        mtp_params: params.mtp.params,
        weight_bytes,
        weight_bytes_read_per_token: params.model.active_bytes,
        dtypes,
        layers,
        unused_tensors: report.unused.clone(),
        tokenizer_ids,
        problems: report
            .problems
            .iter()
            .map(ToString::to_string)
            .chain(tokenizer_problem)
            .collect(),
        config,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{}", render(&inspection));
    }
    if !inspection.problems.is_empty() {
        bail!(
            "{} problem(s) found in {}; the first: {}",
            inspection.problems.len(),
            shown_path(dir),
            inspection.problems[0]
        );
    }
    Ok(())
}

/// The ids of `dir`'s tokenizer.json and what is wrong with it: unreadable, not a tokenizer, or
/// another model's (more ids than the model embeds). A checkpoint without one is no problem:
/// only --prompt and --chat need it.
fn check_tokenizer(dir: &Path, vocab: usize) -> (Option<usize>, Option<String>) {
    let path = dir.join("tokenizer.json");
    if std::fs::symlink_metadata(&path).is_err() {
        return (None, None);
    }
    match Tokenizer::from_file(&path).and_then(|t| t.check_fits(vocab).map(|()| t.vocab_size())) {
        Ok(ids) => (Some(ids), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

fn format_name(format: LinearFormat) -> &'static str {
    match format {
        LinearFormat::Fp8Block => "FP8 E4M3, 128x128 UE8M0 block scales",
        LinearFormat::Fp4Group => "FP4 E2M1, one UE8M0 scale per 32 inputs",
        LinearFormat::Float => "unquantized floats",
    }
}

fn render(i: &Inspection) -> String {
    let c = &i.config;
    let mut out = String::new();
    let _ = writeln!(out, "checkpoint {} ({} files)", i.weights, i.files.len());
    let count = |kind: &str| {
        i.layers
            .iter()
            .filter(|l| l.attention == kind && l.index < c.num_hidden_layers)
            .count()
    };
    let _ = writeln!(
        out,
        "model: hidden {}, {} layers (SWA {}, CSA {}, HCA {}), {} heads x {}, vocab {}, {} experts top-{}, {} hc streams, context {}",
        c.hidden_size,
        c.num_hidden_layers,
        count("SWA"),
        count("CSA"),
        count("HCA"),
        c.num_attention_heads,
        c.head_dim,
        grouped(c.vocab_size as u64),
        c.n_routed_experts,
        c.num_experts_per_tok,
        c.hc_mult,
        grouped(c.max_position_embeddings as u64)
    );
    match i.formats {
        Some(f) => {
            let _ = writeln!(out, "dense linears: {}", format_name(f.dense));
            let _ = writeln!(out, "routed experts: {}", format_name(f.experts));
        }
        None => {
            let _ = writeln!(out, "weight formats: could not be told (see problems)");
        }
    }
    let _ = writeln!(
        out,
        "MTP block: {}",
        if i.has_mtp { "present" } else { "absent" }
    );
    let _ = match i.tokenizer_ids {
        Some(ids) => writeln!(out, "tokenizer: {} ids", grouped(ids as u64)),
        None => writeln!(out, "tokenizer: none usable (--prompt and --chat need one)"),
    };
    let _ = writeln!(out, "\nlayers:");
    for l in &i.layers {
        let ratio = if l.ratio > 0 {
            format!("m={}", l.ratio)
        } else {
            String::new()
        };
        let which = if l.index >= c.num_hidden_layers {
            " (MTP)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:>3} {} {:<6} rope {:<8} {} MoE{which}",
            l.index, l.attention, ratio, l.rope, l.mlp
        );
    }
    let _ = writeln!(out, "\ntensors by dtype:");
    for (dtype, n) in &i.dtypes {
        let _ = writeln!(
            out,
            "  {dtype:<8} {:>8} tensors {:>12}",
            grouped(n.tensors as u64),
            binary(n.bytes)
        );
    }
    let _ = writeln!(
        out,
        "\nparameters: {} total, {} active per token (MTP excluded; MTP holds {})",
        grouped(i.total_params),
        grouped(i.active_params_per_token),
        grouped(i.mtp_params)
    );
    let _ = writeln!(
        out,
        "weights: {} ({} B) stored, {} read per decoded token",
        binary(i.weight_bytes),
        grouped(i.weight_bytes),
        binary(i.weight_bytes_read_per_token)
    );
    if !i.unused_tensors.is_empty() {
        let _ = writeln!(
            out,
            "unused tensors: {} (e.g. {})",
            i.unused_tensors.len(),
            clip(&i.unused_tensors[0])
        );
    }
    if i.problems.is_empty() {
        let _ = writeln!(out, "problems: none");
    } else {
        let _ = writeln!(out, "problems: {}", i.problems.len());
        for p in i.problems.iter().take(PROBLEMS_SHOWN) {
            let _ = writeln!(out, "  {p}");
        }
        if i.problems.len() > PROBLEMS_SHOWN {
            let _ = writeln!(
                out,
                "  ... and {} more (--json lists all)",
                i.problems.len() - PROBLEMS_SHOWN
            );
        }
    }
    out
}
