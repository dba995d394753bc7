//! `dsv4 tokenize`: the ids of a text as the model's tokenizer gives them (no BOS added), the
//! text of ids with `--decode`, or a chat prompt built the way DeepSeek-V4's encoder builds it.

use dsv4_model::shown_path;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use dsv4_runtime::text::chat::{ChatRequest, ReasoningEffort, ThinkingMode};
use dsv4_runtime::Tokenizer;
use serde_json::json;

use crate::ids::parse_ids;
use crate::input::read_input;

/// Flags of `dsv4 tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    source: TokenizerSource,
    #[command(flatten)]
    input: Input,
    /// Turn ids (separated by whitespace or commas) back into text.
    #[arg(long)]
    decode: bool,
    /// Format the text as one user turn of a chat prompt (BOS included), answering directly.
    #[arg(long, conflicts_with = "decode")]
    chat: bool,
    /// With --chat: open a thinking block so the model reasons before answering.
    #[arg(long, requires = "chat")]
    thinking: bool,
    /// With --chat: a system prompt written before the user turn.
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    /// With --thinking: DeepSeek's maximum reasoning-effort preamble.
    #[arg(long, requires = "thinking")]
    max_effort: bool,
    /// One JSON object on stdout: {"ids": [...]}, or {"text": "..."} with --decode.
    #[arg(long)]
    json: bool,
}

/// `--weights DIR | --tokenizer FILE`, exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TokenizerSource {
    /// Checkpoint directory; its tokenizer.json is used.
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// A tokenizer.json file.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
}

/// `--text T | --file F`, exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Input {
    /// The text (or, with --decode, the ids).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    text: Option<String>,
    /// A UTF-8 file holding the text (or, with --decode, the ids), used byte for byte; `-` reads
    /// standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Runs `dsv4 tokenize`.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let tokenizer = load(&args.source)?;
    let input = read_source(&args.input)?;
    let mut out = render(args, &tokenizer, &input)?;
    out.push('\n');
    // A reader that stopped early (`| head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// What the command prints, without the final newline.
fn render(args: &TokenizeArgs, tokenizer: &Tokenizer, input: &str) -> Result<String> {
    if args.decode {
        let text = tokenizer.decode(&parse_ids(input)?)?;
        return Ok(if args.json {
            json!({ "text": text }).to_string()
        } else {
            text
        });
    }
    if args.chat {
        let request = ChatRequest {
            system: args.system.as_deref(),
            user: input,
            mode: if args.thinking {
                ThinkingMode::Thinking
            } else {
                ThinkingMode::Chat
            },
            effort: if args.max_effort {
                ReasoningEffort::Max
            } else {
                ReasoningEffort::Default
            },
        };
        let prompt = request.encode(tokenizer)?;
        return Ok(if args.json {
            json!({ "ids": prompt.ids, "prompt": prompt.text }).to_string()
        } else {
            join_ids(&prompt.ids)
        });
    }
    let ids = tokenizer.encode(input)?;
    Ok(if args.json {
        json!({ "ids": ids }).to_string()
    } else {
        join_ids(&ids)
    })
}

/// The tokenizer named by `--tokenizer`, or the checkpoint's `tokenizer.json`.
fn load(source: &TokenizerSource) -> Result<Tokenizer> {
    let path = match (&source.tokenizer, &source.weights) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) => {
            let file = dir.join("tokenizer.json");
            if !file.is_file() {
                bail!(
                    "no tokenizer.json in {}: pass --tokenizer FILE",
                    shown_path(dir)
                );
            }
            file
        }
        (None, None) => bail!("pass --weights DIR or --tokenizer FILE"),
    };
    Ok(Tokenizer::from_file(path)?)
}

fn read_source(input: &Input) -> Result<String> {
    match (&input.text, &input.file) {
        (Some(text), _) => Ok(text.clone()),
        (None, Some(file)) => read_input(file, "a text"),
        (None, None) => bail!("pass --text TEXT or --file FILE"),
    }
}

fn join_ids(ids: &[u32]) -> String {
    let words: Vec<String> = ids.iter().map(u32::to_string).collect();
    words.join(" ")
}
