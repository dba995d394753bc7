//! One request through the model: its cache state and the logits of its latest forward, fed a
//! prompt in chunks, then one token at a time. `generate` (`dsv4 run`), `dsv4 score` and
//! `dsv4 bench` all drive their requests through it, so prefill and decode exist once.

pub mod generate;
pub mod sampler;
pub mod stop;

use crate::backend::{Backend, CpuBackend, SeqState};
use crate::model::{ForwardError, Logits, Model, RequestError};
use crate::profile;

/// A request in flight on backend `B`.
pub struct Request<'m, 'w, B: Backend = CpuBackend> {
    model: &'m Model<'w, B>,
    state: SeqState<B>,
    logits: Vec<f32>,
}

impl<'m, 'w, B: Backend> Request<'m, 'w, B> {
    /// A request of at most `tokens` tokens, its cache priced and checked first
    /// ([`Model::new_request`]).
    pub fn new(model: &'m Model<'w, B>, tokens: usize) -> Result<Self, RequestError> {
        Ok(Self {
            model,
            state: model.new_request(tokens)?,
            logits: Vec::new(),
        })
    }

    /// Feeds `tokens` in chunks of `chunk` (at least 1), asking each chunk for `which` logits
    /// and handing them to `on_logits` with the chunk's first position. The result is the same
    /// bits for every chunk size.
    pub fn prefill<E: From<ForwardError>>(
        &mut self,
        tokens: &[u32],
        chunk: usize,
        which: Logits,
        mut on_logits: impl FnMut(usize, &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let _range = profile::range(c"prefill");
        for piece in tokens.chunks(chunk.max(1)) {
            let first = self.state.position;
            self.model
                .forward_into(piece, &mut self.state, which, &mut self.logits)?;
            on_logits(first, &self.logits)?;
        }
        Ok(())
    }

    /// One decode step: feeds `token`; the next position's logits.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], ForwardError> {
        let _range = profile::range(c"decode step");
        self.model
            .forward_into(&[token], &mut self.state, Logits::Last, &mut self.logits)?;
        Ok(&self.logits)
    }

    /// The logits of the latest forward (after a prefill asking for the last position's, those).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Tokens fed so far: the next token's position.
    pub fn position(&self) -> usize {
        self.state.position
    }
}
