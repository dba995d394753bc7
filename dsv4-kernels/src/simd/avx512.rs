//! The kernels in 512-bit vectors (AVX-512 F and BW), chosen at run time where the CPU has
//! them: the row kernels of decode's linears, the blocked product's panel packing and register
//! tile, and attention's dot products and weighted sums. The row kernels read the AVX2 kernels'
//! input layouts ([`InputOrder`]): they decode 32 stored bytes into both 256-bit halves of a
//! register and keep, by a per-half shift, what AVX2 would put in two registers, so every
//! vector of `x` is still one contiguous load and no shuffle is added.
//!
//! [`InputOrder`]: super::InputOrder

use std::arch::x86_64::*;

use super::{Fp8Multipliers, E2M1_BF16_HIGH, E2M1_BF16_LOW, E4M3_RESCALE};
use crate::formats::E2M1_VALUES;
use crate::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// BF16 row, `x` in [`super::InputOrder::Bf16`]: a 16-value block's 32 bytes go to both halves
/// of a register; the lower half keeps each pair's lower BF16 (shifted up), the upper half its
/// upper one (masked), which are the block's 16 slots in order.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_bf16_row(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let halves = lower_half_shift();
    let block = |i: usize, acc: __m512| {
        let raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(w.as_ptr().add(2 * i).cast()));
        let values = _mm512_castsi512_ps(_mm512_and_si512(_mm512_sllv_epi32(raw, halves), upper));
        _mm512_fmadd_ps(values, _mm512_loadu_ps(x.as_ptr().add(i)), acc)
    };
    // Four blocks per step into four accumulators, so the FMA chains overlap.
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = block(i + 16 * k, *a);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = block(i, acc[0]);
        i += 16;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum) + super::scalar::dot_bf16(&w[2 * i..], &x[i..])
}

/// Per-lane shift counts that move the lower 16 bits of each 32-bit lane up in the lower half
/// of a register and leave the upper half alone: with a mask of the upper 16 bits after it, the
/// lower half holds what AVX2 gets by a shift and the upper half what it gets by a mask.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn lower_half_shift() -> __m512i {
    _mm512_setr_epi32(16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// `R` FP8 rows against one `x` in [`super::InputOrder::Fp8`]: per 128-block, 32 bytes of each
/// row at a time become two vectors by shifts ([`e4m3x32`]), each against one load of `x`.
/// UE8M0 scales (every checkpoint's) decode inline, the scale type settled once per call so
/// the loop has no branch between its loads.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_fp8_rows<const R: usize>(
    q: [&[u8]; R],
    x: &[f32],
    scales: [Scales; R],
) -> [f32; R] {
    match Fp8Multipliers::settle(scales, x.len()) {
        Fp8Multipliers::E8M0(bytes) => fp8_blocks(q, x, |r, b| super::e8m0_multiplier(bytes[r][b])),
        Fp8Multipliers::Other(scales) => fp8_blocks(q, x, |r, b| scales[r].multiplier(b)),
    }
}

/// [`dot_fp8_rows`] with block `b` of row `r` scaled by `multiplier(r, b)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn fp8_blocks<const R: usize>(
    q: [&[u8]; R],
    x: &[f32],
    multiplier: impl Fn(usize, usize) -> f32,
) -> [f32; R] {
    let n = x.len();
    let whole = n / 128;
    let fields = _mm512_set1_epi32(0x87F0_0000u32 as i32);
    let halves = lower_half_shift();
    let mut total = [_mm512_setzero_ps(); R];
    for b in 0..whole {
        let start = 128 * b;
        // Four accumulators per row: the steps alternate between two pairs of them.
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for step in 0..4 {
            let at = start + 32 * step;
            // w[j][r]: row r's vector j.
            let mut w = [[_mm512_setzero_ps(); R]; 2];
            for (r, row) in q.iter().enumerate() {
                [w[0][r], w[1][r]] = e4m3x32(row.as_ptr().add(at), fields, halves);
            }
            for (j, wj) in w.iter().enumerate() {
                let xs = _mm512_loadu_ps(x.as_ptr().add(at + 16 * j));
                let k = 2 * (step % 2) + j;
                for r in 0..R {
                    acc[r][k] = _mm512_fmadd_ps(wj[r], xs, acc[r][k]);
                }
            }
        }
        for r in 0..R {
            let a = acc[r];
            let block = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            let m = _mm512_set1_ps(multiplier(r, b) * E4M3_RESCALE);
            total[r] = _mm512_fmadd_ps(block, m, total[r]);
        }
    }
    let mut sums = [0.0f32; R];
    for (sum, total) in sums.iter_mut().zip(total) {
        *sum = _mm512_reduce_add_ps(total);
    }
    super::scalar::with_fp8_partial_block(q, x, multiplier, sums)
}

