//! `dsv4 selftest`: on `cuda-sim` it prints every check of the chosen kernel files under each
//! fiber order and the fixture's end-to-end line, and exits 0; on `cuda` without a GPU (or
//! without the feature) it refuses in one line.

mod common;

use std::path::Path;

use common::{dsv4, error};

#[test]
fn selftest_on_cuda_sim_prints_the_checks_and_passes() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/fixtures/hca16");
    let out = dsv4(&[
        "selftest",
        "--device",
        "cuda-sim",
        "--only",
        "norm",
        "--fixtures",
        fixture.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Five rms_norm shapes under each of the three fiber orders, then the fixture.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("norm ")).count(),
        15,
        "{stdout}"
    );
    assert!(stdout.contains("against transformers"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("16 checks, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn selftest_on_cuda_without_a_gpu_is_a_one_line_error() {
    let e = error(&["selftest", "--device", "cuda"]);
    assert!(e.starts_with("error: --device cuda: "), "{e}");
}
