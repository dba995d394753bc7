//! Cache sharing priced against figures derived by hand from V4-Flash's schedule (2 SWA layers,
//! then CSA (m = 4) and HCA (m = 128) alternating from layer 2: 21 CSA, 20 HCA; bf16 entries of
//! 512 values = 1024 B, indexer keys of 128 = 256 B; fp8 entries 584 B, fp4 keys 68 B), and
//! `dsv4 plan --compare`'s strategies.

use dsv4_cache::{
    compare, plan, BlockBudget, CacheDtypes, IndexerCacheDtype, KvCacheDtype, KvSharing,
    ModelCacheSchema, PlanError, PlanRequest, SchemaError, ShareDirection, Sharing, SharingError,
    Solve, DEFAULT_BLOCK_SIZE,
};
use dsv4_model::Preset;

const MIB: u64 = 1 << 20;
const BF16: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::Bf16,
    indexer: IndexerCacheDtype::Bf16,
};
const FP8_FP4: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::Fp8,
    indexer: IndexerCacheDtype::Fp4,
};

fn cla(group: usize, min_layer: usize, max_layer: Option<usize>) -> Sharing {
    Sharing {
        kv: Some(KvSharing {
            group,
            min_layer,
            max_layer,
            direction: ShareDirection::Lower,
        }),
        indexer_reuse: None,
    }
}

fn reuse(run: usize) -> Sharing {
    Sharing {
        kv: None,
        indexer_reuse: Some(run),
    }
}

fn flash(dtypes: CacheDtypes, sharing: Sharing) -> ModelCacheSchema {
    ModelCacheSchema::with_sharing(&Preset::Flash.config(), dtypes, DEFAULT_BLOCK_SIZE, sharing)
        .expect("schema")
}

/// Layers of `kind` storing compressed entries, and CSA layers storing indexer keys.
fn storing(s: &ModelCacheSchema, kind: &str) -> (usize, usize) {
    let of = |l: &&dsv4_cache::LayerCacheSchema| l.attention.label() == kind;
    (
        s.layers
            .iter()
            .filter(of)
            .filter(|l| l.entries.is_some())
            .count(),
        s.layers
            .iter()
            .filter(of)
            .filter(|l| l.indexer_keys.is_some())
            .count(),
    )
}

#[test]
fn cla_groups_of_two_store_half_the_layers() {
    // 11 of 21 CSA layers × (256 + 64) + 10 of 20 HCA layers × 8 = 3520 + 80.
    let s = flash(BF16, cla(2, 0, None));
    assert_eq!(s.bytes_per_token(), 3600.0);
    assert_eq!(flash(BF16, Sharing::default()).bytes_per_token(), 6880.0);
    assert_eq!(storing(&s, "CSA"), (11, 11));
    assert_eq!(storing(&s, "HCA"), (10, 0));
    // fp8 entries and fp4 keys: 11 × (146 + 17) + 10 × 4.5625.
    assert_eq!(flash(FP8_FP4, cla(2, 0, None)).bytes_per_token(), 1838.625);
    assert_eq!(
        flash(FP8_FP4, Sharing::default()).bytes_per_token(),
        3514.25
    );
    // Windows of 128 × 1024 B in the 22 source layers (1 SWA, 11 CSA, 10 HCA); tails of 60 KiB
    // per CSA source and 128 × 512 × 2 × 4 B per HCA source.
    assert_eq!(
        s.fixed_bytes_per_request(),
        22 * 128 * 1024 + 11 * 60 * 1024 + 10 * 128 * 512 * 2 * 4
    );
}

#[test]
fn groups_pair_layers_of_one_kind_and_ratio() {
    let s = flash(BF16, cla(2, 0, None));
    let source = |layer: usize| s.layers[layer].kv_source;
    // SWA 0–1, CSA 2–4, HCA 3–5: a partner is the next layer of the same kind, not the next layer.
    assert_eq!(
        (
            source(0),
            source(1),
            source(2),
            source(3),
            source(4),
            source(5)
        ),
        (None, Some(0), None, None, Some(2), Some(3))
    );
    // The 21st CSA layer (42) has no partner and keeps its own cache.
    assert_eq!(source(42), None);
    assert!(s.layers[42].entries.is_some());
    // A member stores nothing.
    assert_eq!(s.layers[4].window_bytes() + s.layers[4].tail_bytes(), 0);
    assert_eq!(s.layers[4].bytes_per_token(), 0.0);
}

