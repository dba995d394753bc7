#!/usr/bin/env python3
"""dsv4 and llama.cpp side by side on one checkpoint, in alternating rounds.

Builds nothing: give it a llama.cpp build's `llama-bench`, the GGUF made from the checkpoint
(how: ../shared/peers/README.md, or docs/performance.md) and the dsv4 binary. Each round runs
`dsv4 bench` (prefill of --prompt-len tokens, then --gen decoded tokens, and the machine's triad
in the same run), then `llama-bench` (pp<prompt-len> at depth 0 and tg<gen> at depth
<prompt-len>, the same work), and records the load average before each. It prints every round,
then the medians and their ratios (dsv4 / llama.cpp) and dsv4's decode bandwidth against its
triad.

    python3 scripts/peer_bench.py --weights /tmp/small --gguf small-release.gguf \\
        --llama-bench ~/llama-peer/build/bin/llama-bench --rounds 5 [--json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def load_average():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def run(cmd, env=None):
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        sys.exit(f"peer_bench: {cmd[0]} failed ({done.returncode}): {' | '.join(tail)}")
    return done.stdout


def dsv4_round(args):
    out = run([
        args.dsv4, "bench", "--weights", args.weights, "--threads", str(args.threads),
        "--prompt-len", str(args.prompt_len), "--gen", str(args.gen), "--json",
    ])
    r = json.loads(out)
    return {
        "prefill": r["prefill_tokens_per_s"],
        "decode": r["decode_tokens_per_s"],
        "triad_gb_s": r["measured_memory_bandwidth_gb_per_s"],
        "bandwidth_ratio": r["bandwidth_ratio"],
        "kernels": r["cpu_kernels"],
    }


def llama_round(args):
    env = dict(os.environ)
    lib = str(Path(args.llama_bench).resolve().parent)
    env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    out = run([
        args.llama_bench, "-m", args.gguf, "-t", str(args.threads),
        "-p", str(args.prompt_len), "-n", str(args.gen), "-d", f"0,{args.prompt_len}",
        "-r", "1", "-o", "json",
    ], env)
    tests = json.loads(out)
    pick = lambda p, g, d: next(
        t["avg_ts"] for t in tests if (t["n_prompt"], t["n_gen"], t["n_depth"]) == (p, g, d)
    )
    return {
        "prefill": pick(args.prompt_len, 0, 0),
        "decode": pick(0, args.gen, args.prompt_len),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="dsv4 checkpoint directory")
    p.add_argument("--gguf", required=True, help="the same checkpoint converted for llama.cpp")
    p.add_argument("--llama-bench", required=True, help="path of llama.cpp's llama-bench")
    p.add_argument("--dsv4", default="target/release/dsv4", help="the dsv4 binary")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (at least 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--gen", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()
    if args.rounds < 3:
        sys.exit("peer_bench: --rounds must be at least 3 (medians of alternating rounds)")
    for path in (args.dsv4, args.llama_bench, args.gguf, args.weights):
        if not Path(path).exists():
            sys.exit(f"peer_bench: {path}: not found")

    rounds = []
    for i in range(args.rounds):
        load_d = load_average()
        d = dsv4_round(args)
        load_l = load_average()
        l = llama_round(args)
        rounds.append({"dsv4": d, "llama": l, "load_before": [load_d, load_l]})
        if not args.json:
            print(
                f"round {i + 1}: dsv4 prefill {d['prefill']:7.1f} decode {d['decode']:6.2f} tok/s"
                f" ({100 * d['bandwidth_ratio']:.0f}% of triad {d['triad_gb_s']:.1f} GB/s)"
                f" | llama.cpp prefill {l['prefill']:7.1f} decode {l['decode']:6.2f} tok/s"
                f" | load {load_d:.2f}/{load_l:.2f}",
                flush=True,
            )

    med = lambda who, key: statistics.median(r[who][key] for r in rounds)
    summary = {
        "threads": args.threads,
        "prompt_len": args.prompt_len,
        "gen": args.gen,
        "dsv4_kernels": rounds[0]["dsv4"]["kernels"],
        "dsv4_prefill_tok_s": med("dsv4", "prefill"),
        "dsv4_decode_tok_s": med("dsv4", "decode"),
        "dsv4_bandwidth_ratio": med("dsv4", "bandwidth_ratio"),
        "triad_gb_s": med("dsv4", "triad_gb_s"),
        "llama_prefill_tok_s": med("llama", "prefill"),
        "llama_decode_tok_s": med("llama", "decode"),
        "rounds": rounds,
    }
    summary["prefill_ratio"] = summary["dsv4_prefill_tok_s"] / summary["llama_prefill_tok_s"]
    summary["decode_ratio"] = summary["dsv4_decode_tok_s"] / summary["llama_decode_tok_s"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"medians of {args.rounds}: dsv4 ({summary['dsv4_kernels']}) prefill "
        f"{summary['dsv4_prefill_tok_s']:.1f}, decode {summary['dsv4_decode_tok_s']:.2f} tok/s "
        f"({100 * summary['dsv4_bandwidth_ratio']:.0f}% of the triad, "
        f"{summary['triad_gb_s']:.1f} GB/s); llama.cpp prefill "
        f"{summary['llama_prefill_tok_s']:.1f}, decode {summary['llama_decode_tok_s']:.2f} tok/s"
    )
    print(
        f"dsv4 / llama.cpp: prefill {summary['prefill_ratio']:.2f}x, "
        f"decode {summary['decode_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
