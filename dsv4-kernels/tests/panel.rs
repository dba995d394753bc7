//! The packed product of every kernel set this CPU runs, for every stored format and odd shapes:
//! each output bit for bit what the order the `panel` module documents gives (written out here
//! plainly from the stored bytes, with `formats`' decoders, which are tested against ml_dtypes),
//! that order within f32 rounding of a product in f64, and a row's output the same alone, inside
//! 1..=33 rows, and whatever the thread count.

mod common;
mod packed_cases;

use common::{assert_bits_eq, floats};
use packed_cases::{cases, check_reference_in_f64, inputs, reference, Format, Stored};

use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};
use dsv4_kernels::panel::Pack;
use dsv4_kernels::simd::KernelSet;

#[test]
fn every_kernel_set_computes_the_documented_order_bit_for_bit() {
    let sets = KernelSet::available();
    println!("kernel sets here: {sets:?}");
    for case in cases() {
        let view = case.view();
        let n = 13;
        let x = inputs(&case, n);
        let want = reference(&view, &x);
        check_reference_in_f64(&view, &x, &want, &case.label);
        for &set in &sets {
            let packed = view.pack_for(set).expect("packs");
            let mut got = vec![f32::NAN; n * case.out];
            packed.linear().forward(&x, &mut got);
            assert_bits_eq(&got, &want, &format!("{} on {set:?}", case.label));
        }
    }
}

#[test]
fn a_row_gets_the_same_bits_alone_in_any_batch_and_on_any_thread_count() {
    let pools: Vec<rayon::ThreadPool> = [1, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .expect("pool")
        })
        .collect();
    for case in cases() {
        let view = case.view();
        let x = inputs(&case, 33);
        let inp = case.inp;
        for set in KernelSet::available() {
            let packed = view.pack_for(set).expect("packs");
            let linear = packed.linear();
            // Each row alone (a decode step), on one thread.
            let alone: Vec<f32> = pools[0].install(|| {
                x.chunks(inp)
                    .flat_map(|xr| {
                        let mut y = vec![f32::NAN; case.out];
                        linear.forward(xr, &mut y);
                        y
                    })
                    .collect()
            });
            for n in 1..=33 {
                for (p, pool) in pools.iter().enumerate() {
                    // Rows from an offset, so a row sits at every place of a tile.
                    let start = (n * 7 + p) % (34 - n);
                    let rows = &x[start * inp..(start + n) * inp];
                    let mut y = vec![f32::NAN; n * case.out];
                    pool.install(|| linear.forward(rows, &mut y));
                    assert_bits_eq(
                        &y,
                        &alone[start * case.out..(start + n) * case.out],
                        &format!("{} on {set:?}, rows {start}..{}", case.label, start + n),
                    );
                }
            }
        }
    }
}

#[test]
fn packing_refuses_short_buffers_and_ragged_fp4_rows() {
    let case = Stored::new(Format::Fp8(false), 17, 200, 9);
    let mut short = case.view();
    if let LinearWeight::Fp8Block { q, scales } = short.weight {
        short.weight = LinearWeight::Fp8Block {
            q: &q[..q.len() - 1],
            scales,
        };
    }
    assert!(short.pack().is_err());
    let spec = case.view().packed_spec();
    assert!(case
        .view()
        .pack_into(&spec, &mut vec![0; spec.len() + 1])
        .is_err());
    let fp4 = Stored::new(Format::Fp4(false), 2, 64, 3);
    let ragged = LinearView {
        inp: 48,
        ..fp4.view()
    };
    assert!(ragged.pack().is_err());
}

