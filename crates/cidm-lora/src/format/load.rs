//! Loading a LoRA file against a model: every key is resolved to one of the model's
//! projections and every shape checked before any tensor is built, so a file that does not
//! fit fails with the first mismatch in key order and nothing half-loaded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use cidm_diffusion::precision::param_from_data;
use cidm_diffusion::UNet2DConditionModel;

use super::keys::{self, ParsedKey, Role};
use super::metadata::{self, Declared};
use super::tensor_file::{self, RawTensor};
use super::transposed;
use crate::adapter::{LoraAdapter, LoraFactors};
use crate::config::{LoraConfig, LoraTargets};
use crate::error::{LoraError, Result};
use crate::sites::{projection_sites, ProjectionSite};

/// The keys a file holds for one module.
struct ModuleKeys<'a> {
    site: &'a ProjectionSite,
    down: Option<(&'a str, &'a RawTensor)>,
    up: Option<(&'a str, &'a RawTensor)>,
    alpha: Option<(&'a str, &'a RawTensor)>,
}

/// One module, checked: its factors and its own alpha if the file gives one.
struct CheckedModule<'a> {
    site: &'a ProjectionSite,
    down: &'a RawTensor,
    up: &'a RawTensor,
    alpha: Option<f64>,
}

pub(super) fn load<B: Backend>(
    path: &Path,
    unet: &UNet2DConditionModel<B>,
    device: &B::Device,
) -> Result<LoraAdapter<B>> {
    let raw = tensor_file::read(path)?;
    let sites = projection_sites(unet);
    let modules = resolve_keys(path, &raw.tensors, &sites)?;
    let declared = metadata::declared(path, &raw.metadata)?;
    let declared_rank = match &declared {
        Declared::Cidm(config) => Some(config.rank),
        Declared::Peft { rank, .. } => *rank,
        Declared::Nothing => None,
    };
    let (rank, checked) = check_modules(path, &modules, declared_rank)?;

    let declared_alpha = match &declared {
        Declared::Cidm(config) => Some(config.alpha),
        Declared::Peft { alpha, .. } => *alpha,
        Declared::Nothing => None,
    };
    // Modules without their own alpha use the declared one, else kohya's default: the rank.
    let default_alpha = declared_alpha.unwrap_or(rank as f64);
    let alpha = declared_alpha
        .or_else(|| checked.values().next().and_then(|m| m.alpha))
        .unwrap_or(default_alpha);

    let mut layers = BTreeMap::new();
    for (module, m) in &checked {
        let module_alpha = m.alpha.unwrap_or(default_alpha);
        let ratio = if module_alpha == alpha {
            1.0
        } else if alpha != 0.0 {
            (module_alpha / alpha) as f32
        } else {
            return Err(LoraError::Unsupported {
                path: path.to_path_buf(),
                feature: format!("module `{module}` has alpha {module_alpha} beside alpha 0"),
            });
        };
        let (d_in, d_out) = (m.site.d_in, m.site.d_out);
        let down = transposed(m.down.values.clone(), rank, d_in);
        let up_values: Vec<f32> = m.up.values.iter().map(|v| v * ratio).collect();
        let up = transposed(up_values, d_out, rank);
        layers.insert(
            module.clone(),
            LoraFactors {
                down: param_from_data(TensorData::new(down, [d_in, rank]), device),
                up: param_from_data(TensorData::new(up, [rank, d_out]), device),
            },
        );
    }

    let paths: Vec<String> = checked.keys().cloned().collect();
    let (targets, init_seed) = match declared {
        Declared::Cidm(config) => {
            let selects_file = {
                let selected: Vec<&str> = sites
                    .iter()
                    .filter(|s| config.targets.matches(s))
                    .map(|s| s.path.as_str())
                    .collect();
                selected.len() == paths.len()
                    && paths.iter().all(|p| selected.contains(&p.as_str()))
            };
            let targets = if selects_file {
                config.targets
            } else {
                LoraTargets::describing(&paths, &sites)
            };
            (targets, config.init_seed)
        }
        _ => (LoraTargets::describing(&paths, &sites), 0),
    };
    let config = LoraConfig {
        rank,
        alpha,
        targets,
        init_seed,
    };
    LoraAdapter::new(config, layers)
}

