//! `info`: what a bundle holds, checked (every graph's session is created and compared
//! with the manifest, so `info` doubles as a bundle validator).

use std::fmt::Write as _;

use anyhow::Result;

use crate::model::manifest::shape_string;
use crate::model::{runtime, Bundle, GraphKind};

/// Creates every graph's session and describes the bundle as text.
pub fn describe(bundle: &Bundle) -> Result<String> {
    let present: Vec<GraphKind> = GraphKind::ALL
        .into_iter()
        .filter(|g| bundle.has(*g))
        .collect();
    bundle.prepare(&present)?;
    let m = bundle.manifest();
    let mut s = String::new();
    let _ = writeln!(s, "bundle      {} ({})", m.name, bundle.dir().display());
    if let Some(d) = &m.description {
        let _ = writeln!(s, "description {d}");
    }
    let _ = writeln!(s, "format      {}", m.format);
    let _ = writeln!(s, "manifest    sha256 {}", bundle.manifest_sha256());
    match m.refined_resolution() {
        Some(full) => {
            let how = m
                .refiner
                .as_ref()
                .and_then(|r| r.get("training"))
                .map(|t| match t.as_str() {
                    Some(t) => t.to_string(),
                    // A training record: its size and time, not the whole object.
                    None => {
                        let num = |k: &str| t.get(k).and_then(|v| v.as_f64());
                        let params = m
                            .refiner
                            .as_ref()
                            .and_then(|r| r.get("params"))
                            .and_then(|v| v.as_u64());
                        let mut parts = Vec::new();
                        if let Some(p) = params {
                            parts.push(format!("{p} parameters"));
                        }
                        if let (Some(st), Some(min)) = (num("steps"), num("minutes")) {
                            parts.push(format!("trained {st:.0} steps, {min:.0} min"));
                        }
                        if let Some(h) = t.get("hardware").and_then(|v| v.as_str()) {
                            parts.push(format!("on {h}"));
                        }
                        if parts.is_empty() {
                            "trained: see the manifest's `refiner`".to_string()
                        } else {
                            parts.join(", ")
                        }
                    }
                })
                .unwrap_or_else(|| "no training record".into());
            let _ = writeln!(
                s,
                "resolution  {0}x{0} native; pictures {1}x{1} through the refiner ({how})",
                m.resolution, full
            );
        }
        None => {
            let _ = writeln!(s, "resolution  {0}x{0}", m.resolution);
        }
    }
    let _ = writeln!(
        s,
        "latents     z_dim {}, w_dim {}, num_ws {}{}",
        m.z_dim,
        m.w_dim,
        m.num_ws,
        m.vae_z_dim
            .map(|v| format!(", vae_z_dim {v}"))
            .unwrap_or_default()
    );
    let noise: Vec<String> = m
        .noise_shapes
        .iter()
        .map(|s| format!("{}x{}", s[1], s[2]))
        .collect();
    let _ = writeln!(s, "noise maps  {} ({})", noise.len(), noise.join(", "));
    let w_std_mean = m.w_std.iter().map(|&v| v as f64).sum::<f64>() / m.w_std.len() as f64;
    let _ = writeln!(
        s,
        "w stats     |w_avg| {:.4}, mean w_std {:.4}",
        m.w_avg
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
        w_std_mean
    );
    if !m.layers.is_empty() {
        let l: Vec<String> = m
            .layers
            .iter()
            .map(|(k, [a, b])| format!("{k} [{a},{b})"))
            .collect();
        let _ = writeln!(s, "layers      {}", l.join(", "));
    }
    // pc2 before pc10: names that end in a number are ordered by it
    let mut dirs: Vec<_> = m.directions.iter().collect();
    dirs.sort_by_key(|(name, _)| {
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        (stem, name[stem.len()..].parse::<u64>().ok(), name.as_str())
    });
    for (name, d) in dirs {
        s.push_str(&describe_direction(m, name, d));
    }
    for (name, t) in &m.traits {
        s.push_str(&describe_trait(name, t));
    }
    let _ = writeln!(s, "graphs");
    for g in &present {
        let spec = &m.graphs[g.key()];
        let size = std::fs::metadata(bundle.dir().join(&spec.file))
            .map(|m| m.len())
            .unwrap_or(0);
        let ep = bundle.provider_of(*g).map(|(p, _)| p.name()).unwrap_or("?");
        let io = |ts: &[crate::model::manifest::TensorSpec]| {
            ts.iter()
                .map(|t| format!("{} {}", t.name, shape_string(&t.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "  {:<17} {} ({:.1} MB) on {ep}",
            g.key(),
            spec.file,
            size as f64 / 1e6
        );
        let _ = writeln!(s, "  {:<17}   in:  {}", "", io(&spec.inputs));
        let _ = writeln!(s, "  {:<17}   out: {}", "", io(&spec.outputs));
    }
    for (k, _) in m
        .graphs
        .iter()
        .filter(|(k, _)| !GraphKind::ALL.iter().any(|g| g.key() == k.as_str()))
    {
        let _ = writeln!(s, "  {k:<17} (not used by this version)");
    }
    if !m.files.is_empty() {
        let _ = writeln!(
            s,
            "files       {}",
            m.files.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(t) = &m.training {
        let _ = writeln!(
            s,
            "training    {}",
            serde_json::to_string(t).unwrap_or_default()
        );
    }
    if let Some((_, Some(reason))) = present.first().and_then(|g| bundle.provider_of(*g)) {
        let _ = writeln!(s, "note        CUDA not used: {reason}");
    }
    let _ = writeln!(
        s,
        "runtime     ONNX Runtime {} from {}; execution provider {}",
        runtime::ORT_VERSION,
        runtime::loaded_library()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "?".into()),
        bundle.provider_summary()
    );
    Ok(s)
}

/// What a direction does, in the words `info` prints (the studio labels its sliders with
/// them): the manifest's description, else the ends named by its groups.
pub fn direction_words(d: &crate::model::manifest::Direction) -> String {
    d.description.clone().unwrap_or_else(|| {
        // The ends of the direction, from its groups (sorted by their projection).
        let mut g: Vec<(&String, &f64)> = d.groups.iter().collect();
        g.sort_by(|a, b| a.1.total_cmp(b.1));
        match (g.first(), g.last()) {
            (Some(lo), Some(hi)) if lo.0 != hi.0 => {
                format!("- toward {}, + toward {}", lo.0, hi.0)
            }
            _ => "an unnamed direction (no groups)".into(),
        }
    })
}

/// One trait of `family --trait`: the region, its directions and what the fit measured.
pub fn describe_trait(name: &str, t: &crate::model::manifest::Trait) -> String {
    let mut s = String::new();
    let mut rows = t.rows.clone();
    rows.sort_unstable();
    rows.dedup();
    let _ = writeln!(
        s,
        "trait       {name}: {}",
        t.description.as_deref().unwrap_or("(no description)")
    );
    let ratio = match (t.ratio.first(), t.ratio.last()) {
        (Some(hi), Some(lo)) => format!(", inside/rest ratio {hi:.0}..{lo:.0}"),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "            {} directions on W+ rows {rows:?}{ratio}",
        t.rows.len()
    );
    let m = t.measured.as_ref();
    let get =
        |path: &[&str]| -> Option<f64> { path.iter().try_fold(m?, |v, k| v.get(k))?.as_f64() };
    if let (Some(ok), Some(rest), Some(par), Some(swap)) = (
        get(&["blend_child", "both_right"]),
        get(&["blend_child", "rest_change"]),
        get(&["parents", "rest"]),
        get(&["rest_from_b", "closer_to_a"]),
    ) {
        let _ = writeln!(
            s,
            "            measured: on the blend, region nearer the chosen parent for {:.0}% of pairs, \
             the rest moves {rest:.3} RMS (the parents differ there by {par:.3}); on the other \
             parent's face nearer the giver for {:.0}%",
            100.0 * ok,
            100.0 * swap
        );
    }
    s
}

/// One direction: what it does, how it was calibrated, which layers it moves.
pub fn describe_direction(
    m: &crate::model::Manifest,
    name: &str,
    d: &crate::model::manifest::Direction,
) -> String {
    let mut s = String::new();
    let groups_of = |rows: &[usize]| -> String {
        let named: Vec<String> = m
            .layers
            .iter()
            .filter(|(_, [a, b])| rows.iter().any(|r| (*a..*b).contains(r)))
            .map(|(k, _)| k.clone())
            .collect();
        if named.is_empty() {
            String::new()
        } else {
            format!(" ({})", named.join(", "))
        }
    };
    let _ = writeln!(s, "direction   {name}: {}", direction_words(d));
    let _ = writeln!(
        s,
        "            layers {:?}{}",
        d.layers,
        groups_of(&d.layers)
    );
    if !d.groups.is_empty() {
        let mut sorted: Vec<(&String, &f64)> = d.groups.iter().collect();
        sorted.sort_by(|a, b| a.1.total_cmp(b.1));
        let g: Vec<String> = sorted.iter().map(|(k, v)| format!("{k} {v:+.3}")).collect();
        let _ = writeln!(s, "            groups (projection): {}", g.join(", "));
    }
    let mut cal = Vec::new();
    match &d.fitted {
        Some(serde_json::Value::String(f)) => cal.push(format!("fitted {f}")),
        Some(serde_json::Value::Bool(false)) => cal.push("not fitted".into()),
        _ => {}
    }
    if let Some(p) = d.projection_std {
        // a principal component's spread is over the generator's own w, not over photos
        let over = match &d.fitted {
            Some(serde_json::Value::String(f)) if f == "ganspace" => "the generator's random w",
            _ => "the training faces",
        };
        cal.push(format!(
            "1 unit = {p} of projection (its spread over {over})"
        ));
    } else {
        cal.push("1 unit = 1 of projection (no spread recorded)".into());
    }
    if let Some(y) = d.years_per_unit {
        cal.push(format!("{y:.2} judged years per unit"));
    }
    let _ = writeln!(s, "            calibration: {}", cal.join("; "));
    if let Some(r) = &d.response {
        let get = |k: &str| {
            r.get(k)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect::<Vec<f64>>())
        };
        if let (Some(u), Some(age)) = (get("strength_units"), get("age_mean")) {
            let at = |want: f64| u.iter().position(|&x| (x - want).abs() < 1e-6);
            let women = get("women_share");
            let mut parts = Vec::new();
            for want in [-2.0, 0.0, 2.0] {
                if let Some(i) = at(want) {
                    let w = women
                        .as_ref()
                        .and_then(|w| w.get(i))
                        .map(|w| format!(", {:.0}% women", w * 100.0))
                        .unwrap_or_default();
                    parts.push(format!("{want:+} -> {:.1}y{w}", age[i]));
                }
            }
            if !parts.is_empty() {
                let _ = writeln!(s, "            judged response: {}", parts.join("; "));
            }
        }
    }
    if let Some(n) = &d.note {
        let _ = writeln!(s, "            note: {n}");
    }
    s
}
