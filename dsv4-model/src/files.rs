//! Reading the small text files a user names (configs, tokenizers, id lists, prompts) with a size
//! limit, so that a wrong path (`/dev/zero`, a FIFO, a huge file) is refused in one line instead
//! of blocking or filling memory.

use crate::shown::shown_path;
use std::io::Read;
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The operating system refused (absent, no permission, a loop of links, ...).
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The system's reason.
        reason: String,
    },
    /// A directory, FIFO, socket or device.
    #[error("cannot read {path}: it is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// Larger than the limit for its kind.
    #[error("cannot read {path}: it is larger than the {limit} bytes allowed for {what}")]
    TooLarge {
        /// The path.
        path: String,
        /// The limit.
        limit: u64,
        /// What the file was read as.
        what: &'static str,
    },
    /// Not UTF-8.
    #[error("cannot read {path}: it is not UTF-8 text")]
    NotText {
        /// The path.
        path: String,
    },
}

/// The text of `path`, read as `what`, refusing anything but a regular file of at most `limit`
/// bytes (checked while reading too, in case the file grows).
pub fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    let shown = shown_path(path);
    let io = |e: std::io::Error| ReadError::Io {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile { path: shown });
    }
    let too_large = || ReadError::TooLarge {
        path: shown.clone(),
        limit,
        what,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: shown })
}