/// Groups the file's keys by the model projection they belong to; errors on keys that are not
/// LoRA keys, modules the model lacks and duplicate factors. Other components' keys are
/// skipped with a warning.
fn resolve_keys<'a>(
    path: &Path,
    tensors: &'a BTreeMap<String, RawTensor>,
    sites: &'a [ProjectionSite],
) -> Result<BTreeMap<String, ModuleKeys<'a>>> {
    let by_path: HashMap<&str, &ProjectionSite> =
        sites.iter().map(|s| (s.path.as_str(), s)).collect();
    let by_kohya: HashMap<String, &ProjectionSite> = sites
        .iter()
        .map(|s| (keys::kohya_name(&s.path), s))
        .collect();
    let mut modules: BTreeMap<String, ModuleKeys<'a>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (key, tensor) in tensors {
        let unrecognized = || LoraError::UnrecognizedKey {
            path: path.to_path_buf(),
            key: key.clone(),
        };
        let unknown = |module: &str| LoraError::UnknownModule {
            key: key.clone(),
            module: module.to_string(),
        };
        let (site, role) = match keys::parse(key).ok_or_else(unrecognized)? {
            ParsedKey::OtherComponent => {
                skipped.push(key.as_str());
                continue;
            }
            ParsedKey::Module { path: module, role } => (
                *by_path
                    .get(module.as_str())
                    .ok_or_else(|| unknown(&module))?,
                role,
            ),
            ParsedKey::KohyaModule { name, role } => {
                (*by_kohya.get(&name).ok_or_else(|| unknown(&name))?, role)
            }
        };
        let entry = modules.entry(site.path.clone()).or_insert(ModuleKeys {
            site,
            down: None,
            up: None,
            alpha: None,
        });
        let slot = match role {
            Role::Down => &mut entry.down,
            Role::Up => &mut entry.up,
            Role::Alpha => &mut entry.alpha,
        };
        if let Some((other, _)) = slot {
            return Err(LoraError::CorruptFile {
                path: path.to_path_buf(),
                reason: format!(
                    "`{other}` and `{key}` hold the same value of `{}`",
                    site.path
                ),
            });
        }
        *slot = Some((key.as_str(), tensor));
    }
    if !skipped.is_empty() {
        tracing::warn!(
            file = %path.display(),
            count = skipped.len(),
            first = skipped[0],
            "skipping LoRA keys of other pipeline components (text encoders)"
        );
    }
    if modules.is_empty() {
        return Err(LoraError::InvalidInput(format!(
            "{}: the file holds no UNet LoRA factors",
            path.display()
        )));
    }
    Ok(modules)
}

/// Checks each module's factors: both present, 2-D, one rank for all modules (the declared one
/// if any), and sizes that fit the projection. Returns the rank and the checked modules.
fn check_modules<'a>(
    path: &Path,
    modules: &BTreeMap<String, ModuleKeys<'a>>,
    declared_rank: Option<usize>,
) -> Result<(usize, BTreeMap<String, CheckedModule<'a>>)> {
    let mut rank = declared_rank;
    let mut checked = BTreeMap::new();
    for (module, keys) in modules {
        let missing = |factor: &'static str| LoraError::MissingFactor {
            path: path.to_path_buf(),
            module: module.clone(),
            factor,
        };
        let (down_key, down) = keys.down.ok_or_else(|| missing("down (lora_A)"))?;
        let (up_key, up) = keys.up.ok_or_else(|| missing("up (lora_B)"))?;
        let site = keys.site;
        let found_rank = match down.shape.as_slice() {
            [r, _] => *r,
            _ => {
                return Err(LoraError::ShapeMismatch {
                    key: down_key.to_string(),
                    expected: vec![rank.unwrap_or(0), site.d_in],
                    found: down.shape.clone(),
                })
            }
        };
        let expected_rank = *rank.get_or_insert(found_rank);
        if found_rank != expected_rank {
            return Err(LoraError::RankMismatch {
                key: down_key.to_string(),
                expected: expected_rank,
                found: found_rank,
            });
        }
        for (key, tensor, expected) in [
            (down_key, down, vec![expected_rank, site.d_in]),
            (up_key, up, vec![site.d_out, expected_rank]),
        ] {
            if tensor.shape != expected {
                return Err(LoraError::ShapeMismatch {
                    key: key.to_string(),
                    expected,
                    found: tensor.shape.clone(),
                });
            }
        }
        let alpha = match keys.alpha {
            None => None,
            Some((key, tensor)) => match tensor.values.as_slice() {
                [value] if value.is_finite() => Some(f64::from(*value)),
                [value] => {
                    return Err(LoraError::CorruptFile {
                        path: path.to_path_buf(),
                        reason: format!("`{key}` is {value}"),
                    })
                }
                _ => {
                    return Err(LoraError::ShapeMismatch {
                        key: key.to_string(),
                        expected: vec![],
                        found: tensor.shape.clone(),
                    })
                }
            },
        };
        checked.insert(
            module.clone(),
            CheckedModule {
                site,
                down,
                up,
                alpha,
            },
        );
    }
    // `modules` is non-empty, so the first module set the rank.
    let rank = rank.unwrap_or(0);
    if rank == 0 {
        return Err(LoraError::CorruptFile {
            path: path.to_path_buf(),
            reason: "the factors have rank 0".into(),
        });
    }
    Ok((rank, checked))
}
