//! The studio's fast path: children of two cached parent latents, in memory.
//!
//! A slider on the page moves many times a second, so this does only what a picture
//! needs: the `family` job's own stage [`make_children`] (with the [`FamilyParams`]
//! validated from the same `FamilySpec`), one synthesis call for the children only
//! ([`render_pictures`]; the parents' renders are cached), PNG encoding, and the face
//! judge's reading of each child against the parents' readings (taken once, when each
//! parent was made; the job's own judging reads the parents again every time). Nothing is
//! written to disk; the full job with its files and sheet is `/api/family/sheet`
//! (`jobs::family::run_family`). The previews' PNGs carry the provenance record in force
//! on the calling thread (`provenance::scoped`: the route runs this inside its job's
//! scope), as the job's own files do.

use std::collections::BTreeMap;
use std::io::Cursor;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::faces::{self, FaceJudge, FaceReading};
use crate::family::{Child, FamilyParams};
use crate::jobs::family::{make_children, ChildFace};
use crate::jobs::picture::{render_pictures, PictureSize};
use crate::jobs::sources::Resolved;
use crate::model::Bundle;

/// One rendered child.
pub struct RenderedChild {
    pub child: Child,
    pub png: Vec<u8>,
    pub reading: Option<FaceReading>,
    pub face: Option<ChildFace>,
}

/// The family as a whole, in identity terms (as in `family.json`).
#[derive(Clone, Debug, Serialize)]
pub struct FamilyFigures {
    pub parents_distance: f32,
    pub sibling_distance_mean: Option<f32>,
}

pub struct Rendered {
    pub children: Vec<RenderedChild>,
    pub figures: Option<FamilyFigures>,
    /// Why there are no face figures (a bundle without the face graphs).
    pub face_note: Option<String>,
    pub seconds_engine: f64,
    pub seconds_synthesis: f64,
    pub seconds_judge: f64,
}

/// PNG bytes of an RGB picture, with no metadata (the aligned crop of a real photo).
pub fn png_bytes(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .context("encoding a PNG")?;
    Ok(out)
}

/// PNG bytes of a rendered preview, carrying this thread's provenance record (none
/// outside a job's scope or with `no_metadata`), as `imageio::save_png` writes files.
pub fn preview_png(img: &image::RgbImage) -> Result<Vec<u8>> {
    let record = crate::provenance::current();
    crate::provenance::encode_png(img, record.as_deref()).context("encoding a PNG")
}

/// Children of `parents` with `params`; `readings` are the parents' readings (photo crops
/// for photos), used for the resemblance figures, which
/// are left out when `judge` is false (the face judge costs several times the render:
/// the page asks for pictures while a slider moves and for figures when it stops).
pub fn render_children(
    bundle: &Bundle,
    parents: &[Resolved; 2],
    readings: [Option<&FaceReading>; 2],
    params: &FamilyParams,
    size: PictureSize,
    judge: bool,
) -> Result<Rendered> {
    let t0 = std::time::Instant::now();
    let children = make_children(bundle, params, parents)?;
    let t1 = std::time::Instant::now();
    let ws: Vec<f32> = children.iter().flat_map(|c| c.ws.iter().copied()).collect();
    let (images, pictures) =
        render_pictures(bundle, size, &ws, children.len()).context("rendering the children")?;
    let pngs: Vec<Vec<u8>> = pictures.iter().map(preview_png).collect::<Result<_>>()?;
    let t2 = std::time::Instant::now();
    let (readings, face_note) = match (FaceJudge::new(bundle), readings) {
        _ if !judge => (None, Some("figures not asked for".to_string())),
        (Ok(judge), [Some(pa), Some(pb)]) => {
            let kids = judge.read(&images, bundle.resolution())?;
            (Some((kids, pa, pb)), None)
        }
        (Err(note), _) => (None, Some(note)),
        (Ok(_), _) => (None, Some("a parent has no face reading".to_string())),
    };
    let t3 = std::time::Instant::now();
    let mut figures = None;
    let mut faces_of: Vec<Option<ChildFace>> = vec![None; children.len()];
    let mut kid_readings: Vec<Option<FaceReading>> = vec![None; children.len()];
    if let Some((kids, pa, pb)) = &readings {
        for (k, me) in kids.iter().enumerate() {
            let d = |o: &FaceReading| faces::distance(&me.descriptor, &o.descriptor);
            let siblings: BTreeMap<usize, f32> = kids
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(j, o)| (children[j].index, d(o)))
                .collect();
            faces_of[k] = Some(ChildFace {
                distance_a: d(pa),
                distance_b: d(pb),
                distance_siblings: siblings,
                age: me.age,
                female: me.female,
            });
            kid_readings[k] = Some(me.clone());
        }
        let mut pairs = Vec::new();
        for i in 0..kids.len() {
            for j in i + 1..kids.len() {
                pairs.push(faces::distance(&kids[i].descriptor, &kids[j].descriptor));
            }
        }
        figures = Some(FamilyFigures {
            parents_distance: faces::distance(&pa.descriptor, &pb.descriptor),
            sibling_distance_mean: (!pairs.is_empty())
                .then(|| pairs.iter().sum::<f32>() / pairs.len() as f32),
        });
    }
    Ok(Rendered {
        children: children
            .into_iter()
            .zip(pngs)
            .zip(faces_of.into_iter().zip(kid_readings))
            .map(|((child, png), (face, reading))| RenderedChild {
                child,
                png,
                reading,
                face,
            })
            .collect(),
        figures,
        face_note,
        seconds_engine: (t1 - t0).as_secs_f64(),
        seconds_synthesis: (t2 - t1).as_secs_f64(),
        seconds_judge: (t3 - t2).as_secs_f64(),
    })
}
