//! # cidm
//!
//! Concept-incremental text-to-image diffusion (CIDM, NeurIPS 2024) on burn. This facade
//! re-exports the workspace crates (`diffusion`, `lora`, `continual`, `ewa`, `regions`, the
//! GPU `kernels`, ...), puts them together for generation with a task store
//! ([`concept_model::ConceptModel`]), and picks the compute backend from Cargo features
//! (`flex` by default; `ndarray`, `wgpu`, `cuda`, plus `f16` for half precision on GPUs).

pub mod backend;
pub mod backend_panic;
pub mod benchmark;
pub mod concept_model;
pub mod figures;
pub mod images;

pub use cidm_continual as continual;
pub use cidm_diffusion as diffusion;
pub use cidm_eval as eval;
pub use cidm_ewa as ewa;
pub use cidm_kernels as kernels;
pub use cidm_lora as lora;
pub use cidm_regions as regions;
pub use cidm_shapes as shapes;
