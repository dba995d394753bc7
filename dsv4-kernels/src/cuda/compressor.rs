//! Launchers of `csrc/compressor.cu`: the KV compressors (docs/model.md §4.4–4.5) on the device,
//! a chunk of tokens per launch, with the tail in device memory ([`DeviceTail`]).

use std::ops::Range;

use super::twins::{Check, Rng};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::compressor::CompressorTail;

/// Threads per block: one entry per block, the channels spread over the threads.
const THREADS: u32 = 256;

/// A compressor's tail in device memory, one per request per compressor: the twin of
/// [`CompressorTail`]'s buffers. f32, with `cw = 2·width` under overlap (CSA and the indexer's
/// compressor), else `width` (HCA):
///
/// | floats | what |
/// |---|---|
/// | `ratio × cw` | values of the open window's tokens, position q in slot `q % ratio` |
/// | `ratio × cw` | their gate logits, `ape[slot]` added |
/// | `ratio × width` (overlap) | the last closed window's A-half values |
/// | `ratio × width` (overlap) | its A-half gates |
///
/// The same bytes as the schema's tails (`hca_tail`, `csa_tail_b` + `csa_tail_a`). Which
/// slots are live follows from the tokens fed so far, which the tail counts
/// ([`DeviceTail::position`]); the kernel reads only slots it wrote, so a fresh (or
/// [reset](DeviceTail::reset)) tail needs no initialization.
#[derive(Debug)]
pub struct DeviceTail {
    buffer: DeviceBuffer,
    ratio: usize,
    width: usize,
    overlap: bool,
    position: usize,
}

impl DeviceTail {
    /// A tail for entries of `width` values every `ratio` tokens, with CSA's `overlap`.
    pub fn new(gpu: &Gpu, ratio: usize, width: usize, overlap: bool) -> Result<Self, DeviceError> {
        if ratio == 0 || width == 0 {
            return Err(shape("a compressor tail needs a ratio and a width"));
        }
        let floats = Self::floats(ratio, width, overlap)
            .ok_or_else(|| shape("a compressor tail this large does not fit"))?;
        dim(floats)?;
        Ok(Self {
            buffer: gpu.zeros(floats * 4)?,
            ratio,
            width,
            overlap,
            position: 0,
        })
    }

    /// f32 values of a tail (`None` on overflow).
    pub fn floats(ratio: usize, width: usize, overlap: bool) -> Option<usize> {
        let cw = if overlap { 2 * width } else { width };
        let current = ratio.checked_mul(cw)?.checked_mul(2)?;
        let previous = if overlap {
            ratio.checked_mul(width)?.checked_mul(2)?
        } else {
            0
        };
        current.checked_add(previous)
    }

    /// Tokens per entry.
    pub fn ratio(&self) -> usize {
        self.ratio
    }

    /// Values per entry.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether entries overlap (CSA).
    pub fn overlap(&self) -> bool {
        self.overlap
    }

    /// Channels of a token's projections: `2·width` under overlap, else `width`.
    pub fn channels(&self) -> usize {
        if self.overlap {
            2 * self.width
        } else {
            self.width
        }
    }

    /// Tokens fed so far: the position of the next one.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Empties the tail for a new request (no device work: stale slots are never read).
    pub fn reset(&mut self) {
        self.position = 0;
    }

    /// Its buffer.
    pub fn buffer(&self) -> &DeviceBuffer {
        &self.buffer
    }
}

/// A chunk's projections on the device: `count` tokens, token t's values at `a + 4·t·stride`
/// and raw gate logits at `g + 4·t·stride`, [`DeviceTail::channels`] each.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRows {
    /// Projected values.
    pub a: DevicePtr,
    /// Gate logits, without `ape`.
    pub g: DevicePtr,
    /// Tokens.
    pub count: usize,
    /// f32 values from one token to the next (at least the channels).
    pub stride: usize,
}

/// The compressor's weights the pooling reads.
#[derive(Debug, Clone, Copy)]
pub struct PoolWeights {
    /// Gate bias by slot, `ratio × channels`.
    pub ape: DevicePtr,
    /// The entries' RMSNorm weight, `width`.
    pub norm: DevicePtr,
    /// The RMSNorm's epsilon.
    pub eps: f32,
}

