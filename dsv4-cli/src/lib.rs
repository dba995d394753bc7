//! The `dsv4` command as a library: its subcommands and argument parsers, so that the binary,
//! the tests and the fuzz targets share one definition.

pub mod assets;
pub mod bandwidth;
pub mod bench;
pub mod chat;
pub mod engine_args;
pub mod ids;
pub mod init;
pub mod input;
pub mod inspect;
pub mod model_source;
pub mod npy;
pub mod output;
pub mod plan;
pub mod progress;
pub mod run;
pub mod sampling_args;
pub mod score;
pub mod selftest;
pub mod sharing_args;
pub mod tokenize;
pub mod units;

use clap::{Parser, Subcommand};

/// dsv4: an inference engine for DeepSeek-V4-architecture models (V4-Flash, V4-Pro and kin).
#[derive(Debug, Parser)]
#[command(name = "dsv4", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streamed, ending with timings (the demo model without --weights).
    Run(run::RunArgs),
    /// A multi-turn chat on the terminal (or over a script), each turn resuming from the last.
    Chat(chat::ChatArgs),
    /// Prefill and decode throughput, and decode's weight bandwidth against the machine's.
    Bench(bench::BenchArgs),
    /// Plan cache memory: schema, bytes per token, block budgets, largest context or batch that fits.
    Plan(plan::PlanArgs),
    /// Describe a checkpoint: config, schedule, tensors by dtype, parameters, problems.
    Inspect(inspect::InspectArgs),
    /// Write a random-weight checkpoint in the release layout (tiny or small preset).
    Init(init::InitArgs),
    /// Teacher-forced logits of every position of a sequence, as a float32 .npy.
    Score(score::ScoreArgs),
    /// Every CUDA kernel against its CPU twin (on the GPU, or on `cuda-sim`), as a table.
    Selftest(selftest::SelftestArgs),
    /// Token ids of a text as the model's tokenizer gives them (no BOS added), or text of ids.
    Tokenize(tokenize::TokenizeArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(&self) -> anyhow::Result<()> {
        match &self.command {
            Command::Run(args) => run::run(args),
            Command::Plan(args) => plan::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Chat(args) => chat::run(args),
            Command::Inspect(args) => inspect::run(args),
            Command::Init(args) => init::run(args),
            Command::Score(args) => score::run(args),
            Command::Selftest(args) => selftest::run(args),
            Command::Tokenize(args) => tokenize::run(args),
        }
    }
}
