//! Line plots (e.g. a metric per method after each task): series of points with markers and
//! connecting lines, a framed plot area with ticks and numeric tick labels, a legend, a title
//! and axis labels.
//!
//! # Layout
//!
//! All sizes derive from the text scale `s = max(1, min(width, height) / 240)`, with text
//! height `t = 7 s` and padding `p = 4 s`. The plot area is the rectangle
//! [`PlotLayout::plot`], corners inclusive, on which the frame is drawn:
//!
//! - `top = T + 2 p`, where the title band `T` is `p + 7 (s + 1)` with a title, else 0;
//! - `left = p + Y + w_y + 4 s`, where `Y = t + p` with a y label, else 0, and `w_y` is the
//!   widest y tick label;
//! - `bottom = height - 1 - (p + X + t + 4 s)`, where `X = t + p` with an x label, else 0;
//! - `right = width - 1 - (p + t + 2 s + w_n + p)`, where `w_n` is the widest series name
//!   (the legend column).
//!
//! A point `(x, y)` lands on pixel
//! `(left + (x - x_min) / (x_max - x_min) * (right - left), bottom - (y - y_min) / (y_max -
//! y_min) * (bottom - top))`, rounded, where the axis ranges are as documented on
//! [`Axis::new`] (x may be discrete, y never is). Series `i`'s legend swatch is the `t` x `t` square at
//! `(right + p, top + i (t + 2 s))`, its name `t + 2 s` to the right of it. The title (at
//! text scale `s + 1`, `p` from the top) and the x label are centred on the plot area, moved
//! sideways where that would cut them at the image's edge.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::canvas::{self, Rect};
use super::font::{self, Direction};
use super::ticks::Axis;
use super::{check_size, FigureError, AXIS_COLOUR, BACKGROUND, PALETTE};

/// The smallest plot area side, in pixels, that [`line_plot`] draws in.
pub const MIN_PLOT_SIDE: u32 = 16;

/// Light grey of the grid lines behind the data.
const GRID_COLOUR: Rgb<u8> = Rgb([225, 225, 225]);

/// One named series of `(x, y)` points, drawn in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points, joined by lines in this order.
    pub points: Vec<(f64, f64)>,
}

/// A line plot, as a serde type so that a report can keep the data of its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePlot {
    /// Drawn centred above the plot area (nothing when empty).
    #[serde(default)]
    pub title: String,
    /// Drawn centred below the x axis (nothing when empty).
    #[serde(default)]
    pub x_label: String,
    /// Drawn upwards left of the y axis (nothing when empty).
    #[serde(default)]
    pub y_label: String,
    /// The series; series `i` is drawn in `PALETTE[i % PALETTE.len()]`.
    pub series: Vec<Series>,
    /// Image width in pixels.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Image height in pixels.
    #[serde(default = "default_height")]
    pub height: u32,
    /// A fixed y range (e.g. `(0, 1)` for scores), else fitted to the data. Points outside
    /// it are clipped at the frame.
    #[serde(default)]
    pub y_range: Option<(f64, f64)>,
}

fn default_width() -> u32 {
    640
}

fn default_height() -> u32 {
    480
}

/// Where [`line_plot`] puts things (see the module docs for the formulas).
#[derive(Debug, Clone, PartialEq)]
pub struct PlotLayout {
    /// The integer text scale `s`.
    pub text_scale: u32,
    /// The plot area, whose edges are the frame.
    pub plot: Rect,
    /// The x axis: range and ticks.
    pub x: Axis,
    /// The y axis: range and ticks.
    pub y: Axis,
    /// Each series' legend swatch.
    pub legend: Vec<Rect>,
}

impl PlotLayout {
    /// Where data point (`x`, `y`) lands, in sub-pixel coordinates.
    pub fn position(&self, x: f64, y: f64) -> (f64, f64) {
        let plot = self.plot;
        (
            plot.left as f64 + self.x.fraction(x) * (plot.right - plot.left) as f64,
            plot.bottom as f64 - self.y.fraction(y) * (plot.bottom - plot.top) as f64,
        )
    }

    /// The pixel of data point (`x`, `y`): [`PlotLayout::position`] rounded (saturating for
    /// points far outside a fixed range).
    pub fn pixel(&self, x: f64, y: f64) -> (i64, i64) {
        let (px, py) = self.position(x, y);
        (px.round() as i64, py.round() as i64)
    }
}

