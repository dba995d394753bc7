//! The DeepSeek-V4 model description: `config.json` parsing and validation, built-in presets,
//! the layer schedule, the release tensor manifest and parameter accounting.
//!
//! Everything here is derived from the config alone; loading tensors builds on the manifest.

mod accounting;
mod config;
mod json_fields;
mod manifest;
mod presets;
mod schedule;

pub use accounting::{Count, ParamReport};
pub use config::{
    ConfigError, ExpertDtype, Fp8Quantization, ModelConfig, ScoringFunc, YarnScaling,
};
pub use manifest::{Activity, Component, DType, Manifest, TensorSpec};
pub use presets::Preset;
pub use schedule::{AttentionKind, LayerSchedule, LayerSpec, MlpKind, RopeKind, CSA_RATIO};
