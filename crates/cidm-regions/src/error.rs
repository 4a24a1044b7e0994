//! The crate's error type: malformed region specs, boxes that are outside the image, empty or
//! inverted, too many regions, and inputs that do not fit the UNet are typed errors.

/// Result alias used throughout the crate.
pub type Result<T, E = RegionError> = std::result::Result<T, E>;

/// Everything that can go wrong in regional generation.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The diffusion core rejected an input.
    #[error(transparent)]
    Diffusion(#[from] cidm_diffusion::Error),
    /// Elastic weight aggregation rejected an input.
    #[error(transparent)]
    Ewa(#[from] cidm_ewa::EwaError),
    /// A region spec has no `@` between prompt and box.
    #[error("region {0:?}: expected `PROMPT@x0,y0,x1,y1`")]
    MissingBox(String),
    /// A region spec has an empty prompt.
    #[error("region {0:?}: the prompt is empty")]
    EmptyPrompt(String),
    /// A box does not have exactly four comma-separated numbers.
    #[error("box {text:?}: {found} numbers, expected 4 (x0,y0,x1,y1)")]
    BoxArity {
        /// The box as written.
        text: String,
        /// How many numbers it has.
        found: usize,
    },
    /// A box coordinate is not a number.
    #[error("box coordinate {0:?} is not a number")]
    Number(String),
    /// A box coordinate is outside `[0, 1]` (or not finite).
    #[error("box coordinate {name} = {value} is outside [0, 1]")]
    OutOfRange {
        /// `x0`, `y0`, `x1` or `y1`.
        name: &'static str,
        /// The value.
        value: f64,
    },
    /// A box ends before it starts.
    #[error("box is inverted: {axis}1 = {end} < {axis}0 = {start}")]
    Inverted {
        /// `x` or `y`.
        axis: char,
        /// Start coordinate.
        start: f64,
        /// End coordinate.
        end: f64,
    },
    /// A box has zero width or height.
    #[error("box is empty: {axis}0 = {axis}1 = {value}")]
    EmptyBox {
        /// `x` or `y`.
        axis: char,
        /// The shared coordinate.
        value: f64,
    },
    /// More regions than the stated limit.
    #[error("{found} regions given, at most {limit} are allowed")]
    TooManyRegions {
        /// How many were given.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A box covers no whole latent cell, so the region would have no effect.
    #[error("region {region}: its box covers no whole cell of the {height}x{width} latent")]
    BoxBelowOneCell {
        /// Index of the region.
        region: usize,
        /// Latent height.
        height: usize,
        /// Latent width.
        width: usize,
    },
    /// Any other invalid argument.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
