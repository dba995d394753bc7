//! How names and paths from users' files and flags appear in messages: escaped, so none can
//! split a message's one line, and shortened, so a hostile megabyte-long name is not echoed.

use std::path::Path;

/// A name shortened for a message (hostile files can hold megabyte-long names).
pub fn clip(name: &str) -> String {
    const SHOWN: usize = 120;
    // Escaped, so a name holding newlines cannot split a message.
    let escaped: String = name.escape_debug().collect();
    if escaped.chars().count() <= SHOWN {
        return escaped;
    }
    let head: String = escaped.chars().take(SHOWN).collect();
    format!("{head}... ({} bytes)", name.len())
}

/// A path for a message: escaped, so a name holding newlines (a shard name read from an index,
/// a typed flag) cannot split the message, and shortened past what any real path needs.
pub fn shown_path(path: &Path) -> String {
    const SHOWN: usize = 400;
    let text = path.to_string_lossy();
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= SHOWN {
        return escaped;
    }
    let head: String = escaped.chars().take(SHOWN).collect();
    format!("{head}... ({} bytes)", text.len())
}
