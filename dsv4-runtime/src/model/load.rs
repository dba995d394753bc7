//! Opening a checkpoint directory for inference: its config, its tensors (mapped), the check that
//! must pass before any weight is read, and every linear packed for the kernels into one block
//! of huge-page memory ([`PackedArena`]).

use dsv4_model::shown_path;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use dsv4_kernels::linear::LinearWeight;
use dsv4_kernels::panel::{pack_all, PackJob, PackedLinear, PackedSpec};
use dsv4_model::{check_with_progress, CheckReport, Checkpoint, ModelConfig};
use memmap2::{Mmap, MmapMut};

use crate::model::weights::{LinearRows, LinearSource, ModelWeights, WeightsError};

/// A checkpoint directory opened and checked; the model borrows its weights from it.
pub struct LoadedCheckpoint {
    /// The validated config.
    pub config: ModelConfig,
    /// The mapped tensors (the linears' pages released once packed).
    pub checkpoint: Checkpoint,
    /// The check against the config (empty problems, or `open` would have failed).
    pub report: CheckReport,
    /// Every linear the model runs, packed (none when opened with [`Linears::AsStored`]).
    pub packed: PackedArena,
}

/// The linears of a model in the kernels' panel layout, in one anonymous mapping that asks for
/// transparent huge pages: decode streams every dense weight per token, and 2 MiB pages keep the
/// hardware prefetcher running and the TLB hitting (about 15% more bandwidth on the BF16 head on
/// the Zen 3 machines). Keyed by weight tensor name and first row.
pub struct PackedArena {
    memory: Mmap,
    entries: HashMap<(String, usize), (PackedSpec, Range<usize>)>,
}

/// Packed linears start on cache lines.
const ALIGN: usize = 64;

impl PackedArena {
    /// Packs `linears` (weight tensor name, rows), dropping each source's mapped pages from the
    /// process once packed, so the resident size never holds both copies.
    fn pack(checkpoint: &Checkpoint, linears: &[(String, LinearRows)]) -> Result<Self, String> {
        let mut entries = HashMap::new();
        let mut total = 0usize;
        for (name, rows) in linears {
            let spec = rows.spec();
            let start = total;
            total = total
                .checked_add(spec.len().next_multiple_of(ALIGN))
                .ok_or("the packed weights overflow the address space")?;
            entries.insert(
                (name.clone(), rows.first),
                (spec, start..start + spec.len()),
            );
        }
        let mut memory = MmapMut::map_anon(total.max(1)).map_err(|e| e.to_string())?;
        #[cfg(target_os = "linux")]
        {
            // Only a request: without transparent huge pages the copy sits in 4 KiB pages.
            let _ = memory.advise(memmap2::Advice::HugePage);
        }
        // Each linear's slice of the mapping, in offset order, packed in parallel.
        let mut order: Vec<(&String, &LinearRows, &PackedSpec, &Range<usize>)> = linears
            .iter()
            .filter_map(|(name, rows)| {
                let (spec, range) = entries.get(&(name.clone(), rows.first))?;
                Some((name, rows, spec, range))
            })
            .collect();
        order.sort_by_key(|(.., range)| range.start);
        let mut slices = Vec::with_capacity(order.len());
        let mut rest = &mut memory[..];
        let mut at = 0;
        for (name, rows, spec, range) in order {
            let (_, tail) = rest.split_at_mut(range.start - at);
            let (slice, tail) = tail.split_at_mut(range.len());
            slices.push((name, rows, spec, slice));
            rest = tail;
            at = range.end;
        }
        let names: Vec<&String> = slices.iter().map(|s| s.0).collect();
        let jobs = slices
            .into_iter()
            .map(|(_, rows, spec, dst)| PackJob {
                view: &rows.view,
                first: rows.first,
                spec,
                dst,
            })
            .collect();
        pack_all(jobs).map_err(|(i, e)| format!("`{}`: {e}", names[i]))?;
        for (name, rows) in linears {
            checkpoint.release(name);
            if matches!(
                rows.view.weight,
                LinearWeight::Fp8Block { .. } | LinearWeight::Fp4Group { .. }
            ) {
                if let Some(base) = name.strip_suffix(".weight") {
                    checkpoint.release(&format!("{base}.scale"));
                }
            }
        }
        Ok(Self {
            memory: memory.make_read_only().map_err(|e| e.to_string())?,
            entries,
        })
    }

