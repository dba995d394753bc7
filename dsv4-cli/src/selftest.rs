//! `dsv4 selftest`: every CUDA kernel against its CPU twin on random inputs, at V4-Flash's
//! widths and at odd shapes, each within its stated tolerance, printed as a table; a non-zero
//! exit on any failure. On `cuda-sim` the kernels run once under each fiber order.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use dsv4_kernels::cuda::sim::{FiberOrder, SimDevice};
use dsv4_kernels::cuda::twins::run_all;
use dsv4_kernels::cuda::Gpu;
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
    println!("{checks} checks, {failures} failed");
    if failures > 0 {
        bail!("{failures} kernel check(s) failed");
    }
    Ok(())
}
