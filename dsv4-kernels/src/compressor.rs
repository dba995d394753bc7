//! KV compressors (docs/model.md §4.4–4.5): every `m` tokens become one entry, a per-channel
//! softmax-gated sum of their projected values (`compress_pool`). CSA (`overlap`) pools the
//! previous window's A-half with the current window's B-half, so each entry summarises 2m
//! tokens at stride m. The tail is a request's cache state on the CPU, as the schema sizes it.

use crate::ops::rms_norm;

/// The f32 tail of a compressor: raw values and gate logits of tokens not yet pooled, and for
/// CSA the previous window's A-half. Starts empty (gate −inf, value 0) for every request and
/// survives any split of the sequence into chunks.
#[derive(Debug, Clone)]
pub struct CompressorTail {
    ratio: usize,
    width: usize,
    overlap: bool,
    /// Previous window's A-half values and gates, `ratio × width` each (CSA): the schema's
    /// `csa_tail_a` / `indexer_tail_a`.
    prev_value: Vec<f32>,
    prev_gate: Vec<f32>,
    has_prev: bool,
    /// Current window's values and gates (gate bias added), `ratio × c·width` each: the
    /// schema's `csa_tail_b` / `indexer_tail_b` (both halves), or `hca_tail`.
    value: Vec<f32>,
    gate: Vec<f32>,
    /// Entries emitted so far.
    entries: usize,
}

impl CompressorTail {
    /// An empty tail for entries of `width` values every `ratio` tokens.
    pub fn new(ratio: usize, width: usize, overlap: bool) -> Self {
        let c = if overlap { 2 } else { 1 };
        Self {
            ratio,
            width,
            overlap,
            prev_value: if overlap {
                vec![0.0; ratio * width]
            } else {
                Vec::new()
            },
            prev_gate: if overlap {
                vec![f32::NEG_INFINITY; ratio * width]
            } else {
                Vec::new()
            },
            has_prev: false,
            value: vec![0.0; ratio * c * width],
            gate: vec![f32::NEG_INFINITY; ratio * c * width],
            entries: 0,
        }
    }

    /// Bytes of the tail's f32 buffers.
    pub fn bytes(&self) -> u64 {
        let floats =
            self.prev_value.len() + self.prev_gate.len() + self.value.len() + self.gate.len();
        (floats * std::mem::size_of::<f32>()) as u64
    }

    /// Feeds one token at absolute `position` with its projected value `a` and raw gate `g`
    /// (`c·width` each). When the token closes a window, writes the entry's pooled, normed
    /// vector (RoPE not applied) into `entry` and returns its index `w`, whose tokens end at
    /// position `(w + 1)·m − 1`.
    /// `ape` is the gate bias by slot (`m × c·width`), `norm` the entry's RMSNorm weight.
    pub fn push(
        &mut self,
        position: usize,
        (a, g): (&[f32], &[f32]),
        (ape, norm, norm_eps): (&[f32], &[f32], f32),
        entry: &mut Vec<f32>,
    ) -> Option<usize> {
        let cw = a.len();
        let slot = position % self.ratio;
        let ape = &ape[slot * cw..(slot + 1) * cw];
        self.value[slot * cw..(slot + 1) * cw].copy_from_slice(a);
        for ((dst, g), b) in self.gate[slot * cw..(slot + 1) * cw]
            .iter_mut()
            .zip(g)
            .zip(ape)
        {
            *dst = g + b;
        }
        if slot + 1 < self.ratio {
            return None;
        }
        let (m, width) = (self.ratio, self.width);
        let previous =
            (self.overlap && self.has_prev).then_some((&self.prev_gate[..], &self.prev_value[..]));
        // The current window reads its B-half under overlap (channels width..2·width).
        let offset = if self.overlap { width } else { 0 };
        let current = (&self.gate[..], &self.value[..], offset);
        compress_pool(previous, current, (m, width), entry);
        if self.overlap {
            // This window's A-half becomes the previous window of the next entry.
            for s in 0..self.ratio {
                let src = s * cw;
                self.prev_value[s * self.width..(s + 1) * self.width]
                    .copy_from_slice(&self.value[src..src + self.width]);
                self.prev_gate[s * self.width..(s + 1) * self.width]
                    .copy_from_slice(&self.gate[src..src + self.width]);
            }
            self.has_prev = true;
        }
        let index = self.entries;
        self.entries += 1;
        rms_norm(entry, Some(norm), norm_eps);
        Some(index)
    }
}

/// One entry (`width` values) into `out`: for each channel, a softmax over the window's slots of
/// the gates applied to the values. `current` holds `m` slots of gates and values (`m × c·width`
/// each), the window's channels from `offset`; under CSA's overlap `previous` holds the previous
/// window's A-half (`m × width` each), pooled first.
pub fn compress_pool(
    previous: Option<(&[f32], &[f32])>,
    (gate, value, offset): (&[f32], &[f32], usize),
    (m, width): (usize, usize),
    out: &mut Vec<f32>,
) {
    let cw = value.len() / m.max(1);
    out.clear();
    out.resize(width, 0.0);
    for (ch, o) in out.iter_mut().enumerate() {
        let previous = previous
            .into_iter()
            .flat_map(|(g, v)| (0..m).map(move |s| (g[s * width + ch], v[s * width + ch])));
        let current = (0..m).map(|s| {
            let i = s * cw + offset + ch;
            (gate[i], value[i])
        });
        let slots = previous.chain(current);
        let max = slots.clone().map(|s| s.0).fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = slots.clone().map(|s| (s.0 - max).exp()).sum();
        *o = slots.map(|s| (s.0 - max).exp() / sum * s.1).sum();
    }
}
