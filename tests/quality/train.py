#!/usr/bin/env python3
"""Trains a small DeepSeek-V4-architecture model on the King James Bible, to measure what the
cache strategies cost in quality (docs/cache-strategies.md). Random weights cannot say that.

    python3 -m venv V && V/bin/pip install torch transformers safetensors numpy accelerate ml_dtypes tokenizers
    apt-get download bible-kjv bible-kjv-text && for d in bible-kjv*.deb; do dpkg -x "$d" K; done
    K/usr/bin/bible -p K/usr/lib "gen1:1-rev22:21" > kjv.txt
    V/bin/python tests/quality/train.py --text kjv.txt --out tests/quality/kjv [--minutes 25]

The text (public domain) comes from Debian's bible-kjv-text. Without any dsv4 code, this script:
  1. splits it into verses, every 20th chapter held out, and trains a byte-level BPE tokenizer
     of 2048 ids on the rest with the `tokenizers` library (ids 0 and 1 are <bos>, <eos>);
  2. writes a random checkpoint in the release layout with tests/parity/make_fixtures.py's writer
     (window-only, CSA and HCA layers, 8 indexer heads, a hash-routed and routed MoE layers) and
     loads it with transformers' DeepseekV4ForCausalLM in float32;
  3. trains it (AdamW, cosine schedule, 192-token windows) for a time budget;
  4. converts the trained weights back to the release layout (FP8 E4M3 linears with 128x128
     UE8M0 scales, FP4 E2M1 experts with per-32 UE8M0 scales, BF16 / F32 as the release keeps
     them), writes it beside the tokenizer, and reloads it with transformers to measure the
     held-out loss of what dsv4 will run, against a unigram model's.
"""
import argparse
import json
import math
import os
import random
import re
import sys
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
import make_fixtures as mf  # noqa: E402  (the release-layout writer and quantizers)

VOCAB = 2048
WINDOW = 192
FX = dict(name="kjv", seed=2024,
          ratios=[0, 4, 16, 4, 16, 4], mtp=False, experts="fp4", shards=1, hf_layer_types=True,
          hidden_size=128, num_attention_heads=4, q_lora_rank=128, o_groups=2, o_lora_rank=128,
          sliding_window=32, index_n_heads=8, index_head_dim=64, index_topk=16, hc_mult=2,
          n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=256, num_hash_layers=1,
          swiglu_limit=10.0, routed_scaling_factor=1.5, expert_dtype="fp4")


def verses(path):
    """(chapter index, verse text) for every verse, in order. The `bible` tool prints a chapter
    heading ("Genesis 1") after a blank line, verses indented with their number, and wraps long
    verses onto unindented lines."""
    out, chapter, current, blank = [], -1, None, True
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line.strip():
            blank = True
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            if current is not None:
                out.append((chapter, current))
            current = m.group(2).strip()
        elif blank:
            if current is not None:
                out.append((chapter, current))
                current = None
            chapter += 1
        elif current is not None:
            current += " " + line.strip()
        blank = False
    if current is not None:
        out.append((chapter, current))
    return out


def split(vs):
    train = [v for c, v in vs if c % 20 != 7]
    held = [v for c, v in vs if c % 20 == 7]
    return "\n".join(train) + "\n", "\n".join(held) + "\n"


