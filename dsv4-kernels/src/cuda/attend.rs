//! Launcher of `csrc/attend.cu`: sparse attention of a chunk's queries over keys read from the
//! device cache as stored (the window ring, the chunk's own fresh keys, a paged stream of
//! compressed entries), the twin of [`crate::attend::sparse_attend`].

use dsv4_formats::cache_codec::KvFormat;

use super::twins::{Check, Rng};
use super::{dim, DeviceBuffer, DeviceError, DevicePtr, Gpu, LaunchConfig};
use crate::attend::{Compressed, KeySet};
use crate::ops::{RopeFrequencies, Yarn};

/// Heads per block and keys per tile of the kernel; its blocks have `HEADS × KEYS` threads.
const HEADS: usize = 8;
const KEYS: usize = 32;
/// The widest head the kernel takes (4 dims per thread).
const MAX_WIDTH: usize = 1024;

/// A window ring on the device: `slots` entries of the KV format, position `p` in slot
/// `p % slots`.
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    /// The first slot.
    pub entries: DevicePtr,
    /// Slots.
    pub slots: usize,
    /// Layout of an entry.
    pub format: KvFormat,
}

/// A paged stream of compressed entries on the device: entry `i` in page `i / per_page` at
/// slot `i % per_page`, each page's address one `u64` of the table `pages`.
#[derive(Debug, Clone, Copy)]
pub struct Paged {
    /// The page table.
    pub pages: DevicePtr,
    /// Entries per page.
    pub per_page: usize,
    /// Entries in the stream (the kernel reads none at or past it).
    pub entries: usize,
    /// Layout of an entry.
    pub format: KvFormat,
}

/// Which compressed entries each query sees, besides its window ([`Compressed`] on the device).
#[derive(Debug, Clone, Copy)]
pub enum CompressedKeys {
    /// None (window-only layers).
    None,
    /// The first `⌊(p + 1)/ratio⌋` entries for a query at `p` (HCA).
    Closed {
        /// Compress ratio m.
        ratio: usize,
    },
    /// Each query's own entries (CSA, the indexer's selection): `indices` holds `T × k` u32
    /// entry indices (query `t`'s at `indices + 4·t·k`), `lens` `T` u32 counts, query `t`
    /// using the first `min(lens[t], k)` of its row. Order within a row is free (it changes
    /// only rounding); duplicates count as often as listed; an index at or past the stream's
    /// `entries` is skipped.
    Selected {
        /// `T × k` u32 entry indices.
        indices: DevicePtr,
        /// `T` u32 counts.
        lens: DevicePtr,
        /// Slots per query (the row stride of `indices`).
        k: usize,
    },
}

/// Where the keys of a chunk's queries live on the device. A key of window position `j` is row
/// `j − p0` of `fresh` when `j ≥ p0`, else ring slot `j % slots`; the ring must hold every
/// position from the first query's window start up to `p0 − 1`.
#[derive(Debug, Clone, Copy)]
pub struct DeviceKeys {
    /// Values per key d (the queries' head width), at most 1024.
    pub width: usize,
    /// Trailing rotary dims of a key (and of an output head): even, at most `width`.
    pub rope: usize,
    /// Window length W: a query at `p` sees positions `max(p + 1 − W, 0) ..= p`.
    pub window_size: usize,
    /// Keys of positions before `p0`.
    pub ring: Ring,
    /// The chunk's own keys, `fresh_len × width` f32 from position `p0`, already rounded
    /// through the cache format.
    pub fresh: DevicePtr,
    /// Position of `fresh`'s first row (the chunk's first token).
    pub p0: usize,
    /// Rows of `fresh`.
    pub fresh_len: usize,
    /// The compressed entries.
    pub entries: Paged,
    /// Which of them each query sees.
    pub compressed: CompressedKeys,
}

