//! Cross-crate integration tests of dsv4; the tests live beside this file and are listed in
//! `Cargo.toml`. Helpers they share live here.

use std::path::Path;

use dsv4_cache::{CacheDtypes, DEFAULT_BLOCK_SIZE};
use dsv4_runtime::{LoadedCheckpoint, Model, ModelWeights, Numerics};

/// Opens the checkpoint in `dir`, builds a model over it with `numerics` and cache `dtypes`,
/// and runs `f` with it (the model borrows the opened checkpoint, so it lives in here).
pub fn with_model<R>(
    dir: &Path,
    numerics: Numerics,
    dtypes: CacheDtypes,
    f: impl FnOnce(&Model) -> R,
) -> R {
    let loaded = LoadedCheckpoint::open(dir).expect("fixture loads");
    let weights = ModelWeights::bind(&loaded).expect("binds");
    let model = Model::new(
        &loaded.config,
        weights,
        numerics,
        dtypes,
        DEFAULT_BLOCK_SIZE,
    )
    .expect("model");
    f(&model)
}
