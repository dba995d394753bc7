//! The AVX-512 row kernels against their scalar twins, on the same inputs in the same layout.
//! Where this CPU has AVX-512 they run natively; elsewhere on an emulated CPU that has it
//! (see `emulated`), which CI installs; with neither the test says so and passes untested.

mod common;
mod emulated;
mod row_cases;

use dsv4_kernels::simd;
use row_cases::{cases, check, Case};

/// What the emulated call receives: the cases and where their sums go (`len` values).
struct Work<'a> {
    cases: &'a [Case],
    out: *mut f32,
    len: usize,
}

/// Every case's AVX-512 sums into `work.out`, in case order.
extern "C" fn run_avx512(work: *mut u8) {
    // SAFETY: `work` is the `Work` passed to the emulated call, whose CPU has AVX-512 F and
    // BW (or this CPU, when `has_avx512` said so).
    let work = unsafe { &*work.cast::<Work>() };
    // SAFETY: `out` is a live buffer of `len` values that nothing else uses during the call.
    let out = unsafe { std::slice::from_raw_parts_mut(work.out, work.len) };
    let mut at = 0;
    for case in work.cases {
        let n = case.outputs();
        // SAFETY: as above, the CPU has AVX-512 F and BW.
        unsafe { case.avx512(&mut out[at..at + n]) };
        at += n;
    }
}

#[test]
fn avx512_row_kernels_match_their_scalar_twins() {
    let cases = cases();
    let total: usize = cases.iter().map(Case::outputs).sum();
    let mut got = vec![0.0f32; total];
    let mut work = Work {
        cases: &cases,
        out: got.as_mut_ptr(),
        len: total,
    };
    let work_ptr = (&mut work as *mut Work).cast::<u8>();
    if simd::has_avx512() {
        println!("AVX-512 kernels run natively");
        run_avx512(work_ptr);
    } else {
        let python = match emulated::emulator() {
            Ok(python) => python,
            Err(why) => {
                eprintln!("SKIPPED: no AVX-512 here and no emulator: {why}");
                return;
            }
        };
        println!("AVX-512 kernels run on the emulated CPU");
        // SAFETY: `got` is `total` f32s, viewed as bytes only for the copy back.
        let result = unsafe { std::slice::from_raw_parts_mut(work.out.cast::<u8>(), 4 * total) };
        emulated::call(&python, run_avx512, work_ptr, result);
    }
    check(&cases, &got, "AVX-512");
}
