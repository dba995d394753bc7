//! Prefix reuse on the CPU backend: a request resumed from a kept state gives the same logits
//! bit for bit as a cold run on the same tokens, shares the kept state's full pages, is not
//! disturbed by the request the state was kept from going on, and the cache keeps within its
//! byte cap by evicting the least recently used state.

use dsv4_cache::{CacheDtypes, IndexerCacheDtype, KvCacheDtype, Sharing};
use dsv4_runtime::engine::prefix::PrefixCache;
use dsv4_runtime::{Logits, Model, Numerics, Request};
use dsv4_tests::{assert_same_bits, fixture, with_model};

const COMPACT: CacheDtypes = CacheDtypes {
    kv: KvCacheDtype::Fp8,
    indexer: IndexerCacheDtype::Fp4,
};

/// Logits of positions `from..ids.len()` of a cold request over `ids` (fed in two chunks).
fn cold(model: &Model, ids: &[u32], from: usize, sharing: Sharing) -> Vec<f32> {
    let mut r = Request::sharing(model, ids.len(), sharing).expect("request");
    r.feed(&ids[..from], 64).expect("prefill");
    let mut out = Vec::new();
    r.prefill(&ids[from..], 64, Logits::All, |_, l| {
        out.extend_from_slice(l);
        Ok::<_, dsv4_runtime::ForwardError>(())
    })
    .expect("rest");
    out
}

#[test]
fn a_resumed_request_gives_the_cold_bits_and_shares_full_pages() {
    let f = fixture("hca16");
    let ids = &f.ids[..200];
    for (numerics, dtypes) in [
        (Numerics::Exact, CacheDtypes::default()),
        (Numerics::Reference, COMPACT),
    ] {
        with_model(&f.dir, numerics, dtypes, |model| {
            let sharing = Sharing::default();
            let want = cold(model, ids, 120, sharing);
            let mut cache = PrefixCache::new(1 << 30);
            // A request over the first 120 tokens, kept, then going on with others.
            let mut first = Request::new(model, 200).expect("request");
            first.feed(&ids[..120], 7).expect("prefill");
            assert!(cache.keep(model, &ids[..120], first.state()).expect("keep"));
            first.feed(&[3, 1, 4, 1, 5], 5).expect("goes on");
            for _ in 0..2 {
                let resumed = cache
                    .resume(model, ids, ids.len())
                    .expect("resume")
                    .expect("a kept prefix");
                assert_eq!(resumed.reused, 120);
                let shared: usize = resumed
                    .state
                    .cache
                    .layers
                    .iter()
                    .flat_map(|l| [&l.entries, &l.indexer_keys])
                    .flatten()
                    .map(|s| s.shared_pages())
                    .sum();
                assert!(shared > 0, "no page shared");
                let mut r = Request::from_state(model, resumed.state);
                let mut got = Vec::new();
                r.prefill(&ids[120..], 13, Logits::All, |_, l| {
                    got.extend_from_slice(l);
                    Ok::<_, dsv4_runtime::ForwardError>(())
                })
                .expect("rest");
                assert_same_bits(&got, &want, &format!("{numerics:?}: resumed vs cold"));
            }
            // Nothing kept that the tokens start with: a cold start.
            assert!(cache
                .resume(model, &[9, 9, 9], 3)
                .expect("resume")
                .is_none());
        });
    }
}

#[test]
fn a_policy_is_kept_with_the_state() {
    let f = fixture("hca16");
    let ids = &f.ids[..160];
    let sharing = Sharing::kv_groups(2);
    with_model(&f.dir, Numerics::Exact, CacheDtypes::default(), |model| {
        let want = cold(model, ids, 100, sharing);
        let mut cache = PrefixCache::new(1 << 30);
        let mut first = Request::sharing(model, 100, sharing).expect("request");
        first.feed(&ids[..100], 100).expect("prefill");
        cache.keep(model, &ids[..100], first.state()).expect("keep");
        let resumed = cache
            .resume(model, ids, ids.len())
            .expect("resume")
            .expect("kept");
        let mut r = Request::from_state(model, resumed.state);
        let mut got = Vec::new();
        r.prefill(&ids[100..], 60, Logits::All, |_, l| {
            got.extend_from_slice(l);
            Ok::<_, dsv4_runtime::ForwardError>(())
        })
        .expect("rest");
        assert_same_bits(&got, &want, "CLA: resumed vs cold");
    });
}

#[test]
fn the_cache_evicts_the_least_recently_used_state() {
    let f = fixture("hca16");
    with_model(&f.dir, Numerics::Exact, CacheDtypes::default(), |model| {
        let state = |n: usize| {
            let mut r = Request::new(model, n).expect("request");
            r.feed(&f.ids[..n], 64).expect("prefill");
            r
        };
        let (a, b, c) = (state(40), state(60), state(80));
        let one = a.state().cache_bytes();
        // Room for about two states.
        let mut cache = PrefixCache::new(one * 2 + one / 2);
        cache.keep(model, &f.ids[..40], a.state()).expect("keep");
        cache.keep(model, &f.ids[..60], b.state()).expect("keep");
        // Using the 40-token state makes the 60-token one the least recently used.
        assert_eq!(
            cache
                .resume(model, &f.ids[..50], 50)
                .expect("resume")
                .map(|r| r.reused),
            Some(40)
        );
        cache.keep(model, &f.ids[..80], c.state()).expect("keep");
        assert!(cache.bytes() <= one * 2 + one / 2, "{}", cache.bytes());
        assert_eq!(
            cache
                .resume(model, &f.ids[..70], 70)
                .expect("resume")
                .map(|r| r.reused),
            Some(40),
            "the 60-token state should have gone"
        );
        // A state larger than the cap is not kept.
        let mut tiny = PrefixCache::new(one / 2);
        assert!(!tiny.keep(model, &f.ids[..40], a.state()).expect("keep"));
        assert!(tiny.is_empty());
    });
}
