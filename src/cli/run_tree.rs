//! Running `latentface tree`: the manifest read into a plan, the steps run with a line
//! each, a table of what ran and what was skipped, the exit status (see `jobs::tree`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::args::TreeArgs;
use super::common::{Common, Interrupted, EXIT_INTERRUPTED};
use super::run_batch::exit_now;
use crate::jobs::batch::{Interrupts, Status};
use crate::jobs::sources::LatentCache;
use crate::jobs::spec::{Context, Fields, Origin};
use crate::jobs::tree::{self, TreeJob};
use crate::jobs::Observer;

/// Prints each step as it starts and every warning.
struct Lines {
    started: usize,
}

impl Observer for Lines {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn stage(&mut self, name: &str, total: usize) {
        self.started += 1;
        eprintln!("[{}/{total}] {name}", self.started);
    }
}

pub fn run_tree(common: &Common, a: &TreeArgs) -> Result<()> {
    let plan = tree::read_plan(&a.manifest)?;
    let bundle = common.open_bundle()?;
    let fields = Fields::of::<TreeArgs>(Origin::CommandLine);
    let ctx = Context {
        manifest: Some(bundle.manifest()),
        cache: &LatentCache::default_location(),
        origin: Origin::CommandLine,
    };
    let job = TreeJob {
        plan,
        out_dir: a.output.clone(),
        sources: a.sources.options(&fields, &ctx)?,
        force: a.force,
        metadata: !a.meta.no_metadata,
        picture: {
            a.picture.size(&fields)?; // checked here, before any work
            a.picture.clone()
        },
    };

    // First Ctrl-C or SIGTERM: stop after the running step. Second: stop now. Either way
    // nothing is half-written (every file is atomic) and a step without its marker is
    // redone by the next run.
    let cancel = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    let mut interrupts = rt.block_on(async { Interrupts::new() });
    let flag = cancel.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            while interrupts.next().await {
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "second interrupt: stopping now; run the same command again to resume"
                    );
                    exit_now(EXIT_INTERRUPTED);
                }
                eprintln!(
                    "interrupt: stopping after the running step (interrupt again to stop now)"
                );
            }
        })
    });

    let run = tree::run_tree(&bundle, &job, &cancel, &mut Lines { started: 0 })?;
    let width = run
        .steps
        .iter()
        .map(|s| s.step.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:<8} {:>8}", "step", "status", "seconds");
    for s in &run.steps {
        println!(
            "{:<width$}  {:<8} {:>8.2}",
            s.step,
            s.status.label(),
            s.seconds
        );
    }
    let count = |st: Status| run.steps.iter().filter(|s| s.status == st).count();
    println!(
        "{} steps: {} ran, {} skipped (already done)",
        run.steps.len(),
        count(Status::Ok),
        count(Status::Skipped)
    );
    if run.interrupted {
        return Err(Interrupted(
            "interrupted: the steps above are done; run the same command again to resume".into(),
        )
        .into());
    }
    if let Some(r) = &run.report {
        println!(
            "{} people in {} generations, {} unions",
            r.people.len(),
            r.generations,
            r.unions.len()
        );
        println!("sheet {}", r.sheet.display());
        println!("report {}", r.report.display());
    }
    Ok(())
}
