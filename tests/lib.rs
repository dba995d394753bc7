//! Cross-crate integration tests of dsv4; the tests live beside this file and are listed in
//! `Cargo.toml`. Shared fixtures and helpers will gather here.
