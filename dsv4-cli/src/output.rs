//! Output files written so that nothing is lost: never over a file the command reads, never over
//! an existing file unless `--force` is given, and never half-written under the requested name
//! (the data goes to a temporary file beside it, renamed into place only when complete).

use dsv4_model::shown_path;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;

/// An output being written; dropped without [`Output::commit`], it leaves nothing behind.
pub struct Output {
    path: PathBuf,
    force: bool,
    file: NamedTempFile,
}

impl Output {
    /// Starts writing `path`, refusing it when it is one of `inputs` (compared as files, so a
    /// link or another spelling of the same file is caught) or exists and `force` is not set.
    pub fn create(path: &Path, inputs: &[PathBuf], force: bool) -> Result<Self> {
        if let Ok(meta) = std::fs::metadata(path) {
            let same_file = |input: &PathBuf| {
                std::fs::metadata(input)
                    .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
            };
            if let Some(input) = inputs.iter().find(|input| same_file(input)) {
                let also = if input == path {
                    String::new()
                } else {
                    format!(" (as {})", shown_path(input))
                };
                bail!(
                    "refusing to write {}: this command reads that file{also}; choose another output",
                    shown_path(path)
                );
            }
            if !meta.is_file() {
                bail!("{} exists and is not a regular file", shown_path(path));
            }
            if !force {
                bail!("{} exists; give --force to replace it", shown_path(path));
            }
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".dsv4-partial-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create {}", shown_path(path)))?;
        Ok(Self {
            path: path.to_path_buf(),
            force,
            file,
        })
    }

    /// The temporary file, to write the output into.
    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.file
    }

    /// Flushes the data to disk and renames it into place (replacing an existing file only with
    /// `--force`, and atomically either way).
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.file
            .as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", shown_path(&path)))?;
        let persisted = if self.force {
            self.file.persist(&path).map(drop)
        } else {
            self.file.persist_noclobber(&path).map(drop)
        };
        persisted.with_context(|| format!("cannot write {}", shown_path(&path)))
    }
}
