//! The family engine: a child's W+ code from two parents' codes.
//!
//! Pure maths on W+ codes (`[num_ws * w_dim]`) plus the bundle's manifest (layer ranges,
//! directions, W statistics); no files, no ONNX. The recipe follows FamilyGan and
//! StyleGene (see `shared/RESEARCH.md` §6), made explicit and seedable:
//!
//! 1. **Genes.** Every W+ row gets a share `s` of parent B: the share of its layer group
//!    (`--coarse`, `--middle`, `--fine`, over the manifest's `layers` ranges), else the
//!    overall `--mix`. Blend: `row = (1 - s) a + s b` — with `s = 0` or `1` this is the
//!    parent's row bit for bit. Crossover instead takes each row whole from B with
//!    probability `s`, else from A (StyleGene's per-region inheritance).
//! 2. **Inheritance, per child.** As in meiosis, every child draws its own genes: each
//!    layer group's share wanders around the asked one (spread `0.25 diversity`), and
//!    each style channel (a dimension of w, the same in every row of the group) draws
//!    its own share around that (spread `0.35 diversity`). Spreads shrink to zero at
//!    shares 0 and 1 (times `2 sqrt(s (1 - s))`), so `--mix 0` is still parent A bit for
//!    bit; `--diversity 0` gives every child the plain blend.
//! 3. **Mutations.** Sibling `k >= 2` adds Gaussian noise `mutation * diversity * w_std[d]`,
//!    one draw per group shared by its rows (a coherent change, not per-row speckle), to
//!    the `middle` and `fine` groups (appearance details, not face shape), and draws its
//!    own crossover. Siblings therefore differ but share the parents' features.
//! 4. **Traits chosen by the user** (`--trait eyes=a`): each named face region of the
//!    manifest's `traits` (eyes, nose, mouth, face shape, hair, skin) is set to the
//!    chosen parent's (or a blend, as a share of B) along the W+ directions that drive
//!    that region and little else ([`crate::model::manifest::Trait`], fitted by
//!    `onnx/latentface_train/fit_traits.py`); the rest of the child stays as steps 1-3
//!    made it. Traits are applied in name order; one that shares directions with another
//!    overrides it there.
//! 5. **Age and gender edits** along the manifest's `directions`, on the rows each
//!    direction lists. A group name (`child`, `female`, ...) moves the child's projection
//!    `mean over layers of (row - w_avg) . v` to the group's value; a number moves it by
//!    that many `projection_std` (plain units when the manifest has none). When several
//!    edits are asked for, their step sizes are solved together so that each direction's
//!    projection lands where it was asked even when the directions are not orthogonal.
//!
//! Every child is a function of (parents, parameters, seed, child index) only.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::model::manifest::{Direction, Manifest};
use crate::rng::{mix64, Rng};

/// An edit along one direction.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum EditTarget {
    /// Move by this many `projection_std` (plain units without one).
    Strength(f64),
    /// Move the projection to the value of this group of `directions.X.groups`.
    Group(String),
}

impl std::str::FromStr for EditTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty value".into());
        }
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(EditTarget::Strength(v)),
            Ok(_) => Err(format!("`{t}` is not a finite number")),
            Err(_) => Ok(EditTarget::Group(t.to_ascii_lowercase())),
        }
    }
}

impl std::fmt::Display for EditTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditTarget::Strength(v) => write!(f, "{v:+}"),
            EditTarget::Group(g) => f.write_str(g),
        }
    }
}

/// `--trait NAME=a|b|SHARE`: the parent one trait comes from, as a share of parent B
/// (`a` = 0, `b` = 1, a number in between blends, like `--mix`). Written `eyes=a`.
#[derive(Clone, Debug, PartialEq)]
pub struct TraitChoice {
    /// The manifest's trait name (`face-shape` is read as `face_shape`).
    pub name: String,
    pub share_b: f32,
}

impl std::str::FromStr for TraitChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((name, from)) = s.split_once('=') else {
            return Err(format!(
                "`{s}` is not NAME=a, NAME=b or NAME=SHARE (a share of parent B in [0, 1])"
            ));
        };
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        if name.is_empty() {
            return Err(format!("`{s}`: the trait name is empty"));
        }
        let from = from.trim();
        let share_b = match from.to_ascii_lowercase().as_str() {
            "a" => 0.0,
            "b" => 1.0,
            v => match v.parse::<f32>() {
                Ok(x) if (0.0..=1.0).contains(&x) => x,
                _ => {
                    return Err(format!(
                        "`{s}`: `{from}` is not a, b or a share of parent B in [0, 1]"
                    ))
                }
            },
        };
        Ok(TraitChoice { name, share_b })
    }
}

impl std::fmt::Display for TraitChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, trait_source(self.share_b))
    }
}

/// A trait's parent as written: `a` (share of B 0), `b` (1), else the share of B.
pub fn trait_source(share_b: f32) -> String {
    match share_b {
        s if s == 0.0 => "a".into(),
        s if s == 1.0 => "b".into(),
        s => format!("{s}"),
    }
}

