#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/make_seeds.py`. The fuzzers grow the corpora from these; `cargo
fuzz cmin` then keeps the inputs that add coverage (seeds included only if they still do).
"""

import json
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
SHARD = "model-00001-of-00001.safetensors"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


# --- config: the presets (native spelling), transformers' spelling, and hand-mutated ones.
for preset in sorted((ROOT / "dsv4-model" / "presets").glob("*.json")):
    write("config", preset.stem, preset.read_bytes())
transformers = (ROOT / "tests/fixtures/transformers-tiny/saved/config.json").read_bytes()
write("config", "transformers", transformers)

tiny = json.loads((ROOT / "dsv4-model/presets/tiny.json").read_text())
mutations = {
    "layers-1025": {"num_hidden_layers": 1025},
    "positions-2-26-plus-1": {"max_position_embeddings": (1 << 26) + 1},
    "ratios-short": {"compress_ratios": [0, 4]},
    "ratios-huge": {"compress_ratios": [0, 4, 16, 4, 1 << 40]},
    "eos-list": {"eos_token_id": [1, 2, 129279]},
    "eos-out-of-vocab": {"eos_token_id": 129280},
    "rotary-factor": {"partial_rotary_factor": 0.25, "qk_rope_head_dim": None},
    "yarn-inverted": {"rope_scaling": {"type": "yarn", "factor": 0.5,
                                       "original_max_position_embeddings": 0,
                                       "beta_fast": 1, "beta_slow": 32}},
    "negative-eps": {"rms_norm_eps": -1e-6, "hc_eps": 0},
    "float-count": {"hidden_size": 64.5, "vocab_size": "129280"},
    "experts-product": {"n_routed_experts": 16384, "num_hidden_layers": 1024,
                        "compress_ratios": [0] * 1024},
    "block-size": {"quantization_config": {"weight_block_size": [64, 128]}},
    "no-quant-fp8-experts": {"quantization_config": None, "expert_dtype": "fp8"},
}
for name, changes in mutations.items():
    config = dict(tiny)
    if "compress_ratios" in changes:
        config.pop("layer_types")  # else the two spellings of the schedule disagree first
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    write("config", name, json.dumps(config))
write("config", "huge-number", json.dumps(tiny).replace('"vocab_size": 129280', '"vocab_size": 1e400'))
write("config", "deep", "[" * 200 + "]" * 200)
write("config", "not-object", "[1, 2, 3]")


# --- safetensors_header: small whole files.
SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1,
         "I32": 4, "I64": 8}


def safetensors(tensors, metadata=None, lie=None, trailing=b""):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in tensors:
        count = 1
        for d in shape:
            count *= d
        size = count * SIZES.get(dtype, 1)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if lie:
        lie(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(offset) + trailing


PLAIN = [("w", "BF16", [2, 2]), ("s", "F8_E8M0", [1, 1]), ("q", "F8_E4M3", [4]),
         ("p", "I8", [2, 2]), ("f", "F32", [1])]
write("safetensors_header", "dtypes", safetensors(PLAIN, {"format": "pt"}))
write("safetensors_header", "fused",
      safetensors([("model.layers.0.mlp.experts.gate_up_proj", "BF16", [2, 4, 2]),
                   ("model.layers.0.mlp.experts.down_proj", "BF16", [2, 2, 2])]))


def overlap(header):
    header["q"]["data_offsets"] = [0, 4]


def overflow(header):
    header["w"]["shape"] = [1 << 40, 1 << 40]


def outside(header):
    header["f"]["data_offsets"] = [17, 4096]


write("safetensors_header", "overlap", safetensors(PLAIN, lie=overlap))
write("safetensors_header", "overflow", safetensors(PLAIN, lie=overflow))
write("safetensors_header", "outside", safetensors(PLAIN, lie=outside))
write("safetensors_header", "truncated", safetensors(PLAIN)[:-3])
write("safetensors_header", "long-claim", struct.pack("<Q", 1 << 40) + b"{}")
write("safetensors_header", "empty", struct.pack("<Q", 2) + b"{}")
write("safetensors_header", "unknown-dtype", safetensors([("x", "F4", [2])], {"k": "v"}))
write("safetensors_header", "big",
      safetensors([(f"layers.{i}.attn.wq_a.weight", "BF16", [16, 16]) for i in range(48)]))


# --- safetensors_index: the shard the harness writes holds these tensors.
SHARD_TENSORS = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_a_proj.weight",
                 "model.layers.0.self_attn.q_a_proj.weight_scale_inv",
                 "model.layers.0.mlp.experts.gate_up_proj",
                 "model.layers.0.mlp.experts.down_proj", "model.norm.weight",
                 "model.layers.0.mlp.gate.tid2eid"]
write("safetensors_index", "ok", json.dumps(
    {"metadata": {"total_size": 200}, "weight_map": {t: SHARD for t in SHARD_TENSORS}}))
write("safetensors_index", "partial", json.dumps(
    {"weight_map": {SHARD_TENSORS[0]: SHARD, "model.extra.weight": SHARD}}))
write("safetensors_index", "up", json.dumps({"weight_map": {"head.weight": "../x.safetensors"}}))
write("safetensors_index", "absolute", json.dumps({"weight_map": {"head.weight": "/etc/passwd"}}))
write("safetensors_index", "missing", json.dumps(
    {"weight_map": {"head.weight": "model-00002-of-00002.safetensors", SHARD_TENSORS[0]: SHARD}}))
write("safetensors_index", "itself", json.dumps(
    {"weight_map": {"x": "model.safetensors.index.json"}}))
write("safetensors_index", "dot", json.dumps({"weight_map": {"x": ".", "y": ""}}))
write("safetensors_index", "not-map", json.dumps({"weight_map": [SHARD]}))


# --- tokenizer: small tokenizer.json files holding DeepSeek-V4's BOS and EOS.
def added(content, id):
    return {"id": id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


ADDED = [added(BOS, 0), added(EOS, 1), added("<think>", 2)]


def tokenizer(model, pre=None, normalizer=None, decoder=None, post=None, added_tokens=ADDED):
    return json.dumps({"version": "1.0", "truncation": None, "padding": None,
                       "added_tokens": added_tokens, "normalizer": normalizer,
                       "pre_tokenizer": pre, "post_processor": post, "decoder": decoder,
                       "model": model}, ensure_ascii=False)


specials = {BOS: 0, EOS: 1, "<think>": 2}
words = dict(specials, **{"Hello": 3, "world": 4, "[UNK]": 5, "!": 6, ",": 7, "123": 8})
write("tokenizer", "wordlevel", tokenizer(
    {"type": "WordLevel", "vocab": words, "unk_token": "[UNK]"},
    pre={"type": "Whitespace"}))

letters = dict(specials, **{c: i + 3 for i, c in enumerate("Helowrd, !123")})
letters.update({"He": 16, "ll": 17, "llo": 18, "Hello": 19})
write("tokenizer", "bpe", tokenizer(
    {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
     "ignore_merges": False, "vocab": letters, "merges": ["H e", "l l", "ll o", "He llo"]},
    pre={"type": "Whitespace"}))

byte_vocab = dict(specials)
for i, c in enumerate("Helowrd,!123\u0120"):
    byte_vocab[c] = i + 3
byte_vocab["\u0120w"] = 20
write("tokenizer", "bytelevel", tokenizer(
    {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
     "ignore_merges": False, "vocab": byte_vocab, "merges": [["\u0120", "w"]]},
    pre={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": True}]},
    normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]},
    decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
             "use_regex": True},
    post={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
          "use_regex": True}))

write("tokenizer", "wordpiece", tokenizer(
    {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
     "max_input_chars_per_word": 100,
     "vocab": dict(words, **{"##lo": 9, "Hel": 10})},
    pre={"type": "BertPreTokenizer"},
    normalizer={"type": "Lowercase"},
    decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}))

write("tokenizer", "unigram", tokenizer(
    {"type": "Unigram", "unk_id": 3, "byte_fallback": False,
     "vocab": [[BOS, 0.0], [EOS, 0.0], ["<think>", 0.0], ["<unk>", 0.0],
               ["\u2581Hello", -1.0], ["\u2581world", -1.5], ["\u2581", -2.0], ["l", -3.0]]},
    pre={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
         "split": True},
    normalizer={"type": "Replace", "pattern": {"String": "  "}, "content": " "},
    decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
             "split": True}))

write("tokenizer", "no-eos", tokenizer(
    {"type": "WordLevel", "vocab": {BOS: 0, "[UNK]": 1}, "unk_token": "[UNK]"},
    added_tokens=[added(BOS, 0)]))
write("tokenizer", "hole", tokenizer(
    {"type": "WordLevel", "vocab": dict(specials, **{"[UNK]": 9}), "unk_token": "[UNK]"},
    added_tokens=[added(BOS, 0), added(EOS, 1), added("<big>", 100000)]))


# --- cli_numbers: command lines (words split on whitespace, or on NUL when there is one).
for name, line in {
    "plan-batch": "plan --preset flash --batch 4294967296",
    "plan-memory": "plan --preset flash --memory 80GiB --context 1000",
    "plan-pro": "plan --preset pro --memory 1.5TB --block-size 0",
    "run-block": "run --block-size 18446744073709551600 --prompt-ids 1",
    "tokenize": "tokenize --tokenizer t --text hi --system x",
    "score": "score --weights d --ids 1,2,3 --out o.npy --chunk 7",
    "run-sampling": "run --prompt-ids 1,2 --temperature=-1 --top-p 2",
    "bench": "bench --weights d --prompt-len 99999999999 --gen 0 --threads 0 --prefill-chunk 1e3",
    "init": "init --preset small --out d --seed -3",
    "inspect": "inspect --weights d --deep",
    "help": "--help",
    "u64-plus-1": "18446744073709551616",
    "inf": "1e400GiB",
    "minus": "-1",
    "nan": "nan",
    "ids-empty": "[1, 2,,3]",
    "tib": "1.5TiB",
}.items():
    write("cli_numbers", name, line)
write("cli_numbers", "nul-words", b"run\0--prompt\0hello world\0--max-tokens\0 7 ")
write("cli_numbers", "not-utf8", b"plan --preset \xff\xfe --memory 1\xc3GiB")
