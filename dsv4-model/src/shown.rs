//! How names and paths from users' files and flags appear in messages: escaped, so none can
//! split a message's one line, and shortened, so a hostile megabyte-long name is not echoed.

use std::path::Path;

/// A name shortened for a message (hostile files can hold megabyte-long names).
pub fn clip(name: &str) -> String {
    shorten(name, 120)
}

/// A path for a message: escaped, so a name holding newlines (a shard name read from an index,
/// a typed flag) cannot split the message, and shortened past what any real path needs.
pub fn shown_path(path: &Path) -> String {
    shorten(&path.to_string_lossy(), 400)
}

/// `text` escaped, so newlines cannot split a message, and cut after `shown` characters with its
/// length in bytes said.
fn shorten(text: &str, shown: usize) -> String {
    let escaped: String = text.escape_debug().collect();
    if escaped.chars().count() <= shown {
        return escaped;
    }
    let head: String = escaped.chars().take(shown).collect();
    format!("{head}... ({} bytes)", text.len())
}
