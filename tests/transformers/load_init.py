"""Checks that a `dsv4 init` checkpoint loads in transformers' DeepseekV4ForCausalLM (which
dequantizes its FP8/FP4 tensors on a CPU) and gives finite logits with a realistic spread.

    cargo run --release -p dsv4-cli -- init --preset tiny --out /tmp/tiny
    /path/to/venv-with-torch-transformers/bin/python tests/transformers/load_init.py /tmp/tiny
"""
import sys

import torch
from transformers import DeepseekV4ForCausalLM


def main(path):
    # .float(): tensors stored BF16 stay BF16 under dtype=float32; widening them is lossless.
    model = DeepseekV4ForCausalLM.from_pretrained(path, dtype=torch.float32).float().eval()
    ids = torch.tensor([[0, 100, 2000, 3000, 55, 77, 1234, 99, 5000, 12, 13, 14, 15, 16, 17, 18]])
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0]
    std = logits.std(-1)
    print(f"logits {tuple(logits.shape)}, std per position {std.min():.3f}..{std.max():.3f}")
    assert torch.isfinite(logits).all(), "non-finite logits"
    assert 0.3 < std.mean() < 3.0, "logits spread far from 1"
    assert len(set(logits.argmax(-1).tolist())) > 1, "every position predicts the same token"
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
