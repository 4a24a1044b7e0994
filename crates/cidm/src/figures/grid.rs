//! Image grids (e.g. samples per method and concept): equally sized images, upscaled by an
//! integer factor with nearest-neighbour so that 32x32 samples stay crisp, with row labels on
//! the left, column labels on top and an optional title.
//!
//! # Layout
//!
//! With cells of `w x h = (image width * scale) x (image height * scale)` pixels, text scale
//! `s = max(1, min(w, h) / 64)`, text height `t = 7 s` and gap `g = 4 s`:
//!
//! - the title band is `T = g + 7 (s + 1)` high with a title, else 0;
//! - the column label band is `C = t + g` high with column labels, else 0;
//! - the row label band is `R = w_r + g` wide with row labels, where `w_r` is the widest
//!   row label, else 0;
//! - cell `(r, c)` has its top-left corner at `(g + R + c (w + g), T + g + C + r (h + g))`,
//!   see [`GridLayout::cell`];
//! - the image is `max(g + R + columns (w + g), title width + 2 g)` wide and
//!   `T + g + C + rows (h + g)` high.
//!
//! Column labels are centred over their column and cut to the characters that fit its
//! width; row labels are left-aligned and centred on their row.

use image::{Rgb, RgbImage};

use super::canvas;
use super::font::{self, Direction, ADVANCE};
use super::{check_size, FigureError, AXIS_COLOUR, BACKGROUND};

/// The light grey of a missing cell.
pub const MISSING_COLOUR: Rgb<u8> = Rgb([220, 220, 220]);

/// A grid of images with labels. Not a serde type: it holds pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    /// Drawn at the top left (nothing when `None`).
    pub title: Option<String>,
    /// One label per row, or none at all (an empty list draws no row labels).
    pub row_labels: Vec<String>,
    /// One label per column, or none at all (an empty list draws no column labels).
    pub column_labels: Vec<String>,
    /// `cells[row][column]`: every row equally long, every image the same size; `None`
    /// draws a light grey box.
    pub cells: Vec<Vec<Option<RgbImage>>>,
    /// The nearest-neighbour upscaling factor (1 keeps the images' size).
    pub scale: u32,
}

/// Where [`image_grid`] puts things (see the module docs for the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    /// The integer text scale `s`.
    pub text_scale: u32,
    /// The size of one cell: the upscaled image.
    pub cell_size: (u32, u32),
    /// Rows and columns.
    pub shape: (usize, usize),
    /// The whole image's size.
    pub size: (u32, u32),
    /// The left edge of column 0.
    origin_x: u64,
    /// The top edge of row 0.
    origin_y: u64,
    /// The gap between cells.
    gap: u64,
}

impl GridLayout {
    /// The top-left pixel of cell (`row`, `column`), or `None` outside the grid.
    pub fn cell(&self, row: usize, column: usize) -> Option<(u32, u32)> {
        if row >= self.shape.0 || column >= self.shape.1 {
            return None;
        }
        let (w, h) = (u64::from(self.cell_size.0), u64::from(self.cell_size.1));
        let x = self.origin_x + column as u64 * (w + self.gap);
        let y = self.origin_y + row as u64 * (h + self.gap);
        Some((u32::try_from(x).ok()?, u32::try_from(y).ok()?))
    }
}

