//! Labelled contact sheets: a grid of pictures with a caption under each and a title.
//!
//! Text is drawn with the 8x8 bitmap glyphs of the `font8x8` crate (MIT; the glyphs are
//! the public-domain font8x8 set; Basic Latin, other characters show as `?`), scaled by
//! whole pixels. Tiles smaller than [`SheetLayout::min_tile`] are enlarged (Catmull-Rom)
//! so the captions fit under them. [`grid`] is the same layout without title and
//! captions (`vae sample`'s and `vae map`'s grids).
//!
//! Why not imageproc's TrueType text (`draw_text_mut` with an embedded open-licence
//! font): captions here are 8 or 16 px high on small tiles, where whole-pixel bitmap
//! glyphs are sharper than an anti-aliased outline font hinted by nobody; a bitmap font
//! needs no font file in the binary (a few hundred KB for DejaVu Sans), no NOTICE to
//! carry, no `ab_glyph` rasteriser, and draws the same pixels everywhere (tests check
//! them). What it costs: no accents or non-Latin scripts in captions (`?`); file names
//! are the only captions that may have them. Revisit if sheets get larger text.

use anyhow::{anyhow, bail, Result};
use font8x8::UnicodeFonts;
use image::{imageops, Rgb, RgbImage};

/// Glyph cell size in font pixels.
pub const GLYPH: u32 = 8;

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Draws `text` with its top-left corner at (`x`, `y`); pixels outside are skipped. Each
/// lit glyph pixel is a `scale x scale` square (imageproc's filled rectangle, clipped).
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let scale = scale.max(1);
    let step = scale as i64;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let x0 = x + i as i64 * GLYPH as i64 * step;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                let (px, py) = (x0 + col as i64 * step, y + row as i64 * step);
                // Far outside (beyond i32) is off the picture anyway.
                let (Ok(px), Ok(py)) = (i32::try_from(px), i32::try_from(py)) else {
                    continue;
                };
                imageproc::drawing::draw_filled_rect_mut(
                    img,
                    imageproc::rect::Rect::at(px, py).of_size(scale, scale),
                    color,
                );
            }
        }
    }
}

/// Shortens `text` with a trailing `~` so that it fits in `max_px` at `scale`.
pub fn fit_text(text: &str, max_px: u32, scale: u32) -> String {
    let max_chars = (max_px / (GLYPH * scale.max(1))) as usize;
    let n = text.chars().count();
    if n <= max_chars {
        return text.to_string();
    }
    if max_chars == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(max_chars - 1).collect();
    s.push('~');
    s
}

/// Sizes and colours of a sheet.
#[derive(Clone, Debug)]
pub struct SheetLayout {
    /// Tiles are enlarged to at least this many pixels wide.
    pub min_tile: u32,
    pub columns: usize,
    pub gap: u32,
    pub background: Rgb<u8>,
    pub ink: Rgb<u8>,
}

impl Default for SheetLayout {
    fn default() -> Self {
        SheetLayout {
            min_tile: 128,
            columns: 4,
            gap: 6,
            background: Rgb([24, 24, 28]),
            ink: Rgb([235, 235, 235]),
        }
    }
}

/// One picture and its caption (lines split at `\n`); `None` leaves the cell empty
/// (keeps rows aligned).
pub type Tile<'a> = Option<(&'a RgbImage, String)>;

/// Lays out rows of tiles under a title. Rows may have different lengths; every tile is
/// drawn at the size of the largest one (enlarged to [`SheetLayout::min_tile`]). An
/// empty title leaves out the title band, and when no tile has a caption there is no
/// caption band: a plain grid ([`grid`]).
pub fn render_sheet(title: &str, rows: &[Vec<Tile<'_>>], layout: &SheetLayout) -> Result<RgbImage> {
    let tiles: Vec<&RgbImage> = rows.iter().flatten().flatten().map(|(i, _)| *i).collect();
    if tiles.is_empty() {
        bail!("a sheet needs at least one picture");
    }
    let largest = |side: fn(&RgbImage) -> u32| tiles.iter().map(|t| side(t)).max().unwrap_or(1);
    let (src_w, src_h) = (
        largest(RgbImage::width).max(1),
        largest(RgbImage::height).max(1),
    );
    let scale_up = layout.min_tile.div_ceil(src_w.max(src_h)).max(1);
    let (tile_w, tile_h) = (src_w * scale_up, src_h * scale_up);
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1) as u32;
    let text_scale = 1 + u32::from(tile_w.max(tile_h) >= 256);
    let line_h = GLYPH * text_scale + 2;
    let captioned = rows.iter().flatten().flatten().any(|(_, c)| !c.is_empty());
    let lines = rows
        .iter()
        .flatten()
        .flatten()
        .map(|(_, c)| c.lines().count().max(1))
        .max()
        .unwrap_or(1) as u32;
    let caption_h = if captioned { lines * line_h + 4 } else { 0 };
    let gap = layout.gap;
    // A titled sheet has a title band on top and a margin below the last caption; a
    // plain grid has one gap around every tile.
    let (title_h, bottom) = if title.is_empty() {
        (gap, 0)
    } else {
        (GLYPH * 2 + 10, gap)
    };
    let width = cols * tile_w + (cols + 1) * gap;
    let height = title_h + rows.len() as u32 * (tile_h + caption_h + gap) + bottom;
    let mut img = RgbImage::from_pixel(width, height, layout.background);
    if !title.is_empty() {
        // Large title when it fits whole, else small (shortened if it still does not fit).
        let title_scale = if text_width(title, 2) + 2 * gap <= width {
            2
        } else {
            1
        };
        let title_text = fit_text(title, width.saturating_sub(2 * gap), title_scale);
        draw_text(
            &mut img,
            gap as i64,
            5,
            &title_text,
            title_scale,
            layout.ink,
        );
    }
    for (r, row) in rows.iter().enumerate() {
        let y = title_h + r as u32 * (tile_h + caption_h + gap);
        for (c, cell) in row.iter().enumerate() {
            let Some((pic, caption)) = cell else { continue };
            let x = gap + c as u32 * (tile_w + gap);
            let big = if pic.width() == tile_w && pic.height() == tile_h {
                (*pic).clone()
            } else {
                imageops::resize(*pic, tile_w, tile_h, imageops::FilterType::CatmullRom)
            };
            imageops::replace(&mut img, &big, x as i64, y as i64);
            for (l, line) in caption.lines().enumerate() {
                let cap = fit_text(line, tile_w, text_scale);
                let cx = x + (tile_w - text_width(&cap, text_scale)) / 2;
                draw_text(
                    &mut img,
                    cx as i64,
                    (y + tile_h + 3 + l as u32 * line_h) as i64,
                    &cap,
                    text_scale,
                    layout.ink,
                );
            }
        }
    }
    Ok(img)
}