/// Every UE8M0 scale byte but the NaN byte, 0 (2^-127, a subnormal) and 254 (2^127) included,
/// scales a block by exactly its power of two, for FP8 and FP4, in every kernel set: one weight
/// of value 1 in the block against an input of 1.
#[test]
fn every_scale_byte_multiplies_exactly() {
    let one_fp8 = 0x38u8; // E4M3 1.0
    let one_fp4 = 0x02u8; // E2M1 1.0 in the low nibble
    for set in KernelSet::available() {
        for b in 0..=254u8 {
            let want = dsv4_kernels::formats::e8m0_to_f32(b).expect("not NaN");
            let mut q = vec![0u8; 128];
            q[0] = one_fp8;
            let scale = [b];
            let fp8 = LinearView {
                out: 1,
                inp: 128,
                weight: LinearWeight::Fp8Block {
                    q: &q,
                    scales: Scales::E8M0(&scale),
                },
            };
            let mut packed = vec![0u8; 16];
            packed[0] = one_fp4;
            let fp4 = LinearView {
                out: 1,
                inp: 32,
                weight: LinearWeight::Fp4Group {
                    packed: &packed,
                    scales: Scales::E8M0(&scale),
                },
            };
            for view in [fp8, fp4] {
                let mut x = vec![0.0f32; view.inp];
                x[0] = 1.0;
                let mut y = [f32::NAN];
                view.pack_for(set)
                    .expect("packs")
                    .linear()
                    .forward(&x, &mut y);
                assert_eq!(y[0].to_bits(), want.to_bits(), "byte {b} on {set:?}");
            }
        }
    }
}

/// An E4M3 NaN byte (0x7F or 0xFF) makes its row's output NaN, as the reference (and torch,
/// which reads those bytes as NaN) gives, in every kernel set, alone or among rows, with either
/// kind of scale; every other row keeps its exact value.
#[test]
fn e4m3_nan_bytes_give_nan_rows() {
    let (out, inp) = (37, 300);
    let mut q: Vec<u8> = (0..out * inp)
        .map(|i| ((i * 37) % 0x7E) as u8 | if i % 3 == 0 { 0x80 } else { 0 })
        .collect();
    q[3 * inp + 5] = 0x7F;
    q[20 * inp + inp - 1] = 0xFF; // in the ragged last block
    q[36 * inp + 128] = 0x7F; // the last row, first input of a block
    let blocks = out.div_ceil(128) * inp.div_ceil(128);
    let e8m0: Vec<u8> = (0..blocks).map(|i| 120 + i as u8).collect();
    let f32s: Vec<u8> = (0..blocks)
        .flat_map(|i| (0.5 + i as f32).to_le_bytes())
        .collect();
    for scales in [Scales::E8M0(&e8m0), Scales::F32(&f32s)] {
        let view = LinearView {
            out,
            inp,
            weight: LinearWeight::Fp8Block { q: &q, scales },
        };
        for n in [1, 13] {
            let x = floats(n * inp, 9);
            let want = reference(&view, &x);
            for set in KernelSet::available() {
                let mut got = vec![0.0f32; n * out];
                view.pack_for(set)
                    .expect("packs")
                    .linear()
                    .forward(&x, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let row = i % out;
                    let nan_row = [3, 20, 36].contains(&row);
                    assert_eq!(w.is_nan(), nan_row, "reference, output {i}");
                    if nan_row {
                        assert!(g.is_nan(), "output {i} on {set:?} is {g}, not NaN");
                    } else {
                        assert_eq!(g.to_bits(), w.to_bits(), "output {i} on {set:?}");
                    }
                }
            }
        }
    }
}

/// Weights packed from f32 values at run time compute what the same values stored as F32 bytes
/// and packed at load do.
#[test]
fn run_time_f32_packing_equals_stored_packing() {
    for &(out, inp) in &[(1, 1), (8, 64), (37, 129)] {
        let values = floats(out * inp, 77);
        let stored: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = LinearView {
            out,
            inp,
            weight: LinearWeight::Float {
                dtype: FloatDtype::F32,
                data: &stored,
            },
        };
        let x = floats(3 * inp, 78);
        let (mut a, mut b) = (vec![0.0; 3 * out], vec![0.0; 3 * out]);
        view.pack().expect("packs").linear().forward(&x, &mut a);
        let mut run_time = dsv4_kernels::panel::PackedWeights::default();
        run_time.repack_f32(&values, out, inp).forward(&x, &mut b);
        assert_bits_eq(&b, &a, &format!("{out}x{inp}"));
    }
}
