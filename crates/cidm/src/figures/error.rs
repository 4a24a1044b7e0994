//! The errors of figure making: every bad input is one of these, never a panic.

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FigureError {
    /// A line plot needs at least one series.
    #[error("the plot has no series")]
    NoSeries,
    /// A series has no points.
    #[error("series {name:?} has no points")]
    EmptySeries {
        /// The series' name.
        name: String,
    },
    /// A coordinate is NaN or infinite.
    #[error("series {name:?} point {index} is ({x}, {y}): coordinates must be finite")]
    NonFinite {
        /// The series' name.
        name: String,
        /// The point's index in the series.
        index: usize,
        /// Its x.
        x: f64,
        /// Its y.
        y: f64,
    },
    /// A fixed axis range is not finite or not increasing.
    #[error("axis range [{min}, {max}] must be finite with min < max")]
    InvalidRange {
        /// The lower end given.
        min: f64,
        /// The upper end given.
        max: f64,
    },
    /// The data's span cannot be represented (it overflows, or rounds to nothing).
    #[error("axis range [{min}, {max}] is too wide or too narrow to draw")]
    RangeOverflow {
        /// The lower end computed.
        min: f64,
        /// The upper end computed.
        max: f64,
    },
    /// The image leaves too little room once margins, labels and legend are placed.
    #[error("a {width}x{height} image leaves a {plot_width}x{plot_height} plot area; at least {min}x{min} is needed")]
    TooSmall {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
        /// Width left for the plot area (0 when nothing is left).
        plot_width: u32,
        /// Height left for the plot area (0 when nothing is left).
        plot_height: u32,
        /// The smallest plot area side drawn.
        min: u32,
    },
    /// The figure would exceed the pixel budget (or a side does not fit in `u32`).
    #[error("a {width}x{height} figure exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        /// Width asked for or computed.
        width: u64,
        /// Height asked for or computed.
        height: u64,
        /// The limit.
        max_pixels: u64,
    },
    /// An image grid needs at least one row and one column.
    #[error("the image grid has no cells")]
    EmptyGrid,
    /// An image grid has no image at all, so the cell size is unknown.
    #[error("the image grid has no images (every cell is missing)")]
    NoImages,
    /// A grid row has a different length from the first row.
    #[error("grid row {row} has {len} cells but row 0 has {expected}")]
    RaggedRows {
        /// The offending row.
        row: usize,
        /// Its length.
        len: usize,
        /// The first row's length.
        expected: usize,
    },
    /// A grid image differs in size from the first image.
    #[error("grid cell ({row}, {column}) is {width}x{height} but the first image is {expected_width}x{expected_height}")]
    ImageSize {
        /// The cell's row.
        row: usize,
        /// The cell's column.
        column: usize,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first image's width.
        expected_width: u32,
        /// The first image's height.
        expected_height: u32,
    },
    /// A grid image has no pixels.
    #[error("grid images are {width}x{height}: they must have pixels")]
    EmptyImage {
        /// Their width.
        width: u32,
        /// Their height.
        height: u32,
    },
    /// Row or column labels are given but their count differs from the grid's.
    #[error("{count} {which} labels for {expected} {which}s")]
    LabelCount {
        /// `row` or `column`.
        which: &'static str,
        /// Labels given.
        count: usize,
        /// Rows or columns in the grid.
        expected: usize,
    },
    /// The grid's upscaling factor is zero.
    #[error("the grid's scale must be at least 1")]
    ZeroScale,
}
