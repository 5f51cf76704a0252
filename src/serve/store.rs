//! What clients uploaded and what the server made from it, by unguessable id.
//!
//! Everything lives in memory and in one temporary folder (made private to this user by
//! `tempfile`, removed at exit): uploaded photos are written there under their sha256 (a
//! client never names a file), jobs write their outputs into `jobs/<id>/`, and a latent
//! used as a job input is written as `latents/<id>.npy` when first needed. Latents are
//! kept in memory (a few kB each) up to [`MAX_LATENTS`], the oldest forgotten first; the
//! inversion of a photo is looked up by the photo's sha256 and the inversion settings,
//! like the command line's latent cache, so the same photo is inverted once.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::faces::FaceReading;
use crate::latent::Latent;

/// Photos' and generated faces' latents kept; past this the oldest are forgotten (their
/// ids answer 404).
pub const MAX_LATENTS: usize = 512;
/// Children and edited faces kept (every studio render makes new ones, so they are
/// counted apart: a slider dragged for a minute must not push the parents out).
pub const MAX_CHILDREN_KEPT: usize = 2048;
/// Finished morph jobs kept (with their result file).
pub const MAX_JOBS: usize = 64;

/// Where a latent came from.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Photo,
    Generated,
    Child,
    /// Made by the studio's edit panel (kept with the children).
    Edited,
}

/// A face the server holds: its W+ code and what goes with it.
#[derive(Debug)]
pub struct Face {
    pub id: String,
    pub origin: Origin,
    /// A short label for captions (the upload's file name, `seed 7`, `child 2`).
    pub label: String,
    /// `[num_ws * w_dim]`.
    pub ws: Vec<f32>,
    /// The render of `ws` as PNG bytes.
    pub png: Vec<u8>,
    /// Photo only: the aligned crop the model saw (`[3, R, R]` in [-1, 1]) and as PNG.
    pub crop: Option<(Vec<f32>, Vec<u8>)>,
    /// The face judge's reading: of the photo's crop for photos, else of the render.
    pub reading: Option<FaceReading>,
    /// Photo only: the uploaded file (for the family sheet's photo tiles).
    pub photo_path: Option<PathBuf>,
    /// The JSON report returned when it was made (without server paths).
    pub report: serde_json::Value,
}

/// State of a long job (morph).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

