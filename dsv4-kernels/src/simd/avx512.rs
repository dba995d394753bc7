//! The kernels in 512-bit vectors (AVX-512 F and BW), chosen at run time where the CPU has
//! them: the row kernels of decode's linears, the blocked product's register tile, and
//! attention's dot products and weighted sums. The row kernels read the same input layout as
//! their AVX2 and scalar twins ([`InputOrder`]), which is laid out for these decodes: one load of
//! a row covers what two AVX2 loads do, and every vector of `x` is one contiguous load.
//!
//! [`InputOrder`]: super::InputOrder

use std::arch::x86_64::*;

use super::{Fp8Multipliers, E2M1_BF16_HIGH, E2M1_BF16_LOW, E4M3_RESCALE};
use crate::formats::E2M1_VALUES;
use crate::linear::{FloatDtype, LinearView, LinearWeight, Scales};

/// BF16 row, `x` in [`super::InputOrder::Bf16`]: a 32-value block is one load, its lower
/// halves (one shift) the first 16 slots and its upper halves (one mask) the next 16.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_bf16_row(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    // Two blocks per step into four accumulators, so the FMA chains overlap.
    let mut acc = [_mm512_setzero_ps(); 4];
    let block = |i: usize, [even, odd]: [__m512; 2]| {
        let raw = _mm512_loadu_si512(w.as_ptr().add(2 * i).cast());
        let lower = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
        let higher = _mm512_castsi512_ps(_mm512_and_si512(raw, upper));
        [
            _mm512_fmadd_ps(lower, _mm512_loadu_ps(x.as_ptr().add(i)), even),
            _mm512_fmadd_ps(higher, _mm512_loadu_ps(x.as_ptr().add(i + 16)), odd),
        ]
    };
    let mut i = 0;
    while i + 64 <= n {
        [acc[0], acc[1]] = block(i, [acc[0], acc[1]]);
        [acc[2], acc[3]] = block(i + 32, [acc[2], acc[3]]);
        i += 64;
    }
    if i + 32 <= n {
        [acc[0], acc[1]] = block(i, [acc[0], acc[1]]);
        i += 32;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum) + super::scalar::dot_bf16(&w[2 * i..], &x[i..])
}

