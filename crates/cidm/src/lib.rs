//! # cidm
//!
//! Concept-incremental text-to-image diffusion (CIDM, NeurIPS 2024) on burn. This facade
//! re-exports the workspace crates (`diffusion`, `lora`, `continual`) and picks the compute backend from Cargo features
//! (`flex` by default; `ndarray`, `wgpu`, `cuda`, plus `f16` for half precision on GPUs).

pub mod backend;
pub mod images;

pub use cidm_continual as continual;
pub use cidm_diffusion as diffusion;
pub use cidm_lora as lora;
