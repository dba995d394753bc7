//! The sampler: greedy argmax with ties to the lower id, top-k / top-p cuts that reduce to
//! greedy at their extremes, empirical frequencies matching the exact softmax computed by hand,
//! seeded reproducibility (pinned ids, so a change in the random stream or the arithmetic shows
//! up here), and one-line errors for bad flags and unsampleable rows.

use dsv4_runtime::engine::sampler::{Sampler, SamplerError, SamplingParams};

fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

fn sampler(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
    match Sampler::new(params(temperature, top_k, top_p, seed)) {
        Ok(s) => s,
        Err(e) => panic!("valid parameters refused: {e}"),
    }
}

/// Deterministic pseudo-random logits with many exact ties (values on a coarse grid), so the
/// tie rules are exercised, not just the common case.
fn tied_logits(row: u64, vocab: usize) -> Vec<f32> {
    let mut x = row.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..vocab)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 9) as f32 * 0.5 - 2.0
        })
        .collect()
}

fn reference_argmax(logits: &[f32]) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    logits
        .iter()
        .position(|&l| l == max)
        .expect("a maximum exists") as u32
}

#[test]
fn greedy_breaks_ties_towards_the_lower_id() {
    let mut s = sampler(0.0, 0, 1.0, 7);
    assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1);
    assert_eq!(s.sample(&[5.0, 5.0, 5.0]).unwrap(), 0);
    assert_eq!(s.sample(&[-1.0, -0.0, 0.0]).unwrap(), 1);
    // NaN is never the argmax, even in first place.
    assert_eq!(s.sample(&[f32::NAN, 2.0, 2.0, f32::NAN]).unwrap(), 1);
    // +inf beats every finite logit.
    assert_eq!(
        s.sample(&[1e30, f32::INFINITY, 3.0, f32::INFINITY])
            .unwrap(),
        1
    );
    // The same past the vectorised part's first blocks: NaN ahead of the maximum, a tie at a
    // block boundary.
    let mut long = tied_logits(7, 300);
    long.iter_mut().for_each(|v| *v = v.min(1.0));
    long[40] = f32::NAN;
    long[130] = 9.0;
    long[191] = 9.0;
    assert_eq!(s.sample(&long).unwrap(), 130);
    long[64] = 9.0;
    assert_eq!(s.sample(&long).unwrap(), 64);
    // Greedy ignores the cuts and the seed.
    let mut other = sampler(0.0, 3, 0.2, 99);
    for row in 0..50 {
        let logits = tied_logits(row, 300);
        let want = reference_argmax(&logits);
        assert_eq!(s.sample(&logits).unwrap(), want);
        assert_eq!(other.sample(&logits).unwrap(), want);
    }
}

#[test]
fn top_k_one_is_greedy() {
    for seed in 0..5 {
        let mut s = sampler(1.3, 1, 1.0, seed);
        for row in 0..40 {
            let logits = tied_logits(row + 1000 * seed, 500);
            assert_eq!(s.sample(&logits).unwrap(), reference_argmax(&logits));
        }
    }
}

#[test]
fn tiny_top_p_is_greedy() {
    for seed in 0..5 {
        let mut s = sampler(0.8, 0, 1e-6, seed);
        for row in 0..40 {
            let logits = tied_logits(row + 7000 * seed, 500);
            assert_eq!(s.sample(&logits).unwrap(), reference_argmax(&logits));
        }
    }
}

/// Draws `n` tokens from the same row and returns each id's frequency.
fn frequencies(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<f64> {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[s.sample(logits).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: token {i} drawn with frequency {g:.4}, softmax says {w:.4} (tolerance {tol})"
        );
    }
}

const DRAWS: usize = 60_000;
/// Five standard deviations of a frequency near 1/2 over `DRAWS` draws (sqrt(0.25 / 60000) ≈
/// 0.002); the draws are seeded, so this is a fixed outcome, but the margin keeps it honest.
const TOL: f64 = 0.01;

