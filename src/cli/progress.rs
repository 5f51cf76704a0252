//! Progress bars and warnings on stderr: the observers the command line hands to jobs.

use indicatif::{ProgressBar, ProgressStyle};

use crate::invert::StepInfo;
use crate::jobs::invert::InvertObserver;
use crate::jobs::vae::VaeObserver;
use crate::jobs::{eval, morph};

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A spinner with `message`, ticking until finished.
pub fn spinner(message: String) -> ProgressBar {
    let sp = ProgressBar::new_spinner();
    sp.set_message(message);
    sp.enable_steady_tick(std::time::Duration::from_millis(200));
    sp
}

/// Warnings only.
pub struct PrintWarnings;

impl crate::jobs::Observer for PrintWarnings {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

/// `invert`: one bar of steps per batch of photos (a stage each).
#[derive(Default)]
pub struct InvertBar {
    bar: Option<ProgressBar>,
}

impl InvertBar {
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl InvertObserver for InvertBar {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn stage(&mut self, name: &str, steps: usize) {
        self.finish();
        let bar = styled(
            ProgressBar::new(steps as u64),
            "{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})",
        );
        bar.set_prefix(name.to_string());
        self.bar = Some(bar);
    }
    fn step(&mut self, info: &StepInfo) {
        if let Some(b) = &self.bar {
            b.set_position(info.step as u64);
            b.set_message(format!(
                "loss {:.4}, {} active",
                info.mean_loss, info.active
            ));
        }
    }
}

/// `morph`: a spinner while photo keys are inverted, then a bar of frames.
pub struct MorphBar {
    pub bar: Option<ProgressBar>,
    pub spinner: Option<ProgressBar>,
}

impl MorphBar {
    pub fn finish(&mut self) {
        for b in [self.bar.take(), self.spinner.take()].into_iter().flatten() {
            b.finish_and_clear();
        }
    }
}

impl morph::MorphObserver for MorphBar {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn stage(&mut self, _name: &str, frames: usize) {
        if let Some(sp) = self.spinner.take() {
            sp.finish_and_clear();
        }
        self.bar = Some(styled(
            ProgressBar::new(frames as u64),
            "rendering [{bar:30}] {pos}/{len} frames ({per_sec}, {eta})",
        ));
    }
    fn progress(&mut self, done: usize, _total: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
}

/// `eval`: one bar per stage.
pub struct EvalBar(pub Option<ProgressBar>);

impl eval::EvalObserver for EvalBar {
    fn warning(&mut self, msg: &str) {
        match &self.0 {
            Some(b) => b.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
    fn stage(&mut self, name: &str, total: usize) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
        let bar = styled(
            ProgressBar::new(total as u64),
            "{prefix:>12} [{bar:30}] {pos}/{len} ({elapsed})",
        );
        bar.set_prefix(name.to_string());
        self.0 = Some(bar);
    }
    fn progress(&mut self, done: usize, _total: usize) {
        if let Some(b) = &self.0 {
            b.set_position(done as u64);
        }
    }
}

/// The `vae` commands: a bar of images or of optimisation steps.
pub struct VaeBar {
    bar: Option<ProgressBar>,
    label: &'static str,
}

impl VaeBar {
    pub fn new(label: &'static str) -> VaeBar {
        VaeBar { bar: None, label }
    }
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl VaeObserver for VaeBar {
    fn warning(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
    fn progress(&mut self, done: usize, total: usize) {
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = styled(
                ProgressBar::new(total as u64),
                "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            );
            b.set_prefix(label);
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
    fn step(&mut self, info: &StepInfo) {
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = styled(
                ProgressBar::new(info.steps as u64),
                "{prefix} [{bar:30}] {pos}/{len} steps {msg}",
            );
            b.set_prefix(label);
            b
        });
        bar.set_position(info.step as u64);
        bar.set_message(format!("loss {:.5}", info.mean_loss));
    }
}
