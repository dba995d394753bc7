//! The AVX-512 kernels: the packed products of every stored format bit for bit against the order
//! the `panel` module documents (as every kernel set must give it), and attention's kernels
//! against sums in f64.
//! Where this CPU has AVX-512 they run natively; elsewhere on an emulated CPU that has it
//! (see `emulated`), which CI installs; with neither the test says so and passes untested.

mod common;
mod emulated;
mod packed_cases;

use common::{assert_bits_eq, floats};
use dsv4_kernels::panel::{Pack, PackedWeights};
use dsv4_kernels::simd::{self, scalar, KernelSet};
use packed_cases::{cases, inputs, reference};

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

/// A case whose AVX-512 results fill a slice of their own.
trait Avx512Case {
    /// How many values its results take.
    fn outputs(&self) -> usize;

    /// Its AVX-512 results, without allocating (so they can be run on the emulated CPU).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BW.
    unsafe fn avx512(&self, out: &mut [f32]);
}

/// Every case's AVX-512 results, in case order, for the `Work` at `work`.
extern "C" fn run_cases<C: Avx512Case>(work: *mut u8) {
    // SAFETY: `work` is the `Work` of `on_avx512`, run on a CPU with AVX-512 F and BW.
    let (cases, out) = unsafe { parts::<C>(work) };
    let mut at = 0;
    for case in cases {
        let n = case.outputs();
        // SAFETY: as above.
        unsafe { case.avx512(&mut out[at..at + n]) };
        at += n;
    }
}

/// Every case's AVX-512 results, in case order: computed natively where this CPU has AVX-512,
/// else on the emulated CPU. `None` (after saying why) when neither can run them.
fn on_avx512<C: Avx512Case>(cases: &[C]) -> Option<Vec<f32>> {
    let len = cases.iter().map(C::outputs).sum();
    let mut got = vec![0.0f32; len];
    let mut work = Work {
        cases,
        out: got.as_mut_ptr(),
        len,
    };
    let work_ptr = (&mut work as *mut Work<C>).cast::<u8>();
    if simd::has_avx512() {
        println!("AVX-512 kernels run natively");
        run_cases::<C>(work_ptr);
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
        emulated::call(&python, run_cases::<C>, work_ptr, result);
    }
    Some(got)
}

/// A product of weights packed for the AVX-512 set with `rows` rows of input.
struct ProductCase {
    label: String,
    packed: PackedWeights,
    x: Vec<f32>,
    outputs: usize,
}

impl Avx512Case for ProductCase {
    fn outputs(&self) -> usize {
        self.outputs
    }

    unsafe fn avx512(&self, out: &mut [f32]) {
        self.packed.linear().forward_on_this_thread(&self.x, out);
    }
}

/// The packed products of every format and odd shape, one input row (decode's tiles of eight
/// groups) and thirteen (a twelve-row tile and a one-row one), equal the documented order bit
/// for bit.
#[test]
fn avx512_products_compute_the_documented_order_bit_for_bit() {
    let mut products = Vec::new();
    let mut wanted = Vec::new();
    for case in cases() {
        for rows in [1, 13] {
            let x = inputs(&case, rows);
            wanted.push(reference(&case.view(), &x));
            products.push(ProductCase {
                label: format!("{} x {rows} rows", case.label),
                packed: case.view().pack_for(KernelSet::Avx512).expect("packs"),
                x,
                outputs: rows * case.out,
            });
        }
    }
    if let Some(got) = on_avx512(&products) {
        let mut at = 0;
        for (product, want) in products.iter().zip(&wanted) {
            assert_bits_eq(&got[at..at + product.outputs], want, &product.label);
            at += product.outputs;
        }
    }
}

/// Attention's kernels on `n` keys of width `d`: four queries, and weights for five heads (one
/// four-head pass and a remainder head); and the maximum of values with NaN and infinities.
struct AttentionCase {
    d: usize,
    n: usize,
    keys: Vec<f32>,
    queries: Vec<f32>,
    weights: Vec<f32>,
    spiky: Vec<f32>,
}

