//! Jobs: what one command does, from input files to output files.
//!
//! A job reads and validates all its inputs first (so a bad input fails before anything
//! is written; in multi-photo jobs a bad photo fails alone, see [`Outcome`]), calls the
//! engines, and writes every output atomically. Jobs take an
//! opened [`Bundle`](crate::model::Bundle) and explicit parameters; they print nothing
//! themselves and report through one [`Observer`] trait (warnings, stages, progress,
//! optimisation steps; every hook optional), so the command line, tests, batch and the
//! server share them.

pub mod align;
pub mod batch;
pub mod bench;
pub mod bench_latent;
pub mod bench_quality;
pub mod edit;
pub mod eval;
pub mod family;
pub mod generate;
pub mod info;
pub mod invert;
pub mod io;
pub mod morph;
pub mod picture;
pub mod sources;
pub mod spec;
pub mod tree;
pub mod vae;

use std::path::PathBuf;

use crate::invert::StepInfo;

/// How a job reports while it runs: the command line draws bars and prints warnings,
/// `batch` passes warnings on, tests ignore everything ([`Quiet`]). Every hook is
/// optional. The jobs' own names for it (`FamilyObserver`, `MorphObserver`, ...) are this
/// trait.
pub trait Observer {
    /// A note for the user (several faces found, a latent far from the model's
    /// statistics, a cache that could not be written ...), each naming its input.
    fn warning(&mut self, _msg: &str) {}
    /// A stage of `total` units of work begins (eval's stages, a batch of `total`
    /// optimisation steps, `total` frames to render).
    fn stage(&mut self, _name: &str, _total: usize) {}
    /// `done` of `total` units of the current stage are finished.
    fn progress(&mut self, _done: usize, _total: usize) {}
    /// One optimisation step (inversion, imputation).
    fn step(&mut self, _info: &StepInfo) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// An input of a multi-photo job (align, invert, vae encode/reconstruct) that could not be
/// processed, and why. Such jobs go on with the other inputs, the way `grep -r` goes on
/// past an unreadable file, unless the job asks to fail fast.
#[derive(Debug)]
pub struct Failure {
    pub input: PathBuf,
    pub error: anyhow::Error,
}

impl Failure {
    /// The error as one line that names the input (most messages already do).
    pub fn message(&self) -> String {
        let msg = format!("{:#}", self.error);
        let name = self.input.display().to_string();
        if msg.contains(&name) {
            msg
        } else {
            format!("{name}: {msg}")
        }
    }
}

/// What a multi-photo job did: one result per input processed, in input order, and the
/// inputs it could not process.
#[derive(Debug)]
pub struct Outcome<T> {
    pub done: Vec<T>,
    pub failed: Vec<Failure>,
}

/// The error a command ends with when some inputs failed (each was reported on its own):
/// `N done, M failed`.
#[derive(Debug, thiserror::Error)]
#[error("{done} done, {failed} failed")]
pub struct SomeFailed {
    pub done: usize,
    pub failed: usize,
}

/// Handles one input's error: with `fail_fast` it ends the job, else it is recorded and
/// the job goes on.
pub(crate) fn record_failure(
    failed: &mut Vec<Failure>,
    fail_fast: bool,
    input: &std::path::Path,
    error: anyhow::Error,
) -> anyhow::Result<()> {
    if fail_fast {
        return Err(error);
    }
    failed.push(Failure {
        input: input.to_path_buf(),
        error,
    });
    Ok(())
}