/// Validates `grid` and computes its layout.
pub fn grid_layout(grid: &ImageGrid) -> Result<GridLayout, FigureError> {
    let rows = grid.cells.len();
    let columns = grid.cells.first().map_or(0, Vec::len);
    if rows == 0 || columns == 0 {
        return Err(FigureError::EmptyGrid);
    }
    if let Some((row, cells)) = grid
        .cells
        .iter()
        .enumerate()
        .find(|(_, cells)| cells.len() != columns)
    {
        return Err(FigureError::RaggedRows {
            row,
            len: cells.len(),
            expected: columns,
        });
    }
    for (which, count, expected) in [
        ("row", grid.row_labels.len(), rows),
        ("column", grid.column_labels.len(), columns),
    ] {
        if count != 0 && count != expected {
            return Err(FigureError::LabelCount {
                which,
                count,
                expected,
            });
        }
    }
    if grid.scale == 0 {
        return Err(FigureError::ZeroScale);
    }
    let images = grid.cells.iter().enumerate().flat_map(|(r, cells)| {
        cells
            .iter()
            .enumerate()
            .filter_map(move |(c, cell)| cell.as_ref().map(|image| (r, c, image)))
    });
    let mut expected = None;
    for (row, column, image) in images {
        let (expected_width, expected_height) = *expected.get_or_insert(image.dimensions());
        if image.dimensions() != (expected_width, expected_height) {
            return Err(FigureError::ImageSize {
                row,
                column,
                width: image.width(),
                height: image.height(),
                expected_width,
                expected_height,
            });
        }
    }
    let (image_width, image_height) = expected.ok_or(FigureError::NoImages)?;
    if image_width == 0 || image_height == 0 {
        return Err(FigureError::EmptyImage {
            width: image_width,
            height: image_height,
        });
    }

    let scale = u64::from(grid.scale);
    let (w, h) = (
        u64::from(image_width) * scale,
        u64::from(image_height) * scale,
    );
    let s = (w.min(h) / 64).max(1);
    let (t, g) = (7 * s, 4 * s);
    let width_of = |text: &str, scale: u64| {
        u64::from(font::text_size(text, u32::try_from(scale).unwrap_or(u32::MAX)).0)
    };
    let title_width = grid
        .title
        .as_deref()
        .map_or(0, |title| width_of(title, s + 1));
    let title_band = if grid.title.is_some() {
        g + 7 * (s + 1)
    } else {
        0
    };
    let column_band = if grid.column_labels.is_empty() {
        0
    } else {
        t + g
    };
    let row_band = grid
        .row_labels
        .iter()
        .map(|label| width_of(label, s) + g)
        .max()
        .unwrap_or(0);
    let (rows64, columns64) = (rows as u64, columns as u64);
    let width = columns64
        .saturating_mul(w + g)
        .saturating_add(g + row_band)
        .max(title_width.saturating_add(2 * g));
    let height = rows64
        .saturating_mul(h + g)
        .saturating_add(title_band + g + column_band);
    let (width, height) = check_size(width, height)?;
    // A cell is smaller than the whole image checked above: this only converts to u32.
    let cell_size = check_size(w, h)?;
    Ok(GridLayout {
        text_scale: u32::try_from(s).unwrap_or(1),
        cell_size,
        shape: (rows, columns),
        size: (width, height),
        origin_x: g + row_band,
        origin_y: title_band + g + column_band,
        gap: g,
    })
}

/// Draws `grid` on a white image.
pub fn image_grid(grid: &ImageGrid) -> Result<RgbImage, FigureError> {
    let layout = grid_layout(grid)?;
    let mut image = RgbImage::from_pixel(layout.size.0, layout.size.1, BACKGROUND);
    let s = layout.text_scale;
    let (t, g) = (i64::from(7 * s), i64::from(4 * s));
    let (cell_w, cell_h) = (i64::from(layout.cell_size.0), i64::from(layout.cell_size.1));
    let scale = i64::from(grid.scale);
    let draw = |image: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32| {
        font::draw_text(image, x, y, text, scale, AXIS_COLOUR, Direction::Right)
    };

    if let Some(title) = &grid.title {
        draw(&mut image, g, g, title, s + 1);
    }
    for (row, cells) in grid.cells.iter().enumerate() {
        for (column, cell) in cells.iter().enumerate() {
            let Some((x, y)) = layout.cell(row, column) else {
                continue;
            };
            let (x, y) = (i64::from(x), i64::from(y));
            match cell {
                None => canvas::fill_rect(&mut image, x, y, cell_w, cell_h, MISSING_COLOUR),
                Some(source) => {
                    for (sx, sy, pixel) in source.enumerate_pixels() {
                        let px = x + i64::from(sx) * scale;
                        let py = y + i64::from(sy) * scale;
                        canvas::fill_rect(&mut image, px, py, scale, scale, *pixel);
                    }
                }
            }
        }
    }
    let fitting = usize::try_from((cell_w + i64::from(s)) / i64::from(ADVANCE * s)).unwrap_or(0);
    for (column, label) in grid.column_labels.iter().enumerate() {
        let Some((x, y)) = layout.cell(0, column) else {
            continue;
        };
        let label: String = label.chars().take(fitting).collect();
        let width = i64::from(font::text_size(&label, s).0);
        let (x, y) = (i64::from(x) + (cell_w - width) / 2, i64::from(y) - g - t);
        draw(&mut image, x, y, &label, s);
    }
    for (row, label) in grid.row_labels.iter().enumerate() {
        let Some((_, y)) = layout.cell(row, 0) else {
            continue;
        };
        draw(&mut image, g, i64::from(y) + (cell_h - t) / 2, label, s);
    }
    Ok(image)
}