/// The queries of a chunk and where their outputs go.
#[derive(Debug, Clone, Copy)]
pub struct Queries {
    /// `tokens × heads × width` f32, token `t` at position `q0 + t`.
    pub q: DevicePtr,
    /// `tokens × heads × width` f32, written.
    pub out: DevicePtr,
    /// `heads` f32 sink logits.
    pub sinks: DevicePtr,
    /// Query tokens T.
    pub tokens: usize,
    /// Position of the first.
    pub q0: usize,
    /// Heads H.
    pub heads: usize,
}

fn invalid(message: String) -> DeviceError {
    DeviceError::Launch {
        kernel: "sparse_attend".into(),
        message,
    }
}

/// Attention of `queries` over `keys` with scores scaled by `scale`, each output head's
/// trailing `keys.rope` dims rotated back by its query's position with `inv_freq`
/// (`rope / 2` f32 angles per position): the twin of [`crate::attend::sparse_attend`]. One
/// launch for the whole chunk, grid `(T, ⌈H/8⌉)`, `40 · (d | 1) · 4` bytes of shared memory a
/// block (82 KB at d = 512).
pub fn sparse_attend(
    gpu: &Gpu,
    queries: &Queries,
    keys: &DeviceKeys,
    scale: f32,
    inv_freq: DevicePtr,
) -> Result<(), DeviceError> {
    let Queries {
        q,
        out,
        sinks,
        tokens,
        q0,
        heads,
    } = *queries;
    let d = keys.width;
    if tokens == 0 || heads == 0 || d == 0 {
        return Ok(());
    }
    if d > MAX_WIDTH || !keys.rope.is_multiple_of(2) || keys.rope > d {
        return Err(invalid(format!(
            "head width {d} with {} rotary dims (at most {MAX_WIDTH}, rotary even)",
            keys.rope
        )));
    }
    let end = q0 + tokens;
    if q0 < keys.p0 || end > keys.p0 + keys.fresh_len {
        return Err(invalid(format!(
            "queries at {q0}..{end} outside the fresh keys at {}..{}",
            keys.p0,
            keys.p0 + keys.fresh_len
        )));
    }
    // The ring holds the window's positions before p0, each in its own slot.
    let first = (q0 + 1).saturating_sub(keys.window_size);
    if first < keys.p0 && keys.ring.slots < keys.p0 - first {
        return Err(invalid(format!(
            "a ring of {} slots cannot hold positions {first}..{}",
            keys.ring.slots, keys.p0
        )));
    }
    let paged = &keys.entries;
    let (mode, ratio, indices, lens, k) = match keys.compressed {
        CompressedKeys::None => (0u32, 0usize, DevicePtr(0), DevicePtr(0), 0usize),
        CompressedKeys::Closed { ratio } => {
            // The last query sees ⌊end / ratio⌋ entries.
            if end
                .checked_div(ratio)
                .is_none_or(|wanted| wanted > paged.entries)
            {
                return Err(invalid(format!(
                    "ratio {ratio} at position {end}: the stream has {} entries",
                    paged.entries
                )));
            }
            (1, ratio, DevicePtr(0), DevicePtr(0), 0)
        }
        CompressedKeys::Selected { indices, lens, k } => (2, 0, indices, lens, k),
    };
    if mode != 0 && paged.entries > 0 && paged.per_page == 0 {
        return Err(invalid("a paged stream with 0 entries a page".into()));
    }
    let groups = heads.div_ceil(HEADS);
    if groups > 65535 {
        return Err(invalid(format!("{heads} heads")));
    }
    let shared = dim((HEADS + KEYS) * (d | 1) * 4)?;
    let config = LaunchConfig {
        grid: [dim(tokens)?, dim(groups)?, 1],
        block: [dim(HEADS * KEYS)?, 1, 1],
        shared_bytes: shared,
    };
    let (ring_format, entry_format) = (
        super::cache::KvFormat::from(keys.ring.format) as u32,
        super::cache::KvFormat::from(paged.format) as u32,
    );
    let params = (
        dim(heads)?,
        dim(d)?,
        dim(keys.rope)?,
        dim(q0)?,
        dim(keys.window_size)?,
        dim(keys.ring.slots)?,
        dim(keys.p0)?,
        dim(paged.per_page)?,
        dim(paged.entries)?,
        dim(ratio)?,
        dim(k)?,
    );
    dim(end)?;
    let (heads, d, rope, q0, window, slots, p0, per_page, entries, ratio, k) = params;
    // SAFETY: the kernel writes `tokens × heads × d` floats at `out`, reads as many at `q`,
    // `heads` sinks, `rope / 2` angles, fresh rows `q0 − p0 + t` (t < tokens, inside
    // `fresh_len` as checked), ring slots below `slots`, entries below `entries` through the
    // page table (which the caller's pages hold), and in Selected mode `T` counts and `T × k`
    // indices.
    unsafe {
        gpu.launch(
            "sparse_attend",
            config,
            &[
                &q,
                &out,
                &sinks,
                &inv_freq,
                &heads,
                &d,
                &rope,
                &scale,
                &q0,
                &window,
                &keys.ring.entries,
                &slots,
                &ring_format,
                &keys.fresh,
                &p0,
                &paged.pages,
                &per_page,
                &entries,
                &entry_format,
                &mode,
                &ratio,
                &indices,
                &lens,
                &k,
            ],
        )
    }
}

