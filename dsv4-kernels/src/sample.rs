//! Choosing the next token from a row of logits: the argmax, or a draw under temperature, top-k
//! and top-p. The CPU twins of `csrc/sample.cu`, and the definition both follow, made canonical
//! so that a seed gives the same token on every backend, machine and thread count.
//!
//! The draw is defined without sorting, so a GPU block can compute it exactly as written here:
//! - A *candidate* is a logit that is neither NaN nor −∞ (if the largest is +∞, only the +∞
//!   ones, each of weight 1); its weight is `e^((logit − max) / T)` in `f64`, with an
//!   exponential built from IEEE basic operations only ([`exp_nonpositive`]).
//! - Candidates are ranked by a 64-bit [`key`]: logit descending, then id ascending.
//! - top-k keeps the candidates whose key is at least the k-th largest.
//! - A *canonical sum* adds weights in a fixed tree over ids: [`LEAF`] consecutive ids
//!   sequentially, [`MID`] consecutive leaves sequentially, then the mids sequentially.
//! - top-p keeps the candidates whose key is at least the largest key K for which the canonical
//!   sum of the kept weights with keys ≥ K reaches `top_p` × the canonical sum of all kept
//!   weights: the most probable tokens whose mass reaches top_p, fewest first.
//! - The draw `u ∈ [0, 1)` (from the caller's seeded stream) picks the token where the
//!   cumulative weight, walked through the same tree in id order, first passes `u × total`
//!   ([`choose`] at each level).

use std::cmp::Ordering;

/// Ids summed sequentially into one leaf of the canonical sum.
pub const LEAF: usize = 128;
/// Leaves summed sequentially into one mid of the canonical sum.
pub const MID: usize = 32;

/// The cuts of one draw; validated by the caller (`temperature > 0` and finite,
/// `0 < top_p <= 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleCut {
    /// Divides the logits before the softmax.
    pub temperature: f32,
    /// Keep the `top_k` best candidates; `0` keeps all.
    pub top_k: usize,
    /// Keep the fewest best candidates whose mass reaches `top_p`; `1` keeps all.
    pub top_p: f32,
}

/// The rank of a candidate as one integer: its logit's bits mapped to an order-preserving
/// unsigned value (−0 folded into +0) above its id inverted, so a larger key is a better
/// token and ties on the logit go to the lower id.
pub fn key(logit: f32, id: u32) -> u64 {
    let bits = (logit + 0.0).to_bits();
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(ordered) << 32) | u64::from(!id)
}

/// One candidate of a draw.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    key: u64,
    weight: f64,
}

/// Buffers a draw reuses, so sampling a 129k-token row allocates only on the first call.
#[derive(Debug, Default, Clone)]
pub struct SampleScratch {
    /// The kept candidates, in id order.
    kept: Vec<Candidate>,
    /// The kept candidates ranked best first (top-p).
    ranked: Vec<Candidate>,
    /// A prefix of `ranked` in id order, to sum canonically.
    prefix: Vec<Candidate>,
    /// Per non-empty leaf of the set being summed: (leaf, partial, first, end) into it.
    leaves: Vec<(usize, f64, usize, usize)>,
    /// Per non-empty mid: (mid, partial, first, end) into `leaves`.
    mids: Vec<(usize, f64, usize, usize)>,
}

/// Index of the largest logit, lowest id on ties, NaN treated as −∞; `None` when every logit
/// is NaN or −∞ (or the row is empty).
pub fn sample_argmax(logits: &[f32]) -> Option<u32> {
    // Two passes: the largest value (NaN never winning a comparison), then its first position,
    // found a block at a time with a branch-free test per block.
    let best = crate::simd::max_f32(logits);
    if logits.is_empty() || best == f32::NEG_INFINITY || best.is_nan() {
        return None;
    }
    let block = logits
        .chunks(64)
        .position(|c| c.iter().fold(false, |found, &v| found | (v == best)))?;
    let within = logits[64 * block..].iter().position(|&v| v == best)?;
    u32::try_from(64 * block + within).ok()
}

