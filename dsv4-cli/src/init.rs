//! `dsv4 init`: a random-weight checkpoint in the release layout, with the real tokenizer.

use dsv4_model::shown_path;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use dsv4_model::{write_random_checkpoint, Preset, DEFAULT_SHARD_BYTES};

use crate::assets::write_tokenizer;
use crate::units::binary;

/// Flags of `dsv4 init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Shape to write: tiny or small (flash and pro are far too large for random weights).
    #[arg(long, value_name = "NAME", value_parser = parse_writable_preset)]
    preset: Preset,
    /// New or empty directory to write into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed of the random weights; the same seed writes the same bytes.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
}

fn parse_writable_preset(name: &str) -> Result<Preset, String> {
    match Preset::from_name(name) {
        Some(p @ (Preset::Tiny | Preset::Small)) => Ok(p),
        Some(_) => Err(format!(
            "preset `{name}` holds hundreds of GB of weights; init writes tiny or small"
        )),
        None => Err(format!("unknown preset `{name}`: expected tiny or small")),
    }
}

/// Runs `dsv4 init`.
pub fn run(args: &InitArgs) -> Result<()> {
    let out = &args.out;
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("cannot read {}", shown_path(out)))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; init writes only into a new or empty directory",
                shown_path(out)
            );
        }
    } else {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create {}", shown_path(out)))?;
    }
    let config = args.preset.config();
    let summary = write_random_checkpoint(
        &config,
        args.preset.config_json(),
        out,
        args.seed,
        DEFAULT_SHARD_BYTES,
    )?;
    write_tokenizer(out)
        .with_context(|| format!("cannot write the tokenizer into {}", shown_path(out)))?;
    eprintln!(
        "wrote {} tensors ({}) of preset {} with seed {} to {} in {} files, plus tokenizer.json",
        summary.tensors,
        binary(summary.tensor_bytes),
        args.preset.name(),
        args.seed,
        shown_path(out),
        summary.files.len()
    );
    Ok(())
}
