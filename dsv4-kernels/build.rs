//! Builds the CUDA kernels of `csrc/` twice over:
//! - always, for the host: every `.cu` compiled by the C++ compiler (through `cc`) with the SIMT
//!   emulation of `csrc/sim/`, linked whole so each kernel's registration survives (`cuda-sim`);
//!   `DSV4_SIM_SANITIZE=1` builds it with AddressSanitizer and UBSan;
//! - with the `cuda` feature, for the GPU: nvcc (from `NVCC`, `CUDA_HOME`/`CUDA_PATH`, or `PATH`)
//!   turns each `.cu` into a fatbin for sm_80 and sm_90a plus compute_80 PTX, embedded in the
//!   crate; the build fails with one line when nvcc cannot be found. CUTLASS/CuTe headers are put
//!   on nvcc's include path from `CUTLASS_DIR` (the PyPI `nvidia-cutlass` source tree that
//!   scripts/cuda-toolchain.sh installs), for the kernels that use them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let csrc = manifest.join("../csrc");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed={}", csrc.display());
    println!("cargo::rerun-if-env-changed=DSV4_SIM_SANITIZE");
    let kernels = kernel_files(&csrc);
    host_build(&csrc, &kernels);
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        device_build(&csrc, &kernels, &out);
    }
}

/// The kernel files: `csrc/*.cu`, sorted.
fn kernel_files(csrc: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(csrc)
        .expect("csrc/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
}

fn host_build(csrc: &Path, kernels: &[PathBuf]) {
    let sanitize = env::var_os("DSV4_SIM_SANITIZE").is_some_and(|v| v == "1");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(csrc)
        .flag("-x")
        .flag("c++")
        .flag_if_supported("-Wno-unused-parameter")
        // Products and sums exactly as written, never fused (the kernels spell out with `_rn`
        // intrinsics the f64 arithmetic nvcc must not fuse either).
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .cargo_metadata(false)
        .file(csrc.join("sim/simt.cpp"))
        .file(csrc.join("sim/checks.cu"))
        .files(kernels);
    if sanitize {
        build
            .opt_level(1)
            .debug(true)
            .define("DSV4_SIM_UCONTEXT", None)
            .flag("-fsanitize=address,undefined")
            .flag("-fno-sanitize-recover=undefined")
            .flag("-fno-omit-frame-pointer");
    } else {
        build.opt_level(2);
    }
    build.compile("dsv4_sim");
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo::rustc-link-search=native={out}");
    // Whole: each kernel file is reached only through its static registration.
    println!("cargo::rustc-link-lib=static:+whole-archive=dsv4_sim");
    println!("cargo::rustc-link-lib=dylib=stdc++");
    if sanitize {
        println!("cargo::rustc-link-lib=dylib=asan");
        println!("cargo::rustc-link-lib=dylib=ubsan");
    }
}

/// nvcc, found as the CUDA toolchain documents.
fn find_nvcc() -> Option<PathBuf> {
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rerun-if-env-changed=CUDA_PATH");
    if let Some(nvcc) = env::var_os("NVCC") {
        return Some(PathBuf::from(nvcc));
    }
    for home in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = env::var_os(home) {
            let nvcc = PathBuf::from(dir).join("bin/nvcc");
            if nvcc.exists() {
                return Some(nvcc);
            }
        }
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join("nvcc"))
        .find(|p| p.exists())
}

/// The kernels a file declares: the arguments of its `DSV4_SIM_ENTRY(...)` lines.
fn kernel_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DSV4_SIM_ENTRY(")?.strip_suffix(')'))
        .collect()
}

fn device_build(csrc: &Path, kernels: &[PathBuf], out: &Path) {
    let Some(nvcc) = find_nvcc() else {
        panic!("the `cuda` feature compiles csrc/ with nvcc, and none was found: set NVCC, CUDA_HOME or CUDA_PATH, or put nvcc on PATH (docs/gpu.md shows how to install 13.0.88 from PyPI)");
    };
    println!("cargo::rerun-if-env-changed=CUTLASS_DIR");
    let cutlass: Vec<PathBuf> = env::var_os("CUTLASS_DIR")
        .map(PathBuf::from)
        .map(|dir| vec![dir.join("include"), dir.join("tools/util/include")])
        .unwrap_or_default();
    let mut modules = String::from(
        "/// Each kernel file: its name, its fatbin (sm_80, sm_90a, compute_80 PTX), its kernels.\n\
         pub const MODULES: &[(&str, &[u8], &[&str])] = &[\n",
    );
    for file in kernels {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("kernel file names are UTF-8");
        let fatbin = out.join(format!("{stem}.fatbin"));
        let status = Command::new(&nvcc)
            .args(["-std=c++17", "-O3", "-DNDEBUG", "--threads", "2", "-fatbin"])
            .args(["-gencode", "arch=compute_80,code=[sm_80,compute_80]"])
            .args(["-gencode", "arch=compute_90a,code=sm_90a"])
            .arg("-I")
            .arg(csrc)
            .args(
                cutlass
                    .iter()
                    .flat_map(|d| [std::ffi::OsStr::new("-I"), d.as_os_str()]),
            )
            .arg("-o")
            .arg(&fatbin)
            .arg(file)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {}", file.display());
        let source = fs::read_to_string(file).expect("kernel files are readable");
        modules.push_str(&format!(
            "    ({stem:?}, include_bytes!({:?}), &{:?}),\n",
            fatbin.display().to_string(),
            kernel_names(&source)
        ));
    }
    modules.push_str("];\n");
    fs::write(out.join("fatbins.rs"), modules).expect("OUT_DIR is writable");
}
