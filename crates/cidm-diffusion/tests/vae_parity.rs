//! The VAE reproduces diffusers' `AutoencoderKL` on a tiny random model
//! (tools/vae_fixtures.py): posterior, decoder, the pipelines' latent scaling, and the u8 RGB
//! conversion.
//!
//! Tolerance: max abs error 1e-4 on outputs of magnitude ~1. Both sides compute in f32; the
//! difference comes from summation order in convolutions, matmuls and softmax (measured: a
//! few 1e-7 to 1e-6 here). The RGB conversion is compared byte for byte.

mod common;

use burn::tensor::Tensor;
use cidm_diffusion::{to_rgb8, AutoencoderKL, ModelDir, SafetensorsWeights};
use common::{fixtures, max_abs_diff, tensor, B};

const TOLERANCE: f32 = 1e-4;

fn load(model: &str) -> AutoencoderKL<B> {
    let dir = ModelDir::open(fixtures().join(model)).unwrap();
    AutoencoderKL::from_model_dir(&dir, None, &Default::default()).unwrap()
}

fn io() -> SafetensorsWeights {
    SafetensorsWeights::open(fixtures().join("vae-io.safetensors")).unwrap()
}

fn assert_close(what: &str, out: Tensor<B, 4>, expected: Tensor<B, 4>) {
    let scale: f32 = expected.clone().abs().max().into_scalar();
    let err = max_abs_diff(out, expected);
    eprintln!("{what}: max abs error {err:e}, output scale {scale}");
    assert!(
        scale > 0.1,
        "{what}: expected output is degenerate ({scale})"
    );
    assert!(
        err < TOLERANCE,
        "{what}: max abs error {err} vs diffusers (output scale {scale})"
    );
}

/// Mean and clamped logvar for a non-square image (24 x 20) and an odd-sized one (19 x 13,
/// which the bottom/right-padded downsamplers floor to 9 x 6, then 4 x 3).
#[test]
fn encoder_posterior_matches_diffusers() {
    let vae = load("vae-model");
    let io = io();
    for case in ["even", "odd"] {
        let image: Tensor<B, 4> = tensor(&io, &format!("encode.{case}.image"));
        let posterior = vae.encode(image).unwrap();
        let mean: Tensor<B, 4> = tensor(&io, &format!("encode.{case}.mean"));
        let logvar: Tensor<B, 4> = tensor(&io, &format!("encode.{case}.logvar"));
        assert_close(
            &format!("{case} mean"),
            posterior.mean().clone(),
            mean.clone(),
        );
        assert_close(
            &format!("{case} logvar"),
            posterior.logvar().clone(),
            logvar,
        );
        assert_close(&format!("{case} mode"), posterior.mode(), mean);
    }
}

/// Non-square latents 5 x 7 decode to 20 x 28 (three blocks: two upsamplers).
#[test]
fn decoder_matches_diffusers() {
    let vae = load("vae-model");
    let io = io();
    let latents: Tensor<B, 4> = tensor(&io, "decode.latents");
    let out = vae.decode(latents).unwrap();
    assert_eq!(out.dims(), [2, 3, 20, 28]);
    assert_close("decode", out, tensor(&io, "decode.image"));
}

/// `(mean + std * noise - shift_factor) * scaling_factor` on the way in and
/// `decode(latents / scaling_factor + shift_factor)` on the way out, as the pipelines compute.
#[test]
fn latent_scaling_matches_the_pipelines() {
    let vae = load("vae-model");
    let io = io();
    let image: Tensor<B, 4> = tensor(&io, "encode.even.image");
    let noise: Tensor<B, 4> = tensor(&io, "latents.noise");
    let latents = vae.encode_latents(image, Some(noise)).unwrap();
    assert_close("scaled latents", latents, tensor(&io, "latents.scaled"));
    let decoded = vae.decode_latents(tensor(&io, "decode.latents")).unwrap();
    assert_close("pipeline decode", decoded, tensor(&io, "pipeline.image"));
}

/// The same weights stored under `query`/`key`/`value`/`proj_attn` (the encoder's as
/// `[c, c, 1, 1]` convolutions, the decoder's as `[c, c]`) load to the same model.
#[test]
fn deprecated_attention_names_load_the_same_model() {
    let current = load("vae-model");
    let deprecated = load("vae-deprecated-model");
    let io = io();
    let image: Tensor<B, 4> = tensor(&io, "encode.odd.image");
    let a = current.encode(image.clone()).unwrap();
    let b = deprecated.encode(image).unwrap();
    assert_eq!(max_abs_diff(a.mean().clone(), b.mean().clone()), 0.0);
    assert_eq!(max_abs_diff(a.logvar().clone(), b.logvar().clone()), 0.0);
    let latents: Tensor<B, 4> = tensor(&io, "decode.latents");
    let diff = max_abs_diff(
        current.decode(latents.clone()).unwrap(),
        deprecated.decode(latents).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

/// diffusers' `postprocess(output_type="pil")` bytes, for values past both clamps and for the
/// fixture's decoded images; compared on diffusers' own float images so that rounding ties
/// cannot differ.
#[test]
fn rgb_bytes_match_diffusers_image_processor() {
    let io = io();
    for (input, bytes) in [
        ("rgb.edges", "rgb.edges.bytes"),
        ("decode.image", "rgb.decoded.bytes"),
    ] {
        let images = to_rgb8(tensor::<4>(&io, input)).unwrap();
        let expected: Tensor<B, 4> = tensor(&io, bytes);
        let [batch, h, w, c] = expected.dims();
        assert_eq!((images.len(), c), (batch, 3));
        let expected: Vec<f32> = expected.into_data().to_vec().unwrap();
        for (i, image) in images.iter().enumerate() {
            assert_eq!((image.height, image.width), (h, w));
            let want: Vec<u8> = expected[i * h * w * 3..(i + 1) * h * w * 3]
                .iter()
                .map(|&v| v as u8)
                .collect();
            assert_eq!(image.pixels, want, "{input}: image {i}");
        }
    }
}
