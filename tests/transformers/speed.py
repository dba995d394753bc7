"""Side-by-side CPU speed and peak memory: dsv4 against transformers' DeepseekV4ForCausalLM
(float32, dequantized from the FP8/FP4 checkpoint), on the same checkpoint, prompt and threads.

    cargo build --release -p dsv4-cli
    ./target/release/dsv4 init --preset small --out /tmp/small-bench --seed 5
    /path/to/venv-with-torch-transformers-accelerate/bin/python tests/transformers/speed.py \
        ./target/release/dsv4 /tmp/small-bench [--rounds 3] [--threads 2]

Each round runs `dsv4 bench` and then this file's --hf-worker mode, each in its own process
under /usr/bin/time -v (Debian package `time`); the table gives medians over the rounds.
Both sides prefill the same 512 ids (id_i = i * 2654435761 % vocab) in one forward, then make
32 greedy decode steps and time the last 31. Peak RSS of dsv4 is also taken from one
`dsv4 run` of the same work, since `dsv4 bench` holds 768 MiB of triad buffers besides.
"other load" is the CPU other processes used during each run (whole process, load included),
in cores: on a shared 2-core machine, timings taken while it is well above 0 are not
representative (torch's suffered most when it was measured), so rerun then.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT_LEN, GEN = 512, 32


def prompt_ids(vocab):
    return [(i * 2654435761) % vocab for i in range(PROMPT_LEN)]


def hf_worker(ckpt, threads):
    import torch
    from transformers import DeepseekV4ForCausalLM, DynamicCache

    torch.set_num_threads(threads)
    t = time.perf_counter()
    # .float(): tensors stored BF16 stay BF16 under dtype=float32; widening them is lossless.
    model = DeepseekV4ForCausalLM.from_pretrained(ckpt, dtype=torch.float32).float().eval()
    load_s = time.perf_counter() - t
    ids = torch.tensor([prompt_ids(model.config.vocab_size)])
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        t = time.perf_counter()
        logits = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        prefill_s = time.perf_counter() - t
        tokens = [int(logits[0, -1].argmax())]
        for step in range(GEN):  # the first step warms up; time the other GEN - 1
            if step == 1:
                t = time.perf_counter()
            logits = model(torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True).logits
            tokens.append(int(logits[0, -1].argmax()))
        decode_s = time.perf_counter() - t
    print(json.dumps({"prefill_tokens_per_s": PROMPT_LEN / prefill_s,
                      "decode_tokens_per_s": (GEN - 1) / decode_s,
                      "load_s": load_s, "generated_ids": tokens[:GEN]}))


def busy_seconds():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (stdout, peak RSS in bytes, other processes' load in
    cores over the run: the machine's busy time less cmd's own CPU time, per second of wall time)."""
    b, t = busy_seconds(), time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    busy, wall = busy_seconds() - b, time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    field = lambda name: float(re.search(name + r": ([\d.]+)", p.stderr).group(1))
    own = field(r"User time \(seconds\)") + field(r"System time \(seconds\)")
    return p.stdout, int(field(r"Maximum resident set size \(kbytes\)")) * 1024, max(0.0, busy - own) / wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsv4")
    ap.add_argument("ckpt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf-worker", action="store_true")
    a = ap.parse_args()
    if a.hf_worker:
        return hf_worker(a.ckpt, a.threads)

    ckpt = Path(a.ckpt)
    vocab = json.loads((ckpt / "config.json").read_text())["vocab_size"]
    th = ["--threads", str(a.threads)]
    bench = [a.dsv4, "bench", "--weights", a.ckpt, "--prompt-len", str(PROMPT_LEN), "--gen", str(GEN), *th, "--json"]
    hf = [sys.executable, __file__, a.dsv4, a.ckpt, "--hf-worker", *th]
    runs = {"dsv4": [], "transformers": []}
    for r in range(a.rounds):  # alternate, so machine noise hits both sides alike
        for side, cmd in (("dsv4", bench), ("transformers", hf)):
            out, rss, other = timed(cmd)
            runs[side].append({**json.loads(out), "rss": rss, "other_load_cores": other})
        print(f"round {r + 1}: " + "  ".join(
            f"{k} prefill {v[-1]['prefill_tokens_per_s']:.1f} decode {v[-1]['decode_tokens_per_s']:.2f} tok/s"
            f" (other load {v[-1]['other_load_cores']:.2f} cores)" for k, v in runs.items()), flush=True)

    # dsv4's own peak memory without bench's triad buffers: the same prompt and steps via `dsv4 run`.
    out, run_rss, _ = timed([a.dsv4, "run", "--weights", a.ckpt, "--prompt-ids", ",".join(map(str, prompt_ids(vocab))),
                          "--max-new-tokens", str(GEN), *th, "--json"])
    run_ids = json.loads(out)["generated_ids"]
    plan = json.loads(subprocess.run([a.dsv4, "plan", "--weights", a.ckpt, "--context", str(PROMPT_LEN + GEN),
                                      "--kv-cache-dtype", "f32", "--indexer-cache-dtype", "f32", "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    weight_bytes = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    bound = int((weight_bytes + plan["total_bytes"]) * 1.1)

    keys = ("prefill_tokens_per_s", "decode_tokens_per_s", "other_load_cores")
    med = {side: {k: statistics.median(r[k] for r in rs) for k in keys} for side, rs in runs.items()}
    d, t = med["dsv4"], med["transformers"]
    gib = 1 << 30
    print(f"\nmedians of {a.rounds} alternating rounds, {a.threads} threads, {PROMPT_LEN}-token prefill, "
          f"{GEN - 1} timed decode steps")
    print(f"{'':16}{'dsv4':>12}{'transformers':>14}{'dsv4/tf':>9}")
    for k, name in (("prefill_tokens_per_s", "prefill tok/s"), ("decode_tokens_per_s", "decode tok/s")):
        print(f"{name:16}{d[k]:12.2f}{t[k]:14.2f}{d[k] / t[k]:8.2f}x")
    print(f"{'other load':16}{d['other_load_cores']:12.2f}{t['other_load_cores']:14.2f}   cores busy with other work")
    tf_rss = max(r["rss"] for r in runs["transformers"])
    print(f"{'peak RSS GiB':16}{run_rss / gib:12.2f}{tf_rss / gib:14.2f}{run_rss / tf_rss:8.2f}x"
          f"   (dsv4: `run`; `bench` {max(r['rss'] for r in runs['dsv4']) / gib:.2f} with its triad buffers)")
    print(f"dsv4 expected bound (weights {weight_bytes / gib:.2f} GiB + KV {plan['total_bytes'] / 2**20:.2f} MiB)"
          f" + 10% = {bound / gib:.2f} GiB: {'within' if run_rss <= bound else 'EXCEEDED'}")
    db = runs["dsv4"]
    summary = {
        "threads": a.threads,
        "rounds": a.rounds,
        "decode_ratio_dsv4_over_transformers": d["decode_tokens_per_s"] / t["decode_tokens_per_s"],
        "prefill_ratio_dsv4_over_transformers": d["prefill_tokens_per_s"] / t["prefill_tokens_per_s"],
        "dsv4_median": d,
        "transformers_median": t,
        "dsv4_peak_rss_bytes": run_rss,
        "dsv4_bench_peak_rss_bytes": max(r["rss"] for r in db),
        "transformers_peak_rss_bytes": tf_rss,
        "dsv4_expected_rss_bound_bytes": bound,
        "dsv4_within_bound": run_rss <= bound,
        "dsv4_bandwidth_ratio_median": statistics.median(r["bandwidth_ratio"] for r in db),
        "dsv4_effective_bandwidth_gb_per_s_median": statistics.median(r["effective_bandwidth_gb_per_s"] for r in db),
        "measured_memory_bandwidth_gb_per_s_median": statistics.median(
            r["measured_memory_bandwidth_gb_per_s"] for r in db),
        "weight_bytes_per_token": db[0]["weight_bytes_per_token"],
        "transformers_load_s_median": statistics.median(r["load_s"] for r in runs["transformers"]),
        "greedy_ids_match": run_ids == runs["transformers"][0]["generated_ids"],
        "rounds_raw": {side: [{k: v for k, v in r.items() if k != "generated_ids"} for r in rs]
                       for side, rs in runs.items()},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