#[test]
fn seeded_draws_follow_the_exact_softmax() {
    // exp(0) : exp(ln 2) : exp(ln 3) : exp(-inf) = 1 : 2 : 3 : 0, so the softmax is
    // 1/6, 2/6, 3/6, 0 exactly (up to the f32 rounding of ln 2 and ln 3, ~1e-7).
    let logits = [
        0.0f32,
        std::f32::consts::LN_2,
        3.0f32.ln(),
        f32::NEG_INFINITY,
    ];
    let mut s = sampler(1.0, 0, 1.0, 42);
    let got = frequencies(&mut s, &logits, DRAWS);
    assert_close(&got, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0, 0.0], TOL, "T=1");
    assert_eq!(got[3], 0.0, "a -inf logit was sampled");

    // T = 2 takes square roots of the weights: 1 : √2 : √3.
    let (w0, w1, w2) = (1.0f64, 2.0f64.sqrt(), 3.0f64.sqrt());
    let z = w0 + w1 + w2;
    let mut s = sampler(2.0, 0, 1.0, 43);
    let got = frequencies(&mut s, &logits, DRAWS);
    assert_close(&got, &[w0 / z, w1 / z, w2 / z, 0.0], TOL, "T=2");

    // top-k = 2 keeps ids 2 and 1 (weights 3 and 2) and renormalises: 0, 2/5, 3/5.
    let mut s = sampler(1.0, 2, 1.0, 44);
    let got = frequencies(&mut s, &logits, DRAWS);
    assert_close(&got, &[0.0, 0.4, 0.6, 0.0], TOL, "top-k 2");
    assert_eq!(got[0], 0.0, "top-k 2 sampled the third-best token");

    // top-p = 0.6: sorted probabilities 1/2 (cumulative 0.5 < 0.6), 1/3 (cumulative 5/6 >=
    // 0.6) form the nucleus; renormalised that is again 0, 2/5, 3/5.
    let mut s = sampler(1.0, 0, 0.6, 45);
    let got = frequencies(&mut s, &logits, DRAWS);
    assert_close(&got, &[0.0, 0.4, 0.6, 0.0], TOL, "top-p 0.6");
    assert_eq!(got[0], 0.0, "top-p 0.6 sampled outside the nucleus");

    // top-p = 0.4 keeps only the most probable token.
    let mut s = sampler(1.0, 0, 0.4, 46);
    let got = frequencies(&mut s, &logits, 1000);
    assert_eq!(got, vec![0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn ties_at_the_top_k_boundary_keep_the_lower_ids() {
    // Four equal logits, top-k 2: only ids 0 and 1 survive, each with probability 1/2.
    let logits = [1.0f32, 1.0, 1.0, 1.0];
    let mut s = sampler(1.0, 2, 1.0, 5);
    let got = frequencies(&mut s, &logits, DRAWS);
    assert_close(&got, &[0.5, 0.5, 0.0, 0.0], TOL, "tied top-k");
    assert_eq!(got[2] + got[3], 0.0);
}

#[test]
fn nan_is_never_sampled_and_infinities_dominate() {
    let mut s = sampler(5.0, 0, 1.0, 3);
    let got = frequencies(&mut s, &[f32::NAN, 0.0, f32::NAN, 0.0], 10_000);
    assert_eq!(got[0] + got[2], 0.0, "a NaN logit was sampled");
    assert_close(&got, &[0.0, 0.5, 0.0, 0.5], 0.03, "NaN row");

    let got = frequencies(&mut s, &[1e30, f32::INFINITY, 3.0, f32::INFINITY], 10_000);
    assert_eq!(got[0] + got[2], 0.0, "a finite logit beat +inf");
    assert_close(&got, &[0.0, 0.5, 0.0, 0.5], 0.03, "+inf row");
}

#[test]
fn a_seed_reproduces_the_same_tokens() {
    let rows: Vec<Vec<f32>> = (0..200).map(|r| tied_logits(r, 1000)).collect();
    let run = |seed: u64| -> Vec<u32> {
        let mut s = sampler(0.9, 50, 0.95, seed);
        rows.iter().map(|row| s.sample(row).unwrap()).collect()
    };
    let a = run(1234);
    assert_eq!(a, run(1234));
    // A fresh sampler per thread gives the same ids whatever thread runs it.
    let threaded: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| run(1234))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in threaded {
        assert_eq!(t, a);
    }
}

#[test]
fn different_seeds_give_different_tokens() {
    let logits = vec![0.0f32; 1000];
    let run = |seed: u64| -> Vec<u32> {
        let mut s = sampler(1.0, 0, 1.0, seed);
        (0..100).map(|_| s.sample(&logits).unwrap()).collect()
    };
    assert_ne!(run(1), run(2));
    assert_ne!(run(0), run(u64::MAX));
}

/// The first ids of a fixed seed, pinned: the promise is that a seed gives these ids on every
/// machine, so any change to the random stream or the sampling arithmetic must show up here.
#[test]
fn seeded_ids_are_pinned() {
    let logits: Vec<f32> = (0..64).map(|i| ((i * 37) % 64) as f32 / 16.0).collect();
    let mut s = sampler(0.7, 0, 1.0, 2024);
    let ids: Vec<u32> = (0..16).map(|_| s.sample(&logits).unwrap()).collect();
    let mut s = sampler(1.0, 8, 0.9, 2024);
    let cut: Vec<u32> = (0..16).map(|_| s.sample(&logits).unwrap()).collect();
    assert_eq!(
        (ids, cut),
        (PINNED_FULL.to_vec(), PINNED_CUT.to_vec()),
        "seeded sampling changed"
    );
}

const PINNED_FULL: [u32; 16] = [
    12, 62, 43, 57, 43, 31, 5, 19, 31, 55, 60, 38, 50, 27, 43, 30,
];
const PINNED_CUT: [u32; 16] = [
    12, 57, 38, 57, 38, 31, 5, 19, 31, 57, 57, 38, 50, 19, 38, 31,
];

#[test]
fn bad_parameters_are_refused_with_the_flag_named() {
    let err = |p: SamplingParams| Sampler::new(p).unwrap_err().to_string();
    assert_eq!(
        err(params(1.0, 0, 1.5, 0)),
        "--top-p 1.5: expected a number in (0, 1]"
    );
    assert_eq!(
        err(params(1.0, 0, 0.0, 0)),
        "--top-p 0: expected a number in (0, 1]"
    );
    assert!(err(params(1.0, 0, f32::NAN, 0)).starts_with("--top-p NaN"));
    assert!(err(params(-0.5, 0, 1.0, 0)).starts_with("--temperature -0.5:"));
    assert!(err(params(f32::INFINITY, 0, 1.0, 0)).starts_with("--temperature inf:"));
    assert!(err(params(f32::NAN, 0, 1.0, 0)).starts_with("--temperature NaN:"));
    for e in [err(params(1.0, 0, 1.5, 0)), err(params(-1.0, 0, 1.0, 0))] {
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }
    assert!(Sampler::new(params(0.0, 0, 1.0, 0)).is_ok());
    assert!(Sampler::new(SamplingParams::default()).is_ok());
    assert!(SamplingParams::greedy().is_greedy());
}

#[test]
fn rows_without_a_candidate_are_errors() {
    for temperature in [0.0, 1.0] {
        let mut s = sampler(temperature, 0, 1.0, 0);
        assert_eq!(s.sample(&[]), Err(SamplerError::EmptyLogits));
        assert_eq!(
            s.sample(&[f32::NAN, f32::NEG_INFINITY, f32::NAN]),
            Err(SamplerError::NoCandidate { vocab: 3 })
        );
        // One finite logit among them is enough.
        assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY, -3.0]), Ok(2));
    }
    let msg = SamplerError::NoCandidate { vocab: 3 }.to_string();
    assert!(msg.contains("3 logits"), "{msg}");
}

