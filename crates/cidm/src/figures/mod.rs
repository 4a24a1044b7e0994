//! Figures for benchmark reports, drawn directly on `image::RgbImage` with a built-in bitmap
//! font, so that reports need no plotting or font dependencies: [`line_plot`] (a metric per
//! method over tasks, e.g. forgetting) and [`image_grid`] (labelled samples). Save them with
//! [`crate::images::save_rgb_png`].
//!
//! Every input is validated; bad input is a [`FigureError`], never a panic, and drawing clips
//! to the image, so any valid input draws.

mod canvas;
mod error;
pub mod font;
mod grid;
mod plot;
mod ticks;

use image::Rgb;

pub use canvas::Rect;
pub use error::FigureError;
pub use grid::{grid_layout, image_grid, GridLayout, ImageGrid, MISSING_COLOUR};
pub use plot::{line_plot, plot_layout, LinePlot, PlotLayout, Series, MIN_PLOT_SIDE};
pub use ticks::Axis;

/// Series colours, in order (the Okabe-Ito colour-blind-safe set without its yellow, which
/// is hard to see on white, plus brown and grey); series `i` gets `PALETTE[i % 8]`.
pub const PALETTE: [Rgb<u8>; 8] = [
    Rgb([0, 114, 178]),   // blue
    Rgb([213, 94, 0]),    // vermillion
    Rgb([0, 158, 115]),   // bluish green
    Rgb([204, 121, 167]), // reddish purple
    Rgb([230, 159, 0]),   // orange
    Rgb([86, 180, 233]),  // sky blue
    Rgb([140, 86, 45]),   // brown
    Rgb([110, 110, 110]), // grey
];

/// The figures' background.
pub const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Text, frame and tick colour.
pub const AXIS_COLOUR: Rgb<u8> = Rgb([0, 0, 0]);

/// The most pixels a figure may have (64 Mi, 192 MiB of RGB), so that a typo in a size is an
/// error rather than an allocation failure.
pub const MAX_PIXELS: u64 = 1 << 26;

/// `(width, height)` as `u32` if the figure is within [`MAX_PIXELS`].
fn check_size(width: u64, height: u64) -> Result<(u32, u32), FigureError> {
    let too_large = || FigureError::TooLarge {
        width,
        height,
        max_pixels: MAX_PIXELS,
    };
    if width
        .checked_mul(height)
        .is_none_or(|pixels| pixels > MAX_PIXELS)
    {
        return Err(too_large());
    }
    Ok((
        u32::try_from(width).map_err(|_| too_large())?,
        u32::try_from(height).map_err(|_| too_large())?,
    ))
}