#[test]
fn exempt_layers_keep_their_own_cache() {
    // min_layer 4: layers 0–3 exempt (SWA 0, 1, CSA 2, HCA 3); CSA 4..42 (20) in 10 groups,
    // HCA 5..41 (19) in 10: 11 CSA and 11 HCA store, 11 × 320 + 11 × 8.
    assert_eq!(flash(BF16, cla(2, 4, None)).bytes_per_token(), 3608.0);
    // max_layer 20: CSA 2..20 (10) in 5 groups + 11 exempt above; HCA 3..19 (9) in 5 + 11 above:
    // 16 × 320 + 16 × 8.
    assert_eq!(flash(BF16, cla(2, 0, Some(20))).bytes_per_token(), 5248.0);
    // Groups of 3 from layer 0: ⌈21/3⌉ = 7 CSA, ⌈20/3⌉ = 7 HCA store: 7 × 320 + 7 × 8.
    assert_eq!(flash(BF16, cla(3, 0, None)).bytes_per_token(), 2296.0);
}

#[test]
fn indexer_reuse_drops_the_keys_of_the_reusing_layers() {
    // Runs of 2: keys in ⌈21/2⌉ = 11 CSA layers: 21 × 256 + 11 × 64 + 20 × 8.
    let two = flash(BF16, reuse(2));
    assert_eq!(two.bytes_per_token(), 6240.0);
    assert_eq!(storing(&two, "CSA"), (21, 11));
    assert_eq!(two.layers[4].indexer_source, Some(2));
    // A reusing layer runs no indexer compressor: only its main tails (16 + 32 KiB) are left.
    assert_eq!(two.layers[4].tail_bytes(), 48 * 1024);
    // Runs of 4: ⌈21/4⌉ = 6: 5376 + 6 × 64 + 160.
    assert_eq!(flash(BF16, reuse(4)).bytes_per_token(), 5920.0);
    // Runs of 1 share nothing.
    assert_eq!(flash(BF16, reuse(1)), flash(BF16, Sharing::default()));
}

#[test]
fn policies_dsv4_cannot_honour_are_refused_with_the_reason() {
    let config = Preset::Flash.config();
    let refused = |sharing: Sharing| {
        ModelCacheSchema::with_sharing(&config, BF16, DEFAULT_BLOCK_SIZE, sharing)
            .expect_err("refused")
    };
    let mut upper = cla(2, 0, None);
    if let Some(kv) = upper.kv.as_mut() {
        kv.direction = ShareDirection::Upper;
    }
    let e = refused(upper);
    assert_eq!(e, SchemaError::Sharing(SharingError::Upper));
    assert!(e.to_string().contains("only `lower` (causal)"), "{e}");
    assert_eq!(
        refused(cla(1, 0, None)),
        SchemaError::Sharing(SharingError::GroupTooSmall(1))
    );
    assert_eq!(
        refused(cla(2, 9, Some(3))),
        SchemaError::Sharing(SharingError::EmptyRange { min: 9, max: 3 })
    );
    assert_eq!(
        refused(reuse(0)),
        SchemaError::Sharing(SharingError::EmptyRun)
    );
    let both = Sharing {
        indexer_reuse: Some(2),
        ..cla(2, 0, None)
    };
    assert_eq!(refused(both), SchemaError::Sharing(SharingError::Both));
}

fn request(dtypes: CacheDtypes, context: usize, batch: usize, sharing: Sharing) -> PlanRequest {
    PlanRequest {
        dtypes,
        block_size: DEFAULT_BLOCK_SIZE,
        headroom_percent: 0,
        context,
        batch,
        memory_bytes: None,
        weight_bytes: 0,
        solve: Solve::Forward,
        sharing,
    }
}