/// 32 E4M3 bytes at `p` as two f32 vectors (times 2^-120) holding bytes `4k`, `4k+2` and
/// `4k+1`, `4k+3` (`k = 0..8`): the AVX2 kernel's four vectors, two to a register. The bytes go
/// to both halves of a register; an arithmetic shift right by 4 puts a 16-bit lane's upper
/// byte's exponent and mantissa into BF16's fields with its sign smeared above them, and the
/// lower byte gets the same after a shift left by 8. The lower half of each register then
/// shifts its 32-bit lanes' lower BF16 up (`halves`), the upper half keeps the upper one, and
/// the mask (`fields`) makes both f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn e4m3x32(p: *const u8, fields: __m512i, halves: __m512i) -> [__m512; 2] {
    let raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()));
    let upper = _mm512_srai_epi16(raw, 4);
    let lower = _mm512_srai_epi16(_mm512_slli_epi16(raw, 8), 4);
    [lower, upper]
        .map(|w| _mm512_castsi512_ps(_mm512_and_si512(_mm512_sllv_epi32(w, halves), fields)))
}

/// FP4 row, `x` in [`super::InputOrder::Fp4`]: two groups per step, one per 128-bit lane of
/// each register half, decoded as in the AVX2 kernel (each code looked up as the two bytes of its
/// BF16 value, the byte pairs unpacked), with both halves of a BF16 pair widened into one
/// register ([`lower_half_shift`]). Eight groups' multipliers are decoded at once, and each
/// step's lane sums are scaled into the total by one FMA.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_fp4_row(packed: &[u8], x: &[f32], scales: Scales) -> f32 {
    let groups = x.len() / 32;
    let low = _mm512_broadcast_i32x4(_mm_loadu_si128(E2M1_BF16_LOW.as_ptr().cast()));
    let high = _mm512_broadcast_i32x4(_mm_loadu_si128(E2M1_BF16_HIGH.as_ptr().cast()));
    let nibble = _mm512_set1_epi8(0x0F);
    let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let halves = lower_half_shift();
    // The lane sums of groups g and g + 1 (unscaled): lanes 0–3 and 8–11 hold group g's,
    // lanes 4–7 and 12–15 group g + 1's.
    let pair = |g: usize| {
        let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(packed.as_ptr().add(16 * g).cast()));
        let even = _mm512_and_si512(bytes, nibble);
        let odd = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
        let xs = x.as_ptr().add(32 * g);
        let mut w = [_mm512_setzero_ps(); 4];
        for (parity, codes) in [even, odd].into_iter().enumerate() {
            let lo = _mm512_shuffle_epi8(low, codes);
            let hi = _mm512_shuffle_epi8(high, codes);
            let bf16 = [_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi)];
            for (half, pairs) in bf16.into_iter().enumerate() {
                let values = _mm512_and_si512(_mm512_sllv_epi32(pairs, halves), upper);
                w[2 * parity + half] = _mm512_castsi512_ps(values);
            }
        }
        let a = _mm512_mul_ps(w[0], _mm512_loadu_ps(xs));
        let b = _mm512_mul_ps(w[1], _mm512_loadu_ps(xs.add(16)));
        let a = _mm512_fmadd_ps(w[2], _mm512_loadu_ps(xs.add(32)), a);
        let b = _mm512_fmadd_ps(w[3], _mm512_loadu_ps(xs.add(48)), b);
        _mm512_add_ps(a, b)
    };
    // Each group's multiplier on its lanes, for the pair starting at `p` of eight.
    let spread = |m: __m256, p: i32| {
        let (a, b) = (p, p + 1);
        let index = _mm512_setr_epi32(a, a, a, a, b, b, b, b, a, a, a, a, b, b, b, b);
        _mm512_permutexvar_ps(index, _mm512_castps256_ps512(m))
    };
    // Two running totals, so the FMAs of consecutive pairs do not wait on each other.
    let (mut t0, mut t1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut g = 0;
    while g + 8 <= groups {
        let m = super::avx2::multipliers8(scales, g);
        t0 = _mm512_fmadd_ps(pair(g), spread(m, 0), t0);
        t1 = _mm512_fmadd_ps(pair(g + 2), spread(m, 2), t1);
        t0 = _mm512_fmadd_ps(pair(g + 4), spread(m, 4), t0);
        t1 = _mm512_fmadd_ps(pair(g + 6), spread(m, 6), t1);
        g += 8;
    }
    while g + 2 <= groups {
        let (m0, m1) = (scales.multiplier(g), scales.multiplier(g + 1));
        let m = _mm256_setr_ps(m0, m1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        t0 = _mm512_fmadd_ps(pair(g), spread(m, 0), t0);
        g += 2;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(t0, t1))
        + super::scalar::dot_fp4_groups(packed, x, scales, g)
}

/// Outputs per panel line of the blocked product: one 512-bit vector.
pub const TILE_WIDTH: usize = 16;

/// Blocked product's register tile: `out[r][j] = Σₖ x[r][k] · panel[k][j]` for the `m` rows
/// of `x` (`m × k` values, `m = out.len() / 16`, at most 12) against a `k × 16` panel, one
/// accumulator vector per row, each panel line loaded once for all rows.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]); `panel` holds `k × 16` values,
/// `x` `m × k` and `out` `m × 16` with `1 <= m <= 12`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn tile(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    match out.len() / TILE_WIDTH {
        1 => tile_of::<1>(panel, x, k, out),
        2 => tile_of::<2>(panel, x, k, out),
        3 => tile_of::<3>(panel, x, k, out),
        4 => tile_of::<4>(panel, x, k, out),
        5 => tile_of::<5>(panel, x, k, out),
        6 => tile_of::<6>(panel, x, k, out),
        7 => tile_of::<7>(panel, x, k, out),
        8 => tile_of::<8>(panel, x, k, out),
        9 => tile_of::<9>(panel, x, k, out),
        10 => tile_of::<10>(panel, x, k, out),
        11 => tile_of::<11>(panel, x, k, out),
        _ => tile_of::<12>(panel, x, k, out),
    }
}

