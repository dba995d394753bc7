#!/usr/bin/env python3
"""What each cache strategy costs on the model trained here (train.py): held-out perplexity
through dsv4 under each setting, transformers' own perplexity on the same windows as the check of
the exact baseline, bytes per token from `dsv4 plan`, and greedy agreement with the baseline over
a continuation. Writes a JSON report and prints the markdown table of docs/cache-strategies.md.

    V/bin/python tests/quality/evaluate.py --model tests/quality/kjv --dsv4 target/release/dsv4

The held-out ids are the model's heldout.json (every 20th chapter, never trained on), cut into
windows of the training length; each window is scored from its start, so every setting sees the
same contexts.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

WINDOW = 192
EXACT = ["--numerics", "exact", "--kv-cache-dtype", "f32", "--indexer-cache-dtype", "f32"]
SETTINGS = [
    ("exact, f32 caches (baseline)", EXACT),
    ("bf16 caches", ["--numerics", "exact", "--kv-cache-dtype", "bf16", "--indexer-cache-dtype", "bf16"]),
    ("fp8 KV, bf16 indexer keys", ["--numerics", "exact", "--kv-cache-dtype", "fp8", "--indexer-cache-dtype", "bf16"]),
    ("fp8 KV, fp4 indexer keys", ["--numerics", "exact", "--kv-cache-dtype", "fp8", "--indexer-cache-dtype", "fp4"]),
    ("reference numerics, bf16 caches", ["--numerics", "reference"]),
    ("CLA groups of 2, from layer 0", EXACT + ["--share-kv", "2"]),
    ("CLA groups of 2, layers 0-1 exempt", EXACT + ["--share-kv", "2", "--share-kv-min-layer", "2"]),
    ("indexer reuse 2", EXACT + ["--indexer-reuse", "2"]),
    ("indexer reuse 4", EXACT + ["--indexer-reuse", "4"]),
]
# `dsv4 plan` takes the dtype and sharing flags but not --numerics.
PLAN_SKIP = {"--numerics", "exact", "reference"}


def dsv4(binary, args):
    out = subprocess.run([binary] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"dsv4 {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def nll_of(logits, ids):
    """Summed negative log-likelihood of ids[1:] under logits[:-1] (float64 log-softmax)."""
    x = logits[:-1].astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x).sum(axis=1))
    return float((lse - x[np.arange(len(ids) - 1), ids[1:]]).sum())


def dsv4_nll(binary, model, windows, flags, tmp):
    total = 0.0
    for i, w in enumerate(windows):
        out = os.path.join(tmp, f"w{i}.npy")
        dsv4(binary, ["score", "--weights", model, "--ids", ",".join(map(str, w)), "--out", out,
                      "--force"] + flags)
        total += nll_of(np.load(out), np.array(w))
    return total


def transformers_nll(model, windows):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
    import make_fixtures as mf
    hf = mf.load_hf(model)
    total = 0.0
    with torch.no_grad():
        for w in windows:
            logits = hf(input_ids=torch.tensor([w]), use_cache=False).logits[0].float().numpy()
            total += nll_of(logits, np.array(w))
    return total


def greedy(binary, model, prompt, n, flags):
    out = dsv4(binary, ["run", "--weights", model, "--prompt-ids", ",".join(map(str, prompt)),
                        "--max-new-tokens", str(n), "--json"] + flags)
    return json.loads(out)["generated_ids"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dsv4", required=True)
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=4)
    args = ap.parse_args()
    held = json.load(open(os.path.join(args.model, "heldout.json")))["ids"]
    windows = [held[i * WINDOW:(i + 1) * WINDOW] for i in range(args.windows)]
    assert all(len(w) == WINDOW for w in windows), "not enough held-out ids"
    predicted = args.windows * (WINDOW - 1)
    # Prompts of 64 held-out ids from the windows after the scored ones, 128 greedy ids each.
    prompts = [held[(args.windows + i) * WINDOW:][:64] for i in range(args.prompts)]

    reference = transformers_nll(args.model, windows) / predicted
    rows, baseline = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in SETTINGS:
            nats = dsv4_nll(args.dsv4, args.model, windows, flags, tmp) / predicted
            plan_flags = [f for f in flags if f not in PLAN_SKIP]
            plan = json.loads(dsv4(args.dsv4, ["plan", "--weights", args.model, "--context",
                                               str(WINDOW), "--json"] + plan_flags))
            tokens = [greedy(args.dsv4, args.model, p, 128, flags) for p in prompts]
            row = {"setting": name, "flags": flags, "nats": nats, "perplexity": math.exp(nats),
                   "bytes_per_token": plan["bytes_per_token"],
                   "fixed_bytes_per_request": plan["fixed_bytes_per_request"], "greedy": tokens}
            if baseline is None:
                baseline = row
            same = sum(a == b for g, h in zip(tokens, baseline["greedy"]) for a, b in zip(g, h))
            first = [next((i for i, (a, b) in enumerate(zip(g, h)) if a != b), len(g))
                     for g, h in zip(tokens, baseline["greedy"])]
            row["greedy_agreement"] = same / sum(len(h) for h in baseline["greedy"])
            row["first_divergence"] = first
            rows.append(row)
            print(f"{name}: ppl {row['perplexity']:.4f}, {row['bytes_per_token']} B/token", flush=True)
    training = json.load(open(os.path.join(args.model, "training.json")))
    report = {"windows": args.windows, "window": WINDOW, "predicted_tokens": predicted,
              "transformers_nats": reference, "transformers_perplexity": math.exp(reference),
              "unigram_perplexity": math.exp(training["unigram_nats"]), "rows": rows}
    json.dump(report, open(os.path.join(args.model, "quality.json"), "w"), indent=1)

    base = rows[0]
    print()
    print(f"transformers' perplexity on the same {predicted} tokens: {math.exp(reference):.4f} "
          f"(dsv4 exact: {base['perplexity']:.4f}, {100 * (base['perplexity'] / math.exp(reference) - 1):+.4f}%); "
          f"unigram: {math.exp(training['unigram_nats']):.2f}")
    print()
    print("| setting | B/token | saved | perplexity | change | greedy agreement (first divergence) |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        saved = 1 - r["bytes_per_token"] / base["bytes_per_token"]
        change = r["perplexity"] / base["perplexity"] - 1
        print(f"| {r['setting']} | {r['bytes_per_token']:g} | {100 * saved:.1f}% | {r['perplexity']:.4f} | "
              f"{100 * change:+.3f}% | {100 * r['greedy_agreement']:.1f}% ({', '.join(map(str, r['first_divergence']))}) |")


if __name__ == "__main__":
    main()