impl serde::Serialize for TraitChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraitChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every knob of a family, with defaults in [`FamilyParams::default`].
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyParams {
    /// Overall share of parent B in [0, 1].
    pub mix: f32,
    /// Shares of parent B for the manifest's layer groups; `None` = `mix`.
    pub coarse: Option<f32>,
    pub middle: Option<f32>,
    pub fine: Option<f32>,
    /// Take each row whole from one parent (probability = the row's share of B).
    pub crossover: bool,
    /// Direction edits by direction name (`age`, `gender`, ...), applied in name order.
    pub edits: BTreeMap<String, EditTarget>,
    /// Traits by the manifest's trait name: the share of parent B each takes (0 = from
    /// A, 1 = from B), on top of the blend.
    pub traits: BTreeMap<String, f32>,
    /// Number of children (siblings), >= 1.
    pub children: usize,
    /// Strength of siblings' mutations, times `w_std` per dimension.
    pub mutation: f32,
    /// How much siblings differ: scales the random inheritance and the mutations
    /// (0 = every child the plain blend of the asked shares).
    pub diversity: f32,
    pub seed: u64,
}

impl Default for FamilyParams {
    fn default() -> Self {
        FamilyParams {
            mix: 0.5,
            coarse: None,
            middle: None,
            fine: None,
            crossover: false,
            edits: BTreeMap::new(),
            traits: BTreeMap::new(),
            children: 1,
            mutation: 0.25,
            diversity: 1.0,
            seed: 0,
        }
    }
}

impl FamilyParams {
    /// Checks the numbers and that every edit names a direction (and group) the
    /// manifest has.
    /// Checks the parameters against the bundle (errors name fields plainly: `mix`).
    pub fn validate(&self, m: &Manifest) -> Result<()> {
        self.validate_named(m, &|id| id.to_string())
    }

    /// [`validate`](Self::validate), with `name` spelling each field in errors (`--mix`
    /// on the command line).
    pub fn validate_named(&self, m: &Manifest, name: &dyn Fn(&str) -> String) -> Result<()> {
        for (name_, v) in [
            ("mix", Some(self.mix)),
            ("coarse", self.coarse),
            ("middle", self.middle),
            ("fine", self.fine),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    bail!("{} is a share of parent B in [0, 1], got {v}", name(name_));
                }
            }
        }
        for (name_, v) in [
            ("coarse", self.coarse),
            ("middle", self.middle),
            ("fine", self.fine),
        ] {
            if v.is_some() && !m.layers.contains_key(name_) {
                bail!(
                    "{}: the bundle's manifest has no `layers.{name_}` range (it has: {})",
                    name(name_),
                    list(m.layers.keys())
                );
            }
        }
        if self.children == 0 {
            bail!("{} must be at least 1", name("children"));
        }
        if !(self.mutation >= 0.0 && self.mutation.is_finite()) {
            bail!(
                "{} must be a number >= 0, got {}",
                name("mutation"),
                self.mutation
            );
        }
        if !(self.diversity >= 0.0 && self.diversity <= 4.0) {
            bail!(
                "{} must be a number in [0, 4], got {}",
                name("diversity"),
                self.diversity
            );
        }
        for (t, &share) in &self.traits {
            if !m.traits.contains_key(t) {
                bail!(
                    "{} {t}: the bundle has no `{t}` trait (it has: {})",
                    name("traits"),
                    list(m.traits.keys())
                );
            }
            if !(0.0..=1.0).contains(&share) {
                bail!(
                    "{} {t}: a share of parent B in [0, 1] (or a, b), got {share}",
                    name("traits")
                );
            }
        }
        for (dir, target) in &self.edits {
            let Some(d) = m.directions.get(dir) else {
                bail!(
                    "{}: the bundle has no `{dir}` direction (it has: {})",
                    name(dir),
                    list(m.directions.keys())
                );
            };
            if let EditTarget::Group(g) = target {
                if !d.groups.contains_key(g) {
                    bail!(
                        "{} {g}: unknown group; the bundle's `{dir}` direction has groups: {} (or give a signed strength such as -1.5)",
                        name(dir),
                        list(d.groups.keys())
                    );
                }
            }
        }
        Ok(())
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The share of parent B of every W+ row.
pub fn row_shares(m: &Manifest, p: &FamilyParams) -> Vec<f32> {
    let mut shares = vec![p.mix; m.num_ws];
    for (name, v) in [("coarse", p.coarse), ("middle", p.middle), ("fine", p.fine)] {
        if let (Some(v), Some([a, b])) = (v, m.layers.get(name)) {
            for s in shares.iter_mut().take((*b).min(m.num_ws)).skip(*a) {
                *s = v;
            }
        }
    }
    shares
}

