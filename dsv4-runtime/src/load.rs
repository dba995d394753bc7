//! Opening a checkpoint directory for inference: its config, its tensors (mapped, then the
//! streamed ones copied into huge-page memory), and the check that must pass before any weight
//! is read.

use std::collections::BTreeSet;
use std::path::Path;

use dsv4_model::{check_with_progress, Activity, CheckReport, Checkpoint, ModelConfig};

/// A checkpoint directory opened and checked; the model borrows its weights from it.
pub struct LoadedCheckpoint {
    /// The validated config.
    pub config: ModelConfig,
    /// The tensors: those a token reads in full copied into memory, the rest mapped.
    pub checkpoint: Checkpoint,
    /// The check against the config (empty problems, or `open` would have failed).
    pub report: CheckReport,
}

/// Why a checkpoint directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `config.json` is absent or invalid.
    #[error("{path}: {source}")]
    Config {
        /// The config path.
        path: String,
        /// What is wrong with it.
        source: dsv4_model::ConfigError,
    },
    /// No weights could be found.
    #[error(transparent)]
    Open(#[from] dsv4_model::OpenError),
    /// The tensors do not fit the config; `dsv4 inspect` lists every problem.
    #[error("{dir}: {count} problem(s) in the weights (dsv4 inspect lists them all), the first: {first}")]
    Problems {
        /// The directory.
        dir: String,
        /// How many.
        count: usize,
        /// The first, rendered.
        first: String,
    },
    /// The weights could not be copied into memory.
    #[error("{dir}: cannot hold the weights in memory: {message}")]
    Memory {
        /// The directory.
        dir: String,
        /// The system's reason.
        message: String,
    },
}

impl LoadedCheckpoint {
    /// Opens and checks `dir`.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        Self::open_with_progress(dir, |_, _| {})
    }

    /// [`Self::open`], reporting `progress(done, total)` tensors checked.
    pub fn open_with_progress(
        dir: &Path,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, LoadError> {
        let path = dir.join("config.json");
        let config = ModelConfig::from_file(&path).map_err(|source| LoadError::Config {
            path: path.display().to_string(),
            source,
        })?;
        let mut checkpoint = Checkpoint::open(dir)?;
        let report = check_with_progress(&config, &checkpoint, progress);
        if let Some(first) = report.problems.first() {
            return Err(LoadError::Problems {
                dir: dir.display().to_string(),
                count: report.problems.len(),
                first: first.to_string(),
            });
        }
        // Every weight a token reads in full goes to (huge-page) memory; row lookups (the
        // embedding, the hash table) and the MTP stages, which are not run, stay mapped.
        let streamed: BTreeSet<&str> = report
            .manifest
            .tensors
            .iter()
            .filter(|t| t.activity != Activity::RowLookup && !t.mtp)
            .map(|t| t.name.as_str())
            .collect();
        checkpoint
            .make_resident(|name| streamed.contains(name))
            .map_err(|e| LoadError::Memory {
                dir: dir.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            config,
            checkpoint,
            report,
        })
    }
}
