//! `dsv4 selftest`: every CUDA kernel against its CPU twin on random inputs, at V4-Flash's
//! widths and at odd shapes, each within its stated tolerance, printed as a table; a non-zero
//! exit on any failure. On `cuda-sim` the kernels run once under each fiber order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dsv4_cache::{CacheDtypes, IndexerCacheDtype, KvCacheDtype, DEFAULT_BLOCK_SIZE};
use dsv4_kernels::cuda::sim::{FiberOrder, SimDevice};
use dsv4_kernels::cuda::twins::run_all;
use dsv4_kernels::cuda::Gpu;
use dsv4_runtime::{Backend, CpuBackend, CudaBackend, LoadedCheckpoint, Logits, Model, Numerics};
use std::sync::Arc;

/// `--device` of `dsv4 selftest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TestDevice {
    /// The GPU, through the CUDA driver.
    Cuda,
    /// The CUDA kernels compiled for this CPU.
    CudaSim,
}

/// Flags of `dsv4 selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Where the kernels run.
    #[arg(long, value_enum)]
    device: TestDevice,
    /// Seed of the random inputs.
    #[arg(long, value_name = "S", default_value_t = 7)]
    seed: u64,
    /// Only these kernel files (repeatable; e.g. `--only linear`).
    #[arg(long, value_name = "FILE")]
    only: Vec<String>,
    /// Parity fixture directories (tests/parity/fixtures/*, each with reference.json and
    /// transformers' logits.f32) to score end to end on the device and on the CPU backend.
    #[arg(long, value_name = "DIR")]
    fixtures: Vec<PathBuf>,
}

/// The devices to test on: the GPU, or the emulation once per fiber order.
fn devices(device: TestDevice) -> Result<Vec<(String, Gpu)>> {
    match device {
        TestDevice::CudaSim => Ok(FiberOrder::CHECKED
            .into_iter()
            .map(|order| {
                let sim = SimDevice {
                    order,
                    ..SimDevice::default()
                };
                (format!("cuda-sim {order:?}"), Gpu::new(Arc::new(sim)))
            })
            .collect()),
        TestDevice::Cuda => {
            let backend = dsv4_runtime::CudaBackend::new()?;
            Ok(vec![(backend.gpu().name(), backend.gpu().clone())])
        }
    }
}

/// Runs `dsv4 selftest`.
pub fn run(args: &SelftestArgs) -> Result<()> {
    let mut failures = 0usize;
    let mut checks = 0usize;
    for (label, gpu) in devices(args.device)? {
        println!("== kernels against their CPU twins on {label}");
        println!(
            "{:<10} {:<22} {:<34} {:>10} {:>10}  ok",
            "file", "kernel", "shape", "error", "tolerance"
        );
        for (family, result) in run_all(&gpu, args.seed) {
            if !args.only.is_empty() && !args.only.iter().any(|f| f == family) {
                continue;
            }
            match result {
                Ok(list) => {
                    for c in list {
                        checks += 1;
                        let ok = c.passed();
                        failures += usize::from(!ok);
                        println!(
                            "{family:<10} {:<22} {:<34} {:>10.2e} {:>10.1e}  {}",
                            c.kernel,
                            c.shape,
                            c.error,
                            c.tolerance,
                            if ok { "yes" } else { "NO" }
                        );
                    }
                }
                Err(e) => {
                    failures += 1;
                    println!("{family:<10} failed to run: {e}");
                }
            }
        }
    }
    for dir in &args.fixtures {
        let gpu = devices(args.device)?.swap_remove(0).1;
        let (compared, ok) = fixture_parity(dir, CudaBackend::on(gpu))?;
        checks += 1;
        failures += usize::from(!ok);
        println!("{compared}");
    }
    println!("{checks} checks, {failures} failed");
    if failures > 0 {
        bail!("{failures} kernel check(s) failed");
    }
    Ok(())
}

/// Exact-mode logits of a parity fixture's ids on `backend` and on the CPU backend, each against
/// transformers' (the bar of the parity tests: 1e-3), and against each other; one line, and
/// whether it passed.
fn fixture_parity(dir: &Path, backend: CudaBackend) -> Result<(String, bool)> {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json"))
            .with_context(|| format!("{}: no reference.json", dsv4_model::shown_path(dir)))?,
    )?;
    let ids: Vec<u32> = reference["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<f32> = std::fs::read(dir.join("logits.f32"))?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let loaded = LoadedCheckpoint::open(dir)?;
    let device = score_fixture(backend, &loaded, &ids)?;
    let cpu = score_fixture(CpuBackend, &loaded, &ids)?;
    let diff = |a: &[f32], b: &[f32]| {
        if a.len() != b.len() {
            return f32::INFINITY;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    let (vs_transformers, vs_cpu) = (diff(&device, &want), diff(&device, &cpu));
    let ok = vs_transformers <= 1e-3;
    let line = format!(
        "fixture {}: {} tokens, max |Δlogit| against transformers {vs_transformers:.2e}, against the CPU backend {vs_cpu:.2e}  {}",
        dsv4_model::shown_path(dir),
        ids.len(),
        if ok { "yes" } else { "NO" }
    );
    Ok((line, ok))
}

/// Every position's exact-mode logits of `ids` on `backend`, in one chunk.
fn score_fixture<B: Backend>(
    backend: B,
    loaded: &LoadedCheckpoint,
    ids: &[u32],
) -> Result<Vec<f32>> {
    let weights = backend.upload(loaded)?;
    let dtypes = CacheDtypes {
        kv: KvCacheDtype::F32,
        indexer: IndexerCacheDtype::F32,
    };
    let model = Model::with_backend(
        backend,
        &loaded.config,
        weights,
        Numerics::Exact,
        dtypes,
        DEFAULT_BLOCK_SIZE,
    )?;
    let mut state = model.new_request(ids.len())?;
    Ok(model.forward(ids, &mut state, Logits::All)?)
}
