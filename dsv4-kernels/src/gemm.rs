//! Many input rows times a stored weight (prefill, and experts with several tokens): sixteen
//! weight rows at a time are dequantized, once, into a `k × 16` panel, and every input row meets
//! the panel in register tiles of 6 rows × 16 outputs, one broadcast of `x` feeding two FMAs
//! (AVX2), or of 12 rows × 16 outputs, one broadcast per FMA (AVX-512, whose 32 registers hold
//! twelve accumulators).
//! Dequantization is exact, so only the order of the f32 sums differs from a plain product.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use crate::linear::LinearView;
use crate::simd::{has_avx2, has_avx512};

/// Outputs per panel: two AVX2 vectors, or one AVX-512 vector.
const PANEL: usize = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(PANEL == crate::simd::avx512::TILE_WIDTH);
/// Input rows per register tile: 6 × 2 accumulators leave registers for the panel and `x`.
const TILE_ROWS: usize = 6;
/// Input rows per register tile with AVX-512: one accumulator each, and twelve independent
/// FMA chains per panel line.
const WIDE_TILE_ROWS: usize = 12;

thread_local! {
    /// Each worker's panel and row buffers, kept between calls so prefill does not allocate
    /// (and fault in) a fresh panel per task. Never borrowed across a parallel call.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y` (`n × rows.len()`) shared by tasks that each write their own panel's columns.
struct SharedOutput {
    ptr: *mut f32,
    width: usize,
}

// SAFETY: tasks write disjoint column ranges (one panel each) of rows inside the slice the
// pointer came from, and the slice outlives the parallel call.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// Writes `values` at row `t`, columns `first..first + values.len()`.
    ///
    /// SAFETY: the columns belong to the caller's panel and lie inside the row.
    unsafe fn write(&self, t: usize, first: usize, values: &[f32]) {
        let dst = self.ptr.add(t * self.width + first);
        std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len());
    }
}

/// `y[t] = W[rows] x[t]` for every row `t` of `x` (`n × inp`), into `y` (`n × rows.len()`).
pub(crate) fn matmul(w: &LinearView, rows: Range<usize>, x: &[f32], y: &mut [f32]) {
    let k = w.inp;
    let n = x.len() / k;
    let width = rows.len();
    assert!(y.len() >= n * width, "output holds {n} x {width} values");
    let out = SharedOutput {
        ptr: y.as_mut_ptr(),
        width,
    };
    (0..width.div_ceil(PANEL)).into_par_iter().for_each(|p| {
        let first = p * PANEL;
        let count = (width - first).min(PANEL);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.resize(k * (PANEL + 1), 0.0);
            let (panel, row) = scratch.split_at_mut(k * PANEL);
            pack_panel(w, rows.start + first, count, row, panel);
            let tile_rows = if has_avx512() {
                WIDE_TILE_ROWS
            } else {
                TILE_ROWS
            };
            let mut tile = [0.0f32; WIDE_TILE_ROWS * PANEL];
            for t in (0..n).step_by(tile_rows) {
                let m = (n - t).min(tile_rows);
                multiply_tile(panel, &x[t * k..(t + m) * k], &mut tile[..m * PANEL]);
                for (r, values) in tile[..m * PANEL].chunks(PANEL).enumerate() {
                    // SAFETY: columns first..first + count are this task's panel.
                    unsafe { out.write(t + r, first, &values[..count]) };
                }
            }
        });
    });
}