/// Validates `plot` and computes its layout.
pub fn plot_layout(plot: &LinePlot) -> Result<PlotLayout, FigureError> {
    if plot.series.is_empty() {
        return Err(FigureError::NoSeries);
    }
    for series in &plot.series {
        if series.points.is_empty() {
            return Err(FigureError::EmptySeries {
                name: series.name.clone(),
            });
        }
        let bad = series
            .points
            .iter()
            .position(|(x, y)| !(x.is_finite() && y.is_finite()));
        if let Some(index) = bad {
            let (x, y) = series.points[index];
            return Err(FigureError::NonFinite {
                name: series.name.clone(),
                index,
                x,
                y,
            });
        }
    }
    check_size(u64::from(plot.width), u64::from(plot.height))?;
    let points = || plot.series.iter().flat_map(|s| s.points.iter());
    let xs: Vec<f64> = points().map(|p| p.0).collect();
    let ys: Vec<f64> = points().map(|p| p.1).collect();
    let x = Axis::new(&xs, None, true)?;
    let y = Axis::new(&ys, plot.y_range, false)?;

    let s = (plot.width.min(plot.height) / 240).max(1);
    let (s64, t, p) = (i64::from(s), i64::from(7 * s), i64::from(4 * s));
    let width_of = |text: &str, scale: u32| i64::from(font::text_size(text, scale).0);
    let widest = |texts: &mut dyn Iterator<Item = &str>| texts.map(|l| width_of(l, s)).max();
    let title_band = if plot.title.is_empty() {
        0
    } else {
        p + 7 * (s64 + 1)
    };
    let y_band = if plot.y_label.is_empty() { 0 } else { t + p };
    let x_band = if plot.x_label.is_empty() { 0 } else { t + p };
    let y_tick_width = widest(&mut y.labels.iter().map(String::as_str)).unwrap_or(0);
    let name_width = widest(&mut plot.series.iter().map(|s| s.name.as_str())).unwrap_or(0);
    let rect = Rect {
        left: p + y_band + y_tick_width + 4 * s64,
        top: title_band + 2 * p,
        right: i64::from(plot.width) - 1 - (p + t + 2 * s64 + name_width + p),
        bottom: i64::from(plot.height) - 1 - (p + x_band + t + 4 * s64),
    };
    let side = |length: i64| u32::try_from(length.max(0)).unwrap_or(u32::MAX);
    if rect.width() < i64::from(MIN_PLOT_SIDE) || rect.height() < i64::from(MIN_PLOT_SIDE) {
        return Err(FigureError::TooSmall {
            width: plot.width,
            height: plot.height,
            plot_width: side(rect.width()),
            plot_height: side(rect.height()),
            min: MIN_PLOT_SIDE,
        });
    }
    let legend = (0..plot.series.len())
        .map(|i| {
            let top = rect.top
                + i64::try_from(i)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(t + 2 * s64);
            Rect {
                left: rect.right + p,
                top,
                right: rect.right + p + t - 1,
                bottom: top.saturating_add(t - 1),
            }
        })
        .collect();
    Ok(PlotLayout {
        text_scale: s,
        plot: rect,
        x,
        y,
        legend,
    })
}

/// Draws `plot` on a white image of its size.
pub fn line_plot(plot: &LinePlot) -> Result<RgbImage, FigureError> {
    let layout = plot_layout(plot)?;
    let mut image = RgbImage::from_pixel(plot.width, plot.height, BACKGROUND);
    let area = layout.plot;
    let s = i64::from(layout.text_scale);
    let t = 7 * s;
    let p = 4 * s;
    let text = |image: &mut RgbImage, x: i64, y: i64, label: &str, scale: u32| {
        font::draw_text(image, x, y, label, scale, AXIS_COLOUR, Direction::Right)
    };
    let width_of = |label: &str, scale: u32| i64::from(font::text_size(label, scale).0);

    // Grid lines and ticks with their labels.
    for (&value, label) in layout.x.ticks.iter().zip(&layout.x.labels) {
        let (px, _) = layout.pixel(value, layout.y.min);
        canvas::fill_rect(&mut image, px, area.top, 1, area.height(), GRID_COLOUR);
        canvas::fill_rect(&mut image, px, area.bottom + 1, 1, 3 * s, AXIS_COLOUR);
        let x = px - width_of(label, layout.text_scale) / 2;
        text(&mut image, x, area.bottom + 4 * s, label, layout.text_scale);
    }
    for (&value, label) in layout.y.ticks.iter().zip(&layout.y.labels) {
        let (_, py) = layout.pixel(layout.x.min, value);
        canvas::fill_rect(&mut image, area.left, py, area.width(), 1, GRID_COLOUR);
        canvas::fill_rect(&mut image, area.left - 3 * s, py, 3 * s, 1, AXIS_COLOUR);
        let x = area.left - 4 * s - width_of(label, layout.text_scale);
        text(&mut image, x, py - t / 2, label, layout.text_scale);
    }
    canvas::outline(&mut image, area, AXIS_COLOUR);

    // Data: each series' lines, then its markers, in series order.
    for (i, series) in plot.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        for pair in series.points.windows(2) {
            let from = layout.position(pair[0].0, pair[0].1);
            let to = layout.position(pair[1].0, pair[1].1);
            canvas::line(&mut image, from, to, s, colour, area);
        }
        for &(x, y) in &series.points {
            let (px, py) = layout.pixel(x, y);
            canvas::disk(&mut image, px, py, s + 2, colour, area);
        }
    }

    // Legend.
    for (i, (series, swatch)) in plot.series.iter().zip(&layout.legend).enumerate() {
        canvas::fill(&mut image, *swatch, PALETTE[i % PALETTE.len()]);
        text(
            &mut image,
            swatch.left + t + 2 * s,
            swatch.top,
            &series.name,
            layout.text_scale,
        );
    }

    // Title and axis labels, centred on the plot area but moved inside the image when
    // that would cut them (text wider than the image starts at the left padding).
    let centred = |label: &str, scale: u32| {
        let width = width_of(label, scale);
        let x = (area.left + area.right) / 2 - width / 2;
        x.min(i64::from(plot.width) - p - width).max(p)
    };
    let title_scale = layout.text_scale + 1;
    let x = centred(&plot.title, title_scale);
    text(&mut image, x, p, &plot.title, title_scale);
    let x = centred(&plot.x_label, layout.text_scale);
    text(
        &mut image,
        x,
        area.bottom + 4 * s + t + p,
        &plot.x_label,
        layout.text_scale,
    );
    let y = (area.top + area.bottom) / 2 - width_of(&plot.y_label, layout.text_scale) / 2;
    font::draw_text(
        &mut image,
        p,
        y,
        &plot.y_label,
        layout.text_scale,
        AXIS_COLOUR,
        Direction::Up,
    );
    Ok(image)
}
