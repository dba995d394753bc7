//! Calls a function of this process on an emulated x86-64 CPU with AVX-512 (Bochs, driven by
//! `scripts/emulated_call.py`): how kernels for instructions this machine lacks are tested.
//! The process's readable memory is written to a snapshot, the emulator maps it at the same
//! addresses and runs the function on a stack of its own, and the bytes of a result buffer
//! are copied back. The function must not make system calls or allocate.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names a Python interpreter with `bochscpu` installed (`pip install bochscpu-python==0.3.1`);
/// without it emulated tests are skipped.
pub const PYTHON_ENV: &str = "DSV4_EMULATOR_PYTHON";

/// Longest an emulated call may take before it is counted as hung.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The emulated function's stack.
const STACK_BYTES: usize = 1 << 20;

/// Page size of the mappings listed in `/proc/self/maps`.
const PAGE: u64 = 4096;

/// The Python to run the emulator with, or why emulated tests are skipped.
pub fn emulator() -> Result<PathBuf, String> {
    std::env::var_os(PYTHON_ENV)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{PYTHON_ENV} is not set (a Python with bochscpu-python)"))
}

/// Runs `entry(arg)` on the emulated CPU with `python`, then copies the emulated memory of
/// `result` back into it. Panics (failing the test) when the call does not return normally.
pub fn call(python: &Path, entry: extern "C" fn(*mut u8), arg: *mut u8, result: &mut [u8]) {
    // One call at a time: a snapshot is taken while no other call maps or frees its stack.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let stack = vec![0u8; STACK_BYTES];
    let stack_top = (stack.as_ptr() as u64 + STACK_BYTES as u64) & !15;
    // One directory per call: tests in one process call concurrently.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dsv4-emulated-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let (snapshot, answer) = (dir.join("snapshot"), dir.join("result"));
    let header = [
        entry as usize as u64,
        arg as u64,
        stack_top,
        result.as_ptr() as u64,
        result.len() as u64,
    ];
    write_snapshot(&snapshot, header).expect("snapshot written");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/emulated_call.py");
    let mut child = Command::new(python)
        .args([Path::new(script), &snapshot, &answer])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON_ENV}={}: {e}", python.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("emulator status") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("the emulated call ran over {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        status.success(),
        "emulated call failed ({status}): {stderr}"
    );
    let bytes = std::fs::read(&answer).expect("emulator result");
    assert_eq!(bytes.len(), result.len(), "emulator result length");
    result.copy_from_slice(&bytes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the snapshot `emulated_call.py` reads: the header fields, then every readable
/// mapping of this process (kernel-provided pages aside) with its address and whether it
/// holds code.
fn write_snapshot(path: &Path, header: [u64; 5]) -> std::io::Result<()> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let memory = File::open("/proc/self/mem")?;
    let mut regions = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let name = fields.get(5).copied().unwrap_or("");
        if !perms.starts_with('r') || name.starts_with("[v") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).expect("maps address");
        let end = u64::from_str_radix(end, 16).expect("maps address");
        // Pages that cannot be read (past a file's end, or unmapped since the listing by
        // another thread) are left out; the readable runs between them are kept.
        let code = perms.contains('x');
        let mut run: Option<(u64, Vec<u8>)> = None;
        for page in (start..end).step_by(PAGE as usize) {
            let mut bytes = [0u8; PAGE as usize];
            match (memory.read_exact_at(&mut bytes, page).is_ok(), &mut run) {
                (true, Some((_, run))) => run.extend_from_slice(&bytes),
                (true, None) => run = Some((page, bytes.to_vec())),
                (false, _) => {
                    if let Some((at, bytes)) = run.take() {
                        regions.push((at, code, bytes));
                    }
                }
            }
        }
        if let Some((at, bytes)) = run {
            regions.push((at, code, bytes));
        }
    }
    let mut out = std::io::BufWriter::new(File::create(path)?);
    out.write_all(b"DSV4SNAP")?;
    for field in header.into_iter().chain([regions.len() as u64]) {
        out.write_all(&field.to_le_bytes())?;
    }
    for (start, code, bytes) in &regions {
        for field in [*start, bytes.len() as u64, u64::from(*code)] {
            out.write_all(&field.to_le_bytes())?;
        }
        out.write_all(bytes)?;
    }
    out.flush()
}
