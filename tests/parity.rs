//! The CPU engine against transformers' float32 `DeepseekV4ForCausalLM` on the committed
//! fixtures (tests/parity, made by make_fixtures.py from the spec, independently of dsv4):
//! exact-mode logits, chunk invariance, greedy continuation, cache memory against the planner,
//! and the deviation of the reference numerics and compact caches (reported, not hidden).

use std::path::{Path, PathBuf};

use dsv4_cache::{BlockBudget, CacheDtypes, IndexerCacheDtype, KvCacheDtype};
use dsv4_runtime::engine::sampler::SamplingParams;
use dsv4_runtime::{generate, FinishReason, GenerateRequest, Logits, Numerics};
use dsv4_tests::with_model;
use serde_json::Value;

const EXACT_CACHE: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::F32,
    indexer: IndexerCacheDtype::F32,
};

struct Fixture {
    dir: PathBuf,
    ids: Vec<u32>,
    vocab: usize,
    logits: Vec<f32>,
    reference: Value,
}

fn fixture(name: &str) -> Fixture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("parity/fixtures")
        .join(name);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference"),
    )
    .expect("json");
    let ids: Vec<u32> = reference["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    let vocab = reference["vocab_size"].as_u64().expect("vocab") as usize;
    let logits = std::fs::read(dir.join("logits.f32"))
        .expect("logits")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect::<Vec<_>>();
    assert_eq!(logits.len(), ids.len() * vocab);
    Fixture {
        dir,
        ids,
        vocab,
        logits,
        reference,
    }
}

/// Scores the fixture's ids in chunks; returns the logits and the cache bytes held at the end.
fn score(
    f: &Fixture,
    chunk: usize,
    numerics: Numerics,
    dtypes: CacheDtypes,
) -> (Vec<f32>, u64, u64) {
    score_rows(f, chunk, numerics, dtypes, Logits::All)
}

/// [`score`] asking each chunk for `which` logits.
fn score_rows(
    f: &Fixture,
    chunk: usize,
    numerics: Numerics,
    dtypes: CacheDtypes,
    which: Logits,
) -> (Vec<f32>, u64, u64) {
    with_model(&f.dir, numerics, dtypes, |model| {
        let mut state = model.new_request(f.ids.len()).expect("request");
        let mut out = Vec::new();
        for piece in f.ids.chunks(chunk) {
            out.extend(model.forward(piece, &mut state, which).expect("forward"));
        }
        let planned = BlockBudget::new(model.cache_schema(), f.ids.len(), 1, 0)
            .expect("fits")
            .total_bytes;
        (out, state.cache_bytes(), planned)
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn argmax_and_gap(row: &[f32]) -> (usize, f32) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    (order[0], row[order[0]] - row[order[1]])
}

fn check_exact(name: &str) {
    let f = fixture(name);
    let (ours, held, planned) = score(&f, f.ids.len(), Numerics::Exact, EXACT_CACHE);
    let mut worst = 0.0f32;
    let mut compared = 0;
    for (pos, (a, b)) in ours
        .chunks(f.vocab)
        .zip(f.logits.chunks(f.vocab))
        .enumerate()
    {
        let d = max_abs_diff(a, b);
        worst = worst.max(d);
        assert!(d <= 1e-3, "{name}: position {pos}: max |Δlogit| {d}");
        let (want, gap) = argmax_and_gap(b);
        if gap > 1e-3 {
            assert_eq!(
                argmax_and_gap(a).0,
                want,
                "{name}: argmax at position {pos}"
            );
            compared += 1;
        }
    }
    println!("{name}: exact mode vs transformers: max |Δlogit| = {worst:.3e} over {} positions, argmax equal at {compared}", f.ids.len());
    assert_eq!(held, planned, "{name}: cache bytes held vs planned");

    // Asking for the last logits only (the last layer then computes one output per chunk but
    // caches every token): each chunk's last row, and so every later chunk, is unchanged.
    let chunk = 7;
    let (last, held, planned) = score_rows(&f, chunk, Numerics::Exact, EXACT_CACHE, Logits::Last);
    let ends: Vec<usize> = (0..f.ids.len())
        .step_by(chunk)
        .map(|start| (start + chunk).min(f.ids.len()) - 1)
        .collect();
    assert_eq!(last.len(), ends.len() * f.vocab);
    for (row, &pos) in last.chunks(f.vocab).zip(&ends) {
        assert_same_bits(
            row,
            &ours[pos * f.vocab..(pos + 1) * f.vocab],
            &format!("{name}: last-row logits at {pos}"),
        );
    }
    assert_eq!(held, planned);
}

/// Bit-for-bit equality, naming the first position and logit that differ.
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: logit {i} differs: {} against {}", got[i], want[i]);
    }
}

