//! `dsv4 plan`: the cache schema priced at a context and batch, the inverse memory question, and
//! dense caches for comparison.

use std::fmt::Write as _;

use anyhow::Result;
use clap::Args;
use dsv4_cache::{
    compare, layer_kinds, plan, CacheDtypes, IndexerCacheDtype, KvCacheDtype, PlanReport,
    PlanRequest, SharingReport, Solve, Strategy, DEFAULT_BLOCK_SIZE,
};
use serde::Serialize;

use crate::model_source::ModelSource;
use crate::sharing_args::SharingArgs;
use crate::units::{binary, grouped, parse_bytes};

/// Flags of `dsv4 plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    source: ModelSource,
    /// Tokens per request [default: the model's max_position_embeddings, or solved with --memory].
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// Requests [default: 1, or solved with --memory and --context].
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Memory for weights and cache (e.g. 80GiB); answers the largest context, or with --context the largest batch.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory: Option<u64>,
    /// --memory is for the cache alone; the weights live elsewhere.
    #[arg(long, requires = "memory")]
    kv_only: bool,
    /// Format of KV entries.
    #[arg(long, value_name = "f32|bf16|fp8", default_value = "bf16")]
    kv_cache_dtype: KvCacheDtype,
    /// Format of Lightning Indexer keys.
    #[arg(long, value_name = "f32|bf16|fp8|fp4", default_value = "bf16")]
    indexer_cache_dtype: IndexerCacheDtype,
    /// Tokens per logical block; a multiple of every compress ratio.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOCK_SIZE)]
    block_size: usize,
    /// Extra pages reserved per pool, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 0)]
    headroom: u32,
    #[command(flatten)]
    sharing: SharingArgs,
    /// Every cache strategy side by side for this model, context and batch.
    #[arg(long)]
    compare: bool,
    /// With --compare: tokens common to the batch's requests, their full pages held once.
    #[arg(long, value_name = "TOKENS", default_value_t = 0, requires = "compare")]
    shared_prefix: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// The JSON document: the plan plus where the model came from.
#[derive(Serialize)]
struct PlanOutput<'a> {
    model: &'a str,
    #[serde(flatten)]
    report: &'a PlanReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategies: Option<&'a [Strategy]>,
}

/// Runs `dsv4 plan`.
pub fn run(args: &PlanArgs) -> Result<()> {
    let model = args.source.resolve()?;
    let solve = match (args.memory, args.context) {
        (None, _) => Solve::Forward,
        (Some(_), None) => Solve::MaxContext,
        (Some(_), Some(_)) => Solve::MaxBatch,
    };
    let request = PlanRequest {
        dtypes: CacheDtypes {
            kv: args.kv_cache_dtype,
            indexer: args.indexer_cache_dtype,
        },
        block_size: args.block_size,
        headroom_percent: args.headroom,
        context: args.context.unwrap_or(model.config.max_position_embeddings),
        batch: args.batch.unwrap_or(1),
        memory_bytes: args.memory,
        weight_bytes: if args.kv_only { 0 } else { model.weight_bytes },
        solve,
        sharing: args.sharing.sharing(),
    };
    let report = plan(&model.config, &request)?;
    let strategies = if args.compare {
        // At the context and batch the plan settled on, in its dtypes, without its sharing.
        let at = PlanRequest {
            context: report.context,
            batch: report.batch,
            ..request
        };
        Some(compare(&model.config, &at, args.shared_prefix)?)
    } else {
        None
    };
    if args.json {
        let output = PlanOutput {
            model: &model.label,
            report: &report,
            strategies: strategies.as_deref(),
        };
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print!("{}", render(&model.label, &report));
        if let Some(sharing) = &report.sharing {
            print!("{}", render_sharing(sharing, &report));
        }
        if let Some(rows) = &strategies {
            print!("{}", render_strategies(rows));
        }
    }
    Ok(())
}

