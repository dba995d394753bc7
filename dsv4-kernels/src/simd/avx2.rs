//! The AVX2+FMA versions of the vector kernels (their AVX-512 twins are in `avx512.rs`).

use std::arch::x86_64::*;

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// [`super::scalar::max_f32`] in four running maxima of eight lanes. `max(v, m)` returns
/// `m` unless `v > m`, so NaN never wins here either.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn max_f32(x: &[f32]) -> f32 {
    let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    while i + 32 <= x.len() {
        for (k, m) in m.iter_mut().enumerate() {
            *m = _mm256_max_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8 * k)), *m);
        }
        i += 32;
    }
    let v = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    let lanes = super::scalar::max_f32(&lanes);
    let rest = super::scalar::max_f32(&x[i..]);
    if rest > lanes {
        rest
    } else {
        lanes
    }
}

/// Σ a·b; lengths are equal.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_at(a.as_ptr(), b)
}

/// Σ a·b for `b.len()` values of `a` from `a`, which need not be aligned.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_at(a: *const f32, b: &[f32]) -> f32 {
    let n = b.len();
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc0,
        );
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.add(i + 8)),
            _mm256_loadu_ps(b.as_ptr().add(i + 8)),
            acc1,
        );
        i += 16;
    }
    let mut sum = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        sum += a.add(i).read_unaligned() * b[i];
        i += 1;
    }
    sum
}

/// `wₖ · xᵣ` for `K` rows against four vectors at once: each load feeds several FMAs, and
/// the `4K` accumulators are independent chains (with one row, four chains cannot cover the
/// FMA latency; with two, eight can).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dots4<const K: usize>(w: [&[f32]; K], x: [&[f32]; 4]) -> [[f32; 4]; K] {
    let n = w.first().map_or(0, |r| r.len());
    let mut acc = [[_mm256_setzero_ps(); 4]; K];
    let mut i = 0;
    while i + 8 <= n {
        let xs = x.map(|r| _mm256_loadu_ps(r.as_ptr().add(i)));
        for (a, row) in acc.iter_mut().zip(w) {
            let wv = _mm256_loadu_ps(row.as_ptr().add(i));
            for (a, xv) in a.iter_mut().zip(xs) {
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
        }
        i += 8;
    }
    // Plain loops rather than closures over `acc`, which kept it in memory inside the
    // loop above.
    let mut out = [[0.0f32; 4]; K];
    for ((o, a), row) in out.iter_mut().zip(acc).zip(w) {
        for ((o, a), xr) in o.iter_mut().zip(a).zip(x) {
            *o = hsum(a) + super::scalar::dot_f32(&row[i..], &xr[i..n]);
        }
    }
    out
}

/// `out = Σⱼ weights[j] · row(j)`, 64 outputs at a time held in registers over all rows.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn weighted_sum<'r>(row: impl Fn(usize) -> &'r [f32], weights: &[f32], out: &mut [f32]) {
    let n = out.len();
    let mut start = 0;
    while start + 64 <= n {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, &w) in weights.iter().enumerate() {
            let wv = _mm256_set1_ps(w);
            let r = row(j)[start..start + 64].as_ptr();
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r.add(8 * i)), *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * i), *a);
        }
        start += 64;
    }
    super::scalar::weighted_sum(row, weights, &mut out[start..], start);
}

/// Four heads' weighted sums at once (`weights` and `out` four rows each): 16 outputs of
/// each head in registers, each loaded row block feeding all four heads.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn weighted_sum4<'r>(
    row: impl Fn(usize) -> &'r [f32],
    weights: [&[f32]; 4],
    mut out: [&mut [f32]; 4],
) {
    let d = out[0].len();
    let mut start = 0;
    while start + 16 <= d {
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for j in 0..weights[0].len() {
            let r = row(j)[start..start + 16].as_ptr();
            let (v0, v1) = (_mm256_loadu_ps(r), _mm256_loadu_ps(r.add(8)));
            for (a, w) in acc.iter_mut().zip(weights) {
                let wv = _mm256_set1_ps(w[j]);
                a[0] = _mm256_fmadd_ps(wv, v0, a[0]);
                a[1] = _mm256_fmadd_ps(wv, v1, a[1]);
            }
        }
        for (a, o) in acc.iter().zip(out.iter_mut()) {
            // Bounds: start + 16 <= d, every output `d` long.
            _mm256_storeu_ps(o[start..start + 16].as_mut_ptr(), a[0]);
            _mm256_storeu_ps(o[start + 8..start + 16].as_mut_ptr(), a[1]);
        }
        start += 16;
    }
    for (w, o) in weights.into_iter().zip(out) {
        super::scalar::weighted_sum(&row, w, &mut o[start..], start);
    }
}
