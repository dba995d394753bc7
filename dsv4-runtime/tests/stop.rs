//! The streaming stop-string matcher: stop strings split across pushes, self-overlapping
//! prefixes, several stop strings, multi-byte characters, and the invariant that what is
//! emitted plus what is flushed is always the text up to the first stop string.

use dsv4_runtime::engine::stop::{Pushed, StopError, StopMatcher};

fn matcher(stops: &[&str]) -> StopMatcher {
    StopMatcher::new(stops.iter().map(|s| s.to_string()).collect()).expect("valid stop strings")
}

fn emitted(emit: &str) -> Pushed {
    Pushed {
        emit: emit.to_string(),
        stopped: false,
    }
}

fn stopped(emit: &str) -> Pushed {
    Pushed {
        emit: emit.to_string(),
        stopped: true,
    }
}

/// Feeds `pieces` and returns (all emitted text, whether stopped, text flushed by finish).
fn run(stops: &[&str], pieces: &[&str]) -> (String, bool, String) {
    let mut m = matcher(stops);
    let mut out = String::new();
    let mut was_stopped = false;
    for piece in pieces {
        let p = m.push(piece);
        out.push_str(&p.emit);
        was_stopped |= p.stopped;
    }
    (out, was_stopped, m.finish())
}

#[test]
fn stop_string_split_across_several_pushes() {
    let mut m = matcher(&["<END>"]);
    assert_eq!(m.push("Hello <"), emitted("Hello "));
    assert_eq!(m.push("E"), emitted(""));
    assert_eq!(m.push("N"), emitted(""));
    assert_eq!(m.push("D> and more"), stopped(""));
    // After the stop, nothing more comes out.
    assert_eq!(m.push("ignored"), stopped(""));
    assert_eq!(m.finish(), "");
}

#[test]
fn a_false_start_is_released_once_it_cannot_match() {
    let mut m = matcher(&["<END>"]);
    assert_eq!(m.push("a <E"), emitted("a "));
    assert_eq!(m.push("X"), emitted("<EX"));
    assert_eq!(m.push(" <"), emitted(" "));
    assert_eq!(m.finish(), "<");
}

#[test]
fn text_before_the_stop_in_the_same_push_is_emitted() {
    let mut m = matcher(&["\n\n"]);
    assert_eq!(m.push("line one\n"), emitted("line one"));
    assert_eq!(m.push("\nline two"), stopped(""));
    let mut m = matcher(&["\n\n"]);
    assert_eq!(m.push("one\n\ntwo"), stopped("one"));
}

#[test]
fn overlapping_prefixes_are_not_lost() {
    // After "abab" the matcher must keep "ab" as a possible start of "abac": a matcher that
    // resets on mismatch would miss this stop.
    let mut m = matcher(&["abac"]);
    assert_eq!(m.push("ab"), emitted(""));
    assert_eq!(m.push("ab"), emitted("ab"));
    assert_eq!(m.push("ac!"), stopped(""));

    // "abab" as the stop with "aba" pending, then "bab" arriving.
    let mut m = matcher(&["abab"]);
    assert_eq!(m.push("xaba"), emitted("x"));
    assert_eq!(m.push("bab"), stopped(""));

    // Text that keeps almost matching: "aaab" in "aaaaaab".
    let (out, was_stopped, rest) = run(&["aaab"], &["a", "a", "a", "a", "a", "a", "b", "c"]);
    assert_eq!(
        (out.as_str(), was_stopped, rest.as_str()),
        ("aaa", true, "")
    );

    // "aba" followed by "ab...": only the longest viable tail is held.
    let mut m = matcher(&["abab"]);
    assert_eq!(m.push("abaab"), emitted("aba"));
    assert_eq!(m.finish(), "ab");
}

#[test]
fn the_earliest_of_several_stop_strings_wins() {
    let (out, was_stopped, _) = run(&["world", "lo w"], &["hel", "lo wor", "ld"]);
    assert_eq!((out.as_str(), was_stopped), ("hel", true));

    // A longer stop string that starts earlier holds text a shorter one would release.
    let mut m = matcher(&["STOP", "<|end|>"]);
    assert_eq!(m.push("x<|en"), emitted("x"));
    assert_eq!(m.push("d|"), emitted(""));
    assert_eq!(m.push("STO"), emitted("<|end|"));
    assert_eq!(m.push("P"), stopped(""));

    // One stop string inside another: whichever occurrence starts first.
    let (out, was_stopped, _) = run(&["cd", "bcde"], &["abcdef"]);
    assert_eq!((out.as_str(), was_stopped), ("a", true));
}

#[test]
fn multi_byte_characters_are_never_split() {
    // The stop string starts with a two-byte character.
    let mut m = matcher(&["é!"]);
    assert_eq!(m.push("café"), emitted("caf"));
    assert_eq!(m.push("s"), emitted("és"));
    assert_eq!(m.push("é"), emitted(""));
    assert_eq!(m.push("!"), stopped(""));

    // CJK stop string across pushes.
    let (out, was_stopped, _) = run(&["停止"], &["你好", "停", "止了"]);
    assert_eq!((out.as_str(), was_stopped), ("你好", true));

    // A character sharing its lead byte with the stop string's first character (é = C3 A9,
    // ã = C3 A3) is not a partial match.
    let mut m = matcher(&["é"]);
    assert_eq!(m.push("ã"), emitted("ã"));

    // Emoji (4 bytes) pass through whole, and held text is always whole characters.
    let mut m = matcher(&["🙂🙃"]);
    assert_eq!(m.push("a🙂"), emitted("a"));
    assert_eq!(m.push("🙂"), emitted("🙂"));
    assert_eq!(m.finish(), "🙂");
}

#[test]
fn without_stop_strings_text_passes_straight_through() {
    let mut m = matcher(&[]);
    assert_eq!(m.push("anything <END>"), emitted("anything <END>"));
    assert_eq!(m.finish(), "");
}

#[test]
fn empty_stop_strings_are_refused() {
    let err = StopMatcher::new(vec!["ok".to_string(), String::new()]).unwrap_err();
    assert_eq!(err, StopError::Empty);
    let msg = err.to_string();
    assert!(msg.starts_with("--stop"), "{msg}");
    assert!(!msg.contains('\n'));
}

/// For every way of cutting a text into pieces, the output equals the text up to the first
/// stop string (or the whole text, via finish, when none occurs).
#[test]
fn output_never_depends_on_how_the_text_is_cut() {
    let stops = ["abab", "ba!", "é→", "zz"];
    let texts = [
        "xxabaababyy",
        "ab ba ba! rest",
        "café→x",
        "no stop here, just é and →",
        "zazbz zz",
        "aba",
    ];
    for text in texts {
        let first = stops.iter().filter_map(|s| text.find(s)).min();
        let want = &text[..first.unwrap_or(text.len())];
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        // Every cut into pieces of 1..=3 characters, driven by a small counter.
        for pattern in 0u32..729 {
            let mut pieces = Vec::new();
            let mut i = 0;
            let mut p = pattern;
            while i < chars.len() {
                let n = (p % 3 + 1) as usize;
                p /= 3;
                let end = (i + n).min(chars.len());
                let from = chars[i].0;
                let to = chars.get(end).map_or(text.len(), |c| c.0);
                pieces.push(&text[from..to]);
                i = end;
            }
            let (out, was_stopped, rest) = run(&stops, &pieces);
            assert_eq!(was_stopped, first.is_some(), "{text:?} cut as {pieces:?}");
            assert_eq!(format!("{out}{rest}"), want, "{text:?} cut as {pieces:?}");
        }
    }
}
