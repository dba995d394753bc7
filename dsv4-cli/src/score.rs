//! `dsv4 score`: teacher-forced logits of every position, through the engine's own incremental
//! path (chunked prefill; `--chunk 1` is token-by-token decode), written as a float32 `.npy`.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use dsv4_runtime::npy::NpyF32Writer;
use dsv4_runtime::Logits;

use crate::engine_args::EngineArgs;
use crate::loading::open_checkpoint;

/// Flags of `dsv4 score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Checkpoint directory.
    #[arg(long, value_name = "DIR")]
    weights: PathBuf,
    /// Token ids, comma-separated.
    #[arg(
        long,
        value_name = "1,2,3",
        conflicts_with = "ids_file",
        required_unless_present = "ids_file"
    )]
    ids: Option<String>,
    /// A file of token ids separated by whitespace or commas.
    #[arg(long, value_name = "F")]
    ids_file: Option<PathBuf>,
    /// Output: little-endian float32 .npy of shape [len, vocab_size].
    #[arg(long, value_name = "LOGITS.npy")]
    out: PathBuf,
    /// Tokens per prefill chunk [default: the whole sequence; 1 = token-by-token decode].
    #[arg(long, value_name = "N")]
    chunk: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Parses ids separated by commas and/or whitespace, naming the first bad one.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("`{s}` is not a token id"))
        })
        .collect()
}

/// Runs `dsv4 score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let ids = match (&args.ids, &args.ids_file) {
        (Some(text), _) => parse_ids(text)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            parse_ids(&text).with_context(|| path.display().to_string())?
        }
        (None, None) => bail!("give --ids or --ids-file"),
    };
    if ids.is_empty() {
        bail!("no token ids to score");
    }
    let chunk = args.chunk.unwrap_or(ids.len());
    if chunk == 0 {
        bail!("--chunk 0: expected at least 1");
    }
    let loaded = open_checkpoint(&args.weights)?;
    let config = &loaded.config;
    let model = args.engine.model(&loaded)?;
    let mut state = model.new_request(ids.len())?;
    let file =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut writer = NpyF32Writer::new(BufWriter::new(file), &[ids.len(), config.vocab_size])
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    for piece in ids.chunks(chunk) {
        let logits = model.forward(piece, &mut state, Logits::All)?;
        writer
            .write(&logits)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    writer
        .finish()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "scored {} tokens in chunks of {chunk}; logits [{}, {}] written to {}",
        ids.len(),
        ids.len(),
        config.vocab_size,
        args.out.display()
    );
    Ok(())
}