    /// Bytes the packed linears hold.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(|(_, r)| r.len()).sum()
    }
}

/// Binding with the stored views: lists every linear (by weight tensor name and rows).
struct Listing<'a>(RefCell<Vec<(String, LinearRows<'a>)>>);

impl<'a> LinearSource<'a> for Listing<'a> {
    type Linear = ();

    fn linear(&self, name: &str, rows: LinearRows<'a>) -> Result<(), WeightsError> {
        self.0.borrow_mut().push((name.to_string(), rows));
        Ok(())
    }
}

impl<'a> LinearSource<'a> for &'a PackedArena {
    type Linear = PackedLinear<'a>;

    fn linear(&self, name: &str, rows: LinearRows<'a>) -> Result<PackedLinear<'a>, WeightsError> {
        self.entries
            .get(&(name.to_string(), rows.first))
            .and_then(|(spec, range)| PackedLinear::new(*spec, &self.memory[range.clone()]).ok())
            .ok_or_else(|| WeightsError::Invalid {
                tensor: name.to_string(),
                message: format!("rows {}.. were not packed at load", rows.first),
            })
    }
}

/// Why a checkpoint directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `config.json` is absent, unreadable or invalid (a read error names the path itself).
    #[error("{}", match problem {
        dsv4_model::ConfigError::Read(read) => read.to_string(),
        invalid => format!("{path}: {invalid}"),
    })]
    Config {
        /// The config path.
        path: String,
        /// What is wrong with it.
        problem: dsv4_model::ConfigError,
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

/// What loading does with the linears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linears {
    /// Packs them into the CPU kernels' panel layout, which the CPU backend binds.
    Packed,
    /// Leaves them as stored in the mapped files, for a backend that uploads them as they are
    /// (the CUDA backend): no packed copy is made in host memory.
    AsStored,
}

impl LoadedCheckpoint {
    /// Opens and checks `dir`, its linears packed for the CPU backend.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        Self::open_with_progress(dir, Linears::Packed, |_, _| {})
    }

    /// Opens and checks `dir`, doing with its linears what `linears` says and reporting
    /// `progress(done, total)` tensors checked.
    pub fn open_with_progress(
        dir: &Path,
        linears: Linears,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, LoadError> {
        let path = dir.join("config.json");
        let config = ModelConfig::from_file(&path).map_err(|problem| LoadError::Config {
            path: shown_path(&path),
            problem,
        })?;
        let checkpoint = Checkpoint::open(dir)?;
        let report = check_with_progress(&config, &checkpoint, progress);
        if let Some(first) = report.problems.first() {
            return Err(LoadError::Problems {
                dir: shown_path(dir),
                count: report.problems.len(),
                first: first.to_string(),
            });
        }
        // Every linear the model runs, found by binding the stored views, then packed.
        let memory = |message: String| LoadError::Memory {
            dir: shown_path(dir),
            message,
        };
        let listing = Listing(RefCell::new(Vec::new()));
        if linears == Linears::Packed {
            ModelWeights::bind_with(&config, &checkpoint, &report, &listing)
                .map_err(|e| memory(e.to_string()))?;
        }
        let packed = PackedArena::pack(&checkpoint, &listing.0.into_inner()).map_err(memory)?;
        Ok(Self {
            config,
            checkpoint,
            report,
            packed,
        })
    }
}

impl<'a> ModelWeights<'a> {
    /// Binds the weights of a loaded checkpoint, its linears as packed at load.
    pub fn bind(loaded: &'a LoadedCheckpoint) -> Result<Self, WeightsError> {
        Self::bind_with(
            &loaded.config,
            &loaded.checkpoint,
            &loaded.report,
            &&loaded.packed,
        )
    }
}
