//! `dsv4 tokenize`: the ids of a text as the model's tokenizer gives them (no BOS added), the
//! text of ids with `--decode`, or a chat prompt built the way DeepSeek-V4's encoder builds it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use dsv4_runtime::chat::{ChatRequest, ReasoningEffort, ThinkingMode};
use dsv4_runtime::Tokenizer;
use serde_json::json;

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
    /// A UTF-8 file holding the text (or, with --decode, the ids), used byte for byte.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Runs `dsv4 tokenize`.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let tokenizer = load(&args.source)?;
    let input = read_input(&args.input)?;
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
                    dir.display()
                );
            }
            file
        }
        (None, None) => bail!("pass --weights DIR or --tokenizer FILE"),
    };
    Ok(Tokenizer::from_file(path)?)
}

fn read_input(input: &Input) -> Result<String> {
    match (&input.text, &input.file) {
        (Some(text), _) => Ok(text.clone()),
        (None, Some(file)) => read_text(file),
        (None, None) => bail!("pass --text TEXT or --file FILE"),
    }
}

fn read_text(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Ids separated by whitespace or commas, as `score --ids-file` takes them; one pair of
/// enclosing brackets is allowed too, so a pasted list (`[1, 2, 3]`) works.
fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let trimmed = text.trim();
    let list = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    list.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(parse_id)
        .collect()
}

fn parse_id(word: &str) -> Result<u32> {
    word.parse::<u32>().map_err(|_| {
        if word.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::anyhow!("token id {} is out of range", shorten(word))
        } else {
            anyhow::anyhow!("token id `{}` is not a non-negative integer", shorten(word))
        }
    })
}

/// The first characters of a bad token, so one huge word cannot flood the error line.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

fn join_ids(ids: &[u32]) -> String {
    let words: Vec<String> = ids.iter().map(u32::to_string).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_on_whitespace_and_commas() {
        assert_eq!(
            parse_ids(" 1, 2,3\n\t4 ,,5 ").expect("parses"),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(parse_ids("[1, 2]\n").expect("list"), vec![1, 2]);
        assert!(parse_ids("").expect("empty").is_empty());
        assert!(parse_ids("[1, 2").is_err());
    }

    #[test]
    fn bad_ids_are_named() {
        let err = parse_ids("1 2 x3").expect_err("bad").to_string();
        assert!(err.contains("`x3`"), "{err}");
        assert!(parse_ids("-1").is_err());
        let err = parse_ids("4294967296").expect_err("too big").to_string();
        assert!(err.contains("out of range"), "{err}");
        let long = "9".repeat(100);
        let err = parse_ids(&long).expect_err("bad").to_string();
        assert!(err.len() < 100, "{err}");
    }
}
