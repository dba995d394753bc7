//! `dsv4 chat`: a multi-turn chat on the terminal (or over the turns of a script). The
//! conversation is encoded with DeepSeek-V4's chat encoding turn by turn: the first turn's
//! prompt, then each answer as the ids the model generated, then the answer's end and the next
//! user turn (`ChatRequest::render_next`). So each turn's ids start with the conversation so
//! far, and the request resumes from the previous turn's kept state: only the new tokens are
//! prefilled. (Re-tokenizing an answer's text could give other ids than the model produced, and
//! would change what the model saw.)

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use dsv4_runtime::engine::generate::generate_on;
use dsv4_runtime::engine::prefix::PrefixCache;
use dsv4_runtime::{threads, ChatRequest, GenerateRequest, ReasoningEffort, Request, ThinkingMode};
use serde::Serialize;

use crate::engine_args::EngineArgs;
use crate::input::read_input;
use crate::progress::open_checkpoint;
use crate::run::{set_threads, ModelDir};
use crate::sampling_args::SamplingArgs;
use crate::units::parse_bytes;

/// Flags of `dsv4 chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Checkpoint directory [default: the built-in demo model, trained on the King James Bible].
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// System prompt.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Thinking mode (the assistant turn opens with <think>; no cache-sharing policy applies).
    #[arg(long)]
    thinking: bool,
    /// Run the turns of FILE (one user message per line; `-`: standard input) instead of
    /// reading the terminal.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// With --script: one JSON object on stdout (`turns`) instead of streamed text.
    #[arg(long, requires = "script")]
    json: bool,
    /// Most tokens per answer.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Prompt tokens per prefill chunk.
    #[arg(long, value_name = "N", default_value_t = 512)]
    prefill_chunk: usize,
    /// Memory for kept conversation states (e.g. 2GiB).
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    keep: u64,
    /// Worker threads [default: all cores; at most 1024].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// One turn as `--json` reports it.
#[derive(Debug, Serialize)]
struct Turn {
    prompt_ids: Vec<u32>,
    prompt_tokens: usize,
    reused_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    generated_ids: Vec<u32>,
    text: String,
    finish_reason: dsv4_runtime::FinishReason,
}

#[derive(Serialize)]
struct ChatOutput<'a> {
    model: &'a str,
    turns: &'a [Turn],
}

/// Runs `dsv4 chat`.
pub fn run(args: &ChatArgs) -> Result<()> {
    set_threads(args.threads)?;
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk 0: expected at least 1");
    }
    let sampling = args.sampling.params()?;
    let mut sharing = args.engine.sharing.checked(true)?;
    if args.thinking && !sharing.is_none() {
        eprintln!("--thinking: the cache-sharing policy is not applied to thinking-mode requests");
        sharing = Default::default();
    }
    let script = match &args.script {
        Some(path) => Some(read_input(path, "a chat script")?),
        None => None,
    };
    let model_dir = ModelDir::open(args.weights.as_deref())?;
    let loaded = open_checkpoint(model_dir.path(), dsv4_runtime::Linears::Packed)?;
    let config = &loaded.config;
    let Some(tokenizer) = model_dir.tokenizer(config.vocab_size)? else {
        bail!(
            "dsv4 chat needs a tokenizer: no tokenizer.json in {}",
            dsv4_model::shown_path(model_dir.path())
        );
    };
    let model = args.engine.model(&loaded)?;
    let mode = if args.thinking {
        ThinkingMode::Thinking
    } else {
        ThinkingMode::Chat
    };
    let interactive = script.is_none() && std::io::stdin().is_terminal();
    let lines: Box<dyn Iterator<Item = String>> = match &script {
        Some(text) => Box::new(
            text.lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        None => Box::new(std::io::stdin().lock().lines().map_while(Result::ok)),
    };
    if interactive {
        eprintln!(
            "dsv4 chat: {} (/reset starts over, /exit or Ctrl-D ends)",
            model_dir.label
        );
    }
    let max = config.max_position_embeddings;
    let mut cache = PrefixCache::new(args.keep);
    let mut conversation: Vec<u32> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut stdout = std::io::stdout();
    let prompt_mark = || {
        if interactive {
            print!("> ");
            let _ = std::io::stdout().flush();
        }
    };
    prompt_mark();
    for line in lines {
        let user = line.trim();
        match user {
            "" => {
                prompt_mark();
                continue;
            }
            "/exit" => break,
            "/reset" => {
                conversation.clear();
                eprintln!("(a new conversation)");
                prompt_mark();
                continue;
            }
            _ => {}
        }
        let request = ChatRequest {
            system: args.system.as_deref(),
            user,
            mode,
            effort: ReasoningEffort::Default,
        };
        let text = if conversation.is_empty() {
            request.render()
        } else {
            request.render_next()
        };
        conversation.extend(tokenizer.encode(&text)?);
        if conversation.len() >= max {
            bail!(
                "the conversation has {} tokens, the model's context is {max}: /reset to start over",
                conversation.len()
            );
        }
        let capacity = conversation
            .len()
            .saturating_add(args.max_new_tokens)
            .min(max);
        let state = match cache.resume(&model, &conversation, capacity)? {
            Some(resumed) => resumed.state,
            None => model.new_request_sharing(capacity, sharing)?,
        };
        let mut live = Request::from_state(&model, state);
        let generate = GenerateRequest {
            prompt_ids: conversation.clone(),
            max_new_tokens: args.max_new_tokens,
            sampling,
            stops: Vec::new(),
            prefill_chunk: args.prefill_chunk,
            sharing,
        };
        let streaming = !args.json;
        let on_text = |piece: &str| {
            if streaming {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
        };
        let started = Instant::now();
        let generation = threads::on_worker(|| {
            let generation = generate_on(&mut live, Some(&tokenizer), &generate, on_text)?;
            // The answer is part of the conversation; the state holds it all when its last id
            // (sampled, never fed when the answer ran to its length) is fed too.
            conversation.extend(&generation.generated_ids);
            let seen = live.position();
            if seen < conversation.len() {
                live.feed(&conversation[seen..], args.prefill_chunk)?;
            }
            anyhow::Ok(generation)
        })?;
        cache.keep(&model, &conversation, live.state())?;
        let t = &generation.timings;
        if streaming {
            println!();
            eprintln!(
                "[{} prompt tokens, {} reused, prefill {:.1} tok/s; {} generated, decode {:.1} tok/s; {:.2} s]",
                t.prompt_tokens,
                t.reused_tokens,
                t.prefill_tokens_per_s,
                generation.generated_ids.len(),
                t.decode_tokens_per_s,
                started.elapsed().as_secs_f64()
            );
        }
        turns.push(Turn {
            prompt_ids: generation.prompt_ids.clone(),
            prompt_tokens: t.prompt_tokens,
            reused_tokens: t.reused_tokens,
            prefill_tokens_per_s: t.prefill_tokens_per_s,
            decode_tokens_per_s: t.decode_tokens_per_s,
            generated_ids: generation.generated_ids.clone(),
            text: generation.text.clone().unwrap_or_default(),
            finish_reason: generation.finish_reason,
        });
        prompt_mark();
    }
    if args.json {
        let output = ChatOutput {
            model: &model_dir.label,
            turns: &turns,
        };
        println!("{}", serde_json::to_string(&output)?);
    } else if interactive {
        eprintln!();
    }
    Ok(())
}
