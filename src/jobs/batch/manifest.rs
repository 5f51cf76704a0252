//! Reading a manifest: its entries (each a job spec, or why it is invalid), unique ids and
//! outputs, per-kind defaults; and which shard a job id belongs to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::jobs::spec::{JobSpec, KINDS};

/// One entry of a manifest after parsing: its spec, or why it is invalid.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub spec: Result<JobSpec, String>,
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub struct BatchManifest {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// Reads a TOML (`.toml`) or JSON (anything else) manifest. Relative paths in jobs are
/// relative to the manifest's folder. Errors that concern the whole file (syntax, no
/// `jobs` list, duplicate ids) fail here; an entry with a bad field becomes an invalid
/// entry that fails alone.
pub fn read_manifest(path: &Path) -> Result<BatchManifest> {
    let (value, base) = read_toml_or_json(path, "batch manifest")?;
    parse_manifest(&value, &base)
        .with_context(|| format!("batch manifest {}", path.display()))
        .map(|entries| BatchManifest {
            path: path.to_path_buf(),
            entries,
        })
}

/// A manifest file as JSON values: TOML when it ends in `.toml`, JSON otherwise; and the
/// folder its relative paths are relative to. `what` names the file in errors.
pub fn read_toml_or_json(path: &Path, what: &str) -> Result<(serde_json::Value, PathBuf)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let value: serde_json::Value = if is_toml {
        toml::from_str(&text).map_err(|e| anyhow!("{what} {}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{what} {}: not valid JSON: {e}", path.display()))?
    };
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((value, base))
}

/// Parses `{"defaults": {"family": {...}, ...}, "jobs": [{"id", "kind", ...}, ...]}`.
pub fn parse_manifest(value: &serde_json::Value, base: &Path) -> Result<Vec<Entry>> {
    let obj = value
        .as_object()
        .ok_or_else(|| anyhow!("the top level must be a table/object"))?;
    for k in obj.keys() {
        if k != "jobs" && k != "defaults" {
            bail!("unknown top-level key `{k}` (expected `jobs` and optionally `defaults`)");
        }
    }
    let defaults = obj.get("defaults").cloned().unwrap_or_default();
    if !(defaults.is_null() || defaults.is_object()) {
        bail!("`defaults` must be a table of per-kind tables (invert, family, morph, ...)");
    }
    let jobs = obj
        .get("jobs")
        .and_then(|j| j.as_array())
        .ok_or_else(|| anyhow!("no `jobs` list (TOML: [[jobs]] tables; JSON: \"jobs\": [...])"))?;
    let mut entries = Vec::with_capacity(jobs.len());
    let mut seen = BTreeMap::new();
    let mut outputs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(table) = job.as_object() else {
            bail!("jobs[{i}] is not a table/object");
        };
        let mut table = table.clone();
        let kind = table
            .remove("kind")
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        let id = match table.remove("id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            Some(other) if !other.is_null() => bail!("jobs[{i}]: `id` must be a non-empty string"),
            _ => match table.get("output").and_then(|o| o.as_str()) {
                Some(o) => o.to_string(),
                None => bail!("jobs[{i}] has neither an `id` nor an `output` to name it"),
            },
        };
        if let Some(first) = seen.insert(id.clone(), i) {
            bail!("jobs[{first}] and jobs[{i}] have the same id `{id}`; ids must be unique");
        }
        if let Some(d) = defaults.get(&kind).and_then(|d| d.as_object()) {
            for (k, v) in d {
                table.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let spec = JobSpec::parse(&kind, serde_json::Value::Object(table));
        let spec = spec
            .map(|mut s| {
                s.rebase(base);
                s
            })
            .map_err(|e| {
                if kind.is_empty() || !KINDS.contains(&kind.as_str()) {
                    e
                } else {
                    format!("invalid {kind} job: {e}")
                }
            });
        if let Ok(spec) = &spec {
            for out in spec.outputs() {
                if let Some(other) = outputs.insert(out.clone(), id.clone()) {
                    if other != id {
                        bail!(
                            "jobs `{other}` and `{id}` both write to {}; every job needs its own output",
                            out.display()
                        );
                    }
                }
            }
        }
        entries.push(Entry { id, kind, spec });
    }
    Ok(entries)
}

/// The shard (0-based, of `n`) a job id belongs to: first 8 bytes of sha256(id),
/// big-endian, modulo `n`.
pub fn shard_of(id: &str, n: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % n.max(1) as u64) as u32
}

