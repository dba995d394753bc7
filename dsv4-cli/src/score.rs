//! `dsv4 score`: teacher-forced logits of every position, through the engine's own incremental
//! path (chunked prefill; `--chunk 1` is token-by-token decode), written as a float32 `.npy`.

use dsv4_model::shown_path;
use std::io::BufWriter;
use std::path::PathBuf;

use crate::npy::NpyF32Writer;
use anyhow::{bail, Context, Result};
use clap::Args;
use dsv4_runtime::{Logits, Request};

use crate::engine_args::EngineArgs;
pub use crate::ids::parse_ids;
use crate::input::read_input;
use crate::output::Output;
use crate::progress::{checkpoint_files, open_checkpoint};
use crate::run::Device;

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
    /// A file of token ids separated by whitespace or commas; `-` reads standard input.
    #[arg(long, value_name = "F")]
    ids_file: Option<PathBuf>,
    /// Output: little-endian float32 .npy of shape [len, vocab_size].
    #[arg(long, value_name = "LOGITS.npy")]
    out: PathBuf,
    /// Tokens per prefill chunk [default: 256; 1 = token-by-token decode]; the logits are the
    /// same bits for every chunk.
    #[arg(long, value_name = "N")]
    chunk: Option<usize>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Backend.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Tokens per chunk when `--chunk` is not given: bounds the logits held at once (256 × vocab
/// floats, 132 MB for V4's vocabulary) whatever the sequence length; the result is bit-identical
/// for every chunk size.
const DEFAULT_CHUNK: usize = 256;

/// Runs `dsv4 score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let ids = match (&args.ids, &args.ids_file) {
        (Some(text), _) => parse_ids(text)?,
        (None, Some(path)) => {
            let text = read_input(path, "an id list")?;
            parse_ids(&text).with_context(|| shown_path(path))?
        }
        (None, None) => bail!("give --ids or --ids-file"),
    };
    if ids.is_empty() {
        bail!("no token ids to score");
    }
    let chunk = args.chunk.unwrap_or(DEFAULT_CHUNK);
    if chunk == 0 {
        bail!("--chunk 0: expected at least 1");
    }
    let sharing = args.engine.sharing.checked(args.device == Device::Cpu)?;
    let device = args.device.open()?;
    let mut inputs = checkpoint_files(&args.weights);
    inputs.extend(args.ids_file.clone());
    // Refused before the weights load: an output over an input, or over a file without --force.
    let mut output = Output::create(&args.out, &inputs, args.force)?;
    let loaded = open_checkpoint(&args.weights, device.linears())?;
    let config = &loaded.config;
    let path = shown_path(&args.out);
    let cannot_write = || format!("cannot write {path}");
    let shape = [ids.len(), config.vocab_size];
    let mut writer =
        NpyF32Writer::new(BufWriter::new(output.writer()), &shape).with_context(cannot_write)?;
    let mut write = |first: usize, logits: &[f32]| {
        if let Some(at) = logits.iter().position(|v| !v.is_finite()) {
            bail!(
                "the logits of position {} are not finite (token {} is {}): the weights hold NaN or infinite values, or overflow (try `dsv4 inspect --deep`); nothing was written",
                first + at / config.vocab_size,
                at % config.vocab_size,
                logits[at]
            );
        }
        writer.write(logits).with_context(cannot_write)
    };
    crate::on_device!(&device, args.engine, &loaded, |model| {
        let mut request = Request::sharing(&model, ids.len(), sharing)?;
        request.prefill(&ids, chunk, Logits::All, &mut write)?
    });
    writer
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .with_context(cannot_write)?;
    output.commit()?;
    eprintln!(
        "scored {} tokens in chunks of {chunk}; logits [{}, {}] written to {path}",
        ids.len(),
        ids.len(),
        config.vocab_size,
    );
    Ok(())
}
