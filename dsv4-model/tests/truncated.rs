//! A checkpoint truncated while mapped: reading past its new end ends the process with one line
//! naming the file and status 1, not a silent death by SIGBUS. The reading runs in a child
//! process (this test binary again), which the test watches.

use std::process::Command;

use dsv4_model::{write_random_checkpoint, Checkpoint, Preset};

const CHILD: &str = "DSV4_TRUNCATED_CHILD_DIR";

/// In the child: open, truncate the file under the mapping, then read every tensor.
fn read_after_truncation(dir: &str) {
    let checkpoint = Checkpoint::open(std::path::Path::new(dir)).expect("opens");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(std::path::Path::new(dir).join("model.safetensors"))
        .expect("open for truncation");
    file.set_len(4096).expect("truncate");
    let mut sum = 0u64;
    for name in checkpoint.names() {
        let view = checkpoint.tensor(name).expect("tensor");
        sum += view.data.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    println!("read everything: {sum}");
}

#[test]
fn a_file_truncated_while_mapped_is_named_in_one_line() {
    if let Ok(dir) = std::env::var(CHILD) {
        read_after_truncation(&dir);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Preset::Tiny.config();
    write_random_checkpoint(&config, Preset::Tiny.config_json(), dir.path(), 3, u64::MAX)
        .expect("init");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "a_file_truncated_while_mapped_is_named_in_one_line",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, dir.path())
        .output()
        .expect("child runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let file = dir.path().join("model.safetensors");
    let line = format!(
        "error: {} changed while it was being read (it is shorter than when it was opened); stopping",
        file.display()
    );
    assert!(stderr.lines().any(|l| l == line), "{stderr}");
    assert!(!stdout.contains("read everything"), "{stdout}");
}
