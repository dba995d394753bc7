//! The CUDA kernels of `csrc/` on `cuda-sim`: first the emulation itself (planted bugs it must
//! catch, shuffle semantics it must follow), then every kernel against its CPU twin under each
//! fiber order.

use std::sync::Arc;

use dsv4_kernels::cuda::sim::{kernel_names, FiberOrder, SimDevice};
use dsv4_kernels::cuda::twins::run_all;
use dsv4_kernels::cuda::{DeviceError, Gpu, LaunchConfig};

fn sim(order: FiberOrder) -> Gpu {
    Gpu::new(Arc::new(SimDevice { order, workers: 2 }))
}

/// Blocks of `sim_check_block_reverse` whose output is not the reversed input.
fn wrong_reversed_blocks(gpu: &Gpu, synced: i32) -> usize {
    let (blocks, threads) = (16usize, 256usize);
    let input: Vec<f32> = (0..blocks * threads).map(|i| i as f32).collect();
    let x = gpu.upload_f32(&input).unwrap();
    let y = gpu.zeros(input.len() * 4).unwrap();
    let config = LaunchConfig::linear(blocks as u32, threads as u32);
    // SAFETY: the kernel reads and writes blocks × threads floats.
    unsafe {
        gpu.launch(
            "sim_check_block_reverse",
            config,
            &[&x.ptr(), &y.ptr(), &synced],
        )
    }
    .unwrap();
    let out = y.read_f32(input.len()).unwrap();
    (0..blocks)
        .filter(|b| {
            (0..threads).any(|t| out[b * threads + t] != input[b * threads + threads - 1 - t])
        })
        .count()
}

#[test]
fn a_missing_barrier_shows_under_some_fiber_order() {
    let mut caught = 0;
    for order in FiberOrder::CHECKED {
        let gpu = sim(order);
        assert_eq!(wrong_reversed_blocks(&gpu, 1), 0, "{order:?}");
        caught += wrong_reversed_blocks(&gpu, 0);
    }
    assert!(caught > 0, "no fiber order showed the race");
}

fn launch_error(gpu: &Gpu, kernel: &'static str, threads: u32, flag: i32) -> String {
    let x = gpu.zeros(4096).unwrap();
    let y = gpu.zeros(4096).unwrap();
    let config = LaunchConfig::linear(1, threads);
    // SAFETY: the check kernels touch at most `threads` floats of each buffer.
    let result = unsafe {
        match kernel {
            "sim_check_barrier" => gpu.launch(kernel, config, &[&y.ptr(), &flag]),
            "sim_check_deadlock" => gpu.launch(kernel, config, &[&y.ptr()]),
            _ => gpu.launch(kernel, config, &[&x.ptr(), &y.ptr(), &flag]),
        }
    };
    match result {
        Err(DeviceError::Launch { kernel: k, message }) => {
            assert_eq!(k, kernel);
            message
        }
        other => panic!("{kernel} with {flag}: {other:?}"),
    }
}

#[test]
fn divergent_collectives_are_faults_with_a_message() {
    for order in FiberOrder::CHECKED {
        let gpu = sim(order);
        let message = launch_error(&gpu, "sim_check_warp_sum", 64, 5);
        assert!(
            message.contains("__shfl_xor_sync")
                && (message.contains("returned") || message.contains("thread (5,")),
            "{message}"
        );
        let message = launch_error(&gpu, "sim_check_barrier", 64, 1);
        assert!(message.contains("__syncthreads"), "{message}");
        // A warp collective naming lanes the block does not have (a partial last warp).
        let message = launch_error(&gpu, "sim_check_warp_sum", 48, 0);
        assert!(message.contains("does not have"), "{message}");
        // Lane 0 at a shuffle, the rest at a barrier.
        let message = launch_error(&gpu, "sim_check_deadlock", 32, 0);
        assert!(
            message.contains("deadlock") && message.contains("31 of 32 threads at __syncthreads"),
            "{message}"
        );
    }
    // The correct kernels run clean.
    let gpu = sim(FiberOrder::Forward);
    let x = gpu
        .upload_f32(&(0..64).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    let y = gpu.zeros(8).unwrap();
    // SAFETY: 64 inputs, 2 outputs.
    unsafe {
        gpu.launch(
            "sim_check_warp_sum",
            LaunchConfig::linear(1, 64),
            &[&x.ptr(), &y.ptr(), &0i32],
        )
    }
    .unwrap();
    assert_eq!(y.read_f32(2).unwrap(), vec![496.0, 1520.0]);
}

/// Shuffles at the edges of 8-lane segments give what the CUDA programming guide says: a lane
/// whose source lies past its segment's end keeps its own value.
#[test]
fn shuffles_follow_cuda_segment_rules() {
    let gpu = sim(FiberOrder::Reverse);
    let out = gpu.zeros(160 * 4).unwrap();
    // SAFETY: one warp writing 160 floats.
    unsafe {
        gpu.launch(
            "sim_check_shuffles",
            LaunchConfig::linear(1, 32),
            &[&out.ptr()],
        )
    }
    .unwrap();
    let out = out.read_f32(160).unwrap();
    for lane in 0..32usize {
        let segment = lane / 8 * 8;
        let down = if lane + 3 < segment + 8 {
            lane + 3
        } else {
            lane
        };
        let up = if lane >= segment + 3 { lane - 3 } else { lane };
        let xor = if (lane ^ 9) < segment + 8 {
            lane ^ 9
        } else {
            lane
        };
        assert_eq!(out[lane], down as f32, "down, lane {lane}");
        assert_eq!(out[32 + lane], up as f32, "up, lane {lane}");
        assert_eq!(out[64 + lane], (segment + 5) as f32, "indexed, lane {lane}");
        assert_eq!(out[96 + lane], xor as f32, "xor, lane {lane}");
        assert_eq!(out[128 + lane], 1.0, "ballot, lane {lane}");
    }
}

#[test]
fn every_kernel_matches_its_cpu_twin_under_each_fiber_order() {
    // Under a sanitizer (scripts/cuda-sim-asan.sh) once, in the forward order.
    let orders: &[FiberOrder] = if std::env::var_os("DSV4_SIM_SANITIZED").is_some() {
        &[FiberOrder::Forward]
    } else {
        &FiberOrder::CHECKED
    };
    for &order in orders {
        let gpu = sim(order);
        for (family, result) in run_all(&gpu, 7) {
            let checks = result.unwrap_or_else(|e| panic!("{family} under {order:?}: {e}"));
            assert!(!checks.is_empty(), "{family}");
            for c in checks {
                assert!(
                    c.passed(),
                    "{order:?}: {} at {}: error {} > {}",
                    c.kernel,
                    c.shape,
                    c.error,
                    c.tolerance
                );
            }
        }
    }
}

#[test]
fn the_host_build_holds_every_kernel_file() {
    let names = kernel_names();
    assert!(names.iter().any(|n| n == "rms_norm"), "{names:?}");
}
