//! Cache sizes and plans against numbers derived by hand from docs/model.md §6–§7, and
//! snapshots of schema and block budgets for the flash, pro and tiny presets.

use std::fmt::Write as _;

use dsv4_cache::{
    plan, BlockBudget, CacheDtypes, IndexerCacheDtype, KvCacheDtype, ModelCacheSchema, PlanError,
    PlanRequest, Solve, DEFAULT_BLOCK_SIZE,
};
use dsv4_model::Preset;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const FP8_FP4: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::Fp8,
    indexer: IndexerCacheDtype::Fp4,
};

fn schema(preset: Preset, dtypes: CacheDtypes) -> ModelCacheSchema {
    ModelCacheSchema::new(&preset.config(), dtypes, DEFAULT_BLOCK_SIZE).expect("valid block size")
}

fn request(dtypes: CacheDtypes, context: usize) -> PlanRequest {
    PlanRequest {
        dtypes,
        block_size: DEFAULT_BLOCK_SIZE,
        headroom_percent: 0,
        context,
        batch: 1,
        memory_bytes: None,
        weight_bytes: 0,
        solve: Solve::Forward,
        sharing: Default::default(),
    }
}

#[test]
fn growth_per_token_matches_hand_derivation() {
    // Flash: 21 CSA × (1024/4 + 256/4) + 20 HCA × 1024/128 = 6720 + 160.
    assert_eq!(
        schema(Preset::Flash, CacheDtypes::default()).bytes_per_token(),
        6880.0
    );
    // Flash fp8/fp4: 21 × (584/4 + 68/4) + 20 × 584/128 = 3423 + 91.25.
    assert_eq!(schema(Preset::Flash, FP8_FP4).bytes_per_token(), 3514.25);
    // Pro: 30 CSA × 320 + 31 HCA × 8.
    assert_eq!(
        schema(Preset::Pro, CacheDtypes::default()).bytes_per_token(),
        9848.0
    );
    // Pro fp8/fp4: 30 × 163 + 31 × 4.5625.
    assert_eq!(schema(Preset::Pro, FP8_FP4).bytes_per_token(), 5031.4375);
}

#[test]
fn fixed_state_per_request_matches_hand_derivation() {
    let flash = schema(Preset::Flash, CacheDtypes::default());
    // Windows: 43 layers × 128 entries × 1024 B = 5.375 MiB (docs/model.md §7.2).
    let windows: u64 = flash.layers.iter().map(|l| l.window_bytes()).sum();
    assert_eq!(windows, 43 * 128 * 1024);
    assert_eq!(windows * 1000 / MIB, 5375);
    // Tails (f32 value + gate): CSA previous-window A-half 4 × 512 and current window 4 × 1024,
    // indexer the same with 128 / 256; HCA 128 × 512.
    let csa = 4 * 512 * 2 * 4 + 4 * 1024 * 2 * 4 + 4 * 128 * 2 * 4 + 4 * 256 * 2 * 4;
    let hca = 128 * 512 * 2 * 4;
    assert_eq!(csa, 60 * 1024);
    assert_eq!(
        flash.fixed_bytes_per_request(),
        windows + 21 * csa + 20 * hca
    );
}

#[test]
fn flash_at_one_million_tokens() {
    let report = plan(
        &Preset::Flash.config(),
        &request(CacheDtypes::default(), 1 << 20),
    )
    .expect("plan");
    // 6880 B × 2^20 tokens = 6880 MiB = 6.71875 GiB of paged growth (block-aligned context).
    assert_eq!(report.paged_bytes, 6880 * MIB);
    assert_eq!(report.paged_bytes as f64 / GIB as f64, 6.71875);
    // V3.2-shaped dense MLA: 61 × ((512 + 64) × 2 + 128 × 2) = 85,888 B/token → 83.875 GiB.
    let v32 = &report.comparisons[0];
    assert_eq!(v32.bytes_per_token, 85_888);
    assert_eq!(v32.total_bytes.expect("fits") as f64 / GIB as f64, 83.875);
    // fp8 V3.2 cache: 61 × (512 + 4 × 4 + 128 + 128 + 4) B = 48,068 B/token.
    assert_eq!(report.comparisons[1].bytes_per_token, 48_068);
    // This model under full attention: 43 layers × 1024 B.
    assert_eq!(report.comparisons[2].bytes_per_token, 43 * 1024);
    // Pools: CSA entries 64 × 1024 B pages, indexer keys 64 × 256 B, HCA entries 2 × 1024 B;
    // 4096 blocks of 256 tokens per stream.
    let pools: Vec<(u64, u64)> = report
        .pools
        .iter()
        .map(|p| (p.page_bytes, p.blocks))
        .collect();
    assert_eq!(
        pools,
        vec![(65536, 21 * 4096), (16384, 21 * 4096), (2048, 20 * 4096)]
    );
}

