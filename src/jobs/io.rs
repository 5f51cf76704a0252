//! Inputs and outputs shared by the jobs: photo lists from files and folders, and the
//! one rule for output paths.
//!
//! **Inputs.** [`expand_inputs`] turns the files and folders a user named into a list of
//! photos: a file is taken as it is; a folder gives its PNG/JPEG files, recursively,
//! sorted by name, hidden entries (`.name`) skipped, links followed ([`walkdir`]).
//!
//! **Outputs: one rule.** A missing output folder is *created* (like `mkdir -p`), for an
//! output folder (`-o DIR`) and for the folder of an output file (`-o out/x.png`) alike;
//! a *file* standing where a folder must be is an error that names it. Jobs check their
//! outputs with [`check_out_dir`] / [`check_output_file`] before any work, and create
//! folders with [`create_dir`] / [`create_parent`] only once the inputs were read, so a
//! job that fails early leaves nothing behind.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// File endings [`expand_inputs`] takes from folders (compared without case).
pub const IMAGE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| IMAGE_EXTS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
}

/// Expands files and folders (their PNG/JPEG files, recursively, sorted) into a list;
/// see the module docs. A folder without images and a missing input are errors.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let before = out.len();
            let walk = walkdir::WalkDir::new(p)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                // The root is taken whatever its name (`.` or `.cache/x`).
                .filter_entry(|e| {
                    e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')
                });
            for entry in walk {
                let entry = entry.map_err(|e| {
                    let at = e.path().unwrap_or(p).display().to_string();
                    anyhow::anyhow!("cannot list folder {at}: {e}")
                })?;
                if entry.file_type().is_file() && is_image_name(entry.path()) {
                    out.push(entry.into_path());
                }
            }
            if out.len() == before {
                bail!("folder {} holds no PNG or JPEG images", p.display());
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images given");
    }
    Ok(out)
}

/// The file name of `path` without its extension (what outputs are named after).
pub fn stem_of(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("photo {} has no file name", path.display()))
}

/// The nearest existing path at or above `dir` when it is a file, not a folder: what
/// stands in the way of creating `dir`.
fn file_in_the_way(dir: &Path) -> Option<&Path> {
    dir.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| a.exists())
        .filter(|a| !a.is_dir())
}

/// Checks that `dir` is a folder or can be made one: neither it nor a folder above it
/// is a file (`what` names the output in messages, e.g. "output", "--csv").
pub fn check_folder_path(dir: &Path, what: &str) -> Result<()> {
    match file_in_the_way(dir) {
        Some(file) if file == dir => bail!("{what} {} exists and is not a folder", dir.display()),
        Some(file) => bail!(
            "{what} {}: {} is a file, not a folder",
            dir.display(),
            file.display()
        ),
        None => Ok(()),
    }
}

/// Checks an output folder (see the module docs: it is created later if missing).
pub fn check_out_dir(dir: &Path) -> Result<()> {
    check_folder_path(dir, "output")
}

/// Creates an output folder (and the folders above it).
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))
}

/// Checks an output file: not a folder, and its folder exists or can be created
/// (`what` names it in messages).
pub fn check_output_file(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        bail!("{what} {} is a folder", path.display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(file) = parent.and_then(file_in_the_way) {
        bail!(
            "{what} {}: {} is a file, not a folder",
            path.display(),
            file.display()
        );
    }
    Ok(())
}

/// [`check_output_file`] for a `.png` output (the extension is checked too).
pub fn check_png_output(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext.as_deref() != Some("png") {
        bail!("output {} must be a .png file", path.display());
    }
    check_output_file(path, "output")
}

/// Creates the folder an output file goes into, when it is missing.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) if !parent.is_dir() => create_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_sorted_without_hidden_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for f in [
            "b.png",
            "a.JPG",
            "sub/c.jpeg",
            ".hidden/d.png",
            ".e.png",
            "notes.txt",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let got = expand_inputs(&[d.to_path_buf()]).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "sub/c.jpeg"]);
        // A hidden root is still walked; an empty folder and a missing input are errors.
        let hidden = d.join(".hidden");
        assert_eq!(expand_inputs(&[hidden]).unwrap().len(), 1);
        std::fs::create_dir(d.join("empty")).unwrap();
        let e = expand_inputs(&[d.join("empty")]).unwrap_err().to_string();
        assert!(e.contains("holds no PNG or JPEG"), "{e}");
        let e = expand_inputs(&[d.join("nope")]).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn outputs_may_need_folders_but_not_under_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f.txt");
        std::fs::write(&file, b"x").unwrap();
        check_out_dir(&tmp.path().join("new/deeper")).unwrap();
        check_png_output(&tmp.path().join("new/x.png")).unwrap();
        let e = check_out_dir(&file).unwrap_err().to_string();
        assert!(e.contains("exists and is not a folder"), "{e}");
        let e = check_out_dir(&file.join("d")).unwrap_err().to_string();
        assert!(e.contains("f.txt is a file, not a folder"), "{e}");
        let e = check_png_output(&file.join("d/x.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.txt is a file, not a folder"), "{e}");
        assert!(check_png_output(&tmp.path().join("x.jpg")).is_err());
        assert!(check_png_output(tmp.path()).is_err());
        let out = tmp.path().join("made/x.png");
        create_parent(&out).unwrap();
        assert!(tmp.path().join("made").is_dir());
    }
}
