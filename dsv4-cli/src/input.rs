//! Text a user hands over in a file or on standard input (`-`): prompts, id lists, texts to
//! tokenize. Each kind has a size limit, so a wrong path (`/dev/zero`, a huge file) is refused in
//! one line instead of filling memory.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Largest prompt, id list or text read: 256 MiB.
pub const MAX_INPUT_BYTES: u64 = 1 << 28;

/// The UTF-8 text of `path`, or of standard input when `path` is `-`, read as `what`.
pub fn read_input(path: &Path, what: &'static str) -> Result<String> {
    if path != Path::new("-") {
        return Ok(dsv4_model::read_text(path, MAX_INPUT_BYTES, what)?);
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        bail!("standard input is larger than the {MAX_INPUT_BYTES} bytes allowed for {what}");
    }
    String::from_utf8(bytes).context("standard input is not UTF-8 text")
}