/// `R` FP8 rows against one `x` in [`super::InputOrder::Fp8`]: per 128-block, 64 bytes of each
/// row at a time become four vectors by shifts ([`e4m3x64`]), each against one load of `x`.
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
    let mut total = [_mm512_setzero_ps(); R];
    for b in 0..whole {
        let start = 128 * b;
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for step in [start, start + 64] {
            let mut w = [[_mm512_setzero_ps(); 4]; R];
            for (w, row) in w.iter_mut().zip(&q) {
                *w = e4m3x64(row.as_ptr().add(step), fields);
            }
            for j in 0..4 {
                let xs = _mm512_loadu_ps(x.as_ptr().add(step + 16 * j));
                for r in 0..R {
                    acc[r][j] = _mm512_fmadd_ps(w[r][j], xs, acc[r][j]);
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
    super::scalar::with_fp8_partial_block(q, x, multiplier, total.map(|t| _mm512_reduce_add_ps(t)))
}

/// 64 E4M3 bytes at `p` as four f32 vectors (times 2^-120), vector `v` holding bytes
/// `4k + o` of each 32-byte half (`o = [0, 2, 1, 3][v]`): the 256-bit decode of the AVX2
/// kernel in both halves at once. An arithmetic shift right by 4 puts a 16-bit lane's upper
/// byte's exponent and mantissa into BF16's fields with its sign smeared above them; the lower
/// byte gets the same after a shift left by 8. A 32-bit lane's upper BF16 is then an f32 once
/// masked (`fields`), its lower one after a shift by 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn e4m3x64(p: *const u8, fields: __m512i) -> [__m512; 4] {
    let raw = _mm512_loadu_si512(p.cast());
    let upper = _mm512_srai_epi16(raw, 4);
    let lower = _mm512_srai_epi16(_mm512_slli_epi16(raw, 8), 4);
    [
        _mm512_slli_epi32(lower, 16),
        lower,
        _mm512_slli_epi32(upper, 16),
        upper,
    ]
    .map(|w| _mm512_castsi512_ps(_mm512_and_si512(w, fields)))
}

/// FP4 row, `x` in [`super::InputOrder::Fp4`]: a run of four groups per step, one per 128-bit
/// lane, decoded as in the AVX2 kernel (each code looked up as the two bytes of its BF16 value,
/// the byte pairs unpacked into f32). Sixteen groups' multipliers are decoded at once, and
/// each step's four lane sums are scaled into the total by one FMA.
///
/// # Safety
/// The CPU must have AVX-512 F and BW ([`super::has_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_fp4_row(packed: &[u8], x: &[f32], scales: Scales) -> f32 {
    let groups = x.len() / 32;
    let runs = groups / 4 * 4;
    let low = _mm512_broadcast_i32x4(_mm_loadu_si128(E2M1_BF16_LOW.as_ptr().cast()));
    let high = _mm512_broadcast_i32x4(_mm_loadu_si128(E2M1_BF16_HIGH.as_ptr().cast()));
    let nibble = _mm512_set1_epi8(0x0F);
    let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    // The lane sums of groups g..g + 4 (unscaled; g a multiple of four).
    let run = |g: usize| {
        let bytes = _mm512_loadu_si512(packed.as_ptr().add(16 * g).cast());
        let even = _mm512_and_si512(bytes, nibble);
        let odd = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
        let xs = x.as_ptr().add(32 * g);
        let mut w = [_mm512_setzero_ps(); 8];
        for (parity, codes) in [even, odd].into_iter().enumerate() {
            let lo = _mm512_shuffle_epi8(low, codes);
            let hi = _mm512_shuffle_epi8(high, codes);
            let halves = [_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi)];
            for (half, bf16) in halves.into_iter().enumerate() {
                let j = 4 * parity + 2 * half;
                w[j] = _mm512_castsi512_ps(_mm512_slli_epi32(bf16, 16));
                w[j + 1] = _mm512_castsi512_ps(_mm512_and_si512(bf16, upper));
            }
        }
        // Two product chains of four.
        let mut a = _mm512_mul_ps(w[0], _mm512_loadu_ps(xs));
        let mut b = _mm512_mul_ps(w[1], _mm512_loadu_ps(xs.add(16)));
        for j in (2..8).step_by(2) {
            a = _mm512_fmadd_ps(w[j], _mm512_loadu_ps(xs.add(16 * j)), a);
            b = _mm512_fmadd_ps(w[j + 1], _mm512_loadu_ps(xs.add(16 * j + 16)), b);
        }
        _mm512_add_ps(a, b)
    };
    // Lane quarter `l` takes the multiplier of group `p + l`.
    let spread = |m: __m512, p: i32| {
        let index = _mm512_setr_epi32(
            p,
            p,
            p,
            p,
            p + 1,
            p + 1,
            p + 1,
            p + 1,
            p + 2,
            p + 2,
            p + 2,
            p + 2,
            p + 3,
            p + 3,
            p + 3,
            p + 3,
        );
        _mm512_permutexvar_ps(index, m)
    };
    // Two running totals, so the FMAs of consecutive runs do not wait on each other.
    let (mut t0, mut t1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut g = 0;
    while g + 16 <= runs {
        let m = multipliers16(scales, g);
        t0 = _mm512_fmadd_ps(run(g), spread(m, 0), t0);
        t1 = _mm512_fmadd_ps(run(g + 4), spread(m, 4), t1);
        t0 = _mm512_fmadd_ps(run(g + 8), spread(m, 8), t0);
        t1 = _mm512_fmadd_ps(run(g + 12), spread(m, 12), t1);
        g += 16;
    }
    while g + 4 <= runs {
        let m: [f32; 4] = std::array::from_fn(|l| scales.multiplier(g + l));
        let m = _mm512_castps128_ps512(_mm_loadu_ps(m.as_ptr()));
        t0 = _mm512_fmadd_ps(run(g), spread(m, 0), t0);
        g += 4;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(t0, t1))
        + super::scalar::dot_fp4_groups(packed, x, scales, g)
}

/// The multipliers of scales `g..g + 16` (which must exist). UE8M0 bytes widen and shift
/// into f32's exponent field; byte 0 (2^-127, a subnormal) comes out of the maximum with its
/// bit pattern.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn multipliers16(scales: Scales, g: usize) -> __m512 {
    match scales {
        Scales::E8M0(bytes) => {
            let b = &bytes[g..g + 16];
            let wide = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.as_ptr().cast()));
            let bits =
                _mm512_max_epu32(_mm512_slli_epi32(wide, 23), _mm512_set1_epi32(0x0040_0000));
            _mm512_castsi512_ps(bits)
        }
        Scales::F32(bytes) => _mm512_loadu_ps(bytes[4 * g..4 * (g + 16)].as_ptr().cast()),
    }
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
