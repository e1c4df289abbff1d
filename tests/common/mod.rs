//! Shared test helpers: the core crate's fixtures and trace harness.
#![allow(unused_imports)]

pub use iris_worker::core::testing::{Harness, config, key, request, spec, spec_with};