#[test]
fn the_plan_prints_the_groups_and_the_bytes_saved() {
    let config = Preset::Flash.config();
    let report = plan(&config, &request(BF16, 1 << 20, 1, cla(2, 0, None))).expect("plan");
    assert_eq!(report.bytes_per_token, 3600.0);
    // Block-aligned context: 3600 B × 2^20 of pages.
    assert_eq!(report.paged_bytes, 3600 * MIB);
    let sharing = report.sharing.expect("a sharing report");
    assert_eq!(sharing.kv_groups[0], vec![0, 1]);
    assert_eq!(sharing.kv_groups[1], vec![2, 4]);
    assert_eq!(sharing.kv_groups[2], vec![3, 5]);
    // 1 SWA group + 10 CSA pairs + 10 HCA pairs.
    assert_eq!(sharing.kv_groups.len(), 21);
    assert!(sharing.indexer_groups.is_empty());
    let unshared = plan(&config, &request(BF16, 1 << 20, 1, Sharing::default())).expect("plan");
    assert_eq!(sharing.unshared_total_bytes, unshared.total_bytes);
    assert_eq!(
        sharing.saved_bytes,
        unshared.total_bytes - report.total_bytes
    );
    // Pages: (6880 − 3600) × 2^20; fixed: 21 windows and the tails of 10 CSA + 10 HCA layers.
    assert_eq!(
        sharing.saved_bytes,
        3280 * MIB + 21 * 128 * 1024 + 10 * 60 * 1024 + 10 * 128 * 512 * 8
    );
    assert!(unshared.sharing.is_none());
    let e = plan(&config, &request(BF16, 4096, 1, reuse(0))).expect_err("refused");
    assert!(matches!(e, PlanError::Sharing(SharingError::EmptyRun)));
}

#[test]
fn the_comparison_prices_every_strategy_from_the_schema() {
    let config = Preset::Flash.config();
    let rows = compare(
        &config,
        &request(BF16, 1 << 20, 4, Sharing::default()),
        1 << 19,
    )
    .expect("compare");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let fixed = flash(BF16, Sharing::default()).fixed_bytes_per_request();
    let default = row("dsv4_paged");
    assert_eq!(default.bytes_per_token, 6880.0);
    assert_eq!(default.total_bytes, Some(4 * (6880 * MIB + fixed)));
    assert_eq!(default.ratio_to_default, Some(1.0));
    assert_eq!(row("dsv4_bf16").bytes_per_token, 6880.0);
    assert_eq!(row("dsv4_fp8_fp4").bytes_per_token, 3514.25);
    // fp8 entries, bf16 keys: 21 × (146 + 64) + 20 × 4.5625.
    assert_eq!(row("dsv4_fp8").bytes_per_token, 4501.25);
    assert_eq!(row("cla_2").bytes_per_token, 3600.0);
    assert_eq!(row("indexer_reuse_2").bytes_per_token, 6240.0);
    assert_eq!(row("indexer_reuse_4").bytes_per_token, 5920.0);
    // At the full context, allocating it all at once costs what the pages do.
    assert_eq!(row("dsv4_contiguous").total_bytes, default.total_bytes);
    // Half the context shared: half of each stream's pages held once, the other half 4 times.
    assert_eq!(
        row("shared_prefix").total_bytes,
        Some(6880 * MIB / 2 + 4 * 6880 * MIB / 2 + 4 * fixed)
    );
    assert_eq!(row("v32_dense_mla_bf16").bytes_per_token, 85_888.0);
    assert_eq!(
        row("v32_dense_mla_bf16").total_bytes,
        Some(85_888 * 4 * (1 << 20))
    );
    assert_eq!(row("full_attention").bytes_per_token, (43 * 1024) as f64);
    // A short context: contiguous allocation still reserves the full 2^20 tokens per request.
    let short =
        compare(&config, &request(BF16, 1 << 16, 1, Sharing::default()), 0).expect("compare");
    let contiguous = short
        .iter()
        .find(|r| r.name == "dsv4_contiguous")
        .expect("row");
    assert_eq!(contiguous.total_bytes, Some(6880 * MIB + fixed));
    let paged = BlockBudget::new(&flash(BF16, Sharing::default()), 1 << 16, 1, 0).expect("fits");
    assert_eq!(
        contiguous.ratio_to_default,
        Some((6880 * MIB + fixed) as f64 / paged.total_bytes as f64)
    );
    assert!(short.iter().all(|r| r.name != "shared_prefix"));
}