/// The entries a chunk of `count` tokens from `position` closes: w with `(w + 1)·ratio − 1` in
/// `position .. position + count`.
pub fn closed_entries(ratio: usize, position: usize, count: usize) -> Range<usize> {
    let ratio = ratio.max(1);
    position / ratio..(position + count) / ratio
}

fn shape(message: &str) -> DeviceError {
    DeviceError::Launch {
        kernel: "compress_pool".into(),
        message: message.into(),
    }
}

/// Feeds the chunk `rows` (the tokens from [`DeviceTail::position`] on) to the compressor whose
/// tail is `tail`: writes every entry that closes within the chunk, pooled and normed (RoPE not
/// applied), as rows of `width` at `out` (`closed_entries(..).len() × width` floats), and
/// advances the tail past the chunk. Returns the entries' indices. The twin of
/// [`CompressorTail::push`] fed the chunk token by token; one launch for the chunk (none for an
/// empty one).
pub fn compress_pool(
    gpu: &Gpu,
    tail: &mut DeviceTail,
    rows: ChunkRows,
    weights: PoolWeights,
    out: DevicePtr,
) -> Result<Range<usize>, DeviceError> {
    let position = tail.position;
    let entries = closed_entries(tail.ratio, position, rows.count);
    if rows.count == 0 {
        return Ok(entries);
    }
    if rows.stride < tail.channels() {
        return Err(shape("token rows must hold the compressor's channels"));
    }
    let end = position
        .checked_add(rows.count)
        .ok_or_else(|| shape("the chunk ends past the largest position"))?;
    dim(end)?;
    let head = entries.len().min(if tail.overlap { 2 } else { 1 });
    let blocks = 1 + entries.len() - head;
    let config = LaunchConfig::linear(dim(blocks)?, THREADS);
    let params = (
        dim(rows.stride)?,
        dim(rows.count)?,
        dim(position)?,
        dim(tail.ratio)?,
        dim(tail.width)?,
        u32::from(tail.overlap),
    );
    // SAFETY: the kernel reads `count` rows of `channels` values at `stride` from `a` and `g`,
    // `ratio × channels` ape values and `width` norm weights (the caller's buffers), touches
    // the tail's own buffer (sized by `DeviceTail::floats`), and writes `entries × width`
    // floats at `out`, which the caller sized from `closed_entries`.
    unsafe {
        gpu.launch(
            "compress_pool",
            config,
            &[
                &tail.buffer.ptr(),
                &rows.a,
                &rows.g,
                &params.0,
                &params.1,
                &params.2,
                &weights.ape,
                &weights.norm,
                &weights.eps,
                &params.3,
                &params.4,
                &params.5,
                &out,
            ],
        )
    }?;
    tail.position = end;
    Ok(entries)
}

