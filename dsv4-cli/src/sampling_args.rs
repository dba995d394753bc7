//! The sampling flags of the commands that generate (`run`, `chat`).

use anyhow::Result;
use clap::Args;
use dsv4_runtime::engine::sampler::SamplingParams;

/// Temperature, top-k, top-p and the seed of the sampler.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy and deterministic.
    #[arg(
        long,
        value_name = "T",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    temperature: f32,
    /// Nucleus sampling: smallest set of tokens whose probability reaches P.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    top_p: f32,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, value_name = "K", default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler; the same seed gives the same tokens.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    /// The sampler's parameters, checked before anything loads.
    pub fn params(&self) -> Result<SamplingParams> {
        let params = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        };
        params.validate()?;
        Ok(params)
    }
}
