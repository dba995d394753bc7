//! Throughput of the packed linears in each stored format: one input row (decode) and 64 rows
//! (prefill), on shapes of the `small` preset, with the kernel set this CPU runs
//! (`DSV4_NO_AVX512=1`, `DSV4_NO_SIMD=1` choose another). Bytes are the stored weight bytes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dsv4_kernels::linear::{FloatDtype, LinearView, LinearWeight, Scales};
use dsv4_kernels::panel::Pack;

fn data(n: usize, mask: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 2_654_435_761) >> 13) as u8 & mask)
        .collect()
}

fn bench(c: &mut Criterion) {
    let (out, inp) = (4096, 1024);
    let bf16 = data(out * inp * 2, 0x3F);
    let fp8 = data(out * inp, 0x77);
    let fp8_scales = vec![120u8; out.div_ceil(128) * inp.div_ceil(128)];
    let fp4 = data(out * inp / 2, 0xFF);
    let fp4_scales = vec![120u8; out * inp / 32];
    let views = [
        (
            "bf16",
            bf16.len(),
            LinearWeight::Float {
                dtype: FloatDtype::Bf16,
                data: &bf16,
            },
        ),
        (
            "fp8",
            fp8.len() + fp8_scales.len(),
            LinearWeight::Fp8Block {
                q: &fp8,
                scales: Scales::E8M0(&fp8_scales),
            },
        ),
        (
            "fp4",
            fp4.len() + fp4_scales.len(),
            LinearWeight::Fp4Group {
                packed: &fp4,
                scales: Scales::E8M0(&fp4_scales),
            },
        ),
    ];
    let x: Vec<f32> = (0..64 * inp)
        .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
        .collect();
    let mut group = c.benchmark_group("linear 4096x1024");
    for (name, bytes, weight) in views {
        let view = LinearView { out, inp, weight };
        group.throughput(Throughput::Bytes(bytes as u64));
        let packed = view.pack().expect("packs");
        let linear = packed.linear();
        let mut y = vec![0.0; 64 * out];
        group.bench_function(format!("{name} decode (1 row)"), |b| {
            b.iter(|| linear.forward(&x[..inp], &mut y[..out]))
        });
        group.bench_function(format!("{name} prefill (64 rows)"), |b| {
            b.iter(|| linear.forward(&x, &mut y))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
