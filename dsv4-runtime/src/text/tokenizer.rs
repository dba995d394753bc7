//! The model's tokenizer: a `tokenizer.json` (Hugging Face format) run by the `tokenizers`
//! crate, so ids match the Python reference exactly, wrapped so that every failure is a one-line
//! error naming the file or the id instead of a panic.
//!
//! Text is encoded as the file describes and nothing more: no BOS is added (DeepSeek-V4's
//! post-processor adds none, and callers that want one, such as chat prompts, write it as
//! text). Special tokens written in the text (`<｜User｜>`, `<think>`, …) become their ids.

use dsv4_model::shown_path;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// DeepSeek-V4's BOS token, used when no `tokenizer_config.json` names another.
pub const V4_BOS: &str = "<｜begin▁of▁sentence｜>";
/// DeepSeek-V4's EOS token, used when no `tokenizer_config.json` names another.
pub const V4_EOS: &str = "<｜end▁of▁sentence｜>";

/// Largest `tokenizer.json` read: 256 MiB (DeepSeek-V4's is 6.4 MB).
const MAX_TOKENIZER_BYTES: u64 = 1 << 28;

/// Why the tokenizer could not load, encode or decode; each renders as one line naming the
/// file, the text or the id at fault, so the CLI can print it as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenizerError {
    /// The file could not be read (absent, not a regular file, too large, not text).
    #[error(transparent)]
    Read(#[from] dsv4_model::ReadError),
    /// The file was read but is not a tokenizer.json the `tokenizers` library accepts.
    #[error("{path} is not a valid tokenizer.json: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's reason.
        reason: String,
    },
    /// The BOS or EOS token the engine needs is not in the vocabulary.
    #[error("tokenizer {path} has no {role} token `{token}`")]
    MissingSpecial {
        /// The file.
        path: String,
        /// `BOS` or `EOS`.
        role: &'static str,
        /// The token text looked for.
        token: String,
    },
    /// More ids than the model has rows of embeddings: the file is another model's.
    #[error("tokenizer {path} has {ids} ids, more than the model's vocabulary of {vocab}: it belongs to another model")]
    TooManyIds {
        /// The file.
        path: String,
        /// Its ids.
        ids: usize,
        /// The model's `vocab_size`.
        vocab: usize,
    },
    /// An id past the end of the vocabulary.
    #[error(
        "token id {id} is out of range: the vocabulary has {vocab_size} ids (0..{vocab_size})"
    )]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// Ids run from 0 to this, exclusive.
        vocab_size: usize,
    },
    /// An id inside the range that no token owns (a hole in the vocabulary).
    #[error("token id {id} has no token in the vocabulary")]
    UnknownId {
        /// The offending id.
        id: u32,
    },
    /// The library refused to encode the text (for instance a regex limit on pathological input).
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// The library refused to decode ids it was given.
    #[error("cannot decode ids: {0}")]
    Decode(String),
}

/// A loaded tokenizer with the ids the engine needs resolved once at load.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    vocab_size: usize,
    bos_id: u32,
    eos_id: u32,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. BOS and EOS are the tokens a `tokenizer_config.json` beside it
    /// names, else DeepSeek-V4's; a file lacking them is refused here rather than at generation.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let shown = shown_path(path);
        let text = dsv4_model::read_text(path, MAX_TOKENIZER_BYTES, "a tokenizer")?;
        // The library panics on some malformed files (it re-parses parts it has already
        // accepted): only well-formed JSON reaches it, and a panic it still raises on a file
        // it half accepted (fuzzing found one in its BPE merges) is that file's parse error.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            return Err(TokenizerError::Parse {
                path: shown,
                reason: e.to_string(),
            });
        }
        let parse_error = |reason: String| TokenizerError::Parse {
            path: shown.clone(),
            reason,
        };
        let inner = contain_panics(|| tokenizers::Tokenizer::from_bytes(text))
            .ok_or_else(|| parse_error("the tokenizers library cannot read it".into()))?
            .map_err(|e| parse_error(one_line(&e.to_string())))?;
        let (bos_name, eos_name) = special_names(path);
        let lookup = |role: &'static str, token: String| {
            inner
                .token_to_id(&token)
                .ok_or_else(|| TokenizerError::MissingSpecial {
                    path: shown.clone(),
                    role,
                    token,
                })
        };
        let bos_id = lookup("BOS", bos_name)?;
        let eos_id = lookup("EOS", eos_name)?;
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| max as usize + 1);
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            vocab_size,
            bos_id,
            eos_id,
        })
    }

    /// Token ids of `text` exactly as the tokenizer gives them, with no BOS added; special
    /// tokens written in the text are recognised. Errors only if the library gives up on the
    /// text, which the DeepSeek-V4 pre-tokenizer does not do on ordinary input.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(one_line(&e.to_string())))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included, so `decode(encode(t)) == t`. Every id is
    /// checked first: the library would silently drop unknown ids, hiding a caller's bug.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(one_line(&e.to_string())))
    }

    /// Fails with the id's own error unless `id` names a token; for callers (prompt ids from a
    /// user, sampled ids) that must reject ids before they index an embedding table.
    pub fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if id as usize >= self.vocab_size {
            return Err(TokenizerError::IdOutOfRange {
                id,
                vocab_size: self.vocab_size,
            });
        }
        if self.inner.id_to_token(id).is_none() {
            return Err(TokenizerError::UnknownId { id });
        }
        Ok(())
    }

    /// Fails unless every id of this tokenizer is one a model of `vocab` ids can embed.
    pub fn check_fits(&self, vocab: usize) -> Result<(), TokenizerError> {
        if self.vocab_size > vocab {
            return Err(TokenizerError::TooManyIds {
                path: shown_path(&self.path),
                ids: self.vocab_size,
                vocab,
            });
        }
        Ok(())
    }

    /// One past the largest id (129,280 for DeepSeek-V4): the number of rows an embedding
    /// table needs, and the bound ids are checked against.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id that starts every chat prompt (0 for DeepSeek-V4).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id that ends a generated turn (1 for DeepSeek-V4), where decoding stops.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
}

/// BOS and EOS token texts: from `tokenizer_config.json` beside `path` when it names them
/// (as a string or as an `AddedToken` object), else DeepSeek-V4's. A missing or unreadable
/// config is not an error: the tokenizer.json alone is a complete tokenizer.
fn special_names(path: &Path) -> (String, String) {
    let config = path
        .parent()
        .map(|dir| dir.join("tokenizer_config.json"))
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let name = |key: &str, default: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
                _ => None,
            })
            .unwrap_or_else(|| default.to_string())
    };
    (name("bos_token", V4_BOS), name("eos_token", V4_EOS))
}

/// Runs `f`, a call into a library that panics on some inputs instead of returning an error,
/// and gives `None` if it panicked. The panic hook is silenced for the call (and the previous
/// one restored after), so the panic neither prints its message nor reaches a hook that would
/// abort; a panic elsewhere still reaches the usual hook.
fn contain_panics<R>(f: impl FnOnce() -> R) -> Option<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.ok()
}

/// Library messages may span lines; errors here must stay on one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
