//! `latentface` binary: parse, run, map errors to a message and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match latentface::cli::main_entry() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (e.g. `| head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            if e.downcast_ref::<latentface::cli::Interrupted>().is_some() {
                return ExitCode::from(latentface::cli::EXIT_INTERRUPTED);
            }
            ExitCode::FAILURE
        }
    }
}
