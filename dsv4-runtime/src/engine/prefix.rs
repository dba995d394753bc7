//! Prefix reuse across requests: the states of finished or paused requests kept by their token
//! sequence, so a new request whose tokens start with a kept sequence resumes from it instead of
//! prefilling again. A kept state shares its full pages with the request it came from and with
//! every request resumed from it (a full page is never written again); windows and compressor
//! tails are copied. Resuming gives the bits a cold run would: the forward's results do not
//! depend on where a prompt is cut into chunks.

use crate::backend::{Backend, SeqState};
use crate::model::{Model, RequestError};

/// Kept request states under a byte cap, the least recently used evicted first.
pub struct PrefixCache<B: Backend> {
    kept: Vec<Kept<B>>,
    cap_bytes: u64,
    clock: u64,
}

/// One kept state and the tokens it has seen.
struct Kept<B: Backend> {
    tokens: Vec<u32>,
    state: SeqState<B>,
    used: u64,
}

/// A request state resumed from a kept one.
pub struct Resumed<B: Backend> {
    /// Tokens of the kept sequence the request starts with: the ones it need not prefill.
    pub reused: usize,
    /// The state, at position `reused`.
    pub state: SeqState<B>,
}

impl<B: Backend> PrefixCache<B> {
    /// An empty cache holding at most `cap_bytes` of kept states (as their caches count them,
    /// shared pages included).
    pub fn new(cap_bytes: u64) -> Self {
        Self {
            kept: Vec::new(),
            cap_bytes,
            clock: 0,
        }
    }

    /// Keeps a snapshot of `state`, whose tokens are `tokens` (one per position), replacing one
    /// kept for the same tokens; the request itself can go on. A state larger than the whole
    /// cap is not kept. Returns whether it was.
    pub fn keep(
        &mut self,
        model: &Model<B>,
        tokens: &[u32],
        state: &SeqState<B>,
    ) -> Result<bool, RequestError> {
        if tokens.len() != state.position || state.cache_bytes() > self.cap_bytes {
            return Ok(false);
        }
        let snapshot = model.resume(state, state.position)?;
        self.kept.retain(|k| k.tokens != tokens);
        self.clock += 1;
        self.kept.push(Kept {
            tokens: tokens.to_vec(),
            state: snapshot,
            used: self.clock,
        });
        while self.bytes() > self.cap_bytes {
            let oldest = (0..self.kept.len()).min_by_key(|&i| self.kept[i].used);
            match oldest {
                Some(i) => drop(self.kept.swap_remove(i)),
                None => break,
            }
        }
        Ok(true)
    }

    /// A state for a request of `tokens` (at most `capacity` in all) resumed from the longest
    /// kept sequence that `tokens` starts with and is shorter than (the request must feed at
    /// least one token of its own to have logits); `None` when no kept sequence is one.
    pub fn resume(
        &mut self,
        model: &Model<B>,
        tokens: &[u32],
        capacity: usize,
    ) -> Result<Option<Resumed<B>>, RequestError> {
        let best = (0..self.kept.len())
            .filter(|&i| {
                let kept = &self.kept[i].tokens;
                kept.len() < tokens.len() && tokens.starts_with(kept)
            })
            .max_by_key(|&i| self.kept[i].tokens.len());
        let Some(i) = best else {
            return Ok(None);
        };
        self.clock += 1;
        let kept = &mut self.kept[i];
        kept.used = self.clock;
        Ok(Some(Resumed {
            reused: kept.tokens.len(),
            state: model.resume(&kept.state, capacity)?,
        }))
    }

    /// Bytes the kept states hold.
    pub fn bytes(&self) -> u64 {
        self.kept.iter().map(|k| k.state.cache_bytes()).sum()
    }

    /// States kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}
