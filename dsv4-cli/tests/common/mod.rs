//! Helpers shared by the CLI tests: run the built `dsv4` and read its output.

use std::process::{Command, Output};

/// Runs the `dsv4` binary under test.
pub fn dsv4(args: &[&str]) -> Output {
    dsv4_with_env(args, &[])
}

/// Runs the `dsv4` binary under test with extra environment variables.
pub fn dsv4_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("dsv4 runs")
}

/// Runs a command that must fail; returns its single stderr line.
pub fn error(args: &[&str]) -> String {
    let out = dsv4(args);
    assert!(!out.status.success(), "should fail: {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
    stderr
}
