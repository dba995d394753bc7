//! Turning a row of logits into the next token id: greedy, or temperature / top-k / top-p
//! sampling driven by a seeded ChaCha8 stream.
//!
//! A seed reproduces a generation bit for bit on every machine, thread count and backend: the
//! stream gives one `u ∈ [0, 1)` per step, and the token it picks is defined by
//! [`dsv4_kernels::sample`] without sorting or platform `libm` (a total order on candidates,
//! `f64` weights from IEEE basic operations, sums in one fixed tree), so the CUDA kernels
//! compute the same token from the same logits.
//!
//! Non-finite logits: NaN is treated as −∞ (never chosen, since it usually means a numerical
//! fault in one lane rather than a preference); −∞ is a masked token; +∞ beats every finite
//! logit, and several +∞ tokens share the mass equally. A row with no token left to choose is an
//! error, not a silent id 0.

use dsv4_kernels::sample::{sample_or_argmax, SampleCut, SampleScratch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::OpError;

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
    /// The backend failed while sampling where the logits are.
    #[error(transparent)]
    Backend(#[from] OpError),
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

/// Chooses token ids with fixed parameters and its own random stream; one per generated
/// sequence, so sequences do not perturb each other's draws. The choice itself is
/// [`dsv4_kernels::sample`]'s, which every backend computes alike: here on a host row
/// ([`Sampler::sample`]), or where the logits are, on a draw from [`Sampler::draw`].
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Reused across calls so sampling a 129k-token row allocates only on the first call.
    scratch: SampleScratch,
}

impl Sampler {
    /// A sampler whose stream starts from `params.seed`; refuses parameters outside the ranges
    /// the flags document.
    pub fn new(params: SamplingParams) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Self {
            params,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            scratch: SampleScratch::default(),
        })
    }

    /// The parameters this sampler was built with, for reporting them beside the output.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The cuts of a draw, as the sampling kernels take them.
    pub fn cut(&self) -> SampleCut {
        SampleCut {
            temperature: self.params.temperature,
            top_k: self.params.top_k,
            top_p: self.params.top_p,
        }
    }

    /// The next step's draw: `None` for greedy parameters (the argmax, no randomness used),
    /// otherwise `u ∈ [0, 1)` from the top 53 bits of the stream's next `u64` (exact, and the
    /// same on every platform). Exactly one `u64` is taken per stochastic step.
    pub fn draw(&mut self) -> Option<f64> {
        if self.params.is_greedy() {
            return None;
        }
        Some((self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64))
    }

    /// The next token id for one row of logits on the host (one per vocabulary entry). Errors
    /// when no logit is a candidate (see [`SamplerError::NoCandidate`]).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        let (draw, cut) = (self.draw(), self.cut());
        sample_or_argmax(logits, &cut, draw, &mut self.scratch).ok_or(SamplerError::NoCandidate {
            vocab: logits.len(),
        })
    }
}
