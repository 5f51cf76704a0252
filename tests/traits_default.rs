//! `family --trait` on the trained default bundle: a trait taken from one parent puts the
//! child's region nearer that parent's, and leaves the rest of the face nearly as it was
//! (figures: `examples/traits_eval.rs`; how they are made: `jobs::family::measure`).

mod common;

use latentface::jobs::family::measure::trait_trials;

#[test]
fn each_trait_follows_the_chosen_parent_and_leaves_the_rest() {
    let b = common::default();
    let names: Vec<&String> = b.manifest().traits.keys().collect();
    assert_eq!(
        names,
        ["eyes", "face_shape", "hair", "mouth", "nose", "skin"],
        "the traits the docs describe"
    );
    let n = 16;
    for f in trait_trials(b, n, 7).unwrap() {
        eprintln!("{f:?}");
        // On the plain blend: from A nearer A, from B nearer B, for most pairs.
        assert!(
            f.from_a_wins >= 14,
            "{}: from A {}/{n}",
            f.name,
            f.from_a_wins
        );
        assert!(
            f.from_b_wins >= 14,
            "{}: from B {}/{n}",
            f.name,
            f.from_b_wins
        );
        // The region really moves: well past the blend's distance to the chosen parent.
        assert!(f.from_a[0] < 0.8 * f.blend[0], "{}: {f:?}", f.name);
        assert!(f.from_b[1] < 0.8 * f.blend[1], "{}: {f:?}", f.name);
        // B's face with A's trait: the region is A's for most pairs...
        assert!(f.swap_wins >= 9, "{}: swap {}/{n}", f.name, f.swap_wins);
        // ... and the rest of the face stays B's: it moves a fraction of what separates
        // the parents there (a whole-code swap would move it all the way).
        assert!(
            f.swap_rest_change < 0.25 * f.parents_rest,
            "{}: rest moved {} of {}",
            f.name,
            f.swap_rest_change,
            f.parents_rest
        );
    }
}
