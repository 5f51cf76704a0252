//! The tree sheet: one row of faces per generation, the people of a union side by side
//! where the tree allows it and their children below them, a coloured line from each
//! parent to the union's junction and from there to each child, names and figures under
//! the faces. Text is the contact sheets' bitmap font (`crate::sheet`).

use anyhow::{bail, Result};
use image::{imageops, Rgb, RgbImage};

use crate::sheet::{draw_text, fit_text, text_width, GLYPH};

/// A face on the sheet.
pub struct Node<'a> {
    pub picture: &'a RgbImage,
    /// Lines split at `\n`; the first is the name.
    pub caption: String,
    /// Its row.
    pub generation: usize,
}

/// A union: two parents and their children, as indices into the nodes.
pub struct Link {
    pub a: usize,
    pub b: usize,
    pub children: Vec<usize>,
}

/// Sizes of the sheet.
#[derive(Clone, Debug)]
pub struct TreeLayout {
    /// Faces are enlarged (by a whole factor) to at least this side.
    pub min_tile: u32,
    pub gap_x: u32,
    /// Between rows, where the lines run.
    pub gap_y: u32,
    pub margin: u32,
    pub background: Rgb<u8>,
    pub ink: Rgb<u8>,
}

impl Default for TreeLayout {
    fn default() -> Self {
        TreeLayout {
            min_tile: 128,
            gap_x: 16,
            gap_y: 44,
            margin: 12,
            background: Rgb([24, 24, 28]),
            ink: Rgb([235, 235, 235]),
        }
    }
}

/// Line colours, one per union in turn (bright on the dark background, told apart).
const PALETTE: [[u8; 3]; 8] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [240, 228, 66],
    [213, 94, 0],
    [204, 121, 167],
    [150, 150, 255],
    [180, 220, 120],
];

/// Draws the tree; returns the sheet and each node's face box `[x, y, side, side]`.
pub fn draw_tree(
    title: &str,
    nodes: &[Node<'_>],
    links: &[Link],
    layout: &TreeLayout,
) -> Result<(RgbImage, Vec<[u32; 4]>)> {
    if nodes.is_empty() {
        bail!("a tree sheet needs at least one face");
    }
    let src = nodes
        .iter()
        .map(|n| n.picture.width().max(n.picture.height()))
        .max()
        .unwrap_or(1)
        .max(1);
    let tile = src * layout.min_tile.div_ceil(src).max(1);
    let line_h = GLYPH + 2;
    let lines = nodes
        .iter()
        .map(|n| n.caption.lines().count().max(1))
        .max()
        .unwrap_or(1) as u32;
    let caption_h = lines * line_h + 4;
    let rows = order_rows(nodes, links);
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let (m, gx) = (layout.margin, layout.gap_x);
    let title_h = if title.is_empty() { m } else { GLYPH * 2 + 14 };
    let width = (2 * m + widest * tile + (widest - 1) * gx).max(text_width(title, 1) + 2 * m);
    let row_h = tile + caption_h;
    let height = title_h + rows.len() as u32 * row_h + (rows.len() as u32 - 1) * layout.gap_y + m;
    let mut boxes = vec![[0u32; 4]; nodes.len()];
    for (g, row) in rows.iter().enumerate() {
        let used = row.len() as u32 * tile + (row.len() as u32).saturating_sub(1) * gx;
        let x0 = (width - used) / 2;
        let y = title_h + g as u32 * (row_h + layout.gap_y);
        for (k, &n) in row.iter().enumerate() {
            boxes[n] = [x0 + k as u32 * (tile + gx), y, tile, tile];
        }
    }
    let mut img = RgbImage::from_pixel(width, height, layout.background);
    if !title.is_empty() {
        let scale = if text_width(title, 2) + 2 * m <= width {
            2
        } else {
            1
        };
        draw_text(&mut img, m as i64, 6, title, scale, layout.ink);
    }
    // Lines first: faces and captions are drawn over them.
    for (li, l) in links.iter().enumerate() {
        let colour = Rgb(PALETTE[li % PALETTE.len()]);
        let bottom = |n: usize| {
            let b = boxes[n];
            ((b[0] + b[2] / 2) as f32, (b[1] + row_h) as f32)
        };
        let Some(&first) = l.children.first() else {
            continue;
        };
        let (pa, pb) = (bottom(l.a), bottom(l.b));
        let child_top = boxes[first][1] as f32;
        let junction = ((pa.0 + pb.0) / 2.0, child_top - layout.gap_y as f32 / 2.0);
        thick_line(&mut img, pa, junction, colour);
        thick_line(&mut img, pb, junction, colour);
        for &c in &l.children {
            let b = boxes[c];
            thick_line(
                &mut img,
                junction,
                ((b[0] + b[2] / 2) as f32, b[1] as f32),
                colour,
            );
        }
        imageproc::drawing::draw_filled_circle_mut(
            &mut img,
            (junction.0 as i32, junction.1 as i32),
            4,
            colour,
        );
    }
    for (n, node) in nodes.iter().enumerate() {
        let [x, y, t, _] = boxes[n];
        imageproc::drawing::draw_filled_rect_mut(
            &mut img,
            imageproc::rect::Rect::at(x as i32, (y + t) as i32).of_size(t, caption_h),
            layout.background,
        );
        let pic = if node.picture.dimensions() == (t, t) {
            node.picture.clone()
        } else {
            imageops::resize(node.picture, t, t, imageops::FilterType::CatmullRom)
        };
        imageops::replace(&mut img, &pic, x as i64, y as i64);
        for (i, line) in node.caption.lines().enumerate() {
            let text = fit_text(line, t, 1);
            let cx = x + (t - text_width(&text, 1)) / 2;
            draw_text(
                &mut img,
                cx as i64,
                (y + t + 3 + i as u32 * line_h) as i64,
                &text,
                1,
                layout.ink,
            );
        }
    }
    Ok((img, boxes))
}

/// A 2-pixel line.
fn thick_line(img: &mut RgbImage, from: (f32, f32), to: (f32, f32), c: Rgb<u8>) {
    for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
        imageproc::drawing::draw_line_segment_mut(
            img,
            (from.0 + dx, from.1 + dy),
            (to.0 + dx, to.1 + dy),
            c,
        );
    }
}

