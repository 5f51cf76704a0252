//! Measures `family`'s two parent features on the default bundle, on people whose truth is
//! known (`latentface::jobs::family::measure` says how the test sets are made):
//! 1. several photos per parent: the identity distance to a person's held-out fourth
//!    photo of the code fused from three photos, against the best and the mean single one;
//! 2. the missing parent: how often the predicted partner is closer to the true one than a
//!    stranger is, in W+ and in identity distance.
//!
//! `cargo run --release --example parents_eval -- [PEOPLE] [TRIALS] [STEPS] [SEED] [JSON]`
//! (defaults 24 people, 20 trials, 150 steps, seed 0; `JSON`: write the figures there).

use latentface::jobs::family::measure::{partner_trials, several_photos};
use latentface::model::{Bundle, Device, RuntimeOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (people, trials, steps, seed) = (num(0, 24), num(1, 20), num(2, 150), num(3, 0) as u64);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/default");
    let bundle = Bundle::open(
        &dir,
        RuntimeOptions {
            ort_lib: None,
            device: Device::Cpu,
            threads: Some(2),
            spin: false,
        },
    )?;
    let t = std::time::Instant::now();
    let noise: f32 = args
        .get(5)
        .and_then(|v| v.parse().ok())
        .unwrap_or(latentface::jobs::spec::defaults::partner_noise());
    let photos = several_photos(&bundle, people, steps, seed)?;
    let p = &photos;
    println!(
        "several photos: {} generated people, 3 photos vs 1, {} steps ({:.0} s)\n  identity \
         distance to the held-out 4th photo (mean over people):\n    fusion pick {:.3} (closer \
         than the best single for {}/{}, the mean single for {}/{}; kept consensus/joint/joint_w \
         {:?}, {:.1} s per person)\n    fusion joint {:.3} (W-tied {:.3}, closer than the best single \
         for {}/{})  fusion \
         consensus {:.3} (the default)  fusion mean {:.3}  mean photo inverted {:.3}\n    best \
         single photo {:.3} (oracle)  mean single photo {:.3}\n  closer than the best single / \
         the mean single: joint {}/{} and {}/{}, consensus {}/{} and {}/{}, mean fusion {}/{} and \
         {}/{}\n  joint code's summed loss over the 3 photos below every single code's: {}/{}\n  \
         time: single inversions {:.1} s per photo, joint fit {:.1} s per person",
        p.people,
        p.steps,
        t.elapsed().as_secs_f64(),
        p.pick,
        p.pick_beats_best,
        p.people,
        p.pick_beats_mean,
        p.people,
        p.picked,
        p.pick_seconds / p.people.max(1) as f64,
        p.joint_fit,
        p.joint_w,
        p.joint_w_beats_best,
        p.people,
        p.consensus,
        p.fused,
        p.mean_photo,
        p.best_single,
        p.mean_single,
        p.joint_fit_beats_best,
        p.people,
        p.joint_fit_beats_mean,
        p.people,
        p.consensus_beats_best,
        p.people,
        p.consensus_beats_mean,
        p.people,
        p.fused_beats_best,
        p.people,
        p.fused_beats_mean,
        p.people,
        p.joint_loss_below_singles,
        p.people,
        p.invert_seconds / (3 * p.people.max(1)) as f64,
        p.joint_seconds / p.people.max(1) as f64,
    );
    if trials == 0 {
        if let Some(path) = args.get(4) {
            std::fs::write(
                path,
                serde_json::to_string_pretty(&serde_json::json!({"several_photos": photos}))?,
            )?;
        }
        return Ok(());
    }
    let t = std::time::Instant::now();
    let partner = partner_trials(&bundle, trials, steps, noise, seed)?;
    println!(
        "missing parent: {} families, child given as a photo ({} steps), noise {}  ({:.0} s)\n  \
         predicted B closer to the true B than a stranger: W+ {}/{} (rms {:.2} vs {:.2} w_std), \
         identity {}/{} (distance {:.3} vs {:.3}); the inverted child is {:.2} w_std from the true one",
        partner.trials,
        partner.steps,
        partner.noise,
        t.elapsed().as_secs_f64(),
        partner.wplus_wins,
        partner.trials,
        partner.wplus_predicted,
        partner.wplus_stranger,
        partner.identity_wins,
        partner.trials,
        partner.identity_predicted,
        partner.identity_stranger,
        partner.child_inversion_error
    );
    if let Some(path) = args.get(4) {
        let v = serde_json::json!({"several_photos": photos, "partner": partner});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
