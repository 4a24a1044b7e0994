//! Drawing primitives on an `RgbImage` that clip instead of panicking: every coordinate is a
//! signed `i64`, and pixels outside the image (or outside a given clip rectangle) are
//! skipped, so callers never need to bounds-check what they draw.

use image::{Rgb, RgbImage};

/// An axis-aligned rectangle of pixels, both corners inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Leftmost column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Rightmost column.
    pub right: i64,
    /// Bottom row.
    pub bottom: i64,
}

impl Rect {
    /// Whether pixel (`x`, `y`) lies in the rectangle.
    pub fn contains(&self, x: i64, y: i64) -> bool {
        (self.left..=self.right).contains(&x) && (self.top..=self.bottom).contains(&y)
    }

    /// The width in pixels.
    pub fn width(&self) -> i64 {
        self.right - self.left + 1
    }

    /// The height in pixels.
    pub fn height(&self) -> i64 {
        self.bottom - self.top + 1
    }
}

/// Sets pixel (`x`, `y`) if it lies in the image.
pub fn put(image: &mut RgbImage, x: i64, y: i64, colour: Rgb<u8>) {
    if let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) {
        if x < image.width() && y < image.height() {
            image.put_pixel(x, y, colour);
        }
    }
}

/// Fills the `width` x `height` rectangle with top-left corner (`x`, `y`), clipped to the
/// image.
pub fn fill_rect(image: &mut RgbImage, x: i64, y: i64, width: i64, height: i64, colour: Rgb<u8>) {
    let x0 = x.max(0);
    let y0 = y.max(0);
    let x1 = x.saturating_add(width).min(i64::from(image.width()));
    let y1 = y.saturating_add(height).min(i64::from(image.height()));
    for py in y0..y1 {
        for px in x0..x1 {
            put(image, px, py, colour);
        }
    }
}

/// Fills `rect`, clipped to the image.
pub fn fill(image: &mut RgbImage, rect: Rect, colour: Rgb<u8>) {
    fill_rect(
        image,
        rect.left,
        rect.top,
        rect.width(),
        rect.height(),
        colour,
    );
}

/// Draws the one-pixel outline of `rect`.
pub fn outline(image: &mut RgbImage, rect: Rect, colour: Rgb<u8>) {
    fill_rect(image, rect.left, rect.top, rect.width(), 1, colour);
    fill_rect(image, rect.left, rect.bottom, rect.width(), 1, colour);
    fill_rect(image, rect.left, rect.top, 1, rect.height(), colour);
    fill_rect(image, rect.right, rect.top, 1, rect.height(), colour);
}

/// Fills the disk of `radius` around (`cx`, `cy`), keeping only pixels inside `clip`.
pub fn disk(image: &mut RgbImage, cx: i64, cy: i64, radius: i64, colour: Rgb<u8>, clip: Rect) {
    for dy in -radius..=radius {
        for dx in -radius..=radius {
            let (x, y) = (cx.saturating_add(dx), cy.saturating_add(dy));
            if dx * dx + dy * dy <= radius * radius && clip.contains(x, y) {
                put(image, x, y, colour);
            }
        }
    }
}

/// Draws the segment between two points given in (sub)pixel coordinates, `thickness` pixels
/// wide, keeping only pixels inside `clip`. The segment is first cut to `clip` in floating
/// point, so far-away endpoints (a value outside a fixed y range) cost nothing.
pub fn line(
    image: &mut RgbImage,
    from: (f64, f64),
    to: (f64, f64),
    thickness: i64,
    colour: Rgb<u8>,
    clip: Rect,
) {
    let Some(((x0, y0), (x1, y1))) = clip_segment(from, to, clip) else {
        return;
    };
    let (x0, y0, x1, y1) = (
        x0.round() as i64,
        y0.round() as i64,
        x1.round() as i64,
        y1.round() as i64,
    );
    // Bresenham; each step stamps a thickness x thickness square centred on the point.
    let offset = (thickness - 1) / 2;
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut error) = (x0, y0, dx + dy);
    loop {
        for oy in 0..thickness {
            for ox in 0..thickness {
                let (px, py) = (x + ox - offset, y + oy - offset);
                if clip.contains(px, py) {
                    put(image, px, py, colour);
                }
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let doubled = 2 * error;
        if doubled >= dy {
            error += dy;
            x += sx;
        }
        if doubled <= dx {
            error += dx;
            y += sy;
        }
    }
}

/// The part of the segment inside `clip` (Liang-Barsky), or `None` if it misses it or an
/// endpoint is not finite.
fn clip_segment(from: (f64, f64), to: (f64, f64), clip: Rect) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    if !(dx.is_finite() && dy.is_finite()) {
        return None;
    }
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    let edges = [
        (-dx, from.0 - clip.left as f64),
        (dx, clip.right as f64 - from.0),
        (-dy, from.1 - clip.top as f64),
        (dy, clip.bottom as f64 - from.1),
    ];
    for (p, q) in edges {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (from.0 + t0 * dx, from.1 + t0 * dy),
        (from.0 + t1 * dx, from.1 + t1 * dy),
    ))
}