/// [`tile`] for `M` rows, all `M` accumulators in registers.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn tile_of<const M: usize>(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    let mut acc = [_mm512_setzero_ps(); M];
    let (p, xp) = (panel.as_ptr(), x.as_ptr());
    for kk in 0..k {
        let w = _mm512_loadu_ps(p.add(TILE_WIDTH * kk));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(w, _mm512_set1_ps(*xp.add(r * k + kk)), *a);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(TILE_WIDTH * r), *a);
    }
}

/// [`super::scalar::max_f32`] in four running maxima of sixteen lanes. `max(v, m)` returns `m`
/// unless `v > m`, so NaN never wins here either.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn max_f32(x: &[f32]) -> f32 {
    let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    while i + 64 <= x.len() {
        for (k, m) in m.iter_mut().enumerate() {
            *m = _mm512_max_ps(_mm512_loadu_ps(x.as_ptr().add(i + 16 * k)), *m);
        }
        i += 64;
    }
    let v = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
    let mut lanes = [0.0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), v);
    let lanes = super::scalar::max_f32(&lanes);
    let rest = super::scalar::max_f32(&x[i..]);
    if rest > lanes {
        rest
    } else {
        lanes
    }
}

/// Σ a·b for `b.len()` values of `a` from `a`, which need not be aligned.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]); `a` points to `b.len()`
/// readable values.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_f32_at(a: *const f32, b: &[f32]) -> f32 {
    let n = b.len();
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        acc0 = _mm512_fmadd_ps(
            _mm512_loadu_ps(a.add(i)),
            _mm512_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        acc1 = _mm512_fmadd_ps(
            _mm512_loadu_ps(a.add(i + 16)),
            _mm512_loadu_ps(b.as_ptr().add(i + 16)),
            acc1,
        );
        i += 32;
    }
    let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    while i < n {
        sum += a.add(i).read_unaligned() * b[i];
        i += 1;
    }
    sum
}

