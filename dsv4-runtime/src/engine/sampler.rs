//! Turning a row of logits into the next token id: greedy, or temperature / top-k / top-p
//! sampling driven by a seeded ChaCha8 stream.
//!
//! Everything here is chosen so that a seed reproduces a generation bit for bit on every
//! machine and thread count: candidates are ordered by a total order (logit descending, then id
//! ascending), weights are computed in `f64` with an exponential built only from IEEE basic
//! operations (no platform `libm`, whose last bits differ between systems), sums run in one
//! fixed order, and the random number is taken from the top 53 bits of ChaCha8's next `u64`.
//!
//! Non-finite logits: NaN is treated as −∞ (never chosen, since it usually means a numerical
//! fault in one lane rather than a preference); −∞ is a masked token; +∞ beats every finite
//! logit, and several +∞ tokens share the mass equally. A row with no token left to choose is an
//! error, not a silent id 0.

use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Why sampling parameters were refused or a row of logits could not be sampled; each renders
/// as one line naming the command-line flag or the row at fault, so the CLI can print it as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// `--temperature` was negative, NaN or infinite.
    #[error("--temperature {0}: expected a finite number >= 0 (0 = greedy)")]
    Temperature(f32),
    /// `--top-p` was outside `(0, 1]` or NaN.
    #[error("--top-p {0}: expected a number in (0, 1]")]
    TopP(f32),
    /// The logits row was empty: the caller passed the wrong slice.
    #[error("cannot sample from an empty row of logits")]
    EmptyLogits,
    /// Every logit was NaN or −∞, so no token can be chosen; the forward pass went wrong or a
    /// mask removed every token.
    #[error(
        "cannot sample: none of the {vocab} logits is a number above -inf (all NaN or masked)"
    )]
    NoCandidate {
        /// Length of the row.
        vocab: usize,
    },
}

/// The knobs of `dsv4 run` that shape sampling, kept together so they are validated once,
/// before any forward pass is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax; `0` means greedy (argmax, lowest id on ties) and
    /// makes the other fields irrelevant.
    pub temperature: f32,
    /// Keep only the `top_k` highest logits (ties at the boundary keep the lower ids); `0`
    /// disables the cut.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most probable tokens whose probability adds
    /// up to at least `top_p`; `1.0` disables the cut.
    pub top_p: f32,
    /// Seeds the ChaCha8 stream, so a run can be replayed exactly.
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding with the cuts off: the deterministic default an engine test wants.
    pub const fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Checks the ranges the flags promise (`temperature >= 0` and finite, `0 < top_p <= 1`),
    /// so a bad flag fails before the model loads rather than mid-generation.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplerError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        Ok(())
    }

    /// Whether these parameters pick the argmax and never consume randomness.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

impl Default for SamplingParams {
    /// Greedy, like [`SamplingParams::greedy`]: without explicit flags the engine is
    /// deterministic.
    fn default() -> Self {
        Self::greedy()
    }
}

/// One surviving token during a sampling step.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The raw logit, with −0.0 folded into +0.0 so `total_cmp` orders equal values equally.
    logit: f32,
    id: u32,
    /// Unnormalised probability `exp((logit - max) / T)`.
    weight: f64,
}

/// The total order every cut uses: higher logit first, then lower id. Probability is a
/// monotone function of the logit, so this is "probability descending, id ascending" without
/// ever comparing rounded floats.
fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Chooses token ids from logits with fixed parameters and its own random stream; one per
/// generated sequence, so sequences do not perturb each other's draws.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Reused across calls so sampling a 129k-token row allocates only on the first call.
    scratch: Vec<Candidate>,
}