#[test]
fn hca16_matches_transformers_in_exact_mode() {
    check_exact("hca16");
}

#[test]
fn hca128_matches_transformers_in_exact_mode() {
    check_exact("hca128");
}

#[test]
fn greedy_run_reproduces_transformers_continuation() {
    for name in ["hca16", "hca128"] {
        let f = fixture(name);
        let ids = |key: &str| -> Vec<u32> {
            f.reference["greedy"][key]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect()
        };
        let expected = ids("generated_ids");
        let request = GenerateRequest {
            prompt_ids: ids("prompt_ids"),
            max_new_tokens: expected.len(),
            sampling: SamplingParams::greedy(),
            stops: Vec::new(),
            prefill_chunk: 7,
        };
        let generation = with_model(&f.dir, Numerics::Exact, EXACT_CACHE, |model| {
            generate(model, None, &request, |_| {}).expect("generates")
        });
        assert_eq!(generation.generated_ids, expected, "{name}");
        assert_eq!(generation.finish_reason, FinishReason::Length);
    }
}

/// Every chunk size, token by token (1) included, gives the same logits bit for bit, in both
/// numerics and with every cache dtype: a token's result never depends on which tokens share its
/// chunk.
#[test]
fn logits_are_bit_identical_for_every_chunk_size() {
    use IndexerCacheDtype as I;
    use KvCacheDtype as K;
    let settings = [
        (Numerics::Exact, K::F32, I::F32),
        (Numerics::Exact, K::Bf16, I::Bf16),
        (Numerics::Exact, K::Fp8, I::Fp8),
        (Numerics::Exact, K::Fp8, I::Fp4),
        (Numerics::Reference, K::F32, I::F32),
        (Numerics::Reference, K::Bf16, I::Bf16),
        (Numerics::Reference, K::Bf16, I::Fp8),
        (Numerics::Reference, K::Fp8, I::Fp4),
    ];
    for name in ["hca16", "hca128"] {
        let f = fixture(name);
        for (numerics, kv, indexer) in settings {
            let dtypes = CacheDtypes { kv, indexer };
            let (whole, _, _) = score(&f, f.ids.len(), numerics, dtypes);
            for chunk in [1, 3, 7, 64] {
                let (chunked, held, planned) = score(&f, chunk, numerics, dtypes);
                let what = format!(
                    "{name}: {numerics:?}, {kv:?} KV, {indexer:?} indexer, chunks of {chunk}"
                );
                assert_same_bits(&chunked, &whole, &what);
                assert_eq!(held, planned, "{what}: cache bytes held vs planned");
            }
        }
    }
}

#[test]
fn reference_numerics_and_compact_caches_run_and_report_their_deviation() {
    for name in ["hca16", "hca128"] {
        let f = fixture(name);
        let (exact, _, _) = score(&f, f.ids.len(), Numerics::Exact, EXACT_CACHE);
        for (label, numerics, dtypes) in [
            (
                "reference numerics, bf16 caches",
                Numerics::Reference,
                CacheDtypes::default(),
            ),
            (
                "reference numerics, fp8 KV + fp4 indexer",
                Numerics::Reference,
                CacheDtypes {
                    kv: KvCacheDtype::Fp8,
                    indexer: IndexerCacheDtype::Fp4,
                },
            ),
            (
                "exact numerics, fp8 KV + fp8 indexer",
                Numerics::Exact,
                CacheDtypes {
                    kv: KvCacheDtype::Fp8,
                    indexer: IndexerCacheDtype::Fp8,
                },
            ),
        ] {
            let (ours, _, _) = score(&f, 13, numerics, dtypes);
            assert!(ours.iter().all(|v| v.is_finite()), "{name}: {label}");
            let d = max_abs_diff(&ours, &exact);
            let agree = ours
                .chunks(f.vocab)
                .zip(exact.chunks(f.vocab))
                .filter(|(a, b)| argmax_and_gap(a).0 == argmax_and_gap(b).0)
                .count();
            println!(
                "{name}: {label}: max |Δlogit| vs exact = {d:.4}, argmax agrees at {agree}/{} positions",
                f.ids.len()
            );
        }
    }
}