/// Which entries a twin case's queries see.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Window,
    Closed(usize),
    /// `k` slots per query.
    Selected(usize),
}

/// One twin case.
#[derive(Debug, Clone, Copy)]
struct Case {
    format: KvFormat,
    heads: usize,
    d: usize,
    rope: usize,
    window: usize,
    slots: usize,
    /// The chunk's first position and its keys.
    p0: usize,
    fresh_len: usize,
    /// Queries: the last `tokens` of the chunk.
    tokens: usize,
    mode: Mode,
    /// Entries in the stream and per page.
    entries: usize,
    per_page: usize,
}

/// Encodes `values` (rows of `d`) in `format`; returns the bytes and the decoded rows.
fn encode_rows(
    format: KvFormat,
    values: &[f32],
    d: usize,
    rope: usize,
) -> Result<(Vec<u8>, Vec<f32>), DeviceError> {
    let bytes = format.entry_bytes(d, rope);
    let mut encoded = vec![0u8; values.len() / d * bytes];
    let mut decoded = vec![0f32; values.len()];
    for ((row, e), o) in values
        .chunks(d)
        .zip(encoded.chunks_mut(bytes))
        .zip(decoded.chunks_mut(d))
    {
        let codec = |e: dsv4_formats::cache_codec::CodecError| DeviceError::Driver(e.to_string());
        format.encode(row, rope, e).map_err(codec)?;
        format.decode(e, rope, o).map_err(codec)?;
    }
    Ok((encoded, decoded))
}

