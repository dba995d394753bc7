//! Byte sizes as users type them (`80GiB`, `1.5TB`, `4096`) and as the CLI prints them.

/// Binary and decimal unit suffixes, longest first so `GiB` wins over `B`.
const UNITS: [(&str, f64); 9] = [
    ("kib", 1024.0),
    ("mib", 1024.0 * 1024.0),
    ("gib", 1024.0 * 1024.0 * 1024.0),
    ("tib", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
    ("tb", 1e12),
    ("b", 1.0),
];

/// Parses a byte size with an optional unit; the result is rounded down to whole bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, multiplier) = UNITS
        .iter()
        .find_map(|(unit, m)| lower.strip_suffix(unit).map(|n| (n.trim(), *m)))
        .unwrap_or((lower.as_str(), 1.0));
    let value: f64 = number.parse().map_err(|_| invalid(text))?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(invalid(text));
    }
    Ok(bytes as u64)
}

fn invalid(text: &str) -> String {
    // Escaped and clipped: the message stays one line whatever was typed.
    let shown: String = text.escape_debug().take(60).collect();
    format!("invalid byte size `{shown}`: expected a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
}

/// `1234567` → `1,234,567`.
pub fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in the largest binary unit that keeps it at or above 1, two decimals.
pub fn binary(bytes: u64) -> String {
    let names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < names.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", names[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("80GiB"), Ok(80 << 30));
        assert_eq!(parse_bytes("80 gib"), Ok(80 << 30));
        assert_eq!(parse_bytes("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("512B"), Ok(512));
        assert!(parse_bytes("80XB").is_err());
        assert!(parse_bytes("-1GiB").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_048_576), "1,048,576");
        assert_eq!(binary(512), "512 B");
        assert_eq!(binary(6880 << 20), "6.72 GiB");
        assert_eq!(binary(85_888 << 20), "83.88 GiB");
    }
}
