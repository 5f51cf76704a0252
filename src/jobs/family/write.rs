//! Stage 4 of `family`: every file of a family into its output folder (the list is in
//! the [parent module's docs](super)), the sheet with its captions, and the clean-up of an
//! earlier run's files in a reused folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::{
    settings_of, ChildFace, ChildReport, FamilyJob, FamilyPictures, FamilyReadings, FamilyReport,
    FamilySettings, ParentReport, Parents, PartnerReport,
};
use crate::align::AlignRecord;
use crate::family::{Child, FamilyParams};
use crate::fsutil;
use crate::imageio;
use crate::jobs::sources::{self, Resolved};
use crate::latent::{BundleRef, Latent, LatentSidecar, LatentSpace, SourceRef, SIDECAR_FORMAT};
use crate::model::Bundle;
use crate::sheet::{render_sheet, SheetLayout, Tile};

#[derive(Serialize)]
struct ChildSidecar<'a> {
    #[serde(flatten)]
    latent: LatentSidecar,
    family: ChildInfo<'a>,
}

#[derive(Serialize)]
struct ChildInfo<'a> {
    index: usize,
    parents: [SourceRef; 2],
    settings: &'a FamilySettings,
    mutated: bool,
    rows_from: String,
}

/// Every file into the output folder, and the report that lists them (its `seconds` left
/// 0 for the caller, which writes it last). `judged`: the face readings, or why there are
/// none.
pub(super) fn write_family(
    bundle: &Bundle,
    job: &FamilyJob,
    resolved: &Parents,
    children: &[Child],
    pictures: &FamilyPictures,
    judged: std::result::Result<FamilyReadings, String>,
) -> Result<FamilyReport> {
    let parents = &resolved.faces;
    let (judged, face_note) = match judged {
        Ok(j) => (Some(j), None),
        Err(note) => (None, Some(note)),
    };
    let dir = &job.out_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let indices: Vec<usize> = children.iter().map(|c| c.index).collect();
    remove_stale_outputs(dir, &indices)?;
    let out = Outputs {
        bundle,
        dir,
        bundle_ref: bundle.reference(),
    };
    let settings = settings_of(bundle, &job.params);
    let mut parent_reports = out.write_parents(parents, pictures, judged.as_ref())?;
    for (r, s) in parent_reports.iter_mut().zip(&resolved.sources) {
        r.sources = s.clone();
    }
    let partner = match &resolved.partner {
        Some(g) => {
            let child_latent = dir.join("given_child.npy");
            out.write_latent(&child_latent, &g.face.face.ws)?;
            Some(PartnerReport {
                child: g.face.face.path.clone(),
                child_sources: g.face.sources.clone(),
                child_latent,
                noise: g.noise,
                residual: g.residual,
                face: judged.as_ref().and_then(|j| j.partner(children)),
            })
        }
        None => None,
    };
    // The photo the children are pasted into (read once, at its full size).
    let host = if job.paste_back {
        Some(sources::paste_host(parents, "parent")?)
    } else {
        None
    };
    let mut child_reports = Vec::new();
    for (k, (c, pic)) in children.iter().zip(&pictures.children).enumerate() {
        let face = judged.as_ref().map(|j| j.child(k, children));
        let info = ChildInfo {
            index: c.index,
            parents: [parents[0].source_ref(), parents[1].source_ref()],
            settings: &settings,
            mutated: c.mutated,
            rows_from: c.rows_from.iter().collect(),
        };
        child_reports.push(out.write_child(c, pic, info, job.params.seed, host.as_ref(), face)?);
    }
    let given = match &resolved.partner {
        // A given child's photo crop stays as it is; a latent child is rendered like the
        // others (through the refiner).
        Some(g) if g.face.face.photo.is_some() => Some(imageio::tensor_to_rgb(
            &g.picture,
            bundle.resolution() as u32,
            bundle.resolution() as u32,
        )?),
        Some(g) => Some(crate::jobs::picture::picture(bundle, job.size, &g.picture)?),
        None => None,
    };
    let sheet = out.write_sheet(
        job,
        parents,
        pictures,
        &parent_reports,
        &child_reports,
        given.as_ref(),
    )?;
    Ok(FamilyReport {
        format: "latentface-family-report/1",
        bundle: out.bundle_ref,
        execution_provider: bundle.provider_summary(),
        parents: parent_reports,
        settings,
        children: child_reports,
        faces: judged.as_ref().map(|j| j.family()),
        face_note,
        partner,
        sheet,
        report: dir.join("family.json"),
        seconds: 0.0,
    })
}