/// `n` distinct values below `below` in random order.
fn distinct(rng: &mut Rng, n: usize, below: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..below).collect();
    for i in 0..n.min(below) {
        let j = i + (rng.next_u64() % (below - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(n.min(below));
    all
}

fn format_name(format: KvFormat) -> &'static str {
    match format {
        KvFormat::F32 => "f32",
        KvFormat::Bf16 => "bf16",
        KvFormat::Fp8 => "fp8",
    }
}

/// Runs one case on the device and on the CPU.
fn run_case(gpu: &Gpu, rng: &mut Rng, c: Case) -> Result<Check, DeviceError> {
    let Case {
        format,
        heads,
        d,
        rope,
        window,
        slots,
        p0,
        fresh_len,
        tokens,
        mode,
        entries,
        per_page,
    } = c;
    let q0 = p0 + fresh_len - tokens;
    let entry_bytes = format.entry_bytes(d, rope);
    // Keys of positions window_first .. p0 + fresh_len: the ring's (encoded) then the fresh
    // ones (rounded through the format).
    let window_first = p0.saturating_sub(window.saturating_sub(1));
    let (ring_bytes, window_keys) = encode_rows(
        format,
        &rng.values((p0 + fresh_len - window_first) * d, 1.5),
        d,
        rope,
    )?;
    // Slots no query may read hold 0xff bytes (NaN in every format).
    let mut ring = vec![0xffu8; slots * entry_bytes];
    for (n, bytes) in ring_bytes
        .chunks(entry_bytes)
        .take(p0 - window_first)
        .enumerate()
    {
        let slot = (window_first + n) % slots;
        ring[slot * entry_bytes..][..entry_bytes].copy_from_slice(bytes);
    }
    let ring = gpu.upload(&ring)?;
    let fresh = gpu.upload_f32(&window_keys[(p0 - window_first) * d..])?;
    // Compressed entries in pages of their own, the last one's spare slots 0xff.
    let (entry_data, entry_values) = encode_rows(format, &rng.values(entries * d, 1.5), d, rope)?;
    let mut pages: Vec<DeviceBuffer> = Vec::new();
    for chunk in entry_data.chunks(per_page * entry_bytes) {
        let mut page = vec![0xffu8; per_page * entry_bytes];
        page[..chunk.len()].copy_from_slice(chunk);
        pages.push(gpu.upload(&page)?);
    }
    let table: Vec<u8> = pages
        .iter()
        .flat_map(|p| p.ptr().0.to_le_bytes())
        .chain(0u64.to_le_bytes())
        .collect();
    let table = gpu.upload(&table)?;
    // The selection: each query a random count of distinct indices (the first query none when
    // there are several, the last a full row), spare slots holding valid indices the kernel
    // must not use.
    let k = match mode {
        Mode::Selected(k) => k,
        _ => 0,
    };
    let mut rows = vec![0usize; tokens * k];
    let mut lens = vec![0usize; tokens];
    for t in 0..tokens {
        let n = if t + 1 == tokens {
            k
        } else if t == 0 {
            0
        } else {
            (rng.next_u64() % (k as u64 + 1)) as usize
        };
        let mut chosen = distinct(rng, n, entries);
        lens[t] = chosen.len();
        while chosen.len() < k {
            chosen.push((rng.next_u64() % entries.max(1) as u64) as usize);
        }
        rows[t * k..(t + 1) * k].copy_from_slice(&chosen);
    }
    let u32_bytes = |v: &[usize]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| (x as u32).to_le_bytes())
            .chain(0u32.to_le_bytes())
            .collect()
    };
    let indices = gpu.upload(&u32_bytes(&rows))?;
    let device_lens = gpu.upload(&u32_bytes(&lens))?;

    let q = rng.values(tokens * heads * d, 6.0);
    let sinks = rng.values(heads, 3.0);
    let frequencies = match mode {
        Mode::Window => RopeFrequencies::new(rope, 10000.0, None),
        _ => RopeFrequencies::new(
            rope,
            160000.0,
            Some(Yarn {
                factor: 16.0,
                original_max_position_embeddings: 65536.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
            }),
        ),
    };
    let scale = 1.0 / (d as f32).sqrt();
    let device_q = gpu.upload_f32(&q)?;
    let device_sinks = gpu.upload_f32(&sinks)?;
    let device_freq = gpu.upload_f32(&frequencies.inv_freq)?;
    let out = gpu.zeros(tokens * heads * d * 4)?;
    let compressed = match mode {
        Mode::Window => CompressedKeys::None,
        Mode::Closed(ratio) => CompressedKeys::Closed { ratio },
        Mode::Selected(k) => CompressedKeys::Selected {
            indices: indices.ptr(),
            lens: device_lens.ptr(),
            k,
        },
    };
    let keys = DeviceKeys {
        width: d,
        rope,
        window_size: window,
        ring: Ring {
            entries: ring.ptr(),
            slots,
            format,
        },
        fresh: fresh.ptr(),
        p0,
        fresh_len,
        entries: Paged {
            pages: table.ptr(),
            per_page,
            entries,
            format,
        },
        compressed,
    };
    let queries = Queries {
        q: device_q.ptr(),
        out: out.ptr(),
        sinks: device_sinks.ptr(),
        tokens,
        q0,
        heads,
    };
    sparse_attend(gpu, &queries, &keys, scale, device_freq.ptr())?;
    let gpu_out = out.read_f32(tokens * heads * d)?;

    let slots_cpu: Vec<(f32, usize)> = rows.iter().map(|&r| (0.0, r)).collect();
    let key_set = KeySet {
        width: d,
        window: &window_keys,
        window_first,
        window_size: window,
        entries: &entry_values,
        compressed: match mode {
            Mode::Window => Compressed::None,
            Mode::Closed(ratio) => Compressed::Closed { ratio },
            Mode::Selected(k) => Compressed::Selected {
                slots: &slots_cpu,
                k,
                len: &lens,
            },
        },
    };
    let mut cpu_out = vec![0f32; tokens * heads * d];
    crate::attend::sparse_attend(&q, q0, &key_set, &sinks, scale, &frequencies, &mut cpu_out);
    let what = match mode {
        Mode::Window => "window".to_string(),
        Mode::Closed(ratio) => format!("HCA m={ratio}, {entries} entries"),
        Mode::Selected(k) => format!("CSA k={k} of {entries} entries"),
    };
    let shape = format!(
        "{} T={tokens} at {q0} H={heads} d={d} rope {rope} W={window} ring {slots}, {what}, \
         {per_page} / page",
        format_name(format),
    );
    // Dot and sum orders differ, and online softmax rescales per tile: the scores' rounding
    // (2^-24 · √d · |partial sums| · scale, ~3e-6 here) carries into the weights; measured
    // at most 3.3e-6.
    Ok(Check::new("sparse_attend", shape, &gpu_out, &cpu_out, 1e-5))
}

