//! latentface: invert face photos into a StyleGAN-like generator's latent space.
//!
//! The crate is layered so that data only flows downwards (see `shared/DESIGN.md`):
//! `cli` (argument parsing, progress) -> `jobs` (reading inputs, writing outputs) ->
//! engines (`invert`, `align`) -> `model` (ONNX Runtime and the model bundle) -> data types
//! (`latent`, `imageio`, `metrics`, `rng`). Engines and jobs are plain library
//! functions with explicit parameters so tests and future jobs (`batch`, `family`)
//! call exactly the code the command line runs.

pub mod align;
pub mod cli;
pub mod faces;
pub mod family;
pub mod fsutil;
pub mod imageio;
pub mod interp;
pub mod invert;
pub mod jobs;
pub mod latent;
pub mod media;
pub mod metrics;
pub mod model;
pub mod provenance;
pub mod rng;
pub mod serve;
pub mod sheet;
pub mod vae;

/// Version string recorded in provenance sidecars and reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