/// Where and for which bundle the files of a family are written.
struct Outputs<'a> {
    bundle: &'a Bundle,
    dir: &'a Path,
    bundle_ref: BundleRef,
}

impl Outputs<'_> {
    fn write_latent(&self, path: &Path, ws: &[f32]) -> Result<()> {
        let (num_ws, w_dim) = (self.bundle.num_ws(), self.bundle.w_dim());
        Latent::WPlus {
            num_ws,
            w_dim,
            data: ws.to_vec(),
        }
        .write_npy(path, num_ws)
    }

    /// `parent_X.npy` and `parent_X_recon.png` of both parents.
    fn write_parents(
        &self,
        parents: &[Resolved; 2],
        pictures: &FamilyPictures,
        judged: Option<&FamilyReadings>,
    ) -> Result<Vec<ParentReport>> {
        let mut reports = Vec::new();
        for (i, (tag, p)) in ["a", "b"].into_iter().zip(parents).enumerate() {
            let latent = self.dir.join(format!("parent_{tag}.npy"));
            let recon = self.dir.join(format!("parent_{tag}_recon.png"));
            self.write_latent(&latent, &p.ws)?;
            imageio::save_png(&recon, &pictures.parents[i])?;
            reports.push(ParentReport {
                path: p.path.clone(),
                kind: p.kind,
                sha256: p.sha256.clone(),
                cached: p.cached,
                latent,
                reconstruction: recon,
                face: judged.and_then(|j| j.parent_fit[i].clone()),
                sources: Vec::new(),
            });
        }
        Ok(reports)
    }

    /// `child_NN.png`, `.npy`, `.json` and, with a `host` photo, `child_NN_pasted.png`.
    fn write_child(
        &self,
        c: &Child,
        pic: &RgbImage,
        info: ChildInfo<'_>,
        seed: u64,
        host: Option<&(RgbImage, AlignRecord)>,
        face: Option<ChildFace>,
    ) -> Result<ChildReport> {
        let stem = format!("child_{:02}", c.index);
        let image = self.dir.join(format!("{stem}.png"));
        let latent = self.dir.join(format!("{stem}.npy"));
        let sidecar = LatentSidecar::path_for(&latent);
        imageio::save_png(&image, pic)?;
        self.write_latent(&latent, &c.ws)?;
        let pasted = match host {
            Some((photo, rec)) => {
                let path = self.dir.join(format!("{stem}_pasted.png"));
                imageio::save_png(&path, &crate::align::paste_into(photo, pic, rec)?)?;
                Some(path)
            }
            None => None,
        };
        let rows_from = info.rows_from.clone();
        fsutil::write_json_atomic(
            &sidecar,
            &ChildSidecar {
                latent: LatentSidecar {
                    format: SIDECAR_FORMAT.into(),
                    space: LatentSpace::WPlus,
                    shape: vec![1, self.bundle.num_ws(), self.bundle.w_dim()],
                    bundle: self.bundle_ref.clone(),
                    source: None,
                    steps: 0,
                    loss: None,
                    seconds: 0.0,
                    seed: Some(seed),
                    created_by: format!("latentface {} family", crate::VERSION),
                    created_unix: crate::latent::unix_now(),
                },
                family: info,
            },
        )?;
        Ok(ChildReport {
            index: c.index,
            image,
            latent,
            sidecar,
            mutated: c.mutated,
            rows_from,
            projections: c.projections.clone(),
            pasted,
            face,
        })
    }

    /// `family.png`: the parents' photos (when photos) and reconstructions, then the
    /// children, labelled. With a predicted partner, the given child takes B's photo tile.
    fn write_sheet(
        &self,
        job: &FamilyJob,
        parents: &[Resolved; 2],
        pictures: &FamilyPictures,
        parent_reports: &[ParentReport],
        child_reports: &[ChildReport],
        given_child: Option<&RgbImage>,
    ) -> Result<PathBuf> {
        let res = self.bundle.resolution();
        let photos = [parents[0].photo_rgb(res)?, parents[1].photo_rgb(res)?];
        // Under a photo its predicted age and gender; under a reconstruction its identity
        // distance to the photo and its predicted age and gender.
        let fit = |i: usize| parent_reports[i].face.as_ref();
        let sex = |female: f32| if female > 0.5 { "F" } else { "M" };
        let photo_caption = |i: usize, tag: &str| {
            let extra = parent_reports[i].sources.iter().filter(|s| s.used).count();
            let tag = if extra > 1 {
                format!("{tag} ({extra} fused)")
            } else {
                tag.to_string()
            };
            let name = parents[i]
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match fit(i) {
                Some(f) => format!("{tag} {name}\n{:.0}y {}", f.age_photo, sex(f.female_photo)),
                None => format!("{tag} {name}"),
            }
        };
        let recon_caption = |i: usize, tag: &str| match fit(i) {
            Some(f) => format!(
                "{tag} recon\nid {:.2} {:.0}y {}",
                f.identity_distance,
                f.age_result,
                sex(f.female_result)
            ),
            None => format!("{tag} recon"),
        };
        let top: Vec<Tile<'_>> = vec![
            photos[0].as_ref().map(|i| (i, photo_caption(0, "A"))),
            Some((&pictures.parents[0], recon_caption(0, "A"))),
            Some((
                &pictures.parents[1],
                if given_child.is_some() {
                    "B predicted".to_string()
                } else {
                    recon_caption(1, "B")
                },
            )),
            match given_child {
                Some(c) => Some((c, "given child".to_string())),
                None => photos[1].as_ref().map(|i| (i, photo_caption(1, "B"))),
            },
        ];
        let mut rows = vec![top];
        let kids: Vec<Tile<'_>> = pictures
            .children
            .iter()
            .zip(child_reports)
            .map(|(p, r)| Some((p, child_caption(r.index, r.face.as_ref()))))
            .collect();
        rows.extend(kids.chunks(4).map(|c| c.to_vec()));
        let sheet_img = render_sheet(&sheet_title(&job.params), &rows, &SheetLayout::default())?;
        let sheet = self.dir.join("family.png");
        imageio::save_png(&sheet, &sheet_img)?;
        Ok(sheet)
    }
}