/// The nodes of each row, left to right: the first row by unions (a couple side by side);
/// each later row by the unions whose children it holds, in the order of their parents'
/// middle above, each child beside a partner who married into the tree; then anyone not
/// placed yet.
fn order_rows(nodes: &[Node<'_>], links: &[Link]) -> Vec<Vec<usize>> {
    let gens = nodes.iter().map(|n| n.generation).max().unwrap_or(0) + 1;
    let is_child: Vec<bool> = (0..nodes.len())
        .map(|n| links.iter().any(|l| l.children.contains(&n)))
        .collect();
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); gens];
    let mut placed = vec![false; nodes.len()];
    let place = |n: usize, rows: &mut Vec<Vec<usize>>, placed: &mut Vec<bool>| {
        if !placed[n] {
            placed[n] = true;
            rows[nodes[n].generation].push(n);
        }
    };
    for l in links {
        for p in [l.a, l.b] {
            if nodes[p].generation == 0 {
                place(p, &mut rows, &mut placed);
            }
        }
    }
    for g in 0..gens {
        if g > 0 {
            // Where a node of an earlier row sits, as a fraction of its row.
            let at = |n: usize, rows: &Vec<Vec<usize>>| -> f32 {
                let r = &rows[nodes[n].generation];
                let k = r.iter().position(|&m| m == n).unwrap_or(0);
                (k as f32 + 0.5) / r.len().max(1) as f32
            };
            let mut into: Vec<(f32, &Link)> = links
                .iter()
                .filter(|l| {
                    l.children
                        .first()
                        .is_some_and(|&c| nodes[c].generation == g)
                })
                .map(|l| ((at(l.a, &rows) + at(l.b, &rows)) / 2.0, l))
                .collect();
            into.sort_by(|x, y| x.0.total_cmp(&y.0));
            for (_, l) in into {
                for (k, &c) in l.children.iter().enumerate() {
                    let partners: Vec<usize> = links
                        .iter()
                        .filter_map(|m| match (m.a == c, m.b == c) {
                            (true, _) => Some(m.b),
                            (_, true) => Some(m.a),
                            _ => None,
                        })
                        .filter(|&p| !is_child[p] && nodes[p].generation == g)
                        .collect();
                    // The eldest's partner on their left, the others' on their right, so
                    // siblings stay together.
                    let left = k == 0 && l.children.len() > 1;
                    if !left {
                        place(c, &mut rows, &mut placed);
                    }
                    for p in partners {
                        place(p, &mut rows, &mut placed);
                    }
                    place(c, &mut rows, &mut placed);
                }
            }
        }
        for (n, node) in nodes.iter().enumerate() {
            if node.generation == g {
                place(n, &mut rows, &mut placed);
            }
        }
    }
    rows.retain(|r| !r.is_empty());
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_hold_generations_and_boxes_do_not_overlap() {
        let pics: Vec<RgbImage> = (0..6)
            .map(|i| RgbImage::from_pixel(32, 32, Rgb([40 * i as u8, 200, 10])))
            .collect();
        // anna + ben -> carl, dora; carl + erin (married in) -> fred.
        let gens = [0, 0, 1, 1, 1, 2];
        let nodes: Vec<Node<'_>> = pics
            .iter()
            .zip(gens)
            .enumerate()
            .map(|(i, (p, g))| Node {
                picture: p,
                caption: format!("n{i}\nx"),
                generation: g,
            })
            .collect();
        let links = [
            Link {
                a: 0,
                b: 1,
                children: vec![2, 3],
            },
            Link {
                a: 2,
                b: 4,
                children: vec![5],
            },
        ];
        let (img, boxes) = draw_tree("t", &nodes, &links, &TreeLayout::default()).unwrap();
        let rows: std::collections::BTreeSet<u32> = boxes.iter().map(|b| b[1]).collect();
        assert_eq!(rows.len(), 3);
        for (i, a) in boxes.iter().enumerate() {
            assert_eq!(a[2], 128);
            assert!(a[0] + a[2] <= img.width() && a[1] + a[3] <= img.height());
            // The face is drawn in its box.
            assert_eq!(
                img.get_pixel(a[0] + 64, a[1] + 64).0,
                pics[i].get_pixel(0, 0).0
            );
            for b in &boxes[i + 1..] {
                let apart = a[0] + a[2] <= b[0] || b[0] + b[2] <= a[0] || a[1] != b[1];
                assert!(apart, "{a:?} {b:?}");
            }
        }
        // Carl (the eldest) and the partner who married in sit side by side, his sister
        // on his other side.
        assert_eq!(boxes[4][0] + 128 + 16, boxes[2][0]);
        assert_eq!(boxes[3][0], boxes[2][0] + 128 + 16);
        // Line colour between the rows, under the junction of the first union.
        let jx = (boxes[0][0] + boxes[1][0]) / 2 + 64;
        let jy = boxes[2][1] - 22;
        assert_eq!(img.get_pixel(jx, jy).0, PALETTE[0]);
    }
}