/// The rows mutated for siblings: the `middle` and `fine` ranges (all rows past the
/// `coarse` range when the manifest names neither).
pub fn mutated_rows(m: &Manifest) -> Vec<usize> {
    let mut rows: Vec<usize> = ["middle", "fine"]
        .iter()
        .filter_map(|g| m.layers.get(*g))
        .flat_map(|[a, b]| *a..*b)
        .collect();
    if rows.is_empty() {
        let start = m.layers.get("coarse").map(|r| r[1]).unwrap_or(m.num_ws / 2);
        rows = (start..m.num_ws).collect();
    }
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The layer group of every W+ row (index into coarse, middle, fine; rows in none of
/// them form a group of their own).
fn row_groups(m: &Manifest) -> Vec<usize> {
    let mut g = vec![3; m.num_ws];
    for (i, name) in ["coarse", "middle", "fine"].iter().enumerate() {
        if let Some([a, b]) = m.layers.get(*name) {
            for r in g.iter_mut().take((*b).min(m.num_ws)).skip(*a) {
                *r = i;
            }
        }
    }
    g
}

/// One child's share of parent B for every (row, channel): see the module docs, step 2.
fn inherited_shares(
    shares: &[f32],
    groups: &[usize],
    wd: usize,
    diversity: f32,
    rng: &mut Rng,
) -> Vec<f32> {
    let spread = |s: f32| 2.0 * (s * (1.0 - s)).max(0.0).sqrt();
    let mut by_group: BTreeMap<(usize, u32), Vec<f32>> = BTreeMap::new();
    let mut out = Vec::with_capacity(shares.len() * wd);
    for (row, &s) in shares.iter().enumerate() {
        // rows of one group with the same asked share inherit the same genes
        let key = (groups[row], s.to_bits());
        let genes = by_group.entry(key).or_insert_with(|| {
            let sg = (s + 0.25 * diversity * spread(s) * rng.normal() as f32).clamp(0.0, 1.0);
            (0..wd)
                .map(|_| (sg + 0.35 * diversity * spread(sg) * rng.normal() as f32).clamp(0.0, 1.0))
                .collect()
        });
        out.extend_from_slice(genes);
    }
    out
}

/// The projection of a W+ code on a direction: mean over its layers of `(row - w_avg) . v`.
pub fn projection(ws: &[f32], m: &Manifest, d: &Direction) -> f64 {
    let wd = m.w_dim;
    if d.layers.is_empty() {
        return 0.0;
    }
    d.layers
        .iter()
        .map(|&l| {
            ws[l * wd..(l + 1) * wd]
                .iter()
                .zip(&m.w_avg)
                .zip(&d.vector)
                .map(|((&x, &a), &v)| (x - a) as f64 * v as f64)
                .sum::<f64>()
        })
        .sum::<f64>()
        / d.layers.len() as f64
}

/// Applies direction edits to a W+ code in place (see module docs, step 3).
pub fn apply_edits(
    ws: &mut [f32],
    m: &Manifest,
    edits: &BTreeMap<String, EditTarget>,
) -> Result<()> {
    let dirs: Vec<(&String, &Direction, &EditTarget)> = edits
        .iter()
        .map(|(n, t)| {
            m.directions
                .get(n)
                .map(|d| (n, d, t))
                .ok_or_else(|| anyhow::anyhow!("the bundle has no `{n}` direction"))
        })
        .collect::<Result<_>>()?;
    let k = dirs.len();
    if k == 0 {
        return Ok(());
    }
    // Wanted change of each direction's projection.
    let mut delta = Vec::with_capacity(k);
    for (n, d, t) in &dirs {
        delta.push(match t {
            EditTarget::Strength(s) => s * d.projection_std.unwrap_or(1.0),
            EditTarget::Group(g) => {
                let want = d
                    .groups
                    .get(g)
                    .ok_or_else(|| anyhow::anyhow!("direction `{n}` has no group `{g}`"))?;
                want - projection(ws, m, d)
            }
        });
    }
    // Adding c_i * u_i (u_i = v_i / |v_i|^2) to the rows L_i of direction i changes the
    // projection of direction j by c_i (u_i . v_j) |L_i & L_j| / |L_j|.
    let unit: Vec<Vec<f64>> = dirs
        .iter()
        .map(|(_, d, _)| {
            let n2: f64 = d.vector.iter().map(|&v| (v as f64).powi(2)).sum();
            d.vector.iter().map(|&v| v as f64 / n2).collect()
        })
        .collect();
    let mut a = vec![vec![0.0f64; k]; k];
    for j in 0..k {
        let dj = dirs[j].1;
        for i in 0..k {
            let di = dirs[i].1;
            let shared = di.layers.iter().filter(|l| dj.layers.contains(l)).count();
            let dot: f64 = unit[i]
                .iter()
                .zip(&dj.vector)
                .map(|(u, &v)| u * v as f64)
                .sum();
            a[j][i] = if dj.layers.is_empty() {
                0.0
            } else {
                dot * shared as f64 / dj.layers.len() as f64
            };
        }
    }
    let c = solve(a, delta.clone()).unwrap_or(delta);
    let wd = m.w_dim;
    for (i, (_, d, _)) in dirs.iter().enumerate() {
        for &l in &d.layers {
            for (x, u) in ws[l * wd..(l + 1) * wd].iter_mut().zip(&unit[i]) {
                *x += (c[i] * u) as f32;
            }
        }
    }
    Ok(())
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (pivot_row, pivot_b) = (a[col].clone(), b[col]);
        for (row, rb) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * p;
            }
            *rb -= f * pivot_b;
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Sets each trait of `ws` to the blend `(1 - s) a + s b` of the parents, `s` its share
/// of B, along the trait's components (module docs, step 4); the rest of `ws` stays.
pub fn apply_traits(
    ws: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: &Manifest,
    traits: &BTreeMap<String, f32>,
) -> Result<()> {
    let wd = m.w_dim;
    for (name, &s) in traits {
        let t = m
            .traits
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("the bundle has no `{name}` trait"))?;
        let c = t
            .components(wd, m.num_ws)
            .map_err(|e| anyhow::anyhow!("traits.{name}: {e}"))?;
        // Every component's amount first, then the moves: the components are independent
        // (dual[i] . basis[j] = [i == j]), so this is the Python rule exactly.
        let amounts: Vec<f32> = c
            .rows
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let dual = &c.dual[i * wd..(i + 1) * wd];
                (0..wd)
                    .map(|d| {
                        let j = r * wd + d;
                        let target = (1.0 - s) * a[j] + s * b[j];
                        dual[d] * (target - ws[j])
                    })
                    .sum()
            })
            .collect();
        for (i, &r) in c.rows.iter().enumerate() {
            let basis = &c.basis[i * wd..(i + 1) * wd];
            for (x, v) in ws[r * wd..(r + 1) * wd].iter_mut().zip(basis) {
                *x += amounts[i] * v;
            }
        }
    }
    Ok(())
}

