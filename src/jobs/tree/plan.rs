//! Reading a tree manifest into a [`Plan`]: people, unions (each a `family` spec whose
//! parents are latent files), the order they run in, and everybody's generation. Every
//! check that needs no model happens here, and each error names the entry it is about
//! (`people[2] (anna)`, `unions[1] (carl+erin)`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::jobs::sources::is_latent_path;
use crate::jobs::spec::{parse_spec, FamilySpec};

/// The family options a union (and the manifest's `defaults`) may set: the `family` job's
/// fields that shape children. Parents, output, sources and paste-back are the tree's.
pub const UNION_OPTIONS: &[&str] = &[
    "children",
    "mix",
    "coarse",
    "middle",
    "fine",
    "crossover",
    "age",
    "gender",
    "dir",
    "mutation",
    "diversity",
    "seed",
    "traits",
];

/// Where a person comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A photo, inverted by the tree's people step.
    Photo(PathBuf),
    /// A latent file, used as it is.
    Latent(PathBuf),
    /// Child `index` (1-based, the family job's `child_NN`) of union `union`.
    Child { union: usize, index: usize },
}

#[derive(Clone, Debug)]
pub struct Person {
    pub name: String,
    /// The manifest entry that makes the person (`people[0]`, `unions[2]`).
    pub entry: String,
    pub origin: Origin,
    /// Row on the sheet: 0 for the first people; a child is one below its lower parent;
    /// somebody who only marries into the tree stands in their partner's row.
    pub generation: usize,
}

#[derive(Clone, Debug)]
pub struct Union {
    /// `id` in the manifest, else `A+B`.
    pub id: String,
    /// `unions[i] (id)`, for messages.
    pub entry: String,
    /// Parents and children, as indices into [`Plan::people`].
    pub a: usize,
    pub b: usize,
    pub children: Vec<usize>,
    /// The union's family settings (`parent_a`, `parent_b` and `output` are filled in by
    /// the run: they depend on the output folder).
    pub spec: FamilySpec,
    /// Sub-folder of `unions/` (a file-system-safe form of the id).
    pub folder: String,
}

/// A tree ready to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub path: PathBuf,
    pub title: String,
    pub people: Vec<Person>,
    pub unions: Vec<Union>,
    /// Indices into `unions`, parents' unions before their children's.
    pub order: Vec<usize>,
}

impl Plan {
    pub fn person(&self, name: &str) -> Option<usize> {
        self.people.iter().position(|p| p.name == name)
    }

    /// The union a person is a child of.
    pub fn parents_of(&self, person: usize) -> Option<&Union> {
        match self.people[person].origin {
            Origin::Child { union, .. } => Some(&self.unions[union]),
            _ => None,
        }
    }
}

/// Reads a TOML (`.toml`) or JSON (anything else) tree manifest, as `batch` reads its
/// manifests. Relative paths are relative to the manifest's folder.
pub fn read_plan(path: &Path) -> Result<Plan> {
    let (value, base) = crate::jobs::batch::read_toml_or_json(path, "tree manifest")?;
    let mut plan =
        parse_plan(&value, &base).with_context(|| format!("tree manifest {}", path.display()))?;
    plan.path = path.to_path_buf();
    Ok(plan)
}

fn table<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| anyhow!("{what} must be a table/object"))
}

fn string(t: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => bail!("{what}: `{key}` must be a non-empty string"),
    }
}