impl Sampler {
    /// A sampler whose stream starts from `params.seed`; refuses parameters outside the ranges
    /// the flags document.
    pub fn new(params: SamplingParams) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Self {
            params,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            scratch: Vec::new(),
        })
    }

    /// The parameters this sampler was built with, for reporting them beside the output.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token id for one row of logits (one per vocabulary entry). Greedy parameters
    /// take the argmax with ties to the lower id and draw nothing from the stream; otherwise
    /// exactly one `u64` is drawn per call. Errors when no logit is a candidate (see
    /// [`SamplerError::NoCandidate`]).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        if self.params.is_greedy() {
            return argmax(logits);
        }
        self.sample_stochastic(logits)
    }

    fn sample_stochastic(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        let vocab = logits.len();
        let scratch = &mut self.scratch;
        scratch.clear();
        let mut max = f32::NEG_INFINITY;
        for (id, &logit) in logits.iter().enumerate() {
            // NaN and −∞ never become candidates; `+ 0.0` turns −0.0 into +0.0.
            if logit.is_nan() || logit == f32::NEG_INFINITY {
                continue;
            }
            if logit > max {
                max = logit;
            }
            scratch.push(Candidate {
                logit: logit + 0.0,
                id: id as u32,
                weight: 0.0,
            });
        }
        if scratch.is_empty() {
            return Err(SamplerError::NoCandidate { vocab });
        }
        if max == f32::INFINITY {
            // +∞ beats everything finite; the +∞ tokens share the mass equally.
            scratch.retain(|c| c.logit == f32::INFINITY);
        }

        let top_k = self.params.top_k;
        if top_k > 0 && top_k < scratch.len() {
            scratch.select_nth_unstable_by(top_k - 1, rank);
            scratch.truncate(top_k);
        }

        let inv_t = 1.0 / f64::from(self.params.temperature);
        let max = f64::from(max);
        let mut total = 0.0f64;
        for c in scratch.iter_mut() {
            c.weight = if c.logit == f32::INFINITY {
                1.0
            } else {
                exp_nonpositive((f64::from(c.logit) - max) * inv_t)
            };
            total += c.weight;
        }

        let kept = if self.params.top_p < 1.0 {
            nucleus(scratch, f64::from(self.params.top_p) * total)
        } else {
            scratch.len()
        };
        let kept = &scratch[..kept];
        let kept_total: f64 = kept.iter().map(|c| c.weight).sum();

        let u = unit_f64(self.rng.next_u64());
        let target = u * kept_total;
        let mut cumulative = 0.0f64;
        for c in kept {
            cumulative += c.weight;
            if target < cumulative {
                return Ok(c.id);
            }
        }
        // Only rounding can leave `target` at the very end; the last kept token owns that edge.
        kept.last()
            .map(|c| c.id)
            .ok_or(SamplerError::NoCandidate { vocab })
    }
}

/// Index of the largest logit, lowest id on ties, NaN treated as −∞.
fn argmax(logits: &[f32]) -> Result<u32, SamplerError> {
    // Two passes: the largest value (NaN never winning a comparison), then its first position,
    // found a block at a time with a branch-free test per block. Ties go to the lowest id.
    let best = dsv4_kernels::simd::max_f32(logits);
    if best == f32::NEG_INFINITY {
        return Err(SamplerError::NoCandidate {
            vocab: logits.len(),
        });
    }
    let block = logits
        .chunks(64)
        .position(|c| c.iter().fold(false, |found, &v| found | (v == best)))
        .unwrap_or(0);
    let within = logits[64 * block..]
        .iter()
        .position(|&v| v == best)
        .unwrap_or(0);
    Ok((64 * block + within) as u32)
}

/// Sorts the head of `scratch` by [`rank`] far enough to hold the nucleus, and returns its
/// length: the fewest leading candidates whose weights reach `threshold`. Grows the sorted
/// head geometrically, so a peaked distribution costs a few linear selections instead of a
/// full sort of the vocabulary.
fn nucleus(scratch: &mut [Candidate], threshold: f64) -> usize {
    let n = scratch.len();
    let mut head = n.min(64);
    loop {
        if head < n {
            scratch.select_nth_unstable_by(head - 1, rank);
        }
        scratch[..head].sort_unstable_by(rank);
        let mut cumulative = 0.0f64;
        for (i, c) in scratch[..head].iter().enumerate() {
            cumulative += c.weight;
            if cumulative >= threshold {
                return i + 1;
            }
        }
        if head == n {
            // Rounding kept the full sum just under the threshold: keep everything.
            return n;
        }
        head = n.min(head.saturating_mul(4));
    }
}

/// A uniform number in `[0, 1)` from the top 53 bits of `bits`: exact, and the same on every
/// platform (unlike conversions that go through platform-specific code).
fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `e^x` for `x <= 0`, accurate to a few ulps, computed only with IEEE additions,
/// multiplications and exact power-of-two scaling so every platform gets identical bits.
/// Below −700 it returns 0: such weights are under 1e−304 of the top token's weight of 1.
fn exp_nonpositive(x: f64) -> f64 {
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
    fn unit_is_in_range() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
    }
}
