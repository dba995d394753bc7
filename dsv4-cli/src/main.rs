//! `dsv4`: an inference engine for DeepSeek-V4-architecture models.

mod model_source;
mod plan;
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
    /// Plan cache memory: schema, bytes per token, block budgets, largest context or batch that fits.
    Plan(plan::PlanArgs),
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
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
