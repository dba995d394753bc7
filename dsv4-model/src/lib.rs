//! The DeepSeek-V4 model description: `config.json` parsing and validation, built-in presets,
//! the layer schedule, the release tensor manifest and parameter accounting.
//!
//! Everything here is derived from the config alone; loading tensors builds on the manifest.

mod accounting;
mod check;
mod checkpoint;
mod config;
mod files;
mod init;
mod json_fields;
mod manifest;
mod map_guard;
mod names;
mod presets;
mod scan;
mod schedule;
mod shown;
mod weights;

pub use accounting::{Count, ParamReport};
pub use check::{check, check_with_progress, CheckReport};
pub use checkpoint::{
    parse_header, parse_index, Checkpoint, Entry, OpenError, Problem, TensorView, INDEX_FILE,
    SINGLE_FILE,
};
pub use config::{
    ConfigError, ExpertDtype, Fp8Quantization, ModelConfig, ScoringFunc, YarnScaling,
};
pub use dsv4_formats::linear::{FloatDtype, LinearView, LinearWeight, Scales};
pub use files::{read_text, ReadError};
pub use init::{write_random_checkpoint, InitError, InitSummary, DEFAULT_SHARD_BYTES};
pub use manifest::{
    Activity, Component, DType, Linear, LinearFormat, Manifest, TensorKind, TensorSpec,
    WeightFormats,
};
pub use names::{native_name, transformers_name, ExpertPart, TransformersName};
pub use presets::Preset;
pub use scan::{scan_values, NonFinite};
pub use schedule::{AttentionKind, LayerSchedule, LayerSpec, MlpKind, RopeKind, CSA_RATIO};
pub use shown::{clip, shown_path};
