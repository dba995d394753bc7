//! Where a command's model comes from: a checkpoint directory, a config file or a preset.

use dsv4_model::shown_path;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use dsv4_model::{Manifest, ModelConfig, ParamReport, Preset};
use dsv4_runtime::LoadError;

/// `--weights DIR | --config FILE | --preset NAME`, exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ModelSource {
    /// Checkpoint directory (its config.json and safetensors files).
    #[arg(long, value_name = "DIR")]
    pub weights: Option<PathBuf>,
    /// A config.json, native or transformers spelling.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A built-in shape: flash, pro, tiny or small.
    #[arg(long, value_name = "NAME", value_parser = parse_preset)]
    pub preset: Option<Preset>,
}

fn parse_preset(name: &str) -> Result<Preset, String> {
    Preset::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
        format!(
            "unknown preset `{name}`: expected one of {}",
            names.join(", ")
        )
    })
}

/// A resolved model: its config, a label for humans and the bytes its weights take.
pub struct Model {
    /// The validated config.
    pub config: ModelConfig,
    /// `preset flash`, or the path given.
    pub label: String,
    /// Bytes of the weights: the safetensors files on disk, else the release manifest's total.
    pub weight_bytes: u64,
}

impl ModelSource {
    /// Reads and validates the chosen config.
    pub fn resolve(&self) -> Result<Model> {
        if let Some(preset) = self.preset {
            let config = preset.config();
            let weight_bytes = manifest_bytes(&config);
            return Ok(Model {
                config,
                label: format!("preset {}", preset.name()),
                weight_bytes,
            });
        }
        if let Some(file) = &self.config {
            let config = read_config(file)?;
            let weight_bytes = manifest_bytes(&config);
            return Ok(Model {
                config,
                label: shown_path(file),
                weight_bytes,
            });
        }
        let dir = self.weights.as_deref().unwrap_or(Path::new("."));
        let config = read_config(&dir.join("config.json"))?;
        let on_disk = safetensors_bytes(dir)?;
        let weight_bytes = if on_disk > 0 {
            on_disk
        } else {
            manifest_bytes(&config)
        };
        Ok(Model {
            config,
            label: shown_path(dir),
            weight_bytes,
        })
    }
}

/// The config at `path`; errors name the path once.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    ModelConfig::from_file(path).map_err(|problem| {
        LoadError::Config {
            path: shown_path(path),
            problem,
        }
        .into()
    })
}

fn manifest_bytes(config: &ModelConfig) -> u64 {
    ParamReport::new(config, &Manifest::release(config))
        .checkpoint
        .bytes
}

/// Total size of the `*.safetensors` files in `dir`.
fn safetensors_bytes(dir: &Path) -> Result<u64> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", shown_path(dir)))?;
    let mut total = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", shown_path(dir)))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot stat {}", shown_path(&path)))?;
            total += meta.len();
        }
    }
    Ok(total)
}