/// The token a draw `u ∈ [0, 1)` picks from `logits` under `cut`, as the module defines it;
/// `None` when no logit is a candidate.
pub fn sample(logits: &[f32], cut: &SampleCut, u: f64, s: &mut SampleScratch) -> Option<u32> {
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let inv_t = 1.0 / f64::from(cut.temperature);
    s.kept.clear();
    for (id, &logit) in (0u32..).zip(logits) {
        let weight = if max == f32::INFINITY {
            if logit != f32::INFINITY {
                continue;
            }
            1.0
        } else {
            if logit.is_nan() || logit == f32::NEG_INFINITY {
                continue;
            }
            exp_nonpositive((f64::from(logit) - f64::from(max)) * inv_t)
        };
        s.kept.push(Candidate {
            id,
            key: key(logit, id),
            weight,
        });
    }
    if cut.top_k > 0 && cut.top_k < s.kept.len() {
        s.kept
            .select_nth_unstable_by(cut.top_k - 1, |a, b| b.key.cmp(&a.key));
        s.kept.truncate(cut.top_k);
        s.kept.sort_unstable_by_key(|c| c.id);
    }
    if cut.top_p < 1.0 {
        nucleus(s, f64::from(cut.top_p));
    }
    let target = u * canonical_sum(&s.kept, &mut s.leaves, &mut s.mids);
    let (mid, c) = choose(s.mids.iter().map(|m| m.1), 0.0, target)?;
    let (_, _, first, end) = s.mids[mid];
    let (leaf, c) = choose(s.leaves[first..end].iter().map(|l| l.1), c, target)?;
    let (_, _, first, end) = s.leaves[first + leaf];
    let set = &s.kept[first..end];
    let (i, _) = choose(set.iter().map(|k| k.weight), c, target)?;
    Some(set[i].id)
}

/// The token a step picks from `logits`: the argmax when `draw` is `None` (greedy), else
/// [`sample`] of the draw `u` under `cut`.
pub fn sample_or_argmax(
    logits: &[f32],
    cut: &SampleCut,
    draw: Option<f64>,
    s: &mut SampleScratch,
) -> Option<u32> {
    match draw {
        None => sample_argmax(logits),
        Some(u) => sample(logits, cut, u, s),
    }
}

/// Keeps in `s.kept` only the nucleus of mass `top_p`: ranks the kept candidates, finds where
/// the ranked running sum reaches the threshold (rounding aside, the answer), then settles the
/// boundary with canonical sums of ranked prefixes, so the set is the one the definition names.
fn nucleus(s: &mut SampleScratch, top_p: f64) {
    let total = canonical_sum(&s.kept, &mut s.leaves, &mut s.mids);
    let threshold = top_p * total;
    s.ranked.clone_from(&s.kept);
    let n = s.ranked.len();
    let mut sorted = 0;
    let mut head = n.min(64);
    // The first guess: the shortest ranked prefix whose running sum reaches the threshold.
    let mut end = loop {
        sort_head(&mut s.ranked, &mut sorted, head);
        let mut cumulative = 0.0f64;
        let found = s.ranked[..head].iter().position(|c| {
            cumulative += c.weight;
            cumulative >= threshold
        });
        match found {
            Some(i) => break i + 1,
            None if head == n => break n,
            None => head = n.min(head.saturating_mul(4)),
        }
    };
    // Whether the ranked prefix of `len` candidates reaches the threshold, summed canonically.
    let reaches = |len: usize, s: &mut SampleScratch| {
        s.prefix.clear();
        s.prefix.extend_from_slice(&s.ranked[..len]);
        s.prefix.sort_unstable_by_key(|c| c.id);
        canonical_sum(&s.prefix, &mut s.leaves, &mut s.mids) >= threshold
    };
    if reaches(end, s) {
        while end > 1 && reaches(end - 1, s) {
            end -= 1;
        }
    } else {
        // The whole set reaches it (top_p ≤ 1), so this stops by `n`.
        while end < n {
            end += 1;
            sort_head(&mut s.ranked, &mut sorted, end);
            if reaches(end, s) {
                break;
            }
        }
    }
    s.kept.clear();
    s.kept.extend_from_slice(&s.ranked[..end]);
    s.kept.sort_unstable_by_key(|c| c.id);
}

/// Makes the first `head` of `ranked` the best ones, best first, where `*sorted` already are.
fn sort_head(ranked: &mut [Candidate], sorted: &mut usize, head: usize) {
    if head <= *sorted {
        return;
    }
    let by_rank = |a: &Candidate, b: &Candidate| -> Ordering { b.key.cmp(&a.key) };
    if head < ranked.len() {
        ranked[*sorted..].select_nth_unstable_by(head - *sorted - 1, by_rank);
    }
    ranked[*sorted..head].sort_unstable_by(by_rank);
    *sorted = head;
}

/// The canonical sum of the weights of `set` (in id order), keeping each non-empty leaf's and
/// mid's partial sum for the walk. An empty leaf or mid adds `0.0`, which changes no partial, so
/// skipping them gives the sum over every leaf and mid the device computes.
fn canonical_sum(
    set: &[Candidate],
    leaves: &mut Vec<(usize, f64, usize, usize)>,
    mids: &mut Vec<(usize, f64, usize, usize)>,
) -> f64 {
    leaves.clear();
    for (i, c) in set.iter().enumerate() {
        let leaf = c.id as usize / LEAF;
        match leaves.last_mut() {
            Some(last) if last.0 == leaf => {
                last.1 += c.weight;
                last.3 = i + 1;
            }
            _ => leaves.push((leaf, 0.0 + c.weight, i, i + 1)),
        }
    }
    mids.clear();
    for (i, &(leaf, partial, _, _)) in leaves.iter().enumerate() {
        let mid = leaf / MID;
        match mids.last_mut() {
            Some(last) if last.0 == mid => {
                last.1 += partial;
                last.3 = i + 1;
            }
            _ => mids.push((mid, 0.0 + partial, i, i + 1)),
        }
    }
    mids.iter().fold(0.0, |total, m| total + m.1)
}