/// `wₖ · xᵣ` for `K` rows against four vectors at once: each load feeds several FMAs, and the
/// `4K` accumulators are independent chains.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]); the rows share a length that
/// every vector reaches.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dots4<const K: usize>(w: [&[f32]; K], x: [&[f32]; 4]) -> [[f32; 4]; K] {
    let n = w.first().map_or(0, |r| r.len());
    let mut acc = [[_mm512_setzero_ps(); 4]; K];
    let mut i = 0;
    while i + 16 <= n {
        let xs = x.map(|r| _mm512_loadu_ps(r.as_ptr().add(i)));
        for (a, row) in acc.iter_mut().zip(w) {
            let wv = _mm512_loadu_ps(row.as_ptr().add(i));
            for (a, xv) in a.iter_mut().zip(xs) {
                *a = _mm512_fmadd_ps(wv, xv, *a);
            }
        }
        i += 16;
    }
    let mut out = [[0.0f32; 4]; K];
    for ((o, a), row) in out.iter_mut().zip(acc).zip(w) {
        for ((o, a), xr) in o.iter_mut().zip(a).zip(x) {
            *o = _mm512_reduce_add_ps(a) + super::scalar::dot_f32(&row[i..], &xr[i..n]);
        }
    }
    out
}

/// `out = Σⱼ weights[j] · row(j)`, 128 outputs at a time held in registers over all rows.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn weighted_sum<'r>(row: impl Fn(usize) -> &'r [f32], weights: &[f32], out: &mut [f32]) {
    let n = out.len();
    let mut start = 0;
    while start + 128 <= n {
        let mut acc = [_mm512_setzero_ps(); 8];
        for (j, &w) in weights.iter().enumerate() {
            let wv = _mm512_set1_ps(w);
            let r = row(j)[start..start + 128].as_ptr();
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(wv, _mm512_loadu_ps(r.add(16 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(start + 16 * i), *a);
        }
        start += 128;
    }
    super::scalar::weighted_sum(row, weights, &mut out[start..], start);
}

/// Four heads' weighted sums at once (`weights` and `out` four rows each): 32 outputs of each
/// head in registers, each loaded row block feeding all four heads.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]); the four outputs have one
/// length, every row reaches it, and the weights are as many as the rows.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn weighted_sum4<'r>(
    row: impl Fn(usize) -> &'r [f32],
    weights: [&[f32]; 4],
    mut out: [&mut [f32]; 4],
) {
    let d = out[0].len();
    let mut start = 0;
    while start + 32 <= d {
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for j in 0..weights[0].len() {
            let r = row(j)[start..start + 32].as_ptr();
            let (v0, v1) = (_mm512_loadu_ps(r), _mm512_loadu_ps(r.add(16)));
            for (a, w) in acc.iter_mut().zip(weights) {
                let wv = _mm512_set1_ps(w[j]);
                a[0] = _mm512_fmadd_ps(wv, v0, a[0]);
                a[1] = _mm512_fmadd_ps(wv, v1, a[1]);
            }
        }
        for (a, o) in acc.iter().zip(out.iter_mut()) {
            // Bounds: start + 32 <= d, every output `d` long.
            _mm512_storeu_ps(o[start..start + 32].as_mut_ptr(), a[0]);
            _mm512_storeu_ps(o[start + 16..start + 32].as_mut_ptr(), a[1]);
        }
        start += 32;
    }
    for (w, o) in weights.into_iter().zip(out) {
        super::scalar::weighted_sum(&row, w, &mut o[start..], start);
    }
}

