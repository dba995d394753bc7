//! `dsv4`: an inference engine for DeepSeek-V4-architecture models.

mod assets;
mod bench;
mod engine_args;
mod init;
mod inspect;
mod loading;
mod model_source;
mod output;
mod plan;
mod run;
mod score;
mod tokenize;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// dsv4: an inference engine for DeepSeek-V4-architecture models (V4-Flash, V4-Pro and kin).
#[derive(Debug, Parser)]
#[command(name = "dsv4", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed, ending with timings (the demo model without --weights).
    Run(run::RunArgs),
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
    /// Token ids of a text as the model's tokenizer gives them (no BOS added), or text of ids.
    Tokenize(tokenize::TokenizeArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap prints and exits 0.
            e.exit();
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first}");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Run(args) => run::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Init(args) => init::run(args),
        Command::Score(args) => score::run(args),
        Command::Tokenize(args) => tokenize::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