/// The definition of a draw (dsv4_kernels::sample), written out naively for rows of at most 128
/// ids, where its canonical sum is one left-to-right sum in id order: rank by logit then id, keep
/// the top k, keep the shortest ranked prefix whose mass reaches top_p, walk the kept ids in id
/// order to where the cumulative weight passes u × their total. The sampler must pick the same
/// ids from the same ChaCha8 draws, over rows with many ties.
#[test]
fn draws_follow_the_definition_written_out() {
    use rand::{Rng, SeedableRng};
    for (temperature, top_k, top_p, seed) in [
        (1.0f32, 8usize, 0.9f32, 2024u64),
        (0.6, 0, 0.7, 1),
        (1.7, 30, 1.0, 2),
        (0.9, 5, 0.5, 3),
    ] {
        let mut s = sampler(temperature, top_k, top_p, seed);
        let mut stream = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for row in 0..200 {
            let logits = tied_logits(row, 100);
            let u = (stream.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weight = |id: usize| -> f64 {
                let x = (f64::from(logits[id]) - f64::from(max)) / f64::from(temperature);
                x.exp()
            };
            let mut ranked: Vec<usize> = (0..logits.len()).collect();
            ranked.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if top_k > 0 {
                ranked.truncate(top_k);
            }
            let id_order_sum = |ids: &[usize]| {
                let mut sorted = ids.to_vec();
                sorted.sort();
                sorted.iter().map(|&i| weight(i)).sum::<f64>()
            };
            let total = id_order_sum(&ranked);
            let keep = (1..=ranked.len())
                .find(|&n| id_order_sum(&ranked[..n]) >= f64::from(top_p) * total)
                .expect("the whole set reaches top_p");
            let mut kept = ranked[..keep].to_vec();
            kept.sort();
            let target = u * id_order_sum(&kept);
            let mut cumulative = 0.0;
            let want = kept
                .iter()
                .copied()
                .find(|&i| {
                    cumulative += weight(i);
                    target < cumulative
                })
                .unwrap_or(kept[kept.len() - 1]);
            assert_eq!(
                s.sample(&logits).unwrap(),
                want as u32,
                "row {row}, T {temperature}, top-k {top_k}, top-p {top_p}"
            );
        }
    }
}