/// One child.
#[derive(Clone, Debug)]
pub struct Child {
    /// 1-based index among the siblings.
    pub index: usize,
    /// `[num_ws * w_dim]`.
    pub ws: Vec<f32>,
    /// Which parent each row came from under crossover (`'A'`/`'B'`), else `'~'` (blend).
    pub rows_from: Vec<char>,
    pub mutated: bool,
    /// Projections on every edited direction after the edits.
    pub projections: BTreeMap<String, f64>,
}

/// Makes `p.children` children of parents `a` and `b` (`[num_ws * w_dim]` each).
pub fn make_children(a: &[f32], b: &[f32], m: &Manifest, p: &FamilyParams) -> Result<Vec<Child>> {
    p.validate(m)?;
    let (l, wd) = (m.num_ws, m.w_dim);
    if a.len() != l * wd || b.len() != l * wd {
        bail!(
            "parent latents have {} and {} values, the model needs [{l}, {wd}]",
            a.len(),
            b.len()
        );
    }
    let shares = row_shares(m, p);
    let mutate = mutated_rows(m);
    let groups = row_groups(m);
    let mut out = Vec::with_capacity(p.children);
    for k in 1..=p.children {
        let mut rng = Rng::new(mix64(p.seed ^ mix64(k as u64)));
        let inherited = inherited_shares(&shares, &groups, wd, p.diversity, &mut rng);
        let mut ws = Vec::with_capacity(l * wd);
        let mut rows_from = Vec::with_capacity(l);
        for (row, &s) in shares.iter().enumerate() {
            let (ra, rb) = (&a[row * wd..(row + 1) * wd], &b[row * wd..(row + 1) * wd]);
            if p.crossover {
                let from_b = rng.uniform() < s as f64;
                ws.extend_from_slice(if from_b { rb } else { ra });
                rows_from.push(if from_b { 'B' } else { 'A' });
            } else {
                let sc = &inherited[row * wd..(row + 1) * wd];
                ws.extend(
                    ra.iter()
                        .zip(rb)
                        .zip(sc)
                        .map(|((&x, &y), &s)| (1.0 - s) * x + s * y),
                );
                rows_from.push('~');
            }
        }
        let strength = p.mutation * p.diversity;
        let mutated = k > 1 && strength > 0.0;
        if mutated {
            // one draw per group, shared by its rows
            let mut noise: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
            for &row in &mutate {
                let g = noise.entry(groups[row]).or_insert_with(|| {
                    m.w_std
                        .iter()
                        .map(|&sd| rng.normal() as f32 * strength * sd)
                        .collect()
                });
                for (x, n) in ws[row * wd..(row + 1) * wd].iter_mut().zip(g.iter()) {
                    *x += n;
                }
            }
        }
        apply_traits(&mut ws, a, b, m, &p.traits)?;
        apply_edits(&mut ws, m, &p.edits)?;
        let projections = p
            .edits
            .keys()
            .filter_map(|n| {
                m.directions
                    .get(n)
                    .map(|d| (n.clone(), projection(&ws, m, d)))
            })
            .collect();
        out.push(Child {
            index: k,
            ws,
            rows_from,
            mutated,
            projections,
        });
    }
    Ok(out)
}

/// The prior's spread of the predicted partner's W+ rows around their common W code, in
/// w_std: small, so that B stays near the generator's W space (an inverted photo's rows
/// wander much further, in directions the picture hardly shows; measured, a looser tie
/// lets that wandering into B: `examples/parents_eval.rs`).
pub const PARTNER_ROW_SPREAD: f64 = 0.25;

/// The effective share of parent B of every (row, channel) of child `index` (1-based)
/// under `p`: crossover and per-child inheritance drawn exactly as [`make_children`] draws
/// them (a child of an all-0 and an all-1 parent, without mutations or edits).
pub fn child_shares(m: &Manifest, p: &FamilyParams, index: usize) -> Result<Vec<f32>> {
    let n = m.num_ws * m.w_dim;
    let q = FamilyParams {
        edits: BTreeMap::new(),
        traits: BTreeMap::new(),
        mutation: 0.0,
        children: index.max(1),
        ..p.clone()
    };
    let kids = make_children(&vec![0.0; n], &vec![1.0; n], m, &q)?;
    Ok(kids[index.max(1) - 1].ws.clone())
}

