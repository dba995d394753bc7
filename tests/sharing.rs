//! Cache-sharing policies run by the CPU backend on the parity fixtures (hca16: SWA, CSA m=4,
//! HCA m=16, CSA, HCA; top-k 8, so past 32 tokens a CSA query selects a strict subset): CLA
//! groups pair layers 1+3 and 2+4, indexer reuse 2 has layer 3 reuse layer 1's selection. Each
//! request holds exactly the bytes `dsv4 plan` prices for its policy, its logits are the same
//! bits for every chunk size, the policy changes them (it is applied), and requests without it,
//! run beside it on the same model, are untouched. The CUDA backend refuses a policy.

use dsv4_cache::{
    BlockBudget, CacheDtypes, IndexerCacheDtype, KvCacheDtype, ModelCacheSchema, Sharing,
    DEFAULT_BLOCK_SIZE,
};
use dsv4_runtime::{CudaBackend, Logits, Model, Numerics};
use dsv4_tests::{assert_same_bits, fixture, with_model, with_model_on, Fixture};

const EXACT: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::F32,
    indexer: IndexerCacheDtype::F32,
};

fn cla() -> Sharing {
    Sharing::kv_groups(2)
}

fn reuse() -> Sharing {
    Sharing::indexer_runs(2)
}

/// Every position's logits of the fixture's first `tokens` ids in chunks of `chunk` under
/// `sharing`, and the cache bytes held at the end.
fn scored(
    model: &Model,
    f: &Fixture,
    tokens: usize,
    chunk: usize,
    sharing: Sharing,
) -> (Vec<f32>, u64) {
    let ids = &f.ids[..tokens];
    let mut state = model
        .new_request_sharing(ids.len(), sharing)
        .expect("request");
    let mut out = Vec::new();
    for piece in ids.chunks(chunk) {
        out.extend(
            model
                .forward(piece, &mut state, Logits::All)
                .expect("forward"),
        );
    }
    (out, state.cache_bytes())
}

#[test]
fn a_policy_holds_what_the_plan_prices_and_is_chunk_invariant() {
    let f = fixture("hca16");
    let tokens = f.ids.len();
    for numerics in [Numerics::Exact, Numerics::Reference] {
        with_model(&f.dir, numerics, EXACT, |model| {
            let config = &dsv4_runtime::LoadedCheckpoint::open(&f.dir)
                .expect("loads")
                .config;
            let (plain, _) = scored(model, &f, tokens, tokens, Sharing::default());
            for (name, sharing) in [("CLA 2", cla()), ("indexer reuse 2", reuse())] {
                let schema =
                    ModelCacheSchema::with_sharing(config, EXACT, DEFAULT_BLOCK_SIZE, sharing)
                        .expect("schema");
                let planned = BlockBudget::new(&schema, tokens, 1, 0)
                    .expect("fits")
                    .total_bytes;
                let (whole, held) = scored(model, &f, tokens, tokens, sharing);
                assert_eq!(held, planned, "{name}: held vs planned");
                let unshared = BlockBudget::new(model.cache_schema(), tokens, 1, 0)
                    .expect("fits")
                    .total_bytes;
                assert!(
                    held < unshared,
                    "{name}: {held} B is no saving on {unshared}"
                );
                assert!(whole.iter().all(|v| v.is_finite()), "{name}");
                assert_ne!(whole, plain, "{name}: the policy changed nothing");
                for chunk in [1, 7, 64] {
                    let (chunked, _) = scored(model, &f, tokens, chunk, sharing);
                    assert_same_bits(
                        &chunked,
                        &whole,
                        &format!("{name}, {numerics:?}, chunks of {chunk}"),
                    );
                }
            }
        });
    }
}

/// While a CSA query's top-k (8) covers every closed entry (positions below 32 at m = 4), the
/// source's selection is the member's own as a set, so reusing it changes the logits by rounding
/// alone; past that it selects for other queries and the logits move.
#[test]
fn reusing_a_selection_that_covers_everything_changes_nothing_but_rounding() {
    let f = fixture("hca16");
    let vocab = f.vocab;
    with_model(&f.dir, Numerics::Exact, EXACT, |model| {
        let (plain, _) = scored(model, &f, 64, 64, Sharing::default());
        let (reused, _) = scored(model, &f, 64, 64, reuse());
        let diff = |from: usize, to: usize| {
            plain[from * vocab..to * vocab]
                .iter()
                .zip(&reused[from * vocab..to * vocab])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(diff(0, 32) < 1e-4, "{}", diff(0, 32));
        assert!(diff(32, 64) > 1e-3, "{}", diff(32, 64));
    });
}

#[test]
fn requests_without_the_policy_are_untouched_by_one_beside_them() {
    let f = fixture("hca16");
    with_model(&f.dir, Numerics::Exact, EXACT, |model| {
        let (alone, _) = scored(model, &f, 64, 64, Sharing::default());
        // Interleave a sharing request and a plain one, chunk by chunk, on the same model.
        let mut shared = model.new_request_sharing(64, cla()).expect("request");
        let mut plain = model.new_request(64).expect("request");
        let mut beside = Vec::new();
        for piece in f.ids[..64].chunks(8) {
            model
                .forward(piece, &mut shared, Logits::All)
                .expect("forward");
            beside.extend(
                model
                    .forward(piece, &mut plain, Logits::All)
                    .expect("forward"),
            );
        }
        assert_same_bits(&beside, &alone, "a plain request beside a sharing one");
    });
}

#[test]
fn the_cuda_backend_refuses_a_policy_in_one_line() {
    let f = fixture("hca16");
    with_model_on(
        CudaBackend::sim(),
        &f.dir,
        Numerics::Exact,
        EXACT,
        |model| {
            let e = model
                .new_request_sharing(16, reuse())
                .map(|_| ())
                .expect_err("refused");
            let message = e.to_string();
            assert!(message.contains("--device cpu"), "{message}");
            assert!(!message.contains('\n'));
            assert!(model.new_request(16).is_ok());
        },
    );
}
