//! Helpers shared by the integration tests: the test backend, the fixture UNet and golden
//! inputs, and adapters with non-zero up factors.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::{Conditioning, ModelDir, SafetensorsWeights, UNet2DConditionModel};
use cidm_lora::{LoraAdapter, LoraConfig, LoraFactors};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The CPU backend the tests run on (Flex, the faster CPU backend).
pub type B = burn::backend::Flex;

/// This crate's fixtures (tools/lora_fixtures.py and the blessed Rust file).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The tiny SD1-style UNet of cidm-diffusion's fixtures (11 cross-attention layers).
pub fn unet() -> UNet2DConditionModel<B> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/sd1-model");
    let dir = ModelDir::open(root).expect("sd1 fixture model");
    UNet2DConditionModel::from_model_dir(&dir, None, &Default::default()).expect("loads")
}

/// The golden inputs and outputs of lora-io.safetensors.
pub struct Golden {
    weights: SafetensorsWeights,
}

impl Golden {
    pub fn open() -> Self {
        Self {
            weights: SafetensorsWeights::open(fixtures().join("lora-io.safetensors"))
                .expect("lora-io.safetensors: run tools/lora_fixtures.py"),
        }
    }

    pub fn tensor<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let shape = self
            .weights
            .shape(name)
            .unwrap_or_else(|| {
                panic!("lora-io.safetensors has no `{name}`: run tools/lora_fixtures.py")
            })
            .to_vec();
        Tensor::from_data(
            self.weights.read_f32(name, &shape).unwrap(),
            &Default::default(),
        )
    }

    /// The UNet's output on the golden inputs.
    pub fn run(&self, unet: &UNet2DConditionModel<B>) -> Tensor<B, 4> {
        unet.forward(
            self.tensor("sample"),
            self.tensor("timesteps"),
            &Conditioning::shared(self.tensor("context")),
        )
        .unwrap()
    }
}

/// Largest absolute difference between two tensors of equal shape.
pub fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar()
}

/// Uniform values on `[-scale, scale)` from a seeded ChaCha8 stream.
pub fn uniform(seed: u64, count: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// `adapter` with its up factors replaced by seeded uniform values on `[-scale, scale)`, so
/// that it changes the model's output.
pub fn with_random_up(adapter: &LoraAdapter<B>, seed: u64, scale: f32) -> LoraAdapter<B> {
    let layers: BTreeMap<String, LoraFactors<B>> = adapter
        .layers()
        .iter()
        .enumerate()
        .map(|(i, (path, f))| {
            let dims = f.up.dims();
            let values = uniform(
                seed.wrapping_mul(1000).wrapping_add(i as u64),
                dims[0] * dims[1],
                scale,
            );
            let up = Tensor::from_data(TensorData::new(values, dims), &f.up.device());
            (
                path.clone(),
                LoraFactors {
                    down: f.down.clone(),
                    up,
                },
            )
        })
        .collect();
    LoraAdapter::new(adapter.config().clone(), layers).unwrap()
}

/// A fresh adapter of `config` on the fixture UNet with random up factors.
pub fn random_adapter(
    unet: &UNet2DConditionModel<B>,
    config: &LoraConfig,
    seed: u64,
) -> LoraAdapter<B> {
    let fresh = LoraAdapter::init(config, unet, &Default::default()).unwrap();
    with_random_up(&fresh, seed, 0.3)
}

/// A safetensors file as editable parts: tensors (dtype, shape, bytes) and metadata.
pub struct FileParts {
    pub tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    pub metadata: Option<std::collections::HashMap<String, String>>,
}

impl FileParts {
    pub fn read(path: &std::path::Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
            .collect();
        Self {
            tensors,
            metadata: header.metadata().clone(),
        }
    }

    /// The peft fixture.
    pub fn peft() -> Self {
        Self::read(&fixtures().join("peft-lora.safetensors"))
    }

    /// Renames every key with `rename`.
    pub fn rename(mut self, rename: impl Fn(&str) -> String) -> Self {
        self.tensors = self
            .tensors
            .into_iter()
            .map(|(k, v)| (rename(&k), v))
            .collect();
        self
    }

    pub fn write(&self, path: &std::path::Path) {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, (dtype, shape, data))| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, self.metadata.clone(), path).unwrap();
    }
}
