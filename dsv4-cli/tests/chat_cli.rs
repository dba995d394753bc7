//! `dsv4 chat --script` on the demo model: each turn resumes from the previous turn's kept
//! state (turn 2 reuses turn 1's whole conversation, its prompt and its answer), the answers
//! are what a cold `dsv4 run` on the same ids gives, `/reset` starts a conversation that reuses
//! nothing, and bad input is one line.

mod common;

use common::{dsv4, error};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_u64().expect("id"))
        .collect()
}

#[test]
fn each_turn_resumes_from_the_last_and_answers_as_a_cold_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("turns.txt");
    std::fs::write(
        &script,
        "Hello there\nWhat is your name?\n\nAnd then?\n/reset\nHello there\n",
    )
    .expect("write");
    let out = dsv4(&[
        "chat",
        "--script",
        script.to_str().expect("utf-8"),
        "--json",
        "--max-new-tokens",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("demo model"), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let turns = v["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 4, "the empty line is no turn, /reset is none");
    let whole =
        |t: &Value| t["prompt_tokens"].as_u64().expect("n") + ids(&t["generated_ids"]).len() as u64;
    assert_eq!(turns[0]["reused_tokens"], 0);
    for k in 1..3 {
        assert_eq!(
            turns[k]["reused_tokens"].as_u64(),
            Some(whole(&turns[k - 1])),
            "turn {} reuses turn {k}'s whole conversation",
            k + 1
        );
        // Its prompt starts with that conversation.
        let prev: Vec<u64> = ids(&turns[k - 1]["prompt_ids"])
            .into_iter()
            .chain(ids(&turns[k - 1]["generated_ids"]))
            .collect();
        assert!(ids(&turns[k]["prompt_ids"]).starts_with(&prev));
    }
    // After /reset: the first turn again, nothing reused, the same answer (greedy).
    assert_eq!(turns[3]["reused_tokens"], 0);
    assert_eq!(turns[3]["generated_ids"], turns[0]["generated_ids"]);
    for t in turns {
        assert!(t["prefill_tokens_per_s"].as_f64().expect("rate") > 0.0);
    }
    // Turn 3 answered from a resumed state gives what a cold run on its ids gives.
    let prompt: Vec<String> = ids(&turns[2]["prompt_ids"])
        .iter()
        .map(u64::to_string)
        .collect();
    let cold = dsv4(&[
        "run",
        "--prompt-ids",
        &prompt.join(","),
        "--max-new-tokens",
        "10",
        "--json",
    ]);
    assert!(cold.status.success());
    let cold: Value = serde_json::from_slice(&cold.stdout).expect("json");
    assert_eq!(cold["generated_ids"], turns[2]["generated_ids"]);
}

#[test]
fn bad_chat_input_is_one_line() {
    let e = error(&["chat", "--script", "/nonexistent/turns.txt"]);
    assert!(e.contains("/nonexistent/turns.txt"), "{e}");
    let e = error(&["chat", "--json"]);
    assert!(e.contains("--script"), "{e}");
}