/// The missing parent: the W+ code `b` that, blended with `a` under `p` (child 1's shares,
/// then `p`'s edits), best explains `child`, kept on the model's manifold.
///
/// A linear-Gaussian model, solved in closed form (the MAP estimate, which is also the
/// posterior mean). In units of the bundle's W statistics (`x~ = (x - w_avg) / w_std` per
/// dimension), for every dimension `d` and row `r`:
/// `child~[r] = (1 - s[r]) a~[r] + s[r] b~[r] + e[r] + n`, with `n ~ N(0, noise^2)` (how far
/// the child may be from the exact blend: inversion error, mutations, a real family) and
/// `e` the edits' offset. The prior on `b~` is the generator's: one W code for every row,
/// `N(0, 1)` around `w_avg` with the bundle's spread, plus a per-row departure `N(0, tau^2)`
/// ([`PARTNER_ROW_SPREAD`]). So
/// rows with a large share of B pin `b` down, rows with share 0 say nothing and take the
/// value the other rows imply, and a dimension nothing constrains stays at `w_avg`: the
/// estimate cannot leave the region the generator was trained on by fitting noise.
/// Edits: a strength adds a known offset, which is subtracted; a group edit sets the
/// projection whatever B was, so that component stays at the prior's guess (the offset is
/// computed from the current estimate, twice).
pub fn predict_partner(
    a: &[f32],
    child: &[f32],
    m: &Manifest,
    p: &FamilyParams,
    noise: f32,
) -> Result<Vec<f32>> {
    p.validate(m)?;
    let (l, wd) = (m.num_ws, m.w_dim);
    if a.len() != l * wd || child.len() != l * wd {
        bail!(
            "latents have {} and {} values, the model needs [{l}, {wd}]",
            a.len(),
            child.len()
        );
    }
    if !(noise.is_finite() && noise > 0.0) {
        bail!("the partner noise must be a number above 0, got {noise}");
    }
    if !p.traits.is_empty() {
        bail!("traits are not modelled when predicting a partner: leave them out");
    }
    let shares = child_shares(m, p, 1)?;
    let sd: Vec<f64> = m.w_std.iter().map(|&v| (v as f64).max(1e-6)).collect();
    let mu: Vec<f64> = m.w_avg.iter().map(|&v| v as f64).collect();
    let std = |x: &[f32]| -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| (v as f64 - mu[i % wd]) / sd[i % wd])
            .collect()
    };
    let (at, ct) = (std(a), std(child));
    let tau2 = PARTNER_ROW_SPREAD * PARTNER_ROW_SPREAD;
    let nu2 = (noise as f64).powi(2);
    let mut b = m.w_avg.repeat(l);
    for _ in 0..3 {
        // The edits' offset at the current estimate.
        let blend: Vec<f32> = (0..l * wd)
            .map(|i| (1.0 - shares[i]) * a[i] + shares[i] * b[i])
            .collect();
        let mut edited = blend.clone();
        apply_edits(&mut edited, m, &p.edits)?;
        let mut bt = vec![0.0f64; l * wd];
        for d in 0..wd {
            // y = S b~ + n, prior b~ ~ N(0, Sigma), Sigma = 1 1^T + tau^2 I:
            // b~ = Sigma S (S Sigma S + nu^2 I)^-1 y.
            let s: Vec<f64> = (0..l).map(|r| shares[r * wd + d] as f64).collect();
            let y: Vec<f64> = (0..l)
                .map(|r| {
                    let i = r * wd + d;
                    ct[i] - (1.0 - s[r]) * at[i] - (edited[i] - blend[i]) as f64 / sd[d]
                })
                .collect();
            let sigma = |i: usize, j: usize| 1.0 + if i == j { tau2 } else { 0.0 };
            let mat: Vec<Vec<f64>> = (0..l)
                .map(|i| {
                    (0..l)
                        .map(|j| s[i] * sigma(i, j) * s[j] + if i == j { nu2 } else { 0.0 })
                        .collect()
                })
                .collect();
            let alpha = solve(mat, y).ok_or_else(|| anyhow::anyhow!("singular partner system"))?;
            for r in 0..l {
                bt[r * wd + d] = (0..l).map(|j| sigma(r, j) * s[j] * alpha[j]).sum();
            }
        }
        b = bt
            .iter()
            .enumerate()
            .map(|(i, &v)| (mu[i % wd] + v * sd[i % wd]) as f32)
            .collect();
    }
    Ok(b)
}

