//! Faces as people see them: who it is (an identity descriptor), how old, which gender.
//!
//! Pixel scores (PSNR, LPIPS) do not say whether a reconstruction is still the person,
//! keeps their age or their gender. The bundle's `face_id` graph (dlib's ResNet-34
//! descriptor, converted from face-api; same person below a distance of 0.6) and
//! `face_attributes` graph (face-api's age regression and gender classifier) do; see
//! `docs/faces.md`. Both want a tight face while our aligned crops hold the whole head,
//! so every reading takes the centred square of `faces.crop.centre_fraction` of the
//! crop's side and resizes it (bilinear) to the network's input, from 8-bit pixels as a
//! saved picture would give.

pub mod stats;

use anyhow::{bail, Result};
use image::imageops::{self, FilterType};
use serde::Serialize;

use crate::imageio;
use crate::model::{Bundle, GraphKind};

/// The face graphs' shapes, part of the bundle contract (`model::manifest`).
pub use crate::model::manifest::{
    FACE_ATTR_SIDE as ATTR_SIDE, FACE_DESCRIPTOR_DIM as DESCRIPTOR_DIM, FACE_ID_SIDE as ID_SIDE,
};
/// Below this many pixels the tight face holds too little for the networks to mean much.
pub const MIN_FACE_PX: u32 = 16;
/// Crops per graph call (bounds memory; the networks are small).
const CHUNK: usize = 16;

/// What the networks see in one face.
#[derive(Clone, Debug, Serialize)]
pub struct FaceReading {
    #[serde(skip)]
    pub descriptor: Vec<f32>,
    /// Predicted age in years.
    pub age: f32,
    /// Predicted probability that the face is a woman's.
    pub female: f32,
}

impl FaceReading {
    pub fn is_female(&self) -> bool {
        self.female > 0.5
    }
}

/// Euclidean distance between two identity descriptors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// A photo's crop against what the model made of it.
#[derive(Clone, Debug, Serialize)]
pub struct Resemblance {
    /// Descriptor distance, photo <-> result (dlib's rule: same person below 0.6).
    pub identity_distance: f32,
    pub same_person: bool,
    /// Predicted age of the photo and of the result, in years.
    pub age_photo: f32,
    pub age_result: f32,
    /// `age_result - age_photo`.
    pub age_change: f32,
    /// Predicted probability of a woman, photo and result.
    pub female_photo: f32,
    pub female_result: f32,
    /// The predicted gender differs between photo and result.
    pub gender_flipped: bool,
}

/// Reads faces through the bundle's two face graphs.
pub struct FaceJudge<'a> {
    bundle: &'a Bundle,
    fraction: f32,
    /// Same-person threshold on the descriptor distance.
    pub threshold: f32,
}

