//! The dot products, weighted sums and maximum of attention and sampling in 512-bit vectors
//! (AVX-512 F and BW), chosen at run time where the CPU has them.

use std::arch::x86_64::*;

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
