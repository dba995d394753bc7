//! The AVX-512 row kernels against their scalar twins, on the same inputs in the same layout.
//! Where this CPU has AVX-512 they run natively; elsewhere on an emulated CPU that has it
//! (see `emulated`), which CI installs; with neither the test says so and passes untested.

mod common;
mod emulated;
mod row_cases;

use common::floats;
use dsv4_kernels::simd;
use row_cases::{cases, check, Case};

/// What an emulated call receives: the cases and where their results go (`len` values).
struct Work<'a, C> {
    cases: &'a [C],
    out: *mut f32,
    len: usize,
}

/// The cases and output buffer of the `Work<C>` at `work`.
///
/// # Safety
/// `work` points to a live `Work<C>` whose output buffer nothing else uses meanwhile.
unsafe fn parts<'a, C>(work: *mut u8) -> (&'a [C], &'a mut [f32]) {
    let work = &*work.cast::<Work<'a, C>>();
    (
        work.cases,
        std::slice::from_raw_parts_mut(work.out, work.len),
    )
}

/// Runs `entry` on a `Work` of `cases` writing `len` values: natively where this CPU has
/// AVX-512, else on the emulated CPU. `None` (after saying why) when neither can run it.
fn on_avx512<C>(cases: &[C], len: usize, entry: extern "C" fn(*mut u8)) -> Option<Vec<f32>> {
    let mut got = vec![0.0f32; len];
    let mut work = Work {
        cases,
        out: got.as_mut_ptr(),
        len,
    };
    let work_ptr = (&mut work as *mut Work<C>).cast::<u8>();
    if simd::has_avx512() {
        println!("AVX-512 kernels run natively");
        entry(work_ptr);
    } else {
        let python = match emulated::emulator() {
            Ok(python) => python,
            Err(why) => {
                eprintln!("SKIPPED: no AVX-512 here and no emulator: {why}");
                return None;
            }
        };
        println!("AVX-512 kernels run on the emulated CPU");
        // SAFETY: `got` is `len` f32s, viewed as bytes only for the copy back.
        let result = unsafe { std::slice::from_raw_parts_mut(work.out.cast::<u8>(), 4 * len) };
        emulated::call(&python, entry, work_ptr, result);
    }
    Some(got)
}

/// Every row case's AVX-512 sums, in case order.
extern "C" fn row_sums(work: *mut u8) {
    // SAFETY: `work` is the `Work` of `on_avx512`, run on a CPU with AVX-512 F and BW.
    let (cases, out) = unsafe { parts::<Case>(work) };
    let mut at = 0;
    for case in cases {
        let n = case.outputs();
        // SAFETY: as above.
        unsafe { case.avx512(&mut out[at..at + n]) };
        at += n;
    }
}

#[test]
fn avx512_row_kernels_match_their_scalar_twins() {
    let cases = cases();
    let total: usize = cases.iter().map(Case::outputs).sum();
    if let Some(got) = on_avx512(&cases, total, row_sums) {
        check(&cases, &got, "AVX-512");
    }
}

/// A register tile of the blocked product: a `k × 16` panel and `m` rows of `k` inputs.
struct TileCase {
    k: usize,
    panel: Vec<f32>,
    x: Vec<f32>,
}

impl TileCase {
    fn rows(&self) -> usize {
        self.x.len() / self.k
    }
}

/// Every tile case's outputs (`rows × 16` each), in case order.
extern "C" fn tile_outputs(work: *mut u8) {
    // SAFETY: `work` is the `Work` of `on_avx512`, run on a CPU with AVX-512 F and BW.
    let (cases, out) = unsafe { parts::<TileCase>(work) };
    let mut at = 0;
    for case in cases {
        let n = 16 * case.rows();
        // SAFETY: as above; the panel is k × 16, x rows × k and the output rows × 16.
        unsafe { simd::avx512::tile(&case.panel, &case.x, case.k, &mut out[at..at + n]) };
        at += n;
    }
}

/// The AVX-512 tile, at every row count the blocked product uses, against the product in f64.
#[test]
fn avx512_tile_matches_the_product_in_f64() {
    let mut cases = Vec::new();
    for k in [1, 7, 64, 384] {
        for rows in 1..=12 {
            let panel = floats(16 * k, k as u64);
            let x = floats(rows * k, 100 + rows as u64);
            cases.push(TileCase { k, panel, x });
        }
    }
    let total: usize = cases.iter().map(|c| 16 * c.rows()).sum();
    let Some(got) = on_avx512(&cases, total, tile_outputs) else {
        return;
    };
    let mut at = 0;
    for case in &cases {
        for r in 0..case.rows() {
            for j in 0..16 {
                let terms = (0..case.k).map(|kk| {
                    f64::from(case.x[r * case.k + kk]) * f64::from(case.panel[16 * kk + j])
                });
                let (want, size) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                let g = f64::from(got[at + 16 * r + j]);
                assert!(
                    (g - want).abs() <= 1e-6 * size,
                    "k {} rows {}: output {r},{j}: AVX-512 {g} against {want}",
                    case.k,
                    case.rows()
                );
            }
        }
        at += 16 * case.rows();
    }
}
