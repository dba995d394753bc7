//! Opening a checkpoint for inference with a progress bar on the terminal (hidden when stderr
//! is not one): every tensor is checked before any compute, which takes a while on large ones.

use std::path::{Path, PathBuf};

use anyhow::Result;
use dsv4_runtime::{Linears, LoadedCheckpoint};
use indicatif::{ProgressBar, ProgressStyle};

/// Opens and checks `dir`, doing with its linears what `linears` says (packed for the CPU, as
/// stored for a device), showing how many tensors have been checked.
pub fn open_checkpoint(dir: &Path, linears: Linears) -> Result<LoadedCheckpoint> {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("checking weights {bar:40} {pos}/{len} tensors")
    {
        bar.set_style(style);
    }
    let loaded = LoadedCheckpoint::open_with_progress(dir, linears, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    Ok(loaded?)
}

/// Every file directly inside the checkpoint directory `dir`: what a command reading the
/// checkpoint must never write over.
pub fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