/// [`sparse_attend`] against its twin: V4-Flash's shape (H = 64, d = 512, rope 64, W = 128) in
/// every KV format and mode, decoding deep in the context (ring wrapped) and a 5-token chunk
/// across the ring's end; odd shapes (3 and 11 heads, d = 96, 130, 1024, short windows and
/// rings, a chunk from position 0, queries for the chunk's last token only).
pub fn twins(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>, DeviceError> {
    use KvFormat::{Bf16, Fp8, F32};
    let flash = |format, p0, tokens, mode, entries, per_page| Case {
        format,
        heads: 64,
        d: 512,
        rope: 64,
        window: 128,
        slots: 128,
        p0,
        fresh_len: tokens,
        tokens,
        mode,
        entries,
        per_page,
    };
    let mut cases = Vec::new();
    for format in [F32, Bf16, Fp8] {
        // Decoding deep in the context.
        cases.push(flash(format, 70_001, 1, Mode::Window, 0, 64));
        cases.push(flash(format, 25_650, 1, Mode::Closed(128), 200, 2));
        cases.push(flash(format, 803, 1, Mode::Selected(64), 201, 64));
    }
    // Chunks whose positions run across the ring's last slot; the HCA one closes an entry.
    cases.push(flash(F32, 128 * 50 + 126, 5, Mode::Window, 0, 64));
    cases.push(flash(Bf16, 128 * 200 + 126, 5, Mode::Closed(128), 201, 2));
    cases.push(flash(Fp8, 128 * 6 + 126, 5, Mode::Selected(32), 224, 64));

    let odd = |format, p0, fresh_len, tokens, mode, entries| Case {
        format,
        heads: 3,
        d: 96,
        rope: 32,
        window: 5,
        slots: 5,
        p0,
        fresh_len,
        tokens,
        mode,
        entries,
        per_page: 7,
    };
    for format in [F32, Bf16, Fp8] {
        cases.push(odd(format, 1003, 1, 1, Mode::Window, 0));
        cases.push(odd(format, 1003, 1, 1, Mode::Closed(4), 251));
        cases.push(odd(format, 1003, 1, 1, Mode::Selected(6), 30));
        cases.push(odd(format, 58, 5, 5, Mode::Window, 0));
        cases.push(odd(format, 58, 5, 5, Mode::Closed(4), 15));
        cases.push(odd(format, 58, 5, 5, Mode::Selected(6), 9));
        // Only the chunk's last token queries; a ring longer than the window.
        cases.push(Case {
            slots: 7,
            ..odd(format, 40, 6, 1, Mode::Selected(5), 11)
        });
        // From the start of the context: the window shorter than W, no entry for a while, no
        // ring; 11 heads (a partial block), d = 130 (fp8: blocks of 64 and 50).
        cases.push(Case {
            heads: 11,
            d: 130,
            rope: 16,
            window: 9,
            slots: 9,
            ..odd(format, 0, 7, 7, Mode::Closed(3), 2)
        });
    }
    // The widest head the kernel takes.
    cases.push(Case {
        heads: 8,
        d: 1024,
        rope: 64,
        window: 33,
        slots: 40,
        ..odd(Fp8, 100, 2, 2, Mode::Closed(16), 6)
    });
    cases.into_iter().map(|c| run_case(gpu, rng, c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_the_kernel_cannot_take_are_refused_before_a_launch() {
        let gpu = Gpu::sim();
        let none = DevicePtr(0);
        let queries = Queries {
            q: none,
            out: none,
            sinks: none,
            tokens: 2,
            q0: 300,
            heads: 4,
        };
        let keys = DeviceKeys {
            width: 96,
            rope: 32,
            window_size: 128,
            ring: Ring {
                entries: none,
                slots: 128,
                format: KvFormat::Bf16,
            },
            fresh: none,
            p0: 300,
            fresh_len: 2,
            entries: Paged {
                pages: none,
                per_page: 64,
                entries: 2,
                format: KvFormat::Bf16,
            },
            compressed: CompressedKeys::Closed { ratio: 128 },
        };
        let refused = |queries: Queries, keys: DeviceKeys| {
            matches!(
                sparse_attend(&gpu, &queries, &keys, 1.0, none),
                Err(DeviceError::Launch { .. })
            )
        };
        assert!(refused(
            queries,
            DeviceKeys {
                width: 1026,
                ..keys
            }
        ));
        assert!(refused(queries, DeviceKeys { rope: 31, ..keys }));
        assert!(refused(queries, DeviceKeys { rope: 98, ..keys }));
        assert!(refused(Queries { q0: 299, ..queries }, keys));
        assert!(refused(
            Queries {
                tokens: 3,
                ..queries
            },
            keys
        ));
        let ring = Ring {
            slots: 126,
            ..keys.ring
        };
        assert!(refused(queries, DeviceKeys { ring, ..keys }));
        let entries = Paged {
            entries: 1,
            ..keys.entries
        };
        assert!(refused(queries, DeviceKeys { entries, ..keys }));
        let compressed = CompressedKeys::Closed { ratio: 0 };
        assert!(refused(queries, DeviceKeys { compressed, ..keys }));
        let entries = Paged {
            per_page: 0,
            ..keys.entries
        };
        assert!(refused(queries, DeviceKeys { entries, ..keys }));
        // No queries: nothing to launch.
        let empty = Queries {
            tokens: 0,
            ..queries
        };
        assert!(sparse_attend(&gpu, &empty, &keys, 1.0, none).is_ok());
        assert_eq!(gpu.counters().launches(), 0);
    }
}
