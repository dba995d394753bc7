//! One request through the model: its cache state and the logits of its latest forward, fed a
//! prompt in chunks, then one token at a time. `generate` (`dsv4 run`), `dsv4 score` and
//! `dsv4 bench` all drive their requests through it, so prefill and decode exist once.

pub mod generate;
pub mod prefix;
pub mod sampler;
pub mod stop;

use dsv4_cache::Sharing;

use crate::backend::{Backend, CpuBackend, SeqState};
use crate::engine::sampler::{Sampler, SamplerError};
use crate::model::{ForwardError, Logits, Model, RequestError};
use crate::profile;

/// A request in flight on backend `B`.
pub struct Request<'m, 'w, B: Backend = CpuBackend> {
    model: &'m Model<'w, B>,
    state: SeqState<B>,
    /// Logits copied to the host when asked for.
    logits: Vec<f32>,
}

impl<'m, 'w, B: Backend> Request<'m, 'w, B> {
    /// A request of at most `tokens` tokens, its cache priced and checked first
    /// ([`Model::new_request`]).
    pub fn new(model: &'m Model<'w, B>, tokens: usize) -> Result<Self, RequestError> {
        Self::sharing(model, tokens, Sharing::default())
    }

    /// [`Self::new`] for a request following the cache-sharing policy `sharing`
    /// ([`Model::new_request_sharing`]).
    pub fn sharing(
        model: &'m Model<'w, B>,
        tokens: usize,
        sharing: Sharing,
    ) -> Result<Self, RequestError> {
        Ok(Self {
            model,
            state: model.new_request_sharing(tokens, sharing)?,
            logits: Vec::new(),
        })
    }

    /// A request going on from `state` (one [`prefix::PrefixCache::resume`] made).
    pub fn from_state(model: &'m Model<'w, B>, state: SeqState<B>) -> Self {
        Self {
            model,
            state,
            logits: Vec::new(),
        }
    }

    /// The model it runs on.
    pub fn model(&self) -> &'m Model<'w, B> {
        self.model
    }

    /// Its state, to keep ([`prefix::PrefixCache::keep`]).
    pub fn state(&self) -> &SeqState<B> {
        &self.state
    }

    /// Feeds `tokens` in chunks of `chunk` (at least 1), asking each chunk for `which` logits
    /// and handing them, on the host, to `on_logits` with the chunk's first position. The
    /// result is the same bits for every chunk size.
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

    /// Feeds a prompt in chunks of `chunk` (at least 1) for generation: only the last
    /// position's logits are computed, and they stay with the backend for [`Self::sample`].
    pub fn feed(&mut self, tokens: &[u32], chunk: usize) -> Result<(), ForwardError> {
        let _range = profile::range(c"prefill");
        for piece in tokens.chunks(chunk.max(1)) {
            self.model.step(piece, &mut self.state, Logits::Last)?;
        }
        Ok(())
    }

    /// One decode step: feeds `token`; the next position's logits stay with the backend.
    pub fn decode(&mut self, token: u32) -> Result<(), ForwardError> {
        let _range = profile::range(c"decode step");
        self.model.step(&[token], &mut self.state, Logits::Last)
    }

    /// The next token, sampled where the latest forward's logits are (on the device for a GPU
    /// backend, which then copies back only the token).
    pub fn sample(&mut self, sampler: &mut Sampler) -> Result<u32, SamplerError> {
        let _range = profile::range(c"sampler");
        let draw = sampler.draw();
        self.model
            .sample(&mut self.state, &sampler.cut(), draw)?
            .ok_or(SamplerError::NoCandidate {
                vocab: self.model.config().vocab_size,
            })
    }

    /// The logits of the latest forward (after a feed or a decode step, the last position's),
    /// copied to the host.
    pub fn logits(&mut self) -> Result<&[f32], ForwardError> {
        self.model.read_logits(&self.state, &mut self.logits)?;
        Ok(&self.logits)
    }

    /// Tokens fed so far: the next token's position.
    pub fn position(&self) -> usize {
        self.state.position
    }
}
