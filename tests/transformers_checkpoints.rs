//! Checkpoints written by transformers itself (fixtures/transformers-tiny, made by its make.py):
//! `save_pretrained` output and the in-memory `state_dict()` names with fused experts both load
//! with no problem, their config.json (transformers spelling) parses, and every native tensor
//! reads the same bytes from both.

use std::path::{Path, PathBuf};

use dsv4_model::{
    check, transformers_name, Checkpoint, LinearFormat, ModelConfig, TransformersName,
};

fn fixture(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/transformers-tiny")
        .join(sub)
}

fn open(sub: &str) -> (ModelConfig, Checkpoint) {
    let dir = fixture(sub);
    let config =
        ModelConfig::from_file(&dir.join("config.json")).expect("transformers config parses");
    let checkpoint = Checkpoint::open(&dir).expect("opens");
    (config, checkpoint)
}

#[test]
fn transformers_written_checkpoints_load_without_problems() {
    for sub in ["saved", "internal"] {
        let (config, checkpoint) = open(sub);
        assert_eq!(config.decoder_ratios(), &[0, 4, 16, 4]);
        assert_eq!(config.num_hash_layers, 1);
        assert_eq!(config.qk_rope_head_dim, 16);
        let report = check(&config, &checkpoint);
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, Vec::<String>::new(), "{sub}");
        assert!(
            report.unused.is_empty(),
            "{sub}: unused {:?}",
            report.unused
        );
        let formats = report.formats.expect("formats");
        assert_eq!(
            (formats.dense, formats.experts),
            (LinearFormat::Float, LinearFormat::Float)
        );
        assert!(!report.has_mtp);
    }
}

#[test]
fn both_spellings_hold_the_same_tensors() {
    let (config, saved) = open("saved");
    let (_, internal) = open("internal");
    let report = check(&config, &saved);
    for spec in &report.manifest.tensors {
        let a = saved.tensor(&spec.name).expect("in saved");
        let b = internal.tensor(&spec.name).expect("in internal");
        assert_eq!(a.shape, b.shape, "{}", spec.name);
        assert_eq!(a.data, b.data, "{} ({} vs {})", spec.name, a.name, b.name);
        // The transformers name the manifest derives is where the tensor really is.
        match transformers_name(&spec.name).expect("mapped") {
            TransformersName::Tensor(hf) => assert_eq!(b.name, hf),
            TransformersName::FusedExpert { tensor, expert, .. } => {
                assert!(
                    b.name.starts_with(&format!("{tensor}[{expert}, ")),
                    "{}",
                    b.name
                )
            }
        }
    }
}
