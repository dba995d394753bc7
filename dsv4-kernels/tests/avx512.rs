//! The AVX-512 kernels: the row kernels against their scalar twins on the same inputs in the
//! same layout, the blocked product's tile and attention's kernels against sums in f64, and the
//! panel packing against the exact row decode, bit for bit.
//! Where this CPU has AVX-512 they run natively; elsewhere on an emulated CPU that has it
//! (see `emulated`), which CI installs; with neither the test says so and passes untested.

mod common;
mod emulated;
mod row_cases;

use common::{bytes, e4m3_bytes, floats};
use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};
use dsv4_kernels::simd;
use dsv4_kernels::simd::scalar;
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

impl Avx512Case for Case {
    fn outputs(&self) -> usize {
        Case::outputs(self)
    }

    unsafe fn avx512(&self, out: &mut [f32]) {
        Case::avx512(self, out)
    }
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

#[test]
fn avx512_row_kernels_match_their_scalar_twins() {
    let cases = cases();
    if let Some(got) = on_avx512(&cases) {
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

impl Avx512Case for TileCase {
    fn outputs(&self) -> usize {
        16 * self.rows()
    }

    unsafe fn avx512(&self, out: &mut [f32]) {
        simd::avx512::tile(&self.panel, &self.x, self.k, out)
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
    let Some(got) = on_avx512(&cases) else {
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

/// One panel packed from a stored weight (which the case owns): rows `first..first + count`.
struct PackCase {
    label: &'static str,
    out: usize,
    inp: usize,
    data: Vec<u8>,
    scales: Vec<u8>,
    first: usize,
    count: usize,
}

impl PackCase {
    /// The stored weight, its format named by the label.
    fn view(&self) -> LinearView<'_> {
        let weight = match self.label {
            "f32" | "bf16" | "f16" => LinearWeight::Float {
                dtype: match self.label {
                    "f32" => FloatDtype::F32,
                    "bf16" => FloatDtype::Bf16,
                    _ => FloatDtype::F16,
                },
                data: &self.data,
            },
            "fp8" => LinearWeight::Fp8Block {
                q: &self.data,
                scales: Scales::E8M0(&self.scales),
            },
            "fp8 with f32 scales" => LinearWeight::Fp8Block {
                q: &self.data,
                scales: Scales::F32(&self.scales),
            },
            _ => LinearWeight::Fp4Group {
                packed: &self.data,
                scales: Scales::E8M0(&self.scales),
            },
        };
        LinearView {
            out: self.out,
            inp: self.inp,
            weight,
        }
    }

    /// The panel from the exact row decode: column `j` is row `first + j`, zero past `count`.
    fn reference(&self) -> Vec<f32> {
        let view = self.view();
        let mut panel = vec![0.0f32; 16 * self.inp];
        let mut row = vec![0.0f32; self.inp];
        for j in 0..self.count {
            view.row(self.first + j, &mut row);
            for (kk, &v) in row.iter().enumerate() {
                panel[16 * kk + j] = v;
            }
        }
        panel
    }
}

impl Avx512Case for PackCase {
    fn outputs(&self) -> usize {
        16 * self.inp
    }

    unsafe fn avx512(&self, out: &mut [f32]) {
        simd::avx512::pack_panel(&self.view(), self.first, self.count, out)
    }
}

/// The AVX-512 panel packing of every stored format equals the exact row decode bit for bit,
/// for whole panels, a short last one and one that starts between panels.
#[test]
fn avx512_panel_packing_equals_the_exact_decode() {
    let (out, inp) = (40, 256);
    let formats: [(&str, Vec<u8>, Vec<u8>); 6] = [
        (
            "f32",
            floats(out * inp, 1)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            Vec::new(),
        ),
        (
            "bf16",
            bytes(2 * out * inp, 2)
                .chunks(2)
                .flat_map(|c| [c[0], c[1] & 0xBF])
                .collect(),
            Vec::new(),
        ),
        (
            "f16",
            bytes(2 * out * inp, 3)
                .chunks(2)
                .flat_map(|c| [c[0], c[1] & 0xBB])
                .collect(),
            Vec::new(),
        ),
        ("fp8", e4m3_bytes(out * inp, 4), vec![121, 126]),
        (
            "fp8 with f32 scales",
            e4m3_bytes(out * inp, 5),
            [0.375f32, 3.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "fp4",
            bytes(out * inp / 2, 6),
            bytes(out * inp / 32, 7)
                .iter()
                .map(|b| 118 + b % 9)
                .collect(),
        ),
    ];
    let mut cases = Vec::new();
    for (label, data, scales) in formats {
        for (first, count) in [(0, 16), (16, 16), (32, 8), (5, 11)] {
            cases.push(PackCase {
                label,
                out,
                inp,
                data: data.clone(),
                scales: scales.clone(),
                first,
                count,
            });
        }
    }
    let Some(got) = on_avx512(&cases) else {
        return;
    };
    let mut at = 0;
    for case in &cases {
        let want = case.reference();
        for (i, (g, w)) in got[at..at + want.len()].iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} rows {}..{}: input {} column {}: AVX-512 {g} against {w}",
                case.label,
                case.first,
                case.first + case.count,
                i / 16,
                i % 16
            );
        }
        at += want.len();
    }
}