fn check_keys(t: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<()> {
    for k in t.keys() {
        if !allowed.contains(&k.as_str()) {
            bail!(
                "{what}: unknown field `{k}` (it takes: {})",
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

/// A file-system-safe form of a name (letters, digits, `-_.+`; the rest `_`).
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Parses `{"title", "defaults": {...}, "people": [...], "unions": [...]}`.
pub fn parse_plan(value: &Value, base: &Path) -> Result<Plan> {
    let top = table(value, "the top level")?;
    check_keys(
        top,
        &["title", "defaults", "people", "unions"],
        "the top level",
    )?;
    let title = string(top, "title", "the top level")?.unwrap_or_default();
    let defaults = match top.get("defaults") {
        None => Map::new(),
        Some(d) => {
            let d = table(d, "`defaults`")?;
            check_keys(d, UNION_OPTIONS, "`defaults`")?;
            d.clone()
        }
    };
    let list = |key: &str| -> Result<Vec<Value>> {
        match top.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => bail!("`{key}` must be a list (TOML: [[{key}]] tables)"),
        }
    };
    let (people_v, unions_v) = (list("people")?, list("unions")?);
    if people_v.is_empty() {
        bail!("no `people` (TOML: [[people]] tables with `name` and `photo` or `latent`)");
    }
    let mut people: Vec<Person> = Vec::new();
    // Which entry first named each person.
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |name: &str, entry: &str| -> Result<()> {
        if let Some(first) = named.insert(name.to_string(), entry.to_string()) {
            bail!("`{name}` is named twice: by {first} and by {entry}; every person needs their own name");
        }
        Ok(())
    };
    for (i, p) in people_v.iter().enumerate() {
        let what = format!("people[{i}]");
        let t = table(p, &what)?;
        check_keys(t, &["name", "photo", "latent"], &what)?;
        let name = string(t, "name", &what)?.ok_or_else(|| anyhow!("{what} has no `name`"))?;
        let what = format!("people[{i}] ({name})");
        let file = |k: &str| -> Result<Option<PathBuf>> {
            Ok(string(t, k, &what)?.map(|s| {
                let p = PathBuf::from(s);
                if p.is_absolute() {
                    p
                } else {
                    base.join(p)
                }
            }))
        };
        let origin = match (file("photo")?, file("latent")?) {
            (Some(p), None) if is_latent_path(&p) => {
                bail!(
                    "{what}: `photo` {} is a latent file; give it as `latent`",
                    p.display()
                )
            }
            (None, Some(l)) if !is_latent_path(&l) => {
                bail!("{what}: `latent` {} is not a .npy/.npz file", l.display())
            }
            (Some(p), None) => Origin::Photo(p),
            (None, Some(l)) => Origin::Latent(l),
            (Some(_), Some(_)) => bail!("{what}: give `photo` or `latent`, not both"),
            (None, None) => bail!("{what}: give a `photo` or a `latent`"),
        };
        claim(&name, &what)?;
        people.push(Person {
            name,
            entry: what,
            origin,
            generation: 0,
        });
    }
    let roots = people.len();
    // Unions: their ids and children first (a union may name a parent born later in the
    // list), then their parents.
    let mut unions: Vec<Union> = Vec::new();
    let mut parent_names: Vec<(String, String)> = Vec::new();
    let mut folders: BTreeMap<String, String> = BTreeMap::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (i, u) in unions_v.iter().enumerate() {
        let what = format!("unions[{i}]");
        let t = table(u, &what)?;
        let mut allowed = vec!["id", "a", "b", "names"];
        allowed.extend(UNION_OPTIONS);
        check_keys(t, &allowed, &what)?;
        let a = string(t, "a", &what)?.ok_or_else(|| anyhow!("{what} has no parent `a`"))?;
        let b = string(t, "b", &what)?.ok_or_else(|| anyhow!("{what} has no parent `b`"))?;
        let id = string(t, "id", &what)?.unwrap_or_else(|| format!("{a}+{b}"));
        let what = format!("unions[{i}] ({id})");
        if let Some(first) = ids.insert(id.clone(), what.clone()) {
            bail!("{first} and {what} have the same id `{id}`; give one of them an `id`");
        }
        let folder = safe_name(&id);
        if let Some(other) = folders.insert(folder.clone(), what.clone()) {
            bail!("{other} and {what} would share the folder unions/{folder}; give one of them another `id`");
        }
        if a == b {
            bail!("{what}: a union needs two different people, got `{a}` twice");
        }
        let given: Option<Vec<String>> = match t.get("names") {
            None => None,
            Some(Value::Array(v)) => Some(
                v.iter()
                    .map(|n| match n {
                        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                        _ => Err(anyhow!("{what}: `names` must be non-empty strings")),
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => bail!("{what}: `names` must be a list of the children's names"),
        };
        let mut options = defaults.clone();
        for k in UNION_OPTIONS {
            if let Some(v) = t.get(*k) {
                options.insert(k.to_string(), v.clone());
            }
        }
        match (&given, t.get("children")) {
            (Some(n), Some(c)) if c.as_u64() != Some(n.len() as u64) => bail!(
                "{what}: `children = {c}` but `names` lists {} children",
                n.len()
            ),
            (Some(n), _) => {
                if n.is_empty() {
                    bail!("{what}: `names` is empty; a union has at least one child");
                }
                options.insert("children".into(), Value::from(n.len()));
            }
            _ => {}
        }
        let spec =
            family_spec(&options).map_err(|e| anyhow!("{what}: invalid family settings: {e}"))?;
        if spec.children == 0 {
            bail!("{what}: `children` must be at least 1");
        }
        let names =
            given.unwrap_or_else(|| (1..=spec.children).map(|k| format!("{id}/{k}")).collect());
        let mut children = Vec::new();
        for (k, name) in names.into_iter().enumerate() {
            claim(&name, &what)?;
            children.push(people.len());
            people.push(Person {
                name,
                entry: what.clone(),
                origin: Origin::Child {
                    union: i,
                    index: k + 1,
                },
                generation: 0,
            });
        }
        parent_names.push((a, b));
        unions.push(Union {
            id,
            entry: what,
            a: 0,
            b: 0,
            children,
            spec,
            folder,
        });
    }
    let known = |n: &str| -> Option<usize> { people.iter().position(|p| p.name == n) };
    for (u, (a, b)) in unions.iter_mut().zip(&parent_names) {
        for (slot, name) in [(&mut u.a, a), (&mut u.b, b)] {
            *slot = known(name).ok_or_else(|| {
                anyhow!(
                    "{}: `{name}` is not a person of this tree (neither in `people` nor a \
                     child named by a union)",
                    u.entry
                )
            })?;
            if u.children.contains(slot) {
                bail!("{}: `{name}` would be their own parent", u.entry);
            }
        }
    }
    let order = topological_order(&people, &unions)?;
    let mut plan = Plan {
        path: PathBuf::new(),
        title,
        people,
        unions,
        order,
    };
    assign_generations(&mut plan, roots);
    Ok(plan)
}

/// The family spec of a union's options. Parents and output are placeholders until the
/// run knows the output folder. serde's message names the type, not the field: a bad
/// value is found by trying the options one by one.
fn family_spec(options: &Map<String, Value>) -> std::result::Result<FamilySpec, String> {
    let with = |opts: Map<String, Value>| {
        let mut t = opts;
        t.insert("parent_a".into(), Value::from("a.npy"));
        t.insert("parent_b".into(), Value::from("b.npy"));
        t.insert("output".into(), Value::from("."));
        parse_spec::<FamilySpec>(Value::Object(t))
    };
    with(options.clone()).map_err(|e| {
        for (k, v) in options {
            if let Err(e) = with(Map::from_iter([(k.clone(), v.clone())])) {
                return format!("`{k}` = {v}: {e}");
            }
        }
        e
    })
}

/// Unions ordered so that every union comes after the unions its parents are children of
/// (ties in manifest order); a cycle is an error that walks it.
fn topological_order(people: &[Person], unions: &[Union]) -> Result<Vec<usize>> {
    let born_in = |p: usize| match people[p].origin {
        Origin::Child { union, .. } => Some(union),
        _ => None,
    };
    let needs: Vec<BTreeSet<usize>> = unions
        .iter()
        .map(|u| [u.a, u.b].into_iter().filter_map(born_in).collect())
        .collect();
    let mut done = vec![false; unions.len()];
    let mut order = Vec::new();
    while order.len() < unions.len() {
        let next = (0..unions.len()).find(|&i| !done[i] && needs[i].iter().all(|&j| done[j]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                // Every union left waits on another one left: follow the waits until one
                // repeats, and describe that loop.
                let mut at = (0..unions.len())
                    .find(|&i| !done[i])
                    .expect("a union is left");
                let mut path = Vec::new();
                while !path.contains(&at) {
                    path.push(at);
                    at = *needs[at].iter().find(|&&j| !done[j]).expect("it waits");
                }
                let start = path.iter().position(|&u| u == at).expect("in the path");
                let cycle = &path[start..];
                // Each union of the loop waits on the next one: name the parent it needs.
                let mut text = unions[cycle[0]].entry.clone();
                for (k, &u) in cycle.iter().enumerate() {
                    let next = cycle[(k + 1) % cycle.len()];
                    let parent = [unions[u].a, unions[u].b]
                        .into_iter()
                        .find(|&p| born_in(p) == Some(next))
                        .expect("a parent born in the next union");
                    if k > 0 {
                        text.push_str(", which");
                    }
                    text.push_str(&format!(
                        " needs `{}`, a child of {}",
                        people[parent].name, unions[next].entry
                    ));
                }
                bail!("the unions form a cycle (a person would be their own ancestor): {text}");
            }
        }
    }
    Ok(order)
}

fn assign_generations(plan: &mut Plan, roots: usize) {
    // Children one row below their lower parent, with every first person in row 0; then
    // a first person who only marries people of later rows moves to their earliest
    // partner's row, and the children follow.
    for pass in 0..2 {
        if pass == 1 {
            for r in 0..roots {
                let partners: Vec<usize> = plan
                    .unions
                    .iter()
                    .filter_map(|u| match (u.a == r, u.b == r) {
                        (true, _) => Some(u.b),
                        (_, true) => Some(u.a),
                        _ => None,
                    })
                    .collect();
                if !partners.is_empty() && partners.iter().all(|&p| p >= roots) {
                    plan.people[r].generation = partners
                        .iter()
                        .map(|&p| plan.people[p].generation)
                        .min()
                        .unwrap_or(0);
                }
            }
        }
        for &u in &plan.order.clone() {
            let un = &plan.unions[u];
            let g = plan.people[un.a]
                .generation
                .max(plan.people[un.b].generation)
                + 1;
            for &c in &un.children.clone() {
                plan.people[c].generation = g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml_text: &str) -> Result<Plan> {
        let v: Value = toml::from_str(toml_text).unwrap();
        parse_plan(&v, Path::new("/base"))
    }

    const PEOPLE: &str = r#"
[[people]]
name = "anna"
photo = "anna.jpg"
[[people]]
name = "ben"
latent = "/l/ben.npy"
[[people]]
name = "erin"
latent = "erin.npy"
"#;

    #[test]
    fn three_generations_in_order_with_names_and_rows() {
        let p = plan(&format!(
            r#"{PEOPLE}
[defaults]
mutation = 0.1
[[unions]]
a = "carl"
b = "erin"
[[unions]]
a = "anna"
b = "ben"
names = ["carl", "dora"]
mix = 0.3
"#
        ))
        .unwrap();
        assert_eq!(p.order, vec![1, 0], "parents' union first");
        let names: Vec<&str> = p.people.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            ["anna", "ben", "erin", "carl+erin/1", "carl", "dora"]
        );
        let gen: Vec<usize> = p.people.iter().map(|x| x.generation).collect();
        // erin marries into generation 1.
        assert_eq!(gen, [0, 0, 1, 2, 1, 1]);
        assert_eq!(p.people[0].origin, Origin::Photo("/base/anna.jpg".into()));
        assert_eq!(p.people[1].origin, Origin::Latent("/l/ben.npy".into()));
        let u = &p.unions[1];
        assert_eq!(
            (u.spec.children, u.spec.mix, u.spec.mutation),
            (2, 0.3, 0.1)
        );
        assert_eq!(p.unions[0].folder, "carl+erin");
        assert_eq!(p.parents_of(3).unwrap().id, "carl+erin");
    }

    #[test]
    fn bad_trees_are_refused_naming_the_entry() {
        let err = |extra: &str| format!("{:#}", plan(&format!("{PEOPLE}{extra}")).unwrap_err());
        let e = err("[[unions]]\na = \"anna\"\nb = \"bob\"\n");
        assert!(
            e.contains("unions[0] (anna+bob)") && e.contains("`bob`"),
            "{e}"
        );
        let e = err("[[unions]]\na = \"anna\"\nb = \"y\"\nnames = [\"x\"]\n\
             [[unions]]\na = \"x\"\nb = \"ben\"\nnames = [\"y\"]\n");
        assert!(
            e.contains("cycle") && e.contains("unions[0]") && e.contains("unions[1]"),
            "{e}"
        );
        let e = err("[[unions]]\na = \"anna\"\nb = \"x\"\nnames = [\"x\"]\n");
        assert!(e.contains("own parent"), "{e}");
        let e = err("[[unions]]\na = \"anna\"\nb = \"ben\"\nnames = [\"erin\"]\n");
        assert!(e.contains("named twice") && e.contains("people[2]"), "{e}");
        let e = err("[[unions]]\na = \"anna\"\nb = \"anna\"\n");
        assert!(e.contains("two different"), "{e}");
        let e = err("[[unions]]\na = \"anna\"\nb = \"ben\"\nmix = \"lots\"\n");
        assert!(
            e.contains("unions[0] (anna+ben)") && e.contains("mix"),
            "{e}"
        );
        let e = err("[[unions]]\na = \"anna\"\nb = \"ben\"\noutput = \"x\"\n");
        assert!(e.contains("unknown field `output`"), "{e}");
        let e =
            err("[[unions]]\na = \"anna\"\nb = \"ben\"\n[[unions]]\na = \"anna\"\nb = \"ben\"\n");
        assert!(e.contains("same id"), "{e}");
        let e = err("[[unions]]\na = \"anna\"\nb = \"ben\"\nchildren = 3\nnames = [\"p\"]\n");
        assert!(e.contains("names"), "{e}");
        let e = format!(
            "{:#}",
            plan("[[people]]\nname = \"z\"\nphoto = \"z.npy\"\n").unwrap_err()
        );
        assert!(e.contains("people[0] (z)") && e.contains("latent"), "{e}");
    }
}
