//! 2-D similarity transforms (rotation, uniform scale, translation) and their
//! weighted least-squares fit to point pairs.

use serde::{Deserialize, Serialize};

/// `(x, y) -> (a x - b y + tx, b x + a y + ty)`: scale `hypot(a, b)`, angle `atan2(b, a)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub const IDENTITY: Similarity = Similarity {
        a: 1.0,
        b: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// Scale `s` and rotation `angle` (radians, counter-clockwise in x-right/y-down
    /// pixel coordinates means clockwise on screen) about the origin, then a shift.
    pub fn new(scale: f64, angle: f64, tx: f64, ty: f64) -> Similarity {
        Similarity {
            a: scale * angle.cos(),
            b: scale * angle.sin(),
            tx,
            ty,
        }
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }

    /// The inverse transform; `None` when the scale is zero or not finite.
    pub fn inverse(&self) -> Option<Similarity> {
        let d = self.a * self.a + self.b * self.b;
        if !(d.is_finite() && d > 1e-300) {
            return None;
        }
        let (ia, ib) = (self.a / d, -self.b / d);
        Some(Similarity {
            a: ia,
            b: ib,
            tx: -(ia * self.tx - ib * self.ty),
            ty: -(ib * self.tx + ia * self.ty),
        })
    }

    /// `self` after `first`: `p -> self(first(p))`.
    pub fn compose(&self, first: &Similarity) -> Similarity {
        Similarity {
            a: self.a * first.a - self.b * first.b,
            b: self.b * first.a + self.a * first.b,
            tx: self.a * first.tx - self.b * first.ty + self.tx,
            ty: self.b * first.tx + self.a * first.ty + self.ty,
        }
    }

    /// Scales the output: `p -> k * self(p)`.
    pub fn scaled(&self, k: f64) -> Similarity {
        Similarity {
            a: self.a * k,
            b: self.b * k,
            tx: self.tx * k,
            ty: self.ty * k,
        }
    }

    /// The similarity a fraction `t` of the way from `self` to `other`, as a placement
    /// moves: scale geometrically, angle the shorter way round, and the image of `pivot`
    /// along a straight line (lerping the coefficients would shrink a turning face).
    /// `t = 0` and `t = 1` give the ends exactly.
    pub fn towards(&self, other: &Similarity, t: f64, pivot: [f64; 2]) -> Similarity {
        if t == 0.0 {
            return *self;
        }
        if t == 1.0 {
            return *other;
        }
        let (s0, s1) = (self.scale(), other.scale());
        let (p0, p1) = (self.apply(pivot), other.apply(pivot));
        let p = [p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])];
        let turn = (other.angle() - self.angle() + std::f64::consts::PI)
            .rem_euclid(std::f64::consts::TAU)
            - std::f64::consts::PI;
        let scale = if s0 > 0.0 && s1 > 0.0 {
            s0 * (s1 / s0).powf(t)
        } else {
            s0 + t * (s1 - s0)
        };
        let r = Similarity::new(scale, self.angle() + t * turn, 0.0, 0.0);
        let q = r.apply(pivot);
        Similarity {
            tx: p[0] - q[0],
            ty: p[1] - q[1],
            ..r
        }
    }

    /// Row-major 2x3 matrix `[[a, -b, tx], [b, a, ty]]` (what OpenCV's `warpAffine` takes).
    pub fn matrix(&self) -> [[f64; 3]; 2] {
        [[self.a, -self.b, self.tx], [self.b, self.a, self.ty]]
    }

    /// Weighted least-squares fit of `dst ~ T(src)` (Umeyama without reflection).
    /// `None` when the source points coincide (no scale can be told) or values are not finite.
    pub fn fit(src: &[[f64; 2]], dst: &[[f64; 2]], weights: &[f64]) -> Option<Similarity> {
        if src.len() != dst.len() || src.len() != weights.len() || src.len() < 2 {
            return None;
        }
        let wsum: f64 = weights.iter().sum();
        if !(wsum.is_finite() && wsum > 0.0) {
            return None;
        }
        let mean = |pts: &[[f64; 2]]| -> [f64; 2] {
            let mut m = [0.0; 2];
            for (p, w) in pts.iter().zip(weights) {
                m[0] += w * p[0];
                m[1] += w * p[1];
            }
            [m[0] / wsum, m[1] / wsum]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut sxx, mut sab, mut sba) = (0.0, 0.0, 0.0);
        for ((s, d), w) in src.iter().zip(dst).zip(weights) {
            let (x, y) = (s[0] - ms[0], s[1] - ms[1]);
            let (u, v) = (d[0] - md[0], d[1] - md[1]);
            sxx += w * (x * x + y * y);
            sab += w * (x * u + y * v);
            sba += w * (x * v - y * u);
        }
        let finite = sxx.is_finite() && sab.is_finite() && sba.is_finite();
        if !finite || sxx <= 1e-12 {
            return None;
        }
        let (a, b) = (sab / sxx, sba / sxx);
        Some(Similarity {
            a,
            b,
            tx: md[0] - (a * ms[0] - b * ms[1]),
            ty: md[1] - (b * ms[0] + a * ms[1]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(p: [f64; 2], q: [f64; 2]) -> bool {
        (p[0] - q[0]).abs() < 1e-9 && (p[1] - q[1]).abs() < 1e-9
    }

    #[test]
    fn towards_moves_the_pivot_straight_and_turns_the_short_way() {
        let a = Similarity::new(2.0, 2.8, 10.0, -4.0);
        let b = Similarity::new(8.0, -2.9, -6.0, 12.0);
        assert_eq!(a.towards(&b, 0.0, [0.5, 0.5]), a);
        assert_eq!(a.towards(&b, 1.0, [0.5, 0.5]), b);
        let m = a.towards(&b, 0.5, [0.5, 0.5]);
        assert!((m.scale() - 4.0).abs() < 1e-9, "{}", m.scale());
        // 2.8 rad to -2.9 rad is 0.58 rad the short way (through pi), not 5.7 rad back.
        let want = 2.8 + (std::f64::consts::TAU - 5.7) / 2.0;
        assert!((m.angle() - want).abs() < 1e-9, "{} vs {want}", m.angle());
        let (pa, pb) = (a.apply([0.5, 0.5]), b.apply([0.5, 0.5]));
        let pm = m.apply([0.5, 0.5]);
        assert!(close(pm, [(pa[0] + pb[0]) / 2.0, (pa[1] + pb[1]) / 2.0]));
    }

    #[test]
    fn fit_recovers_a_known_transform_and_inverts() {
        let t = Similarity::new(2.5, 0.7, -3.0, 11.0);
        let src = [[0.0, 0.0], [10.0, 1.0], [4.0, 9.0], [-2.0, 3.0]];
        let dst: Vec<[f64; 2]> = src.iter().map(|&p| t.apply(p)).collect();
        let f = Similarity::fit(&src, &dst, &[1.0, 2.0, 0.5, 1.0]).unwrap();
        assert!((f.scale() - 2.5).abs() < 1e-9 && (f.angle() - 0.7).abs() < 1e-9);
        let inv = f.inverse().unwrap();
        for p in src {
            assert!(close(inv.apply(f.apply(p)), p));
        }
        assert!(close(inv.compose(&f).apply([3.0, 4.0]), [3.0, 4.0]));
    }

    #[test]
    fn degenerate_input_is_refused() {
        let p = [[1.0, 1.0], [1.0, 1.0]];
        assert!(Similarity::fit(&p, &p, &[1.0, 1.0]).is_none());
        assert!(Similarity::fit(&p[..1], &p[..1], &[1.0]).is_none());
        let n = [[f64::NAN, 0.0], [1.0, 1.0]];
        assert!(Similarity::fit(&n, &p, &[1.0, 1.0]).is_none());
        assert!(Similarity::new(0.0, 0.0, 1.0, 1.0).inverse().is_none());
    }
}
