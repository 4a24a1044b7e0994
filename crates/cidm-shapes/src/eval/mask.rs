//! Pixel masks shared by the image-alignment features and the shape detector: the background
//! estimate, the foreground mask, connected components, holes and convex hulls.

use crate::colour::rgb_distance;
use image::RgbImage;

/// A pixel is foreground when it is at least this far (RGB units) from the estimated
/// background. Background pixels stray from the estimate by about 20 units at most (gradient
/// plus grain), and every palette colour lies at least 149 units from every background tone,
/// so a pixel half covered by any colour is still foreground.
pub(crate) const FOREGROUND_DISTANCE: f32 = 60.0;

/// The background colour: the per-channel median of the image's border pixels. Objects are
/// placed at least a pixel inside the frame, so the border is almost all background; the
/// median ignores the few pixels that are not.
pub(crate) fn estimate_background(image: &RgbImage) -> [u8; 3] {
    let (w, h) = image.dimensions();
    let mut channels: [Vec<u8>; 3] = Default::default();
    for (x, y, p) in image.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            for (c, values) in channels.iter_mut().enumerate() {
                values.push(p.0[c]);
            }
        }
    }
    channels.map(|mut values| {
        values.sort_unstable();
        values[values.len() / 2]
    })
}

/// A boolean image.
#[derive(Debug, Clone)]
pub(crate) struct Mask {
    pub width: u32,
    pub height: u32,
    pub on: Vec<bool>,
}

impl Mask {
    /// Pixels at least [`FOREGROUND_DISTANCE`] from `background`.
    pub fn foreground(image: &RgbImage, background: [u8; 3]) -> Mask {
        let (width, height) = image.dimensions();
        let on = image
            .pixels()
            .map(|p| rgb_distance(p.0, background) >= FOREGROUND_DISTANCE)
            .collect();
        Mask { width, height, on }
    }

    pub fn get(&self, x: i64, y: i64) -> bool {
        x >= 0
            && y >= 0
            && x < self.width as i64
            && y < self.height as i64
            && self.on[(y * self.width as i64 + x) as usize]
    }
}

/// The 8-connected components of `mask`, largest first; each is a list of `(x, y)` pixels.
pub(crate) fn components(mask: &Mask) -> Vec<Vec<(u32, u32)>> {
    let w = mask.width as i64;
    let mut seen = vec![false; mask.on.len()];
    let mut out = Vec::new();
    for start in 0..mask.on.len() {
        if !mask.on[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![start];
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = ((i as i64) % w, (i as i64) / w);
            pixels.push((x as u32, y as u32));
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if (dx, dy) != (0, 0) && mask.get(nx, ny) {
                        let j = (ny * w + nx) as usize;
                        if !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
        }
        out.push(pixels);
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    out
}

/// Number of holes in a component: 4-connected regions of non-component pixels that cannot
/// reach the outside of the component's bounding box, each at least `min_area` pixels (smaller
/// ones are specks of noise, not holes).
pub(crate) fn holes(pixels: &[(u32, u32)], min_area: usize) -> u32 {
    let (x0, y0, x1, y1) = bounds(pixels);
    // A one-pixel frame around the bounding box, from which the outside is flooded.
    let (w, h) = ((x1 - x0 + 3) as usize, (y1 - y0 + 3) as usize);
    let mut grid = vec![false; w * h];
    for &(x, y) in pixels {
        grid[(y - y0 + 1) as usize * w + (x - x0 + 1) as usize] = true;
    }
    let mut label = vec![false; w * h];
    let flood = |start: usize, label: &mut Vec<bool>| -> usize {
        let mut stack = vec![start];
        label[start] = true;
        let mut size = 0;
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if !grid[j] && !label[j] {
                    label[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        size
    };
    flood(0, &mut label);
    let mut count = 0;
    for i in 0..w * h {
        if !grid[i] && !label[i] && flood(i, &mut label) >= min_area {
            count += 1;
        }
    }
    count
}

/// Inclusive bounding box `(x0, y0, x1, y1)` of a non-empty pixel list.
pub(crate) fn bounds(pixels: &[(u32, u32)]) -> (u32, u32, u32, u32) {
    pixels
        .iter()
        .fold((u32::MAX, u32::MAX, 0, 0), |(x0, y0, x1, y1), &(x, y)| {
            (x0.min(x), y0.min(y), x1.max(x), y1.max(y))
        })
}