#[test]
fn blocks_count_only_closed_windows_with_exact_ceilings() {
    let flash = schema(Preset::Flash, CacheDtypes::default());
    let csa = flash.layers[2].entries.expect("CSA entries");
    let hca = flash.layers[3].entries.expect("HCA entries");
    // CSA: one entry per 4 tokens, 64 per block.
    assert_eq!(
        [3, 4, 255, 256, 259, 260].map(|t| csa.blocks(t)),
        [0, 1, 1, 1, 1, 2]
    );
    // HCA: one entry per 128 tokens, 2 per block.
    assert_eq!(
        [127, 128, 256, 383, 384].map(|t| hca.blocks(t)),
        [0, 1, 1, 1, 2]
    );
}

#[test]
fn headroom_rounds_blocks_up_per_pool() {
    let flash = schema(Preset::Flash, CacheDtypes::default());
    let plain = BlockBudget::new(&flash, 4096, 1, 0).expect("fits");
    let padded = BlockBudget::new(&flash, 4096, 1, 10).expect("fits");
    // 4096 tokens: 16 blocks per stream; 21 CSA streams = 336 blocks, +10% = 369.6 → 370.
    assert_eq!(plain.pools[0].blocks, 336);
    assert_eq!(padded.pools[0].blocks, 370);
    // HCA: 20 streams × 16 = 320, +10% = 352 exactly.
    assert_eq!(padded.pools[2].blocks, 352);
    assert_eq!(padded.fixed_bytes, plain.fixed_bytes);
}

#[test]
fn batch_scales_every_part() {
    let flash = schema(Preset::Flash, CacheDtypes::default());
    let one = BlockBudget::new(&flash, 10_000, 1, 0).expect("fits");
    let three = BlockBudget::new(&flash, 10_000, 3, 0).expect("fits");
    assert_eq!(three.total_bytes, 3 * one.total_bytes);
}

#[test]
fn block_size_must_be_a_multiple_of_every_ratio() {
    let err = ModelCacheSchema::new(&Preset::Flash.config(), CacheDtypes::default(), 102)
        .expect_err("102 is not a multiple of 4");
    assert_eq!(
        err.to_string(),
        "block size 102 is not a positive multiple of compress ratio 4 (layer 2)"
    );
    let err = ModelCacheSchema::new(&Preset::Flash.config(), CacheDtypes::default(), 64)
        .expect_err("64 is not a multiple of 128");
    assert_eq!(
        err.to_string(),
        "block size 64 is not a positive multiple of compress ratio 128 (layer 3)"
    );
    assert!(ModelCacheSchema::new(&Preset::Tiny.config(), CacheDtypes::default(), 16).is_ok());
}

fn solve(
    context: Option<usize>,
    batch: usize,
    memory: u64,
    weights: u64,
) -> dsv4_cache::PlanReport {
    let mut r = request(CacheDtypes::default(), context.unwrap_or(0));
    r.batch = batch;
    r.memory_bytes = Some(memory);
    r.weight_bytes = weights;
    r.solve = if context.is_some() {
        Solve::MaxBatch
    } else {
        Solve::MaxContext
    };
    plan(&Preset::Flash.config(), &r).expect("plan")
}

fn forward_total(context: usize, batch: usize) -> u64 {
    let mut r = request(CacheDtypes::default(), context);
    r.batch = batch;
    plan(&Preset::Flash.config(), &r).expect("plan").total_bytes
}

