//! Files shipped inside the binary: the real DeepSeek-V4 tokenizer (assets/deepseek-v4, MIT), and
//! the demo model (tests/quality/kjv: trained here on the King James Bible, with its own
//! tokenizer).

/// `tokenizer.json`.
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../../assets/deepseek-v4/tokenizer.json");
/// Its transformers companion (BOS/EOS names, no chat template).
pub const TOKENIZER_CONFIG_JSON: &[u8] =
    include_bytes!("../../assets/deepseek-v4/tokenizer_config.json");

/// Writes both tokenizer files into `dir`.
pub fn write_tokenizer(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER_JSON)?;
    std::fs::write(dir.join("tokenizer_config.json"), TOKENIZER_CONFIG_JSON)
}

/// The demo model's files, by name: a DeepSeek-V4-architecture model of 5.25M parameters trained
/// here on the King James Bible (tests/quality/train.py) in the release layout, and its
/// 2048-token tokenizer.
pub const DEMO_MODEL: [(&str, &[u8]); 4] = [
    (
        "config.json",
        include_bytes!("../../tests/quality/kjv/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../tests/quality/kjv/model.safetensors"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../tests/quality/kjv/tokenizer.json"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../tests/quality/kjv/tokenizer_config.json"),
    ),
];

/// Writes the demo model into `dir`.
pub fn write_demo_model(dir: &std::path::Path) -> std::io::Result<()> {
    for (name, bytes) in DEMO_MODEL {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
