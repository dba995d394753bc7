//! The cache schema (dsv4-cache) and the tensor manifest (dsv4-model) describe the same layers:
//! a layer caches compressed entries exactly when it ships a compressor, indexer keys exactly when
//! it ships an indexer, and each tail holds the tokens and widths the compressor's `ape` implies.

use dsv4_cache::{CacheDtypes, ModelCacheSchema, DEFAULT_BLOCK_SIZE};
use dsv4_model::{Manifest, Preset};

#[test]
fn every_preset_schema_agrees_with_its_manifest() {
    for preset in Preset::ALL {
        let config = preset.config();
        let manifest = Manifest::release(&config);
        let schema = ModelCacheSchema::new(&config, CacheDtypes::default(), DEFAULT_BLOCK_SIZE)
            .expect("presets suit the default block size");
        assert_eq!(schema.layers.len(), config.num_hidden_layers);
        for layer in &schema.layers {
            let name = |suffix: &str| format!("layers.{}.attn.{suffix}", layer.layer);
            let ape = manifest.get(&name("compressor.ape"));
            let indexer_ape = manifest.get(&name("indexer.compressor.ape"));
            assert_eq!(
                ape.is_some(),
                layer.entries.is_some(),
                "{preset:?} layer {}",
                layer.layer
            );
            assert_eq!(indexer_ape.is_some(), layer.indexer_keys.is_some());
            let kv = manifest.get(&name("kv_norm.weight")).expect("kv_norm");
            assert_eq!(kv.shape, vec![layer.entry_width]);
            // ape is [ratio, width of the current window's tokens]: the widest tail of each compressor.
            let widest = |prefix: &str| {
                layer
                    .tails
                    .iter()
                    .filter(|t| t.name.starts_with(prefix))
                    .map(|t| vec![t.tokens, t.width])
                    .max_by_key(|s| s[1])
            };
            if let Some(ape) = ape {
                let main = if indexer_ape.is_some() { "csa" } else { "hca" };
                assert_eq!(widest(main), Some(ape.shape.clone()));
            }
            if let Some(ape) = indexer_ape {
                assert_eq!(widest("indexer"), Some(ape.shape.clone()));
                let keys = layer.indexer_keys.expect("keys");
                let norm = manifest
                    .get(&name("indexer.compressor.norm.weight"))
                    .expect("norm");
                assert_eq!(norm.shape, vec![keys.width]);
            }
        }
    }
}