/// One compressor fed a sequence of chunks on the device and token by token on the CPU, every
/// entry compared.
fn twin_sequence(
    gpu: &Gpu,
    rng: &mut Rng,
    (ratio, width, overlap): (usize, usize, bool),
    pad: usize,
    chunks: &[usize],
) -> Result<Check, DeviceError> {
    let cw = if overlap { 2 * width } else { width };
    let stride = cw + pad;
    let ape = rng.values(ratio * cw, 1.0);
    let norm: Vec<f32> = rng.values(width, 0.5).iter().map(|v| v + 1.0).collect();
    let eps = 1e-6;
    let (device_ape, device_norm) = (gpu.upload_f32(&ape)?, gpu.upload_f32(&norm)?);
    let weights = PoolWeights {
        ape: device_ape.ptr(),
        norm: device_norm.ptr(),
        eps,
    };
    let mut tail = DeviceTail::new(gpu, ratio, width, overlap)?;
    // A tail used by an earlier request, then reset: its stale slots must not matter.
    let junk = 2 * ratio + 1;
    let (junk_a, junk_g) = (
        gpu.upload_f32(&rng.values(junk * stride, 9.0))?,
        gpu.upload_f32(&rng.values(junk * stride, 9.0))?,
    );
    let junk_out = gpu.alloc(closed_entries(ratio, 0, junk).len() * width * 4)?;
    let junk_rows = ChunkRows {
        a: junk_a.ptr(),
        g: junk_g.ptr(),
        count: junk,
        stride,
    };
    compress_pool(gpu, &mut tail, junk_rows, weights, junk_out.ptr())?;
    tail.reset();
    let mut cpu_tail = CompressorTail::new(ratio, width, overlap);
    let (mut gpu_entries, mut cpu_entries, mut entry) = (Vec::new(), Vec::new(), Vec::new());
    let mut position = 0;
    for &count in chunks {
        let a = rng.values(count * stride, 2.0);
        let g = rng.values(count * stride, 4.0);
        let (device_a, device_g) = (gpu.upload_f32(&a)?, gpu.upload_f32(&g)?);
        let closed = closed_entries(ratio, position, count).len();
        let out = gpu.alloc((closed * width).max(1) * 4)?;
        let rows = ChunkRows {
            a: device_a.ptr(),
            g: device_g.ptr(),
            count,
            stride,
        };
        let written = compress_pool(gpu, &mut tail, rows, weights, out.ptr())?;
        gpu_entries.extend(out.read_f32(written.len() * width)?);
        for t in 0..count {
            let row = t * stride..t * stride + cw;
            let token = (&a[row.clone()], &g[row]);
            if cpu_tail
                .push(position + t, token, (&ape, &norm, eps), &mut entry)
                .is_some()
            {
                cpu_entries.extend_from_slice(&entry);
            }
        }
        position += count;
    }
    let kind = if overlap { "overlapping" } else { "plain" };
    let entries = cpu_entries.len() / width;
    // Pooling is the CPU's arithmetic in the CPU's slot order (sequential sums per channel), so
    // on cuda-sim only the RMSNorm's sum of squares differs (a tree over the block: ~sqrt(n)·
    // 2^-24 relative, ≤ 7e-7 measured). On a GPU add expf (≤ 2 ulp against the host's ≤ 1) and
    // contracted multiply-adds: a few ulp of each pooled value, which the norm magnifies where
    // a pooled value is much smaller than its terms (an average of 128 at HCA); a model of
    // exactly that (±2 ulp exps, fused pooling and squares) stays under 1e-6 at m = 128 and 4.
    Ok(Check::new(
        "compress_pool",
        format!(
            "m {ratio} width {width} {kind}, chunks {} ({entries} entries)",
            runs(chunks)
        ),
        &gpu_entries,
        &cpu_entries,
        2e-6,
    ))
}

/// Chunk sizes in words, runs of one size folded: `5, 100, 1×80`.
fn runs(chunks: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        let n = chunks[i..].iter().take_while(|&&c| c == chunks[i]).count();
        parts.push(if n > 2 {
            format!("{}×{n}", chunks[i])
        } else {
            chunks[i..i + n]
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        });
        i += n;
    }
    parts.join(", ")
}

/// A twin sequence: (ratio, width, overlap), the rows' padding, the chunk sizes.
type Sequence = ((usize, usize, bool), usize, Vec<usize>);

/// [`compress_pool`] against [`CompressorTail`] fed the same tokens: HCA (m = 128, width 512),
/// CSA (m = 4, width 512, overlapping) and the indexer's compressor (m = 4, width 128,
/// overlapping) at V4-Flash's widths, and odd ratios and widths (a width above the block's
/// threads, rows with padding), over chunks that close no entry, one and several, that start
/// mid-window (the first entries' tokens partly in the tail) and on a window's edge, from a
/// fresh tail, and runs of single-token decode steps.
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    let decode = |chunks: &[usize], steps: usize| {
        let mut all = chunks.to_vec();
        all.extend(std::iter::repeat_n(1, steps));
        all
    };
    let csa_chunks = {
        let mut c = decode(&[1, 2, 3, 9], 10);
        c.extend([17, 3, 0, 3, 4, 8]);
        c
    };
    let sequences: Vec<Sequence> = vec![
        ((128, 512, false), 0, decode(&[5, 100, 30, 300], 80)),
        ((128, 512, false), 0, decode(&[260], 3)),
        ((4, 512, true), 0, csa_chunks.clone()),
        ((4, 128, true), 0, csa_chunks),
        (
            (3, 37, true),
            5,
            decode(&[2, 7], 4).into_iter().chain([11]).collect(),
        ),
        (
            (5, 33, false),
            3,
            decode(&[4, 1, 12], 6).into_iter().chain([3]).collect(),
        ),
        ((1, 7, true), 0, vec![3, 1, 1, 4]),
        ((2, 300, false), 1, vec![1, 1, 5, 2]),
    ];
    let mut checks = Vec::new();
    for (shape, pad, chunks) in sequences {
        checks.push(twin_sequence(gpu, rng, shape, pad, &chunks)?);
    }
    Ok(checks)
}