impl AttentionCase {
    fn key(&self, j: usize) -> &[f32] {
        &self.keys[j * self.d..(j + 1) * self.d]
    }

    fn query(&self, h: usize) -> &[f32] {
        &self.queries[h * self.d..(h + 1) * self.d]
    }

    /// Each output's value in f64 and the Σ|terms| that bounds its rounding (0 for the maximum,
    /// which must be exact), in the order of the AVX-512 outputs.
    fn reference(&self) -> Vec<(f64, f64)> {
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()))
        };
        let mut out = vec![dot(self.key(0), self.query(0))];
        for j in [0, 1, 1] {
            out.extend((0..4).map(|h| dot(self.key(j), self.query(h))));
        }
        for h in 0..5 {
            let w = &self.weights[h * self.n..(h + 1) * self.n];
            for i in 0..self.d {
                let column: Vec<f32> = (0..self.n).map(|j| self.key(j)[i]).collect();
                out.push(dot(w, &column));
            }
        }
        out.push((f64::from(scalar::max_f32(&self.spiky)), 0.0));
        out
    }
}

impl Avx512Case for AttentionCase {
    /// One dot, two keys then one against four queries, five heads' weighted sums, and the
    /// maximum of the spiky values.
    fn outputs(&self) -> usize {
        1 + 8 + 4 + 5 * self.d + 1
    }

    unsafe fn avx512(&self, out: &mut [f32]) {
        let four = [self.query(0), self.query(1), self.query(2), self.query(3)];
        out[0] = simd::avx512::dot_f32_at(self.key(0).as_ptr(), self.query(0));
        let pair = simd::avx512::dots4([self.key(0), self.key(1)], four);
        out[1..9].copy_from_slice(pair.as_flattened());
        let [one] = simd::avx512::dots4([self.key(1)], four);
        out[9..13].copy_from_slice(&one);
        let (d, n) = (self.d, self.n);
        let (sums, rest) = out[13..].split_at_mut(5 * d);
        let (four_sums, fifth) = sums.split_at_mut(4 * d);
        let mut heads = four_sums.chunks_mut(d);
        let heads = [0; 4].map(|_| heads.next().unwrap_or_default());
        let w = |h: usize| &self.weights[h * n..(h + 1) * n];
        simd::avx512::weighted_sum4(|j| self.key(j), [w(0), w(1), w(2), w(3)], heads);
        simd::avx512::weighted_sum(|j| self.key(j), w(4), fifth);
        rest[0] = simd::avx512::max_f32(&self.spiky);
    }
}

/// Attention's AVX-512 kernels at widths with and without whole vectors, against f64 sums; the
/// maximum exactly, with NaN (which must never win) and infinities among the keys.
#[test]
fn avx512_attention_kernels_match_sums_in_f64() {
    let mut cases = Vec::new();
    for (d, n) in [
        (1, 2),
        (15, 3),
        (16, 2),
        (33, 5),
        (128, 7),
        (200, 4),
        (512, 9),
    ] {
        let keys = floats(n * d, 40 + d as u64);
        let mut spiky = keys.clone();
        for (i, v) in spiky.iter_mut().enumerate().step_by(7) {
            *v = if i.is_multiple_of(2) {
                f32::NAN
            } else {
                -f32::INFINITY
            };
        }
        if d == 200 {
            spiky[500] = f32::INFINITY;
        }
        let queries = floats(4 * d, 50 + d as u64);
        let weights = floats(5 * n, 60 + n as u64);
        cases.push(AttentionCase {
            d,
            n,
            keys,
            queries,
            weights,
            spiky,
        });
    }
    let Some(got) = on_avx512(&cases) else {
        return;
    };
    let mut at = 0;
    for case in &cases {
        for (k, (want, size)) in case.reference().into_iter().enumerate() {
            let g = got[at + k];
            let ok = if size == 0.0 {
                g.to_bits() == (want as f32).to_bits()
            } else {
                (f64::from(g) - want).abs() <= 1e-6 * size
            };
            assert!(
                ok,
                "d {} n {} output {k}: AVX-512 {g} against {want}",
                case.d, case.n
            );
        }
        at += case.outputs();
    }
}