/// The sharing policy's groups and what it saves.
fn render_sharing(s: &SharingReport, r: &PlanReport) -> String {
    let mut out = String::new();
    let list = |groups: &[Vec<usize>]| {
        groups
            .iter()
            .map(|g| {
                let members: Vec<String> = g.iter().map(|l| l.to_string()).collect();
                members.join("+")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out);
    if let Some(kv) = s.policy.kv {
        let upper = kv.max_layer.map_or("".into(), |m| format!(" to {m}"));
        let _ = writeln!(
            out,
            "CLA groups of {} among layers from {}{upper} (the lowest the source), {} groups, source first:",
            kv.group,
            kv.min_layer,
            s.kv_groups.len()
        );
        let _ = writeln!(out, "  {}", list(&s.kv_groups));
        // The seed's hint assumes every layer pairs up; unlike layers, exempt ones and a kind's
        // odd layer out do not.
        let exact = 1.0 - r.bytes_per_token / s.unshared_bytes_per_token.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "growth saved          {:.1}% (the (g-1)/g estimate says {:.1}%)",
            100.0 * exact,
            100.0 * (kv.group - 1) as f64 / kv.group as f64
        );
    }
    if let Some(run) = s.policy.indexer_reuse {
        let _ = writeln!(
            out,
            "indexer top-k reused over runs of {run} CSA layers, {} runs, selecting layer first:",
            s.indexer_groups.len()
        );
        let _ = writeln!(out, "  {}", list(&s.indexer_groups));
    }
    let _ = writeln!(
        out,
        "saved                 {} ({} B) against no sharing: {} → {} B/token",
        binary(s.saved_bytes),
        grouped(s.saved_bytes),
        s.unshared_bytes_per_token,
        r.bytes_per_token
    );
    out
}

/// `--compare`'s table.
fn render_strategies(rows: &[Strategy]) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<18} {:>12} {:>14} {:>11} {:>8}  strategy",
        "name", "B/token", "fixed/request", "total", "ratio"
    );
    for r in rows {
        let total = r.total_bytes.map_or("> 16 EiB".into(), binary);
        let ratio = r.ratio_to_default.map_or("-".into(), |x| format!("{x:.3}"));
        let _ = writeln!(
            out,
            "{:<18} {:>12} {:>14} {:>11} {:>8}  {}",
            r.name,
            r.bytes_per_token,
            binary(r.fixed_bytes_per_request),
            total,
            ratio,
            r.description
        );
    }
    out
}

/// The human rendering of a plan.
fn render(label: &str, r: &PlanReport) -> String {
    let mut out = String::new();
    let requests = if r.batch == 1 { "request" } else { "requests" };
    let _ = writeln!(
        out,
        "{label}: {} tokens x {} {requests}, KV {} / indexer {}, blocks of {} tokens",
        grouped(r.context as u64),
        r.batch,
        r.kv_cache_dtype,
        r.indexer_cache_dtype,
        r.block_size
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<6} {:>6} {:>6} {:>9} {:>11} {:>13} {:>12} {:>12}",
        "layer",
        "count",
        "ratio",
        "entry B",
        "idx key B",
        "B/token each",
        "window each",
        "tails each"
    );
    for (layer, count) in layer_kinds(r) {
        let ratio = if layer.ratio == 0 {
            "-".to_string()
        } else {
            layer.ratio.to_string()
        };
        let key = layer
            .indexer_key_bytes
            .map_or("-".to_string(), |b| b.to_string());
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>6} {:>9} {:>11} {:>13} {:>12} {:>12}",
            layer.kind,
            count,
            ratio,
            layer.entry_bytes,
            key,
            layer.bytes_per_token,
            binary(layer.window_bytes),
            binary(layer.tail_bytes)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "growth per token      {} B/token", r.bytes_per_token);
    let _ = writeln!(
        out,
        "fixed per request     {} ({} B: windows and compressor tails)",
        binary(r.fixed_bytes_per_request),
        grouped(r.fixed_bytes_per_request)
    );
    let _ = writeln!(
        out,
        "paged blocks          {} ({} B, headroom {}%)",
        binary(r.paged_bytes),
        grouped(r.paged_bytes),
        r.headroom_percent
    );
    for pool in &r.pools {
        let _ = writeln!(
            out,
            "  pool of {:>9} B pages: {:>12} blocks = {:>11} ({} layer streams)",
            grouped(pool.page_bytes),
            grouped(pool.blocks),
            binary(pool.bytes),
            pool.streams.len()
        );
    }
    let _ = writeln!(
        out,
        "total KV cache        {} ({} B)",
        binary(r.total_bytes),
        grouped(r.total_bytes)
    );
    if let Some(fit) = &r.fit {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "memory {} - weights {} = {} for the cache",
            binary(fit.memory_bytes),
            binary(fit.weight_bytes),
            binary(fit.available_bytes)
        );
        if let Some(context) = fit.max_context {
            let _ = writeln!(
                out,
                "largest context       {} tokens per request (limited by {})",
                grouped(context as u64),
                fit.limited_by
            );
        }
        if let Some(batch) = fit.max_batch {
            let _ = writeln!(
                out,
                "largest batch         {batch} requests of {} tokens",
                grouped(r.context as u64)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "the same tokens in a dense cache:");
    for dense in &r.comparisons {
        let tokens = r.context as f64 * r.batch as f64;
        let ratio = dense.bytes_per_token as f64 * tokens / r.total_bytes.max(1) as f64;
        let total = dense.total_bytes.map_or("> 16 EiB".into(), binary);
        let _ = writeln!(
            out,
            "  {:<72} {:>7} B/token {:>11} ({ratio:.1}x this plan)",
            dense.description,
            grouped(dense.bytes_per_token),
            total
        );
    }
    out
}