#[derive(Debug)]
pub struct JobEntry {
    pub id: String,
    pub kind: &'static str,
    pub state: JobState,
    pub done: usize,
    pub total: usize,
    pub error: Option<String>,
    /// The result file and its media type, when done.
    pub result: Option<(PathBuf, &'static str)>,
    pub report: Option<serde_json::Value>,
    pub started: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    faces: HashMap<String, Arc<Face>>,
    /// Insertion order of photos and generated faces, and of children.
    order: VecDeque<String>,
    children: VecDeque<String>,
    /// (photo sha256, inversion settings) -> latent id.
    by_photo: HashMap<(String, String), String>,
    jobs: HashMap<String, JobEntry>,
    job_order: VecDeque<String>,
}

pub struct Store {
    dir: PathBuf,
    tmp: Mutex<Option<tempfile::TempDir>>,
    inner: Mutex<Inner>,
}

impl Store {
    /// A new store in a fresh temporary folder.
    pub fn new() -> Result<Store> {
        let tmp = tempfile::Builder::new()
            .prefix("latentface-serve-")
            .tempdir()
            .context("cannot create the server's temporary folder")?;
        let dir = tmp.path().to_path_buf();
        for sub in ["uploads", "jobs", "latents"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        Ok(Store {
            dir,
            tmp: Mutex::new(Some(tmp)),
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes uploaded bytes as `uploads/<sha256>.<ext>`; returns the path.
    pub fn save_upload(&self, sha256: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.dir.join("uploads").join(format!("{sha256}.{ext}"));
        if !path.is_file() {
            crate::fsutil::write_bytes_atomic(&path, bytes)?;
        }
        Ok(path)
    }

    /// The output folder named in the specs of the studio's in-memory renders (children,
    /// edits): never created, the same for every render so that their provenance records
    /// depend on the settings only.
    pub fn previews_dir(&self) -> PathBuf {
        self.dir.join("previews")
    }

    /// A fresh folder for one job's outputs.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join("jobs").join(id)
    }

    pub fn insert(&self, face: Face, photo_key: Option<(String, String)>) -> Arc<Face> {
        let face = Arc::new(face);
        let mut g = self.lock();
        if let Some(k) = photo_key {
            g.by_photo.insert(k, face.id.clone());
        }
        g.faces.insert(face.id.clone(), face.clone());
        let (child, cap) = match face.origin {
            Origin::Child | Origin::Edited => (true, MAX_CHILDREN_KEPT),
            _ => (false, MAX_LATENTS),
        };
        let order = if child { &mut g.children } else { &mut g.order };
        order.push_back(face.id.clone());
        let mut gone = Vec::new();
        while order.len() > cap {
            gone.extend(order.pop_front());
        }
        for old in gone {
            g.faces.remove(&old);
            g.by_photo.retain(|_, v| *v != old);
            let _ = std::fs::remove_file(self.dir.join("latents").join(format!("{old}.npy")));
        }
        face
    }

    pub fn get(&self, id: &str) -> Option<Arc<Face>> {
        self.lock().faces.get(id).cloned()
    }

    /// The latent already made from this photo with these settings.
    pub fn by_photo(&self, sha256: &str, settings: &str) -> Option<Arc<Face>> {
        let g = self.lock();
        let id = g
            .by_photo
            .get(&(sha256.to_string(), settings.to_string()))?;
        g.faces.get(id).cloned()
    }

    pub fn latent_count(&self) -> usize {
        self.lock().faces.len()
    }

    /// The face's latent as a `.npy` file (written on first use).
    pub fn latent_file(&self, face: &Face, num_ws: usize, w_dim: usize) -> Result<PathBuf> {
        let path = self.dir.join("latents").join(format!("{}.npy", face.id));
        if !path.is_file() {
            Latent::WPlus {
                num_ws,
                w_dim,
                data: face.ws.clone(),
            }
            .write_npy(&path, num_ws)?;
        }
        Ok(path)
    }

    pub fn add_job(&self, entry: JobEntry) {
        let mut g = self.lock();
        g.job_order.push_back(entry.id.clone());
        g.jobs.insert(entry.id.clone(), entry);
        while g.job_order.len() > MAX_JOBS {
            let Some(old) = g.job_order.pop_front() else {
                break;
            };
            let finished = g
                .jobs
                .get(&old)
                .is_some_and(|j| !matches!(j.state, JobState::Queued | JobState::Running));
            if finished {
                g.jobs.remove(&old);
                let _ = std::fs::remove_dir_all(self.job_dir(&old));
            } else {
                g.job_order.push_front(old);
                break;
            }
        }
    }

    /// Runs `f` on the job's entry; `None` for an unknown id.
    pub fn with_job<T>(&self, id: &str, f: impl FnOnce(&mut JobEntry) -> T) -> Option<T> {
        self.lock().jobs.get_mut(id).map(f)
    }

    /// Deletes the temporary folder and everything in it.
    pub fn remove_all(&self) -> Result<()> {
        let tmp = self.tmp.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = tmp {
            let p = t.path().to_path_buf();
            t.close()
                .with_context(|| format!("cannot remove the temporary folder {}", p.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(origin: Origin) -> Face {
        Face {
            id: crate::serve::new_id(),
            origin,
            label: String::new(),
            ws: vec![0.0; 4],
            png: Vec::new(),
            crop: None,
            reading: None,
            photo_path: None,
            report: serde_json::Value::Null,
        }
    }

    #[test]
    fn children_do_not_push_parents_out_and_the_folder_goes() {
        let store = Store::new().unwrap();
        let parent = store.insert(face(Origin::Photo), Some(("sha".into(), "s".into())));
        let first_child = store.insert(face(Origin::Child), None);
        for _ in 0..MAX_CHILDREN_KEPT {
            store.insert(face(Origin::Child), None);
        }
        assert!(store.get(&parent.id).is_some(), "the parent is kept");
        assert!(
            store.get(&first_child.id).is_none(),
            "the oldest child is forgotten"
        );
        assert_eq!(store.by_photo("sha", "s").unwrap().id, parent.id);
        assert!(store.by_photo("sha", "other settings").is_none());
        for _ in 0..MAX_LATENTS {
            store.insert(face(Origin::Generated), None);
        }
        assert!(store.get(&parent.id).is_none());
        assert!(store.by_photo("sha", "s").is_none());
        let dir = store.dir().to_path_buf();
        assert!(dir.join("uploads").is_dir());
        store.remove_all().unwrap();
        assert!(!dir.exists());
    }
}