/// `images` (all the same size) in a plain grid of `cols` columns, `gap` px apart on
/// white, at their own size: [`render_sheet`] without title or captions.
pub fn grid(images: &[RgbImage], cols: usize, gap: u32) -> Result<RgbImage> {
    let first = images
        .first()
        .ok_or_else(|| anyhow!("no images for a grid"))?;
    if images.iter().any(|i| i.dimensions() != first.dimensions()) {
        bail!("grid images differ in size");
    }
    let cols = cols.clamp(1, images.len());
    let rows: Vec<Vec<Tile<'_>>> = images
        .chunks(cols)
        .map(|row| row.iter().map(|i| Some((i, String::new()))).collect())
        .collect();
    let layout = SheetLayout {
        min_tile: 0,
        columns: cols,
        gap,
        background: Rgb([255, 255, 255]),
        ..SheetLayout::default()
    };
    render_sheet("", &rows, &layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_where_asked_and_clipped() {
        let mut img = RgbImage::new(20, 10);
        draw_text(&mut img, 1, 1, "A", 1, Rgb([255, 0, 0]));
        let lit = img.pixels().filter(|p| p.0[0] == 255).count();
        assert!(lit > 8, "{lit}");
        assert!(img
            .enumerate_pixels()
            .all(|(x, y, p)| p.0[0] == 0 || (1..9).contains(&x) && (1..9).contains(&y)));
        draw_text(&mut img, 15, 5, "WWW", 2, Rgb([0, 255, 0])); // clipped, no panic
        draw_text(&mut img, -50, -50, "é", 1, Rgb([0, 0, 255]));
    }

    #[test]
    fn fit_text_shortens() {
        assert_eq!(fit_text("hello", 40, 1), "hello");
        assert_eq!(fit_text("hello world", 40, 1), "hell~");
        assert_eq!(text_width("abc", 2), 48);
    }

    #[test]
    fn sheet_has_room_for_every_tile() {
        let a = RgbImage::from_pixel(32, 32, Rgb([200, 0, 0]));
        let rows = vec![
            vec![
                Some((&a, "parent A".to_string())),
                None,
                Some((&a, "x".to_string())),
            ],
            vec![Some((&a, "child 1".to_string()))],
        ];
        let s = render_sheet("family", &rows, &SheetLayout::default()).unwrap();
        assert_eq!(s.width(), 3 * 128 + 4 * 6);
        let two = vec![vec![Some((&a, "child 1\nA 0.40 B 0.50".to_string()))]];
        let t = render_sheet("family", &two, &SheetLayout::default()).unwrap();
        let one = vec![vec![Some((&a, "child 1".to_string()))]];
        let u = render_sheet("family", &one, &SheetLayout::default()).unwrap();
        assert_eq!(
            t.height(),
            u.height() + 10,
            "a second caption line adds one line's height"
        );
        // The enlarged red tile is there.
        assert_eq!(s.get_pixel(6 + 64, 26 + 64).0, [200, 0, 0]);
        assert!(render_sheet("t", &[vec![None]], &SheetLayout::default()).is_err());
    }

    #[test]
    fn grid_is_tiles_on_white_one_gap_apart() {
        let red = RgbImage::from_pixel(4, 3, Rgb([200, 0, 0]));
        let g = grid(&[red.clone(), red.clone(), red.clone()], 2, 2).unwrap();
        // 2 columns x 2 rows of 4x3 tiles, a 2 px gap around each.
        assert_eq!(g.dimensions(), (2 * 4 + 3 * 2, 2 * 3 + 3 * 2));
        assert_eq!(g.get_pixel(2, 2).0, [200, 0, 0]);
        assert_eq!(g.get_pixel(8, 2).0, [200, 0, 0]);
        assert_eq!(g.get_pixel(2, 7).0, [200, 0, 0]);
        assert_eq!(g.get_pixel(1, 1).0, [255, 255, 255]);
        assert_eq!(g.get_pixel(8, 7).0, [255, 255, 255], "the empty last cell");
        let small = RgbImage::new(2, 2);
        assert!(grid(&[red, small], 2, 2).is_err());
        assert!(grid(&[], 2, 2).is_err());
    }
}
