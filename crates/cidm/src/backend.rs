//! The compute backend, chosen at compile time by Cargo features. When several are enabled the
//! first of cuda, wgpu, ndarray, flex wins, so adding a GPU feature on top of the default
//! `flex` switches to the GPU.

#[cfg(all(feature = "f16", any(feature = "cuda", feature = "wgpu")))]
type GpuFloat = half::f16;
#[cfg(all(not(feature = "f16"), any(feature = "cuda", feature = "wgpu")))]
type GpuFloat = f32;

/// The backend selected by the enabled features.
#[cfg(feature = "cuda")]
pub type Selected = burn::backend::Cuda<GpuFloat>;
/// The backend selected by the enabled features.
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Selected = burn::backend::Wgpu<GpuFloat>;
/// The backend selected by the enabled features.
#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "wgpu"))))]
pub type Selected = burn::backend::NdArray;
/// The backend selected by the enabled features.
#[cfg(all(
    feature = "flex",
    not(any(feature = "cuda", feature = "wgpu", feature = "ndarray"))
))]
pub type Selected = burn::backend::Flex;

#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "ndarray",
    feature = "flex"
)))]
compile_error!(
    "enable one backend feature of the `cidm` crate: flex (default), ndarray, wgpu or cuda"
);

/// [`Selected`] with automatic differentiation, for training.
pub type Training = burn::backend::Autodiff<Selected>;

/// A human-readable name of [`Selected`], for logs and reports.
pub const NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else if cfg!(feature = "ndarray") {
    "ndarray"
} else {
    "flex"
};

/// Whether the selected backend computes in half precision.
pub const HALF_PRECISION: bool = cfg!(all(
    feature = "f16",
    any(feature = "cuda", feature = "wgpu")
));

/// The default device of the selected backend.
pub fn device() -> burn::tensor::Device<Selected> {
    Default::default()
}
