//! Built-in configs: the shipped V4-Flash and V4-Pro values, and scaled-down shapes for tests,
//! demos and benchmarks. Each is a native `config.json`, parsed like any user's file.

use serde::Serialize;

use crate::ModelConfig;

/// A built-in model shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// DeepSeek-V4-Flash as released (284B total, 43 layers).
    Flash,
    /// DeepSeek-V4-Pro as released (1.6T total, 61 layers).
    Pro,
    /// 4 layers of width 64 with window-only, CSA and HCA (ratio 16) layers, hash and routed MoE,
    /// 2 hc streams and the real 129,280-token vocabulary, so the real tokenizer works with it.
    Tiny,
    /// Flash's shape scaled down to about 1.1 GB at release precision (hidden 1024, 8 layers,
    /// 64 experts top-6, no MTP) for benchmarks.
    Small,
}

impl Preset {
    /// Every preset, in the order `--help` lists them.
    pub const ALL: [Preset; 4] = [Preset::Flash, Preset::Pro, Preset::Tiny, Preset::Small];

    /// Lower-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flash => "flash",
            Self::Pro => "pro",
            Self::Tiny => "tiny",
            Self::Small => "small",
        }
    }

    /// The preset called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The native `config.json` text.
    pub fn config_json(self) -> &'static str {
        match self {
            Self::Flash => include_str!("../presets/flash.json"),
            Self::Pro => include_str!("../presets/pro.json"),
            Self::Tiny => include_str!("../presets/tiny.json"),
            Self::Small => include_str!("../presets/small.json"),
        }
    }

    /// The parsed config. The preset texts are fixed and covered by tests, so parsing cannot fail.
    pub fn config(self) -> ModelConfig {
        match ModelConfig::from_json_str(self.config_json()) {
            Ok(config) => config,
            Err(e) => unreachable!("built-in preset {} is invalid: {e}", self.name()),
        }
    }
}
