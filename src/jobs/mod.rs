//! Jobs: what one command does, from input files to output files.
//!
//! A job reads and validates all its inputs first (so a bad input fails before anything
//! is written), calls the engines, and writes every output atomically. Jobs take an
//! opened [`Bundle`](crate::model::Bundle) and explicit parameters; they print nothing
//! themselves and report progress through small observer traits, so the command line,
//! tests and later batch jobs share them.

pub mod align;
pub mod batch;
pub mod bench;
pub mod bench_latent;
pub mod eval;
pub mod family;
pub mod generate;
pub mod info;
pub mod invert;
pub mod morph;
pub mod sources;
pub mod spec;
pub mod vae;