/// Where a draw at `target` falls among children of weights `parts`, walked in order from the
/// cumulative weight `c`: the first child whose cumulative end passes `target`, or, when
/// rounding leaves `target` past the last end, the last child of positive weight; with the
/// cumulative weight before it. A child of weight 0 is never chosen.
pub fn choose(parts: impl Iterator<Item = f64>, mut c: f64, target: f64) -> Option<(usize, f64)> {
    let mut last = None;
    for (i, p) in parts.enumerate() {
        if p > 0.0 {
            let end = c + p;
            if target < end {
                return Some((i, c));
            }
            last = Some((i, c));
            c = end;
        }
    }
    last
}

/// `e^x` for `x <= 0`, accurate to a few ulps, computed only with IEEE additions,
/// multiplications and exact power-of-two scaling so every platform (and the device, whose
/// compiler is told not to fuse them) gets identical bits. Below −700 it returns 0: such weights
/// are under 1e−304 of the top token's weight of 1.
pub fn exp_nonpositive(x: f64) -> f64 {
    if x.is_nan() || x < -700.0 {
        return 0.0;
    }
    if x >= 0.0 {
        return 1.0;
    }
    // Cody–Waite reduction: x = k·ln2 + r with |r| <= ln2/2, ln2 split so k·LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000); // fdlibm's ln2_hi
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76); // fdlibm's ln2_lo
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to r^13 / 13!: the truncation error is below 2e-16 for |r| <= 0.35.
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    for d in [
        479_001_600.0, // 12!
        39_916_800.0,  // 11!
        3_628_800.0,   // 10!
        362_880.0,     // 9!
        40_320.0,      // 8!
        5_040.0,       // 7!
        720.0,         // 6!
        120.0,         // 5!
        24.0,          // 4!
        6.0,           // 3!
        2.0,           // 2!
        1.0,           // 1!
        1.0,           // 0!
    ] {
        p = p * r + 1.0 / d;
    }
    // k is in [-1010, 0], so 2^k is a normal number built directly from its exponent bits.
    let scale = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_exp_matches_std() {
        let mut x = 0.0f64;
        while x > -699.0 {
            let want = x.exp();
            let got = exp_nonpositive(x);
            assert!(
                ((got - want) / want).abs() < 1e-14,
                "exp({x}) = {got}, std says {want}"
            );
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1e6), 0.0);
    }

    #[test]
    fn keys_rank_by_logit_then_lower_id() {
        assert!(key(1.0, 5) > key(0.5, 0));
        assert!(key(0.5, 3) > key(0.5, 4));
        assert!(key(-1.0, 0) < key(-0.5, 9));
        assert_eq!(key(-0.0, 2), key(0.0, 2));
        assert!(key(f32::INFINITY, 7) > key(f32::MAX, 0));
        assert!(key(f32::MIN, 0) > key(f32::NEG_INFINITY, 0));
    }

    #[test]
    fn choose_skips_weightless_children_and_keeps_the_last_on_overshoot() {
        let parts = [0.0, 1.0, 0.0, 2.0];
        assert_eq!(choose(parts.into_iter(), 0.0, 0.0), Some((1, 0.0)));
        assert_eq!(choose(parts.into_iter(), 0.0, 2.5), Some((3, 1.0)));
        // Past the end (rounding): the last child of positive weight.
        assert_eq!(choose(parts.into_iter(), 0.0, 3.0), Some((3, 1.0)));
        assert_eq!(choose([0.0, 0.0].into_iter(), 0.0, 0.0), None);
    }

    #[test]
    fn the_canonical_sum_follows_its_tree() {
        // Weights chosen so association matters: 1 + 1e-16 + 1e-16 is 1 left to right, but
        // the two small ones in their own leaf first make 1 + 2e-16 → 1.0000000000000002.
        let c = |id: usize, weight: f64| Candidate {
            id: id as u32,
            key: 0,
            weight,
        };
        let set = [c(0, 1.0), c(LEAF, 1.1e-16), c(LEAF + 1, 1.1e-16)];
        let (mut leaves, mut mids) = (Vec::new(), Vec::new());
        let tree = canonical_sum(&set, &mut leaves, &mut mids);
        assert_eq!(tree, 1.0 + (1.1e-16 + 1.1e-16));
        assert_ne!(tree, 1.0 + 1.1e-16 + 1.1e-16);
        assert_eq!(leaves.len(), 2);
        assert_eq!(mids.len(), 1);
    }
}