/// Packs weight rows `first..first + count` (at most 16) into the blocked product's `k × 16`
/// panel (column `j` = row `first + j`, columns past `count` zero), sixteen rows × sixteen
/// inputs at a time: each row's sixteen values are decoded straight from storage into a
/// register, and the 16 × 16 block is transposed in registers into sixteen panel lines. The
/// format is matched once per panel.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]); `w.inp` is a multiple of 16,
/// rows `first..first + count` exist and `panel` holds `w.inp × 16` values.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn pack_panel(w: &LinearView, first: usize, count: usize, panel: &mut [f32]) {
    let k = w.inp;
    // Where input `kk` of panel row `r` sits in the stored matrix, in values.
    let offset = |r: usize, kk: usize| (first + r) * k + kk;
    match w.weight {
        LinearWeight::Float { dtype, data } => match dtype {
            FloatDtype::F32 => pack_rows(k, count, panel, |r, kk| {
                let at = offset(r, kk);
                _mm512_loadu_ps(data[4 * at..4 * (at + 16)].as_ptr().cast())
            }),
            FloatDtype::Bf16 => pack_rows(k, count, panel, |r, kk| {
                let at = offset(r, kk);
                let raw = _mm256_loadu_si256(data[2 * at..2 * (at + 16)].as_ptr().cast());
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16))
            }),
            FloatDtype::F16 => pack_rows(k, count, panel, |r, kk| {
                let at = offset(r, kk);
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    data[2 * at..2 * (at + 16)].as_ptr().cast(),
                ))
            }),
        },
        LinearWeight::Fp8Block { q, scales } => {
            let cols = k.div_ceil(128);
            let fields = _mm512_set1_epi32(0x87F0_0000u32 as i32);
            pack_rows(k, count, panel, |r, kk| {
                let s = scales.multiplier(((first + r) / 128) * cols + kk / 128);
                let at = offset(r, kk);
                // Sign-extended bytes shifted so exponent and mantissa land in f32's fields
                // (times 2^-120, undone with the scale).
                let wide = _mm512_cvtepi8_epi32(_mm_loadu_si128(q[at..at + 16].as_ptr().cast()));
                let value =
                    _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(wide, 20), fields));
                _mm512_mul_ps(value, _mm512_set1_ps(s * E4M3_RESCALE))
            })
        }
        LinearWeight::Fp4Group { packed, scales } => {
            // All sixteen codes, signs included, in one register.
            let values = _mm512_loadu_ps(E2M1_VALUES.as_ptr());
            let shifts = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
            let nibble = _mm512_set1_epi32(0xF);
            pack_rows(k, count, panel, |r, kk| {
                let at = offset(r, kk);
                let s = scales.multiplier(at / 32);
                let b = &packed[at / 2..at / 2 + 8];
                let word = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                // Each byte twice, shifted so lane i holds code i in its low four bits.
                let bytes = _mm_cvtsi64_si128(word as i64);
                let wide = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
                let codes = _mm512_and_si512(_mm512_srlv_epi32(wide, shifts), nibble);
                _mm512_mul_ps(_mm512_permutexvar_ps(codes, values), _mm512_set1_ps(s))
            })
        }
    }
}

/// The packing loop of [`pack_panel`] for panel rows `0..count` (the rest zero), with
/// `decode16(r, kk)` giving inputs `kk..kk + 16` of panel row `r` as f32, exactly (`kk` a
/// multiple of 16, so one scale covers them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_rows(
    k: usize,
    count: usize,
    panel: &mut [f32],
    decode16: impl Fn(usize, usize) -> __m512,
) {
    for kk in (0..k).step_by(16) {
        let mut block = [_mm512_setzero_ps(); 16];
        for (r, v) in block.iter_mut().enumerate().take(count) {
            *v = decode16(r, kk);
        }
        let lines = transpose16(block);
        let lines_at = panel[kk * TILE_WIDTH..(kk + 16) * TILE_WIDTH].as_mut_ptr();
        for (i, line) in lines.iter().enumerate() {
            _mm512_storeu_ps(lines_at.add(i * TILE_WIDTH), *line);
        }
    }
}

/// The transpose of a 16 × 16 block held as sixteen rows: pairs of rows interleaved, then
/// fours within each 128-bit lane, then lanes gathered across the groups of four rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved (elements 0, 1 and 2, 3 of each lane).
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + j]: lane L holds element 4L + j of rows 4g..4g + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let t = &t[4 * g..4 * g + 4];
        u[4 * g] = _mm512_shuffle_ps::<0x44>(t[0], t[2]);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[0], t[2]);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[1], t[3]);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[1], t[3]);
    }
    // Line 4L + j: lane L of u[j], u[4 + j], u[8 + j], u[12 + j].
    let mut lines = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let even_front = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let odd_front = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
        let even_back = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let odd_back = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
        lines[j] = _mm512_shuffle_f32x4::<0x88>(even_front, even_back);
        lines[8 + j] = _mm512_shuffle_f32x4::<0xDD>(even_front, even_back);
        lines[4 + j] = _mm512_shuffle_f32x4::<0x88>(odd_front, odd_back);
        lines[12 + j] = _mm512_shuffle_f32x4::<0xDD>(odd_front, odd_back);
    }
    lines
}