/// Parses `I/N` (0 <= I < N).
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not I/N (e.g. 0/4)"))?;
    let i: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("`{i}` is not a shard index"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a shard count"))?;
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::sources::LatentCache;
    use crate::jobs::spec::{Context as SpecContext, Origin};

    #[test]
    fn shards_partition_ids() {
        let ids: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
        for n in [1u32, 3, 7] {
            let mut count = vec![0; n as usize];
            for id in &ids {
                let s = shard_of(id, n);
                assert!(s < n);
                assert_eq!(s, shard_of(id, n));
                count[s as usize] += 1;
            }
            assert_eq!(count.iter().sum::<usize>(), 200);
            assert!(count.iter().all(|&c| c > 0), "{count:?}");
        }
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        assert!(
            parse_shard("4/4").is_err() && parse_shard("x").is_err() && parse_shard("0/0").is_err()
        );
    }

    #[test]
    fn manifest_parsing_defaults_ids_and_bad_entries() {
        let v: serde_json::Value = toml::from_str(
            r#"
[defaults.family]
children = 3
steps = 10

[[jobs]]
id = "f1"
kind = "family"
parent_a = "a.png"
parent_b = "/abs/b.npy"
output = "out/f1"
age = "child"

[[jobs]]
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/m.gif"
loop = true
easing = "ease-in-out"

[[jobs]]
id = "bad"
kind = "family"
parent_a = "a.png"
output = "x"

[[jobs]]
id = "weird"
kind = "paint"
"#,
        )
        .unwrap();
        let e = parse_manifest(&v, Path::new("/base")).unwrap();
        assert_eq!(e.len(), 4);
        match &e[0].spec {
            Ok(JobSpec::Family(f)) => {
                assert_eq!(f.children, 3);
                assert_eq!(f.sources.steps, 10);
                assert_eq!(f.parent_a, vec![PathBuf::from("/base/a.png")]);
                assert_eq!(f.parent_b, vec![PathBuf::from("/abs/b.npy")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e[1].id, "out/m.gif");
        match &e[1].spec {
            Ok(JobSpec::Morph(m)) => {
                assert!(m.looped && m.easing == crate::interp::Easing::EaseInOut)
            }
            other => panic!("{other:?}"),
        }
        // A family without parent B parses (it may predict the partner from a child) and
        // fails when it becomes a job, naming the field.
        let bad = e[2].spec.as_ref().unwrap();
        let ctx = SpecContext {
            manifest: None,
            cache: &LatentCache::Off,
            origin: Origin::Manifest,
        };
        let err = format!("{:#}", bad.into_job(&ctx).unwrap_err());
        assert!(err.contains("parent_b"), "{err}");
        assert!(e[3].spec.as_ref().unwrap_err().contains("paint"));

        let dup = serde_json::json!({"jobs": [
            {"id": "x", "kind": "invert", "photos": [], "output": "o"},
            {"id": "x", "kind": "invert", "photos": [], "output": "p"}]});
        assert!(
            format!("{:#}", parse_manifest(&dup, Path::new(".")).unwrap_err()).contains("same id")
        );
        assert!(parse_manifest(&serde_json::json!({"job": []}), Path::new(".")).is_err());
        let clash = serde_json::json!({"jobs": [
            {"id": "x", "kind": "invert", "photos": ["a.png"], "output": "o"},
            {"id": "y", "kind": "invert", "photos": ["b.png"], "output": "o"}]});
        let e = format!("{:#}", parse_manifest(&clash, Path::new(".")).unwrap_err());
        assert!(e.contains("both write"), "{e}");
    }
}
