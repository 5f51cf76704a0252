//! `eval`'s report as plain-text tables.

use super::EvalReport;

/// The report as the plain-text tables `eval` prints.
pub fn describe(r: &EvalReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let _ = writeln!(
        s,
        "eval of bundle `{}` on {} faces of {} ({} skipped), {}",
        r.bundle.name,
        r.faces,
        r.folder.display(),
        r.skipped.len(),
        r.execution_provider
    );
    let i = &r.inversion;
    let _ = writeln!(
        s,
        "\n[inversion] {} faces, {} {:?} steps, {:.2} s/face",
        i.faces, i.steps, i.optimizer, i.seconds_per_face
    );
    let _ =
        writeln!(
        s,
        "  PSNR {:.2} dB  LPIPS {}  identity distance mean {:.3} (median {:.3})  same person {}",
        i.psnr_db,
        i.lpips.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into()),
        i.identity_distance_mean,
        i.identity_distance_median,
        pct(i.same_person_rate)
    );
    let _ = writeln!(
        s,
        "  mean |Δ age| {:.1} y (mean Δ {:+.1} y)  gender flips {}",
        i.age_abs_change_mean,
        i.age_change_mean,
        pct(i.gender_flip_rate)
    );
    if let Some(x) = &r.samples {
        let _ = writeln!(
            s,
            "\n[samples] {} generated (psi {}) vs {} real",
            x.generated, x.psi, x.real
        );
        let _ = writeln!(
            s,
            "  FD-id {:.3} (real-vs-real floor {:.3})  k-NN (k={}) precision {:.2} recall {:.2}",
            x.fd_id, x.fd_id_real_floor, x.knn_k, x.precision, x.recall
        );
        for (label, sh) in [("generated", &x.shares_generated), ("real", &x.shares_real)] {
            let _ = writeln!(
                s,
                "  {label:>9}: age < 13 {}  age > 50 {}  women {}  mean age {:.1}",
                pct(sh.under_13),
                pct(sh.over_50),
                pct(sh.women),
                sh.age_mean
            );
        }
    }
    for (name, d) in &r.edits {
        let _ = writeln!(s, "\n[edit {name}] {} inverted faces", d.faces);
        for p in &d.sweep {
            let _ = writeln!(
                s,
                "  {:+.0} units: mean age {:.1} y  women {}  identity distance to unedited {:.3}",
                p.strength,
                p.age_mean,
                pct(p.women_share),
                p.identity_distance_to_unedited
            );
        }
        let _ = writeln!(
            s,
            "  age per unit {:+.2} y, -2 -> +2: {:+.1} y",
            d.age_per_unit, d.age_range
        );
        if let Some(f) = &d.gender_flip {
            let parts: Vec<String> = f.iter().map(|(k, v)| format!("{k} {}", pct(*v))).collect();
            let _ = writeln!(
                s,
                "  gender flips toward the other gender: {}",
                parts.join("  ")
            );
        }
    }
    if let Some(f) = &r.families {
        let _ = writeln!(
            s,
            "\n[families] {} pairs x {} children",
            f.pairs, f.children_per_pair
        );
        let _ = writeln!(
            s,
            "  child -> own parents {:.3}  -> median stranger {:.3}  kinship {}  siblings {:.3}  parents {:.3}",
            f.child_to_parents_mean,
            f.child_to_strangers_median,
            pct(f.kinship_rate),
            f.sibling_distance_mean,
            f.parents_distance_mean
        );
        let _ = write!(s, "  children's mean age {:.1} y", f.child_age_mean);
        if let (Some(a), Some(u)) = (f.child_age_mean_age_child, f.child_under_13_share_age_child) {
            let _ = write!(s, "; with age child {a:.1} y, under 13: {}", pct(u));
        }
        let _ = writeln!(s);
    }
    for (k, v) in &r.notes {
        let _ = writeln!(s, "\nnote [{k}]: {v}");
    }
    s
}