/// Weight rows `first..first + count` as a `k × 16` panel (column `j` = row `first + j`;
/// columns past `count` are zero).
fn pack_panel(w: &LinearView, first: usize, count: usize, row: &mut [f32], panel: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && w.inp.is_multiple_of(16) {
        // SAFETY: AVX-512 F and BW were detected; rows first..first + count exist, k is a
        // multiple of 16 and the panel holds k × 16 values.
        unsafe { crate::simd::avx512::pack_panel(w, first, count, panel) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && w.inp.is_multiple_of(8) {
        // SAFETY: AVX2 and FMA were detected; rows first..first + count exist, k is a
        // multiple of 8 and the panel holds k × 16 values.
        unsafe { avx2::pack_panel(w, first, count, panel) };
        return;
    }
    for j in 0..PANEL {
        if j < count {
            w.row(first + j, row);
        } else {
            row.fill(0.0);
        }
        for (dst, &v) in panel.iter_mut().skip(j).step_by(PANEL).zip(row.iter()) {
            *dst = v;
        }
    }
}

/// `tile[r][j] = Σₖ x[r][k] · panel[k][j]` for the `m` rows of `x` (at most 12 with AVX-512,
/// 6 otherwise).
fn multiply_tile(panel: &[f32], x: &[f32], tile: &mut [f32]) {
    let k = panel.len() / PANEL;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512 F and BW were detected; `x` holds m ≤ 12 rows of k values, `tile`
        // m × 16.
        unsafe { crate::simd::avx512::tile(panel, x, k, tile) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected; `x` holds m rows of k values, `tile` m × 16.
        unsafe {
            match tile.len() / PANEL {
                1 => avx2::tile::<1>(panel, x, k, tile),
                2 => avx2::tile::<2>(panel, x, k, tile),
                3 => avx2::tile::<3>(panel, x, k, tile),
                4 => avx2::tile::<4>(panel, x, k, tile),
                5 => avx2::tile::<5>(panel, x, k, tile),
                _ => avx2::tile::<6>(panel, x, k, tile),
            }
        }
        return;
    }
    for (xr, out) in x.chunks(k).zip(tile.chunks_mut(PANEL)) {
        out.fill(0.0);
        for (&xv, wk) in xr.iter().zip(panel.chunks(PANEL)) {
            for (o, &wv) in out.iter_mut().zip(wk) {
                *o += wv * xv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PANEL;
    use crate::formats::E2M1_VALUES;
    use crate::linear::{FloatDtype, LinearView, LinearWeight};
    use crate::simd::avx2::e4m3x8;
    use crate::simd::E4M3_RESCALE;

    /// Packs the panel eight rows × eight inputs at a time: each row's eight values are decoded
    /// straight from storage into a register, the 8 × 8 block is transposed in registers and
    /// stored as eight panel lines. The format is matched once per panel, so the packing loop
    /// holds only its own format's decoding.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack_panel(w: &LinearView, first: usize, count: usize, panel: &mut [f32]) {
        let k = w.inp;
        // Where input `kk` of panel row `r` sits in the stored matrix, in values.
        let offset = |r: usize, kk: usize| (first + r) * k + kk;
        match w.weight {
            LinearWeight::Float { dtype, data } => match dtype {
                FloatDtype::F32 => pack_rows(k, count, panel, |r, kk| {
                    let at = offset(r, kk);
                    _mm256_loadu_ps(data[4 * at..4 * (at + 8)].as_ptr().cast())
                }),
                FloatDtype::Bf16 => pack_rows(k, count, panel, |r, kk| {
                    let at = offset(r, kk);
                    let raw = _mm_loadu_si128(data[2 * at..2 * (at + 8)].as_ptr().cast());
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
                }),
                FloatDtype::F16 => pack_rows(k, count, panel, |r, kk| {
                    let at = offset(r, kk);
                    _mm256_cvtph_ps(_mm_loadu_si128(data[2 * at..2 * (at + 8)].as_ptr().cast()))
                }),
            },
            LinearWeight::Fp8Block { q, scales } => {
                let cols = k.div_ceil(128);
                pack_rows(k, count, panel, |r, kk| {
                    let s = scales.multiplier(((first + r) / 128) * cols + kk / 128);
                    let at = offset(r, kk);
                    let codes = &q[at..at + 8];
                    _mm256_mul_ps(e4m3x8(codes.as_ptr()), _mm256_set1_ps(s * E4M3_RESCALE))
                })
            }
            LinearWeight::Fp4Group { packed, scales } => {
                let magnitudes = _mm256_loadu_ps(E2M1_VALUES.as_ptr());
                let shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
                pack_rows(k, count, panel, |r, kk| {
                    let at = offset(r, kk);
                    let s = scales.multiplier(at / 32);
                    // One bounds check, so the four bytes come in one 32-bit load.
                    let b = &packed[at / 2..at / 2 + 4];
                    let word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    // Each byte twice, shifted so lane i holds code i in its low four bits.
                    let bytes = _mm_cvtsi32_si128(word as i32);
                    let wide = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
                    let codes = _mm256_srlv_epi32(wide, shifts);
                    let magnitude = _mm256_permutevar8x32_ps(magnitudes, codes);
                    let sign =
                        _mm256_and_si256(_mm256_slli_epi32(codes, 28), _mm256_set1_epi32(i32::MIN));
                    let value = _mm256_xor_ps(magnitude, _mm256_castsi256_ps(sign));
                    _mm256_mul_ps(value, _mm256_set1_ps(s))
                })
            }
        }
    }

    /// The packing loop of [`pack_panel`] for panel rows `0..count` (the rest zero), with
    /// `decode8(r, kk)` giving inputs `kk..kk + 8` of panel row `r` as f32, exactly (`kk` a
    /// multiple of 8, so one scale covers them).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_rows(
        k: usize,
        count: usize,
        panel: &mut [f32],
        decode8: impl Fn(usize, usize) -> __m256,
    ) {
        for half in 0..PANEL / 8 {
            for kk in (0..k).step_by(8) {
                let mut block = [_mm256_setzero_ps(); 8];
                for (j, v) in block.iter_mut().enumerate() {
                    let r = half * 8 + j;
                    if r < count {
                        *v = decode8(r, kk);
                    }
                }
                let lines = transpose8(block);
                for (i, line) in lines.iter().enumerate() {
                    _mm256_storeu_ps(panel.as_mut_ptr().add((kk + i) * PANEL + half * 8), *line);
                }
            }
        }
    }

    /// The transpose of an 8 × 8 block held as eight rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// `M` rows of `x` against the panel, all 2·M accumulators in registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const M: usize>(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        let (p, xp) = (panel.as_ptr(), x.as_ptr());
        for kk in 0..k {
            let w0 = _mm256_loadu_ps(p.add(PANEL * kk));
            let w1 = _mm256_loadu_ps(p.add(PANEL * kk + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*xp.add(r * k + kk));
                a[0] = _mm256_fmadd_ps(w0, xv, a[0]);
                a[1] = _mm256_fmadd_ps(w1, xv, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(PANEL * r), a[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(PANEL * r + 8), a[1]);
        }
    }
}
