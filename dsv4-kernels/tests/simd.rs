//! The SIMD dot products and maximum of attention and sampling against their scalar twins.

mod common;

use common::{close, floats};

use dsv4_kernels::simd::{self, scalar};

#[test]
fn simd_dots_match_scalar_dots() {
    println!("AVX2+FMA in use: {}", simd::has_avx2());
    for n in [1, 7, 16, 31, 128, 1000, 1024] {
        let x = floats(n, 1);
        let a = floats(n, 2);
        let magnitude: f32 = x.iter().map(|v| v.abs()).sum::<f32>() * 448.0;
        assert!(
            close(simd::dot_f32(&a, &x), scalar::dot_f32(&a, &x), magnitude),
            "f32 {n}"
        );
        // Two rows against four vectors, and one.
        let rows = [floats(n, 20), floats(n, 21)];
        let vectors = [floats(n, 22), floats(n, 23), floats(n, 24), floats(n, 25)];
        let four = [0, 1, 2, 3].map(|r| &vectors[r][..]);
        let got = simd::dots4([&rows[0][..], &rows[1][..]], four);
        let [alone] = simd::dots4([&rows[1][..]], four);
        for (k, row) in rows.iter().enumerate() {
            for (r, v) in vectors.iter().enumerate() {
                let want = scalar::dot_f32(row, v);
                assert!(
                    close(got[k][r], want, magnitude),
                    "dots4 {n}: row {k} vector {r}"
                );
            }
        }
        assert_eq!(alone, got[1], "dots4 {n}: one row as in a pair");
    }
}

/// The SIMD maximum (greedy sampling's) agrees with the scalar one, NaN never winning.
#[test]
fn simd_maximum_matches_the_scalar_one_with_nans_and_infinities() {
    for n in [0, 1, 7, 31, 32, 33, 100, 1000, 1027] {
        let base = floats(n, 9);
        let mut cases = vec![base.clone()];
        // NaN in every lane position, including before and at the maximum.
        let mut with_nan = base.clone();
        for v in with_nan.iter_mut().step_by(3) {
            *v = f32::NAN;
        }
        cases.push(with_nan);
        cases.push(vec![f32::NAN; n]);
        cases.push(vec![f32::NEG_INFINITY; n]);
        let mut with_inf = base.clone();
        if n > 0 {
            with_inf[n / 2] = f32::INFINITY;
        }
        cases.push(with_inf);
        for (c, x) in cases.iter().enumerate() {
            let (got, want) = (simd::max_f32(x), scalar::max_f32(x));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "length {n} case {c}: {got} against {want}"
            );
            assert!(!got.is_nan(), "length {n} case {c}: NaN won");
        }
    }
}
