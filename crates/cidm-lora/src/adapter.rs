//! One LoRA adapter as a value: its config and, for every adapted projection, a down and an
//! up factor in the core's layout. The adapter lives apart from the UNet so that it can be
//! stored, stacked with others, merged, or attached to a model for training and inference.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::precision::{param_from_data, param_zeros, to_param_dtype};
use cidm_diffusion::{LowRankBank, UNet2DConditionModel};

use crate::config::LoraConfig;
use crate::error::{LoraError, Result};
use crate::init::kaiming_uniform_down;
use crate::sites::{projection_sites, visit_projections_mut, ProjectionSite};

/// The two factors of one adapted projection, `delta(x) = scale * (x down) up`.
///
/// Naming trap: `down` is PEFT's `lora_A` (transposed) and the paper's B; `up` is PEFT's
/// `lora_B` (transposed) and the paper's A, the factor CIDM's regularizers act on.
#[derive(Debug, Clone)]
pub struct LoraFactors<B: Backend> {
    /// Down factor `[in, rank]`.
    pub down: Tensor<B, 2>,
    /// Up factor `[rank, out]`.
    pub up: Tensor<B, 2>,
}

impl<B: Backend> LoraFactors<B> {
    /// The dense update `down up` (`[in, out]`, the layout of the core's base weights),
    /// without the scale: what merging adds and what CIDM's common-subspace term compares.
    /// Errors when the factors' ranks differ.
    pub fn delta(&self) -> Result<Tensor<B, 2>> {
        let [_, rank] = self.down.dims();
        let [rank_up, _] = self.up.dims();
        if rank != rank_up {
            return Err(LoraError::RankMismatch {
                key: "up".into(),
                expected: rank,
                found: rank_up,
            });
        }
        Ok(self.down.clone().matmul(self.up.clone()))
    }
}

/// A LoRA adapter: a config and the factors of every projection it adapts, keyed by full
/// diffusers module path.
#[derive(Debug, Clone)]
pub struct LoraAdapter<B: Backend> {
    config: LoraConfig,
    layers: BTreeMap<String, LoraFactors<B>>,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter on the projections of `unet` that `config` targets, initialised as PEFT
    /// does: down factors Kaiming-uniform (seeded by `config.init_seed`, drawn on the host),
    /// up factors zero, so the adapted model starts out equal to the base model. Factors are
    /// f32 whatever the device's default float type (`cidm_diffusion::precision`).
    pub fn init(
        config: &LoraConfig,
        unet: &UNet2DConditionModel<B>,
        device: &B::Device,
    ) -> Result<Self> {
        let sites = projection_sites(unet);
        let layers = config
            .select(&sites)?
            .into_iter()
            .map(|site| {
                let down =
                    kaiming_uniform_down(config.init_seed, &site.path, site.d_in, config.rank);
                let factors = LoraFactors {
                    down: param_from_data(TensorData::new(down, [site.d_in, config.rank]), device),
                    up: param_zeros([config.rank, site.d_out], device),
                };
                (site.path.clone(), factors)
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            layers,
        })
    }

    /// An adapter from given factors, kept in f32 (`cidm_diffusion::precision`: factors of
    /// another float type are cast); errors when the config is invalid, `layers` is empty, or
    /// a factor's rank differs from `config.rank`.
    pub fn new(config: LoraConfig, layers: BTreeMap<String, LoraFactors<B>>) -> Result<Self> {
        config.validate()?;
        if layers.is_empty() {
            return Err(LoraError::InvalidInput(
                "an adapter needs at least one adapted projection".into(),
            ));
        }
        for (path, factors) in &layers {
            let [_, rank] = factors.down.dims();
            let [rank_up, _] = factors.up.dims();
            for (key, found) in [
                (format!("{path}.down"), rank),
                (format!("{path}.up"), rank_up),
            ] {
                if found != config.rank {
                    return Err(LoraError::RankMismatch {
                        key,
                        expected: config.rank,
                        found,
                    });
                }
            }
        }
        let layers = layers
            .into_iter()
            .map(|(path, factors)| {
                let factors = LoraFactors {
                    down: to_param_dtype(factors.down),
                    up: to_param_dtype(factors.up),
                };
                (path, factors)
            })
            .collect();
        Ok(Self { config, layers })
    }

