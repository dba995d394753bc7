//! Files shipped inside the binary: the real DeepSeek-V4 tokenizer (assets/deepseek-v4, MIT).

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
