//! Stop strings (`dsv4 run --stop STR`) matched on the streamed text rather than on token ids,
//! because a stop string rarely coincides with token boundaries: "\n\n" may arrive inside one
//! token, or as the end of one token and the start of the next.
//!
//! The matcher holds back exactly the tail of the text that could still grow into a stop
//! string, so the user never sees the beginning of a stop string printed and then "taken back",
//! and everything else is printed as soon as it is known to be safe. It works on `&str`, so it
//! never splits a character; turning token ids into whole characters (holding back incomplete
//! UTF-8 from byte-level tokens) is the detokenizer's job before text reaches it.

/// Why a set of stop strings was refused; renders as one line naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// An empty stop string would match before the first character and stop every run at once,
    /// which is never what a user meant (usually an unquoted shell variable).
    #[error("--stop \"\": a stop string must not be empty")]
    Empty,
}

/// What one [`StopMatcher::push`] releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Text that can be printed now: it can no longer become part of a stop string.
    pub emit: String,
    /// A stop string was found; `emit` ends right before it and generation should end with
    /// finish reason `stop`.
    pub stopped: bool,
}

/// Finds the first occurrence of any of several stop strings in text that arrives in pieces.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted: always a suffix that is a proper prefix of some stop
    /// string (between pushes), so it stays shorter than the longest stop string.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (possibly none, in which case text passes straight through).
    /// Refuses empty strings, which would stop before any output.
    pub fn new(stops: Vec<String>) -> Result<Self, StopError> {
        if stops.iter().any(String::is_empty) {
            return Err(StopError::Empty);
        }
        Ok(Self {
            stops,
            held: String::new(),
            stopped: false,
        })
    }

    /// Feeds the next piece of generated text. Returns what is safe to print now (everything
    /// except a tail that could still begin a stop string) or, when a stop string completes,
    /// the text before its earliest occurrence together with `stopped`.
    pub fn push(&mut self, new_text: &str) -> Pushed {
        if self.stopped {
            return Pushed {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(new_text);

        let first_match = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_match {
            self.held.truncate(at);
            self.stopped = true;
            return Pushed {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }

        let keep = self
            .stops
            .iter()
            .map(|stop| partial_suffix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let tail = self.held.split_off(cut);
        Pushed {
            emit: std::mem::replace(&mut self.held, tail),
            stopped: false,
        }
    }

    /// The held-back tail at the end of generation (it never completed a stop string, so it is
    /// ordinary output); empty once a stop string was found.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`, starting
/// on a character boundary (always true for a match between valid UTF-8 strings, checked anyway
/// so `split_off` can never panic).
fn partial_suffix(text: &str, stop: &str) -> usize {
    let text_bytes = text.as_bytes();
    let stop_bytes = stop.as_bytes();
    let longest = text_bytes.len().min(stop_bytes.len().saturating_sub(1));
    (1..=longest)
        .rev()
        .find(|&len| {
            let start = text_bytes.len() - len;
            text.is_char_boundary(start) && text_bytes[start..] == stop_bytes[..len]
        })
        .unwrap_or(0)
}