    /// Reads the adapter attached to `unet`: the bank of every projection that has one. Used
    /// after training, to store what was learned. Errors when no bank is attached, or when a
    /// bank's rank or scale is not `config`'s (it was not attached from this config).
    pub fn extract(config: LoraConfig, unet: &UNet2DConditionModel<B>) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for (site, bank) in attached_banks(unet) {
            if (bank.scale - config.scale()).abs() > 1e-12 * config.scale().abs().max(1.0) {
                return Err(LoraError::InvalidInput(format!(
                    "the bank of `{}` has scale {}, the config's alpha / rank is {}",
                    site.path,
                    bank.scale,
                    config.scale()
                )));
            }
            let factors = LoraFactors {
                down: bank.down.val().detach(),
                up: bank.up.val().detach(),
            };
            layers.insert(site.path, factors);
        }
        Self::new(config, layers)
    }

    /// The adapter's config.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The factors of every adapted projection, keyed by module path.
    pub fn layers(&self) -> &BTreeMap<String, LoraFactors<B>> {
        &self.layers
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// Number of trainable values (`rank * (in + out)` summed over projections): about 0.40 M
    /// for rank 4 on SD 1.5's 64 cross-attention projections.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .values()
            .map(|f| {
                f.down.dims().iter().product::<usize>() + f.up.dims().iter().product::<usize>()
            })
            .sum()
    }

    /// Checks that every adapted projection exists in `unet` with matching sizes, and names
    /// the first one that does not.
    pub fn check_fits(&self, unet: &UNet2DConditionModel<B>) -> Result<()> {
        check_layers_fit(&self.layers, &projection_sites(unet))
    }

    /// Attaches the adapter to `unet`: each adapted projection gets a bank with this adapter's
    /// factors and scale (replacing any bank it had); other projections are left alone. The
    /// factors become parameters that require gradients on an autodiff backend.
    pub fn attach(&self, unet: &mut UNet2DConditionModel<B>) -> Result<()> {
        attach_layers(unet, &self.layers, self.scale())
    }
}

/// Removes every bank from `unet`, returning it to the base model; returns how many were
/// removed.
pub fn detach_all<B: Backend>(unet: &mut UNet2DConditionModel<B>) -> usize {
    let mut removed = 0;
    let result: Result<(), std::convert::Infallible> = visit_projections_mut(unet, |_, p| {
        removed += usize::from(p.take_bank().is_some());
        Ok(())
    });
    match result {
        Ok(()) => removed,
    }
}

/// Every bank attached to `unet` with the site of its projection, in the order of
/// [`projection_sites`]. The banks' factors are the live parameters, graph included: what a
/// trainer reads when a loss term (such as CIDM's regularizers) must differentiate through
/// them, and where the parameter ids of the optimizer's state come from.
pub fn attached_banks<B: Backend>(
    unet: &UNet2DConditionModel<B>,
) -> Vec<(ProjectionSite, &LowRankBank<B>)> {
    let projections = unet.transformer_blocks().into_iter().flat_map(|b| {
        b.attn1
            .projections()
            .into_iter()
            .chain(b.attn2.projections())
    });
    projection_sites(unet)
        .into_iter()
        .zip(projections)
        .filter_map(|(site, (_, p))| p.bank.as_ref().map(|bank| (site, bank)))
        .collect()
}

/// The ids of the factors of every bank attached to `unet`: the trainable parameters once the
/// base is frozen.
pub(crate) fn bank_param_ids<B: Backend>(
    unet: &UNet2DConditionModel<B>,
) -> Vec<burn::module::ParamId> {
    attached_banks(unet)
        .into_iter()
        .flat_map(|(_, bank)| [bank.down.id, bank.up.id])
        .collect()
}

/// Checks `layers` against the model's sites: each path must exist and each factor must be
/// `[d_in, r]` / `[r, d_out]`.
pub(crate) fn check_layers_fit<B: Backend>(
    layers: &BTreeMap<String, LoraFactors<B>>,
    sites: &[ProjectionSite],
) -> Result<()> {
    let by_path: HashMap<&str, &ProjectionSite> =
        sites.iter().map(|s| (s.path.as_str(), s)).collect();
    for (path, factors) in layers {
        let site = by_path
            .get(path.as_str())
            .ok_or_else(|| LoraError::UnknownModule {
                key: path.clone(),
                module: path.clone(),
            })?;
        let [d_in, rank] = factors.down.dims();
        let [rank_up, d_out] = factors.up.dims();
        if d_in != site.d_in || rank_up != rank {
            return Err(LoraError::ShapeMismatch {
                key: format!("{path}.down"),
                expected: vec![site.d_in, rank_up],
                found: vec![d_in, rank],
            });
        }
        if d_out != site.d_out {
            return Err(LoraError::ShapeMismatch {
                key: format!("{path}.up"),
                expected: vec![rank, site.d_out],
                found: vec![rank_up, d_out],
            });
        }
    }
    Ok(())
}

/// Attaches one bank per entry of `layers` (validated first, so a misfit changes nothing).
pub(crate) fn attach_layers<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
    layers: &BTreeMap<String, LoraFactors<B>>,
    scale: f64,
) -> Result<()> {
    check_layers_fit(layers, &projection_sites(unet))?;
    visit_projections_mut(unet, |site, projection| {
        if let Some(factors) = layers.get(&site.path) {
            let bank = LowRankBank::new(factors.down.clone(), factors.up.clone(), scale)?;
            projection.set_bank(bank)?;
        }
        Ok::<(), LoraError>(())
    })
}
