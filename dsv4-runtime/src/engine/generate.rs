//! The decode loop: chunked prefill of the prompt, then one token at a time — sample, stream the
//! new text, stop on EOS, a stop string, the token budget or the model's context — with timings.

use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use dsv4_cache::Sharing;

use crate::engine::sampler::{Sampler, SamplerError, SamplingParams};
use crate::engine::stop::{StopError, StopMatcher};
use crate::engine::Request;
use crate::model::{ForwardError, Model, RequestError};
use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids, used verbatim.
    pub prompt_ids: Vec<u32>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling settings (temperature 0 = greedy).
    pub sampling: SamplingParams,
    /// Strings that end generation (needs a tokenizer).
    pub stops: Vec<String>,
    /// Prompt tokens per prefill chunk.
    pub prefill_chunk: usize,
    /// The request's cache-sharing policy (none by default).
    pub sharing: Sharing,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` were generated.
    Length,
    /// The model's context is full.
    Context,
}

/// Wall-clock timings of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, the ones a resumed request had already seen (not prefilled again).
    pub reused_tokens: usize,
    /// Seconds spent on prefill.
    pub prefill_seconds: f64,
    /// Prompt tokens prefilled per second.
    pub prefill_tokens_per_s: f64,
    /// Tokens decoded after the first (each one forward step).
    pub decode_tokens: usize,
    /// Seconds spent decoding them.
    pub decode_seconds: f64,
    /// Decoded tokens per second.
    pub decode_tokens_per_s: f64,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The prompt ids.
    pub prompt_ids: Vec<u32>,
    /// The generated ids (an EOS token is not included).
    pub generated_ids: Vec<u32>,
    /// The generated text up to any stop string, when a tokenizer was given.
    pub text: Option<String>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// How long it took.
    pub timings: Timings,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// An empty prompt.
    #[error("the prompt is empty; give at least one token")]
    EmptyPrompt,
    /// The prompt alone does not fit the context.
    #[error("the prompt has {tokens} tokens, more than the model's context of {max}")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// A resumed request that has seen the whole prompt has no logits to sample from.
    #[error("the request has already seen {reused} of the prompt's {tokens} tokens: nothing is left to prefill")]
    NothingToPrefill {
        /// Tokens the request had seen.
        reused: usize,
        /// Prompt tokens.
        tokens: usize,
    },
    /// Stop strings without a tokenizer to see text.
    #[error("--stop needs a tokenizer (tokenizer.json beside the weights)")]
    StopWithoutTokenizer,
    /// The request's cache could not be made.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The forward pass failed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// Bad sampling settings or unusable logits.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// A bad stop string.
    #[error(transparent)]
    Stop(#[from] StopError),
    /// Detokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

fn per_second(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}

/// Text of generated ids that is complete: a trailing partial UTF-8 character (decoded as
/// U+FFFD) waits for the next token.
struct Detokenizer<'t> {
    tokenizer: &'t Tokenizer,
    shown: usize,
}

impl Detokenizer<'_> {
    fn new_text(&mut self, ids: &[u32]) -> Result<String, TokenizerError> {
        let text = self.tokenizer.decode(ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.shown {
            return Ok(String::new());
        }
        let new = text[self.shown..].to_string();
        self.shown = text.len();
        Ok(new)
    }
}

/// Generates from `request` with `model`, calling `on_text` with each piece of new text as
/// soon as it is safe to show (never part of a stop string).
///
/// The loop runs on a worker thread of the kernels' pool, so the parallel work of each step
/// goes to that thread's own queue: with the model's reused buffers, a decode step allocates nothing.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tokenizer: Option<&Tokenizer>,
    request: &GenerateRequest,
    on_text: impl FnMut(&str) + Send,
) -> Result<Generation, GenerateError> {
    dsv4_kernels::threads::on_worker(|| generate_on_pool(model, tokenizer, request, on_text))
}

/// [`generate`] on the calling thread.
fn generate_on_pool<B: Backend>(
    model: &Model<B>,
    tokenizer: Option<&Tokenizer>,
    request: &GenerateRequest,
    on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    let tokens = request
        .prompt_ids
        .len()
        .saturating_add(request.max_new_tokens)
        .min(model.config().max_position_embeddings);
    let mut live = Request::sharing(model, tokens, request.sharing)?;
    generate_on(&mut live, tokenizer, request, on_text)
}

/// [`generate`] going on from `live`, a request that has already seen the first
/// `live.position()` ids of the prompt (one resumed from a kept state,
/// [`super::prefix::PrefixCache::resume`]): only the rest of the prompt is prefilled. Runs on
/// the calling thread (call it on a worker, as [`generate`] does).
pub fn generate_on<B: Backend>(
    live: &mut Request<'_, '_, B>,
    tokenizer: Option<&Tokenizer>,
    request: &GenerateRequest,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, GenerateError> {
    let model = live.model();
    let config = model.config();
    let max = config.max_position_embeddings;
    let prompt = &request.prompt_ids;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    if prompt.len() > max {
        return Err(GenerateError::PromptTooLong {
            tokens: prompt.len(),
            max,
        });
    }
    let mut sampler = Sampler::new(request.sampling)?;
    let mut stop = StopMatcher::new(request.stops.clone())?;
    if !request.stops.is_empty() && tokenizer.is_none() {
        return Err(GenerateError::StopWithoutTokenizer);
    }
    let mut detok = tokenizer.map(|tokenizer| Detokenizer {
        tokenizer,
        shown: 0,
    });
    let reused = live.position();
    if reused >= prompt.len() {
        return Err(GenerateError::NothingToPrefill {
            reused,
            tokens: prompt.len(),
        });
    }

    let start = Instant::now();
    live.feed(&prompt[reused..], request.prefill_chunk)?;
    let prefill_seconds = start.elapsed().as_secs_f64();

    let decode_start = Instant::now();
    let mut generated: Vec<u32> = Vec::new();
    let mut text = String::new();
    let mut decode_steps = 0;
    let finish_reason = loop {
        if generated.len() >= request.max_new_tokens {
            break FinishReason::Length;
        }
        let token = live.sample(&mut sampler)?;
        if config.eos_token_ids.contains(&(token as usize)) {
            break FinishReason::Eos;
        }
        generated.push(token);
        if let Some(detok) = detok.as_mut() {
            let pushed = stop.push(&detok.new_text(&generated)?);
            on_text(&pushed.emit);
            text.push_str(&pushed.emit);
            if pushed.stopped {
                break FinishReason::Stop;
            }
        }
        if generated.len() >= request.max_new_tokens {
            break FinishReason::Length;
        }
        if live.position() >= max {
            break FinishReason::Context;
        }
        live.decode(token)?;
        decode_steps += 1;
    };
    if finish_reason != FinishReason::Stop {
        let rest = stop.finish();
        on_text(&rest);
        text.push_str(&rest);
    }
    let decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok(Generation {
        prompt_ids: prompt.clone(),
        generated_ids: generated,
        text: tokenizer.map(|_| text),
        finish_reason,
        timings: Timings {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefill_seconds,
            prefill_tokens_per_s: per_second(prompt.len() - reused, prefill_seconds),
            decode_tokens: decode_steps,
            decode_seconds,
            decode_tokens_per_s: per_second(decode_steps, decode_seconds),
        },
    })
}