#[test]
fn inverse_answers_agree_with_forward_plans() {
    let memory = 200 * GIB;
    let weights = 150 * GIB;
    let available = memory - weights;
    // Largest context at batch 8: fits, and one more token does not.
    let by_context = solve(None, 8, memory, weights);
    let fit = by_context.fit.as_ref().expect("fit");
    let context = fit.max_context.expect("context");
    assert_eq!(fit.available_bytes, available);
    assert_eq!(fit.limited_by, "memory");
    assert!(forward_total(context, 8) <= available);
    assert!(forward_total(context + 1, 8) > available);
    assert_eq!(by_context.total_bytes, forward_total(context, 8));
    // Largest batch at 1M tokens.
    let by_batch = solve(Some(1 << 20), 1, memory, weights);
    let batch = by_batch
        .fit
        .as_ref()
        .and_then(|f| f.max_batch)
        .expect("batch");
    assert!(forward_total(1 << 20, batch) <= available);
    assert!(forward_total(1 << 20, batch + 1) > available);
    // Plenty of memory: capped by the model's context limit.
    let capped = solve(None, 1, 80 * GIB, 0);
    let fit = capped.fit.expect("fit");
    assert_eq!(fit.max_context, Some(1 << 20));
    assert_eq!(fit.limited_by, "max_position_embeddings");
}

#[test]
fn impossible_plans_say_why() {
    let mut r = request(CacheDtypes::default(), 0);
    r.memory_bytes = Some(80 * GIB);
    r.weight_bytes = 150 * GIB;
    r.solve = Solve::MaxContext;
    let err = plan(&Preset::Flash.config(), &r).expect_err("weights do not fit");
    assert!(matches!(err, PlanError::WeightsExceedMemory { .. }));
    r.weight_bytes = 80 * GIB - MIB;
    let err = plan(&Preset::Flash.config(), &r).expect_err("fixed state does not fit");
    assert_eq!(
        err.to_string(),
        format!(
            "1048576 bytes are left for the cache, but the fixed state of 1 request(s) needs {} bytes",
            schema(Preset::Flash, CacheDtypes::default()).fixed_bytes_per_request()
        )
    );
    let too_long = plan(
        &Preset::Flash.config(),
        &request(CacheDtypes::default(), (1 << 20) + 1),
    );
    assert_eq!(
        too_long.expect_err("too long").to_string(),
        "context 1048577 exceeds the model's max_position_embeddings = 1048576"
    );
}

/// A compact text of a preset's schema and budgets, for snapshots.
fn describe(preset: Preset, dtypes: CacheDtypes) -> String {
    let schema = schema(preset, dtypes);
    let mut out = String::new();
    let _ = writeln!(out, "bytes_per_token {}", schema.bytes_per_token());
    let _ = writeln!(
        out,
        "fixed_bytes_per_request {}",
        schema.fixed_bytes_per_request()
    );
    let mut seen = Vec::new();
    for layer in &schema.layers {
        let key = (layer.attention.label(), layer.attention.ratio());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let _ = writeln!(
            out,
            "{} ratio {:?}: window {} x {} B, bytes/token {}",
            key.0,
            key.1,
            layer.window_entries,
            layer.entry_bytes,
            layer.bytes_per_token()
        );
        for s in layer.streams() {
            let _ = writeln!(
                out,
                "  {:?}: width {}, {} B each, {} per block, page {} B",
                s.kind, s.width, s.entry_bytes, s.entries_per_block, s.page_bytes
            );
        }
        for t in &layer.tails {
            let _ = writeln!(
                out,
                "  {}: {} x {} f32 x2 = {} B",
                t.name, t.tokens, t.width, t.bytes
            );
        }
    }
    for context in [4096, 131_072, 1_048_576] {
        let budget = BlockBudget::new(&schema, context, 1, 0).expect("fits");
        let pools: Vec<String> = budget
            .pools
            .iter()
            .map(|p| {
                format!(
                    "{}B x{} ({} streams)",
                    p.page_bytes,
                    p.blocks,
                    p.streams.len()
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "context {context}: paged {} + fixed {} = {}; pools {}",
            budget.paged_bytes,
            budget.fixed_bytes,
            budget.total_bytes,
            pools.join(", ")
        );
    }
    out
}

#[test]
fn schemas_and_budgets_match_snapshots() {
    for preset in [Preset::Flash, Preset::Pro, Preset::Tiny] {
        for (tag, dtypes) in [("bf16", CacheDtypes::default()), ("fp8_fp4", FP8_FP4)] {
            let name = format!("cache_{}_{tag}", preset.name());
            insta::assert_snapshot!(name, describe(preset, dtypes));
        }
    }
}
