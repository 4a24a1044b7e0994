//! The VAE of Stable Diffusion: diffusers' `AutoencoderKL`, one file per diffusers module.
//!
//! Only the KL autoencoder with `DownEncoderBlock2D` / `UpDecoderBlock2D` blocks and group
//! norms is built, the architecture the SD 1.x, 2.x, XL and 3 VAE configs describe; its
//! mid-block attention loads from current and deprecated checkpoint namings alike (see
//! [`attention`]). Tiling and slicing of large images are not implemented.

pub mod attention;
pub mod autoencoder_kl;
pub mod blocks;
pub mod config;
pub mod decoder;
pub mod distribution;
pub mod encoder;
pub mod image;

pub use attention::AttentionKeys;
pub use autoencoder_kl::AutoencoderKL;
pub use config::AutoencoderKLConfig;
pub use distribution::DiagonalGaussian;
pub use image::{to_rgb8, Rgb8Image};
