//! Deterministic test data: the helpers the number-format tests of `dsv4-formats` use, shared
//! by path rather than copied.

#[path = "../../../dsv4-formats/tests/common/mod.rs"]
mod shared;

#[allow(unused_imports)]
pub use shared::*;
