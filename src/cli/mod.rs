//! The command line, in three layers that import downwards only: `args` (what clap
//! parses: plain data, the job commands' arguments being their specs), `common`
//! (global options, the bundle, spec -> job), and the drivers (`run`, `run_vae`,
//! `run_batch`, `run_tree`) that run a job and print what it did, with `progress` for the bars.
//! No maths and no validation here: that is `jobs::spec` and below.

pub mod args;
mod common;
mod progress;
mod run;
mod run_batch;
mod run_tree;
mod run_vae;

use anyhow::Result;
use clap::Parser;

use args::{Cli, Command};
pub use common::{Interrupted, EXIT_INTERRUPTED};

/// Parses `std::env::args` and runs the command.
pub fn main_entry() -> Result<()> {
    run(Cli::parse())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // `align` works without a bundle (then with UTKFace's template and 256 px crops).
    if let Command::Align(a) = &cli.command {
        return run::align(&cli.global, a);
    }
    // `info FILE` reads a picture's metadata; no bundle needed.
    if let Command::Info(args::InfoArgs { file: Some(f) }) = &cli.command {
        return run::info_file(f);
    }
    let common = common::Common::from_args(&cli.global)?;
    // Every picture and video a job writes carries its provenance (unless --no-metadata).
    let record = cli
        .command
        .job_spec()
        .and_then(|s| s.provenance(common.bundle_ref()));
    crate::provenance::scoped(record, || dispatch(&cli, &common))
}

fn dispatch(cli: &Cli, common: &common::Common) -> Result<()> {
    match &cli.command {
        Command::Info(_) => run::info(common),
        Command::Generate(s) => run::generate(common, s),
        Command::Invert(s) => run::invert(common, s),
        Command::Family(a) => run::family(common, &a.spec()),
        Command::Morph(s) => run::morph(common, s),
        Command::Edit(s) => run::edit(common, s),
        Command::Batch(a) => run_batch::run_batch(common, a),
        Command::Tree(a) => run_tree::run_tree(common, a),
        Command::Bench(a) => run::bench(common, a),
        Command::Vae(a) => run_vae::run(common, &a.command),
        Command::Eval(a) => run::eval(common, a),
        Command::Serve(a) => crate::serve::run(common.open_bundle()?, &common::serve_options(a)),
        Command::Align(_) => unreachable!("handled above"),
    }
}
