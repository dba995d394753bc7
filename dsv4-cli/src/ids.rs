//! Token id lists as users type or paste them (`--prompt-ids`, `--ids`, id files, `tokenize
//! --decode`): ids separated by commas and/or whitespace, optionally inside one pair of brackets.
//! An empty item between commas (`1,,2`) is an error, not silently dropped.

use anyhow::{bail, Result};

/// The ids of `text`, naming the first bad item.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let trimmed = text.trim();
    let list = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    let mut ids = Vec::new();
    let items: Vec<&str> = list.split(',').collect();
    for (i, item) in items.iter().enumerate() {
        let words: Vec<&str> = item.split_whitespace().collect();
        if words.is_empty() && items.len() > 1 {
            bail!(
                "empty id at item {} of the list (two commas in a row, or a comma at an end?)",
                i + 1
            );
        }
        for word in words {
            ids.push(parse_id(word)?);
        }
    }
    Ok(ids)
}

fn parse_id(word: &str) -> Result<u32> {
    word.parse::<u32>().or_else(|_| {
        if word.bytes().all(|b| b.is_ascii_digit()) {
            bail!("token id {} is out of range", shorten(word))
        } else {
            bail!("`{}` is not a token id", shorten(word))
        }
    })
}

/// The first characters of a bad item, so one huge word cannot flood the error line.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        escaped
    } else {
        let head: String = escaped.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_split_on_whitespace_and_commas() {
        assert_eq!(
            parse_ids(" 1, 2,3\n\t4 , 5 6\n").expect("parses"),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(parse_ids("[1, 2]\n").expect("list"), vec![1, 2]);
        assert!(parse_ids("").expect("empty").is_empty());
        assert!(parse_ids(" \n").expect("blank").is_empty());
        assert!(parse_ids("[1, 2").is_err());
    }

    #[test]
    fn empty_items_are_refused() {
        for text in ["1,,2", "1, ,2", ",1", "1,", "[1,,2]"] {
            let err = parse_ids(text).expect_err(text).to_string();
            assert!(err.starts_with("empty id at item"), "{text}: {err}");
        }
    }

    #[test]
    fn bad_ids_are_named() {
        let err = parse_ids("1 2 x3").expect_err("bad").to_string();
        assert_eq!(err, "`x3` is not a token id");
        assert!(parse_ids("-1").is_err());
        let err = parse_ids("4294967296").expect_err("too big").to_string();
        assert_eq!(err, "token id 4294967296 is out of range");
        let long = "9".repeat(100);
        let err = parse_ids(&long).expect_err("bad").to_string();
        assert!(err.len() < 100, "{err}");
    }
}