def train_tokenizer(text, out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id("<bos>") == 0 and tok.token_to_id("<eos>") == 1
    tok.save(os.path.join(out, "tokenizer.json"))
    mf.write_json(os.path.join(out, "tokenizer_config.json"),
                  {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": False})
    return tok


def unigram_nats(train_ids, held_ids):
    counts = torch.bincount(torch.tensor(train_ids), minlength=VOCAB).double() + 1.0
    p = counts / counts.sum()
    return float(-p[torch.tensor(held_ids)].log().mean())


def windows(ids, n, g):
    starts = torch.randint(0, len(ids) - WINDOW - 1, (n,), generator=g)
    x = torch.stack([torch.tensor(ids[s:s + WINDOW + 1]) for s in starts.tolist()])
    return x[:, :-1], x[:, 1:]


def held_windows(ids, n):
    step = (len(ids) - WINDOW - 1) // n
    x = torch.stack([torch.tensor(ids[i * step:i * step + WINDOW + 1]) for i in range(n)])
    return x[:, :-1], x[:, 1:]


@torch.no_grad()
def loss_of(model, xs, ys, batch=8):
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(xs), batch):
        logits = model(input_ids=xs[i:i + batch], use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ys[i:i + batch].reshape(-1),
                                                reduction="sum")
        total += float(nll)
        count += ys[i:i + batch].numel()
    return total / count


def native_from_hf(model, b):
    """The trained weights under their native names, quantized as the release stores them."""
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    I = FX["moe_intermediate_size"]
    out = mf.Builder(FX, 0)
    for nat, stored in b.t.items():
        if nat.endswith(".scale") and nat[:-len(".scale")] + ".weight" in b.t:
            continue  # made with its weight
        w = mf.hf_value(sd, nat, I)[1]
        w = w.reshape(stored.shape) if stored.dtype not in (torch.int8,) else w
        if stored.dtype == torch.float8_e4m3fn:
            q, s, d = mf.quant_fp8_block(w.contiguous())
            out.t[nat], out.t[nat[:-len(".weight")] + ".scale"], out.deq[nat] = q, s, d
        elif stored.dtype == torch.int8:
            q, s, d = mf.quant_fp4_group(w.contiguous())
            out.t[nat], out.t[nat[:-len(".weight")] + ".scale"], out.deq[nat] = q, s, d
        elif stored.dtype == torch.bfloat16:
            out.bf16(nat, w)
        elif stored.dtype == torch.float32:
            out.f32(nat, w)
        else:
            out.t[nat], out.deq[nat] = stored, stored  # tid2eid: fixed at init
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(FX["seed"])
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    mf.VOCAB = VOCAB  # the writer's vocabulary (embed, head, tid2eid rows)

    train_text, held_text = split(verses(args.text))
    tok = train_tokenizer(train_text, args.out)
    train_ids = tok.encode(train_text).ids
    held_ids = tok.encode(held_text).ids
    mf.write_json(os.path.join(args.out, "heldout.json"), {"ids": held_ids[:16384]})
    uni = unigram_nats(train_ids, held_ids)
    print(f"tokens: train {len(train_ids)}, held-out {len(held_ids)}; unigram {uni:.4f} nats", flush=True)

    init_dir = os.path.join(args.out, "init")
    b = mf.Builder(FX, FX["seed"]).build()
    mf.write_checkpoint(b, FX, init_dir)
    model = mf.load_hf(init_dir)
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params}", flush=True)

    hx, hy = held_windows(held_ids, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    g = torch.Generator().manual_seed(FX["seed"])
    start, step, history = time.time(), 0, []
    budget = args.minutes * 60
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        x, y = windows(train_ids, args.batch, g)
        logits = model(input_ids=x, use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            held = loss_of(model, hx[:8], hy[:8])
            history.append((step, round(time.time() - start), float(loss), held))
            print(f"step {step} {time.time() - start:.0f}s lr {lr:.2e} train {float(loss):.4f} held-out {held:.4f}",
                  flush=True)

    trained = loss_of(model, hx, hy)
    native = native_from_hf(model, b)
    mf.write_checkpoint(native, FX, args.out)
    for f in os.listdir(init_dir):
        os.remove(os.path.join(init_dir, f))
    os.rmdir(init_dir)
    converted = loss_of(mf.load_hf(args.out), hx, hy)
    report = {
        "text": "King James Bible (Debian bible-kjv-text), every 20th chapter held out",
        "tokenizer": f"byte-level BPE, {VOCAB} ids, tokenizers library",
        "parameters": params, "steps": step, "batch": args.batch, "window": WINDOW,
        "minutes": args.minutes, "unigram_nats": uni,
        "heldout_nats_trained_f32": trained, "heldout_nats_release_layout": converted,
        "history": history,
        "versions": {"torch": torch.__version__, "transformers": mf.transformers.__version__},
    }
    mf.write_json(os.path.join(args.out, "training.json"), report)
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
