//! The model layer: ONNX Runtime (loaded once per process) and model bundles.
//!
//! `runtime` finds and loads the ONNX Runtime shared library, owns the single
//! process-wide environment and creates sessions on the requested execution provider,
//! reporting which one really runs. `bundle` reads and validates a bundle folder
//! against `onnx/BUNDLE.md` and exposes typed calls for each graph.

pub mod bundle;
pub mod manifest;
pub mod runtime;

pub use bundle::{Bundle, GradOutput, GraphKind};
pub use manifest::Manifest;
pub use runtime::{Device, RuntimeOptions};