impl<'a> FaceJudge<'a> {
    /// The judge, or why this bundle cannot judge faces (a sentence for reports).
    pub fn new(bundle: &'a Bundle) -> std::result::Result<FaceJudge<'a>, String> {
        for g in [GraphKind::FaceId, GraphKind::FaceAttributes] {
            if !bundle.has(g) {
                return Err(format!(
                    "bundle {} has no `{g}` graph (made before face judging); identity, age and \
                     gender figures are left out",
                    bundle.dir().display()
                ));
            }
        }
        let spec = bundle.manifest().faces.clone().unwrap_or_default();
        Ok(FaceJudge {
            bundle,
            fraction: spec.crop.centre_fraction,
            threshold: spec.id_threshold,
        })
    }

    /// Creates both sessions now, so that a broken graph fails before outputs are written.
    pub fn prepare(&self) -> Result<()> {
        self.bundle
            .prepare(&[GraphKind::FaceId, GraphKind::FaceAttributes])
    }

    /// Side in pixels of the tight face taken from a crop of `side` pixels.
    pub fn face_px(&self, side: usize) -> u32 {
        (self.fraction * side as f32).round() as u32
    }

    /// Reads `n` aligned crops `[n, 3, side, side]` in [-1, 1].
    pub fn read(&self, images: &[f32], side: usize) -> Result<Vec<FaceReading>> {
        let len = 3 * side * side;
        if side == 0 || images.len() % len != 0 {
            bail!(
                "face judge: {} values are not whole {side}x{side} RGB pictures",
                images.len()
            );
        }
        let px = self.face_px(side);
        if px < MIN_FACE_PX {
            bail!(
                "the face in a {side} px crop is only {px} px across; identity, age and gender \
                 need at least {MIN_FACE_PX} px"
            );
        }
        let mut out = Vec::with_capacity(images.len() / len);
        for chunk in images.chunks(len * CHUNK) {
            let n = chunk.len() / len;
            let mut id_in = Vec::with_capacity(n * 3 * (ID_SIDE * ID_SIDE) as usize);
            let mut attr_in = Vec::with_capacity(n * 3 * (ATTR_SIDE * ATTR_SIDE) as usize);
            for t in chunk.chunks(len) {
                let face = tight_face(t, side as u32, px)?;
                id_in.extend(network_input(&face, ID_SIDE));
                attr_in.extend(network_input(&face, ATTR_SIDE));
            }
            let desc = self.bundle.face_id(&id_in, n)?;
            let (age, gender) = self.bundle.face_attributes(&attr_in, n)?;
            for i in 0..n {
                out.push(FaceReading {
                    descriptor: desc[i * DESCRIPTOR_DIM..(i + 1) * DESCRIPTOR_DIM].to_vec(),
                    age: age[i],
                    female: gender[2 * i + 1],
                });
            }
        }
        Ok(out)
    }

    /// Photos `[n, 3, side, side]` against what the model made of each (same layout).
    pub fn compare_all(
        &self,
        photos: &[f32],
        results: &[f32],
        side: usize,
    ) -> Result<Vec<Resemblance>> {
        let (a, b) = (self.read(photos, side)?, self.read(results, side)?);
        Ok(a.iter().zip(&b).map(|(p, r)| self.compare(p, r)).collect())
    }

    /// A photo's reading against a result's.
    pub fn compare(&self, photo: &FaceReading, result: &FaceReading) -> Resemblance {
        let d = distance(&photo.descriptor, &result.descriptor);
        Resemblance {
            identity_distance: d,
            same_person: d < self.threshold,
            age_photo: photo.age,
            age_result: result.age,
            age_change: result.age - photo.age,
            female_photo: photo.female,
            female_result: result.female,
            gender_flipped: photo.is_female() != result.is_female(),
        }
    }
}

/// The centred `px`-pixel square of a `[3, side, side]` crop, as 8-bit RGB.
fn tight_face(t: &[f32], side: u32, px: u32) -> Result<image::RgbImage> {
    let img = imageio::tensor_to_rgb(t, side, side)?;
    let off = (side - px.min(side)) / 2;
    Ok(imageops::crop_imm(&img, off, off, px, px).to_image())
}

/// `[3, s, s]` RGB values in 0..255, what the networks were trained on.
fn network_input(face: &image::RgbImage, s: u32) -> Vec<f32> {
    let resized = imageops::resize(face, s, s, FilterType::Triangle);
    let n = (s * s) as usize;
    let mut v = vec![0.0f32; 3 * n];
    for (i, p) in resized.pixels().enumerate() {
        for c in 0..3 {
            v[c * n + i] = p.0[c] as f32;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_euclidean() {
        assert_eq!(distance(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        assert_eq!(distance(&[1.0; 128], &[1.0; 128]), 0.0);
    }

    #[test]
    fn tight_face_is_the_centre() {
        // a 10x10 crop, white inside the centre 6x6, black around
        let side = 10usize;
        let mut t = vec![-1.0f32; 3 * side * side];
        for c in 0..3 {
            for y in 2..8 {
                for x in 2..8 {
                    t[c * side * side + y * side + x] = 1.0;
                }
            }
        }
        let face = tight_face(&t, 10, 6).unwrap();
        assert_eq!(face.dimensions(), (6, 6));
        assert!(face.pixels().all(|p| p.0 == [255, 255, 255]));
        let input = network_input(&face, 12);
        assert_eq!(input.len(), 3 * 144);
        assert!(input.iter().all(|&v| v == 255.0));
    }
}
