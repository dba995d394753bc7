//! Flags shared by the commands that run the model.

use clap::{Args, ValueEnum};
use dsv4_runtime::Numerics;

/// `--numerics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NumericsArg {
    /// f32 throughout, weights dequantized exactly (matches transformers in float32).
    Exact,
    /// The release's quantization simulations (FP8 activations, FP8 KV nope, FP4 indexer).
    Reference,
}

/// Numerics and cache settings of a run.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Numerics mode.
    #[arg(long, value_enum, default_value_t = NumericsArg::Exact)]
    numerics: NumericsArg,
}

impl EngineArgs {
    /// The runtime's numerics mode.
    pub fn numerics(&self) -> Numerics {
        match self.numerics {
            NumericsArg::Exact => Numerics::Exact,
            NumericsArg::Reference => Numerics::Reference,
        }
    }
}