/// How well parents `a` and `b` explain `child` under `p` (child 1's shares and the
/// edits): the root mean square of `child - model(a, b)` in units of the bundle's w_std.
pub fn blend_residual(
    a: &[f32],
    b: &[f32],
    child: &[f32],
    m: &Manifest,
    p: &FamilyParams,
) -> Result<f32> {
    let q = FamilyParams {
        children: 1,
        mutation: 0.0,
        ..p.clone()
    };
    let made = make_children(a, b, m, &q)?.remove(0).ws;
    let wd = m.w_dim;
    let ss: f64 = made
        .iter()
        .zip(child)
        .enumerate()
        .map(|(i, (x, y))| ((x - y) as f64 / (m.w_std[i % wd] as f64).max(1e-6)).powi(2))
        .sum();
    Ok((ss / made.len() as f64).sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        // The tiny bundle's manifest: layer ranges and age/gender directions with groups.
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tiny/manifest.json"),
        )
        .unwrap();
        Manifest::parse(&text).unwrap()
    }

    fn parents(m: &Manifest) -> (Vec<f32>, Vec<f32>) {
        let n = m.num_ws * m.w_dim;
        let mut r = Rng::new(5);
        let a = (0..n).map(|_| r.normal() as f32).collect();
        let b = (0..n).map(|_| r.normal() as f32 + 1.0).collect();
        (a, b)
    }

    #[test]
    fn mix_zero_and_one_are_the_parents_bit_for_bit() {
        let m = manifest();
        let (a, b) = parents(&m);
        for (mix, want) in [(0.0, &a), (1.0, &b)] {
            for crossover in [false, true] {
                let p = FamilyParams {
                    mix,
                    crossover,
                    ..Default::default()
                };
                let c = make_children(&a, &b, &m, &p).unwrap();
                assert_eq!(&c[0].ws, want, "mix {mix} crossover {crossover}");
            }
        }
    }

    #[test]
    fn genes_choose_rows_and_siblings_differ() {
        let m = manifest();
        let (a, b) = parents(&m);
        let [c0, c1] = m.layers["coarse"];
        let p = FamilyParams {
            mix: 0.5,
            coarse: Some(1.0),
            fine: Some(0.0),
            children: 3,
            ..Default::default()
        };
        let kids = make_children(&a, &b, &m, &p).unwrap();
        let wd = m.w_dim;
        assert_eq!(&kids[0].ws[c0 * wd..c1 * wd], &b[c0 * wd..c1 * wd]);
        let [f0, f1] = m.layers["fine"];
        assert_eq!(&kids[0].ws[f0 * wd..f1 * wd], &a[f0 * wd..f1 * wd]);
        assert_ne!(kids[0].ws, kids[1].ws);
        assert_ne!(kids[1].ws, kids[2].ws);
        // Mutations leave the coarse rows alone: siblings share the face's structure.
        assert_eq!(&kids[1].ws[c0 * wd..c1 * wd], &kids[0].ws[c0 * wd..c1 * wd]);
        // Deterministic under the seed, different under another.
        assert_eq!(make_children(&a, &b, &m, &p).unwrap()[2].ws, kids[2].ws);
        let q = FamilyParams { seed: 9, ..p };
        assert_ne!(make_children(&a, &b, &m, &q).unwrap()[2].ws, kids[2].ws);
    }

    #[test]
    fn diversity_scales_how_far_siblings_stray_from_the_blend() {
        let m = manifest();
        let (a, b) = parents(&m);
        let spread = |diversity: f32| {
            let p = FamilyParams {
                children: 4,
                diversity,
                ..Default::default()
            };
            let kids = make_children(&a, &b, &m, &p).unwrap();
            let mid: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * (x + y)).collect();
            kids.iter()
                .flat_map(|k| k.ws.iter().zip(&mid).map(|(x, y)| (x - y).abs() as f64))
                .sum::<f64>()
        };
        let (s0, s1, s2) = (spread(0.0), spread(1.0), spread(2.0));
        assert!(s0 < 1e-3, "{s0}");
        assert!(s1 > 0.0 && s2 > 1.3 * s1, "{s1} {s2}"); // sub-linear: shares clamp at 0 and 1
    }

    #[test]
    fn crossover_takes_whole_rows() {
        let m = manifest();
        let (a, b) = parents(&m);
        let p = FamilyParams {
            crossover: true,
            children: 4,
            mutation: 0.0,
            ..Default::default()
        };
        let kids = make_children(&a, &b, &m, &p).unwrap();
        let wd = m.w_dim;
        for k in &kids {
            for (row, from) in k.rows_from.iter().enumerate() {
                let src = if *from == 'A' { &a } else { &b };
                assert_eq!(
                    &k.ws[row * wd..(row + 1) * wd],
                    &src[row * wd..(row + 1) * wd]
                );
            }
        }
        assert!(kids.iter().any(|k| k.rows_from != kids[0].rows_from));
    }

    #[test]
    fn group_edits_land_on_the_group_values_together() {
        let m = manifest();
        let (a, b) = parents(&m);
        let mut edits = BTreeMap::new();
        edits.insert("age".to_string(), EditTarget::Group("child".into()));
        edits.insert("gender".to_string(), EditTarget::Group("female".into()));
        let p = FamilyParams {
            edits,
            ..Default::default()
        };
        let kid = &make_children(&a, &b, &m, &p).unwrap()[0];
        let age = projection(&kid.ws, &m, &m.directions["age"]);
        let gender = projection(&kid.ws, &m, &m.directions["gender"]);
        assert!(
            (age - m.directions["age"].groups["child"]).abs() < 1e-3,
            "{age}"
        );
        assert!(
            (gender - m.directions["gender"].groups["female"]).abs() < 1e-3,
            "{gender}"
        );
        // Rows outside the directions' layers are untouched.
        let plain = &make_children(&a, &b, &m, &FamilyParams::default()).unwrap()[0];
        let wd = m.w_dim;
        for l in 0..m.num_ws {
            if !m.directions["age"].layers.contains(&l)
                && !m.directions["gender"].layers.contains(&l)
            {
                assert_eq!(
                    &kid.ws[l * wd..(l + 1) * wd],
                    &plain.ws[l * wd..(l + 1) * wd]
                );
            }
        }
        // A signed strength moves by that much (no projection_std in the tiny bundle).
        let mut edits = BTreeMap::new();
        edits.insert("age".to_string(), EditTarget::Strength(1.5));
        let moved = &make_children(
            &a,
            &b,
            &m,
            &FamilyParams {
                edits,
                ..Default::default()
            },
        )
        .unwrap()[0];
        let d = projection(&moved.ws, &m, &m.directions["age"])
            - projection(&plain.ws, &m, &m.directions["age"]);
        assert!((d - 1.5).abs() < 1e-3, "{d}");
    }

    #[test]
    fn the_predicted_partner_is_the_true_one_where_the_child_shows_it() {
        let m = manifest();
        let (a, b) = parents(&m);
        let wd = m.w_dim;
        let mut edits = BTreeMap::new();
        edits.insert("age".to_string(), EditTarget::Strength(1.0));
        let p = FamilyParams {
            mix: 0.4,
            fine: Some(0.0),
            diversity: 0.0,
            edits,
            ..Default::default()
        };
        let child = make_children(&a, &b, &m, &p).unwrap().remove(0).ws;
        let guess = predict_partner(&a, &child, &m, &p, 0.01).unwrap();
        let [f0, f1] = m.layers["fine"];
        let rms = |x: &[f32], y: &[f32]| {
            (x.iter()
                .zip(y)
                .map(|(u, v)| ((u - v) as f64).powi(2))
                .sum::<f64>()
                / x.len() as f64)
                .sqrt()
        };
        // Rows the child got B's genes in: found again (up to the prior's pull).
        let seen = |x: &[f32]| [&x[..f0 * wd], &x[f1 * wd..]].concat();
        assert!(
            rms(&seen(&guess), &seen(&b)) < 0.05,
            "{}",
            rms(&seen(&guess), &seen(&b))
        );
        // The fine rows (share 0) say nothing of B: they follow B's other rows, not A's.
        let fine = |x: &[f32]| x[f0 * wd..f1 * wd].to_vec();
        assert!(rms(&fine(&guess), &fine(&b)) < rms(&fine(&guess), &fine(&a)));
        // Re-breeding with the prediction gives the child back.
        assert!(blend_residual(&a, &guess, &child, &m, &p).unwrap() < 0.05);
        // A very noisy child pulls the prediction to the average face.
        let vague = predict_partner(&a, &child, &m, &p, 100.0).unwrap();
        let avg = m.w_avg.repeat(m.num_ws);
        assert!(
            rms(&vague, &avg) < 0.1 * rms(&b, &avg),
            "{}",
            rms(&vague, &avg)
        );
    }

    #[test]
    fn child_shares_are_the_genes_make_children_draws() {
        let m = manifest();
        let (a, b) = parents(&m);
        let p = FamilyParams {
            children: 2,
            mutation: 0.0,
            ..Default::default()
        };
        let kid = &make_children(&a, &b, &m, &p).unwrap()[1];
        let s = child_shares(&m, &p, 2).unwrap();
        for i in 0..a.len() {
            let want = (1.0 - s[i]) * a[i] + s[i] * b[i];
            assert!((kid.ws[i] - want).abs() < 1e-4);
        }
    }

    #[test]
    fn a_trait_takes_its_components_from_the_chosen_parent_and_nothing_else() {
        let m = manifest();
        let (a, b) = parents(&m);
        let wd = m.w_dim;
        let (name, t) = m.traits.iter().next().expect("the tiny bundle has traits");
        let c = t.components(wd, m.num_ws).unwrap();
        let amount = |x: &[f32], i: usize| -> f32 {
            let r = c.rows[i];
            (0..wd).map(|d| c.dual[i * wd + d] * x[r * wd + d]).sum()
        };
        // B's face (mix 1) with the trait from A (share of B 0), from B, and half way.
        let kid_with = |share: f32| {
            let mut traits = BTreeMap::new();
            traits.insert(name.clone(), share);
            let p = FamilyParams {
                mix: 1.0,
                traits,
                ..Default::default()
            };
            make_children(&a, &b, &m, &p).unwrap().remove(0).ws
        };
        let kid = kid_with(0.0);
        assert_ne!(kid, b);
        for i in 0..c.rows.len() {
            let (got, want, was) = (amount(&kid, i), amount(&a, i), amount(&b, i));
            // float16 components: dual . basis is the identity to about 1e-3
            assert!(
                (got - want).abs() < 0.02 * (want - was).abs().max(1.0),
                "component {i}: {got} vs A's {want} (B's {was})"
            );
        }
        // Nothing else moves: rows without a component are B's bit for bit, and within a
        // row, any direction orthogonal to the trait's basis there reads as B's.
        for r in (0..m.num_ws).filter(|r| !c.rows.contains(r)) {
            assert_eq!(&kid[r * wd..(r + 1) * wd], &b[r * wd..(r + 1) * wd]);
        }
        let r = c.rows[0];
        let mut y: Vec<f64> = (0..wd).map(|d| ((d * 7919) % 13) as f64 - 6.0).collect();
        let mut done: Vec<Vec<f64>> = Vec::new();
        for i in (0..c.rows.len()).filter(|&i| c.rows[i] == r) {
            let mut v: Vec<f64> = c.basis[i * wd..(i + 1) * wd]
                .iter()
                .map(|&x| x as f64)
                .collect();
            for u in &done {
                let d: f64 = v.iter().zip(u).map(|(p, q)| p * q).sum();
                v.iter_mut().zip(u).for_each(|(p, q)| *p -= d * q);
            }
            let n = v.iter().map(|p| p * p).sum::<f64>().sqrt();
            v.iter_mut().for_each(|p| *p /= n);
            let d: f64 = y.iter().zip(&v).map(|(p, q)| p * q).sum();
            y.iter_mut().zip(&v).for_each(|(p, q)| *p -= d * q);
            done.push(v);
        }
        assert!(
            done.len() < wd,
            "the test needs a row the trait does not fill"
        );
        let read = |x: &[f32]| -> f64 { (0..wd).map(|d| y[d] * x[r * wd + d] as f64).sum() };
        let moved: f64 = (0..wd)
            .map(|d| ((kid[r * wd + d] - b[r * wd + d]) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let ny = y.iter().map(|p| p * p).sum::<f64>().sqrt();
        assert!(moved > 0.0);
        assert!(
            (read(&kid) - read(&b)).abs() < 1e-4 * ny * moved,
            "{} vs {}",
            read(&kid),
            read(&b)
        );
        // From B on B's face changes nothing; half way lands half way.
        assert_eq!(kid_with(1.0), b);
        let half = kid_with(0.5);
        let mid = 0.5 * (amount(&a, 0) + amount(&b, 0));
        assert!((amount(&half, 0) - mid).abs() < 0.02 * (amount(&a, 0) - mid).abs().max(1.0));
    }

    #[test]
    fn trait_choices_parse_and_bad_names_list_the_known_ones() {
        let t: TraitChoice = "Face-Shape=A".parse().unwrap();
        assert_eq!((t.name.as_str(), t.share_b), ("face_shape", 0.0));
        assert_eq!("hair=0.3".parse::<TraitChoice>().unwrap().share_b, 0.3);
        assert_eq!(
            "eyes=b".parse::<TraitChoice>().unwrap().to_string(),
            "eyes=b"
        );
        for bad in ["eyes", "eyes=c", "eyes=1.5", "=a"] {
            assert!(bad.parse::<TraitChoice>().is_err(), "{bad}");
        }
        let m = manifest();
        let (a, b) = parents(&m);
        let mut traits = BTreeMap::new();
        traits.insert("ears".to_string(), 0.0);
        let e = make_children(
            &a,
            &b,
            &m,
            &FamilyParams {
                traits,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ears") && e.contains("eyes") && e.contains("mouth"),
            "{e}"
        );
        // Not modelled by the partner prediction.
        let mut traits = BTreeMap::new();
        traits.insert("eyes".to_string(), 0.0);
        let p = FamilyParams {
            traits,
            ..Default::default()
        };
        assert!(predict_partner(&a, &b, &m, &p, 0.1).is_err());
    }

    #[test]
    fn bad_parameters_name_the_flag() {
        let m = manifest();
        let (a, b) = parents(&m);
        let e = |p: FamilyParams| format!("{:#}", make_children(&a, &b, &m, &p).unwrap_err());
        assert!(e(FamilyParams {
            mix: 1.5,
            ..Default::default()
        })
        .contains("mix is a share"));
        let named = FamilyParams {
            mix: 1.5,
            ..Default::default()
        }
        .validate_named(&m, &|id| format!("--{id}"))
        .unwrap_err();
        assert!(
            format!("{named}").starts_with("--mix is a share"),
            "{named}"
        );
        let mut edits = BTreeMap::new();
        edits.insert("age".to_string(), EditTarget::Group("toddler".into()));
        let msg = e(FamilyParams {
            edits,
            ..Default::default()
        });
        assert!(msg.contains("toddler") && msg.contains("child"), "{msg}");
        let mut edits = BTreeMap::new();
        edits.insert("smile".to_string(), EditTarget::Strength(1.0));
        assert!(e(FamilyParams {
            edits,
            ..Default::default()
        })
        .contains("smile"));
        assert!(e(FamilyParams {
            children: 0,
            ..Default::default()
        })
        .contains("children must be at least 1"));
        assert_eq!(
            "-1.5".parse::<EditTarget>().unwrap(),
            EditTarget::Strength(-1.5)
        );
        assert_eq!(
            "Senior".parse::<EditTarget>().unwrap(),
            EditTarget::Group("senior".into())
        );
    }
}