/// The sheet's title: the settings that made the family.
fn sheet_title(p: &FamilyParams) -> String {
    let mut title = format!("mix {:.2}", p.mix);
    for (k, v) in [("coarse", p.coarse), ("middle", p.middle), ("fine", p.fine)] {
        if let Some(v) = v {
            title.push_str(&format!(" {k} {v:.2}"));
        }
    }
    if p.crossover {
        title.push_str(" crossover");
    }
    for (k, v) in &p.edits {
        title.push_str(&format!(" {k} {v}"));
    }
    for (k, &v) in &p.traits {
        title.push_str(&format!(" {k}={}", crate::family::trait_source(v)));
    }
    title.push_str(&format!(" seed {}", p.seed));
    title
}

/// The child index of a file this job writes (`child_NN.png|.npy|.json`,
/// `child_NN_pasted.png`), or `None` for any other name.
fn child_output_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("child_")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits < 2 {
        return None;
    }
    let (nn, suffix) = rest.split_at(digits);
    matches!(suffix, ".png" | ".npy" | ".json" | "_pasted.png")
        .then(|| nn.parse().ok())
        .flatten()
}

/// Removes an earlier run's `family.json` and the child files of indices not in `keep`.
fn remove_stale_outputs(dir: &Path, keep: &[usize]) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale =
            name == "family.json" || child_output_index(&name).is_some_and(|i| !keep.contains(&i));
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).with_context(|| {
                format!(
                    "cannot remove {} left by an earlier run",
                    entry.path().display()
                )
            })?;
        }
    }
    Ok(())
}

/// The sheet's caption under a child: its number, then its resemblance figures.
fn child_caption(index: usize, face: Option<&ChildFace>) -> String {
    let Some(f) = face else {
        return format!("child {index}");
    };
    // Short enough for a 128 px tile: distances without the leading zero.
    let d = |v: f32| format!("{v:.2}").trim_start_matches('0').to_string();
    let sib = if f.distance_siblings.is_empty() {
        String::new()
    } else {
        let m = f.distance_siblings.values().sum::<f32>() / f.distance_siblings.len() as f32;
        format!("sib {} ", d(m))
    };
    format!(
        "child {index}\nA {}  B {}\n{sib}{:.0}y {}",
        d(f.distance_a),
        d(f.distance_b),
        f.age,
        if f.female > 0.5 { "F" } else { "M" }
    )
}

#[cfg(test)]
mod tests {
    use super::child_output_index;

    #[test]
    fn only_the_jobs_own_child_names_count() {
        assert_eq!(child_output_index("child_03.png"), Some(3));
        assert_eq!(child_output_index("child_03.npy"), Some(3));
        assert_eq!(child_output_index("child_03.json"), Some(3));
        assert_eq!(child_output_index("child_12_pasted.png"), Some(12));
        assert_eq!(child_output_index("child_100.png"), Some(100));
        for other in [
            "child_3.png",
            "child_03.txt",
            "child_03_notes.png",
            "my_child_03.png",
            "child_.png",
            "family.png",
        ] {
            assert_eq!(child_output_index(other), None, "{other}");
        }
    }
}
