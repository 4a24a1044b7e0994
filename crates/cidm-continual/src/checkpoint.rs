//! Training checkpoints and R2's state as safetensors files.
//!
//! A checkpoint is one file, replaced atomically, holding everything a resumed run needs: the
//! LoRA factors (core layout, `lora.<module path>.down|up`), the token rows (`tokens`), the
//! AdamW moments of both optimizers (`adam.lora.<name>.m1|m2`, `adam.tokens.m1|m2`), R2's
//! state (`r2.*`) and, in the `cidm.checkpoint` metadata entry, the step, the words and the
//! training config as JSON. f32 values are stored exactly, so resuming on the same backend
//! continues bit for bit.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::precision::param_from_data;
use cidm_lora::tensor_file::{self, RawFile, RawTensor};
use cidm_lora::{AdamMoments, LoraAdapter, LoraConfig, LoraFactors};
use serde::{Deserialize, Serialize};

use crate::common_subspace::{CommonSubspace, ExactCommonSubspace, FactorisedCommonSubspace};
use crate::config::R2Variant;
use crate::error::{Error, Result};
use crate::trainer::TaskWords;
use crate::training_config::TaskTrainingConfig;

/// Metadata key of a checkpoint's JSON header.
const CHECKPOINT_KEY: &str = "cidm.checkpoint";
/// Metadata key of an R2 state file's JSON header.
const SUBSPACE_KEY: &str = "cidm.r2";

/// Everything a task's training needs to continue.
#[derive(Debug, Clone)]
pub struct TrainingState<B: Backend> {
    /// Steps taken.
    pub step: usize,
    /// The LoRA as trained so far.
    pub adapter: LoraAdapter<B>,
    /// Token rows `[words, layers, hidden]`.
    pub tokens: Tensor<B, 3>,
    /// AdamW moments of the LoRA factors, by `<module path>.down|up`.
    pub lora_moments: BTreeMap<String, AdamMoments>,
    /// AdamW moments of the tokens.
    pub token_moments: BTreeMap<String, AdamMoments>,
    /// R2's state, for methods with R2.
    pub subspace: Option<CommonSubspace<B>>,
}

/// The JSON header of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointHeader {
    /// Steps taken.
    pub step: usize,
    /// Concept words.
    pub words: Vec<String>,
    /// Class words.
    pub classes: Vec<String>,
    /// The training config.
    pub config: TaskTrainingConfig,
    /// The LoRA's config (its init seed is the task's).
    pub lora: LoraConfig,
    /// AdamW step counts by parameter name (`lora.<name>` or `tokens.<name>`).
    pub adam_times: BTreeMap<String, usize>,
    /// R2's layout, for methods with R2.
    pub r2: Option<SubspaceHeader>,
}

/// The layout of a stored R2 state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubspaceHeader {
    /// Exact or factorised.
    pub variant: R2Variant,
    /// Tasks with a transform.
    pub tasks: usize,
    /// Adapted projections (layers), in module-path order.
    pub layers: usize,
}

/// Writes a checkpoint atomically: a crash or a full disk leaves the previous one intact.
pub fn write_checkpoint<B: Backend>(
    path: &Path,
    state: &TrainingState<B>,
    words: &TaskWords,
    config: &TaskTrainingConfig,
) -> Result<()> {
    let mut file = RawFile::default();
    insert_adapter(&mut file, &state.adapter)?;
    file.tensors.insert("tokens".into(), raw(&state.tokens)?);
    let mut adam_times = BTreeMap::new();
    for (group, moments) in [
        ("lora", &state.lora_moments),
        ("tokens", &state.token_moments),
    ] {
        for (name, m) in moments {
            let key = format!("{group}.{name}");
            file.tensors
                .insert(format!("adam.{key}.m1"), raw_data(&m.moment_1)?);
            file.tensors
                .insert(format!("adam.{key}.m2"), raw_data(&m.moment_2)?);
            adam_times.insert(key, m.time);
        }
    }
    let r2 = match &state.subspace {
        Some(subspace) => Some(insert_subspace(&mut file, subspace)?),
        None => None,
    };
    let header = CheckpointHeader {
        step: state.step,
        words: words.words.clone(),
        classes: words.classes.clone(),
        config: config.clone(),
        lora: state.adapter.config().clone(),
        adam_times,
        r2,
    };
    file.metadata
        .insert(CHECKPOINT_KEY.into(), to_json(&header)?);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    tensor_file::write(path, &file)?;
    Ok(())
}

/// Reads a checkpoint written by [`write_checkpoint`] onto `device`.
pub fn read_checkpoint<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(CheckpointHeader, TrainingState<B>)> {
    let mut file = tensor_file::read(path)?;
    let header: CheckpointHeader = from_json(path, &file.metadata, CHECKPOINT_KEY)?;
    let adapter = take_adapter(path, &mut file.tensors, header.lora.clone(), device)?;
    let mut take = |name: &str| take_tensor(path, &mut file.tensors, name);
    let tokens = tensor::<B, 3>(path, take("tokens")?, device)?;
    let mut lora_moments = BTreeMap::new();
    let mut token_moments = BTreeMap::new();
    for (key, &time) in &header.adam_times {
        let moments = AdamMoments {
            time,
            moment_1: data(path, take(&format!("adam.{key}.m1"))?)?,
            moment_2: data(path, take(&format!("adam.{key}.m2"))?)?,
        };
        match key.split_once('.') {
            Some(("lora", name)) => lora_moments.insert(name.to_string(), moments),
            Some(("tokens", name)) => token_moments.insert(name.to_string(), moments),
            _ => return Err(corrupt(path, format!("unknown optimizer group in {key:?}"))),
        };
    }
    let subspace = match &header.r2 {
        Some(layout) => Some(take_subspace(path, &mut file.tensors, layout, device)?),
        None => None,
    };
    Ok((
        header.clone(),
        TrainingState {
            step: header.step,
            adapter,
            tokens,
            lora_moments,
            token_moments,
            subspace,
        },
    ))
}

/// Writes R2's state alone (the store keeps it between tasks), atomically.
pub fn write_subspace<B: Backend>(path: &Path, subspace: &CommonSubspace<B>) -> Result<()> {
    let mut file = RawFile::default();
    let header = insert_subspace(&mut file, subspace)?;
    file.metadata.insert(SUBSPACE_KEY.into(), to_json(&header)?);
    tensor_file::write(path, &file)?;
    Ok(())
}

/// Reads R2's state written by [`write_subspace`].
pub fn read_subspace<B: Backend>(path: &Path, device: &B::Device) -> Result<CommonSubspace<B>> {
    let mut file = tensor_file::read(path)?;
    let header: SubspaceHeader = from_json(path, &file.metadata, SUBSPACE_KEY)?;
    take_subspace(path, &mut file.tensors, &header, device)
}

/// Per-task tensor lists of R2's state by name (`h`, or `u` and `v`).
type NamedTasks<'a, B> = (&'static str, &'a [Vec<Tensor<B, 2>>]);

fn insert_subspace<B: Backend>(
    file: &mut RawFile,
    subspace: &CommonSubspace<B>,
) -> Result<SubspaceHeader> {
    let (variant, w_star, per_task): (R2Variant, &[Tensor<B, 2>], Vec<NamedTasks<'_, B>>) =
        match subspace {
            CommonSubspace::Exact(s) => (R2Variant::Exact, &s.w_star, vec![("h", &s.h)]),
            CommonSubspace::Factorised(s) => (
                R2Variant::Factorised { rank: s.rank() },
                &s.w_star,
                vec![("u", &s.u), ("v", &s.v)],
            ),
        };
    for (l, w) in w_star.iter().enumerate() {
        file.tensors.insert(format!("r2.w_star.{l}"), raw(w)?);
    }
    for (name, tasks) in per_task {
        for (i, task) in tasks.iter().enumerate() {
            for (l, t) in task.iter().enumerate() {
                file.tensors.insert(format!("r2.{name}.{i}.{l}"), raw(t)?);
            }
        }
    }
    Ok(SubspaceHeader {
        variant,
        tasks: subspace.tasks(),
        layers: w_star.len(),
    })
}

fn take_subspace<B: Backend>(
    path: &Path,
    tensors: &mut BTreeMap<String, RawTensor>,
    header: &SubspaceHeader,
    device: &B::Device,
) -> Result<CommonSubspace<B>> {
    let mut take = |name: String| -> Result<Tensor<B, 2>> {
        tensor::<B, 2>(path, take_tensor(path, tensors, &name)?, device)
    };
    let w_star = (0..header.layers)
        .map(|l| take(format!("r2.w_star.{l}")))
        .collect::<Result<Vec<_>>>()?;
    let mut per_task = |name: &str| -> Result<Vec<Vec<Tensor<B, 2>>>> {
        (0..header.tasks)
            .map(|i| {
                (0..header.layers)
                    .map(|l| take(format!("r2.{name}.{i}.{l}")))
                    .collect()
            })
            .collect()
    };
    let subspace = match header.variant {
        R2Variant::Exact => {
            let h = per_task("h")?;
            let fits = h
                .iter()
                .flatten()
                .zip(w_star.iter().cycle())
                .all(|(h, w)| h.dims() == [w.dims()[0], w.dims()[0]]);
            if !fits {
                return Err(corrupt(path, "an H_i does not fit its W*".into()));
            }
            CommonSubspace::Exact(ExactCommonSubspace { w_star, h })
        }
        R2Variant::Factorised { rank } => {
            let u = per_task("u")?;
            let v = per_task("v")?;
            CommonSubspace::Factorised(FactorisedCommonSubspace::from_parts(w_star, u, v, rank)?)
        }
    };
    Ok(subspace)
}

/// Adds an adapter's factors in the core layout as `lora.<module path>.down|up`.
pub(crate) fn insert_adapter<B: Backend>(
    file: &mut RawFile,
    adapter: &LoraAdapter<B>,
) -> Result<()> {
    for (name, factors) in adapter.layers() {
        file.tensors
            .insert(format!("lora.{name}.down"), raw(&factors.down)?);
        file.tensors
            .insert(format!("lora.{name}.up"), raw(&factors.up)?);
    }
    Ok(())
}

/// Takes the factors [`insert_adapter`] wrote.
pub(crate) fn take_adapter<B: Backend>(
    path: &Path,
    tensors: &mut BTreeMap<String, RawTensor>,
    config: LoraConfig,
    device: &B::Device,
) -> Result<LoraAdapter<B>> {
    let names: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("lora.")?.strip_suffix(".down"))
        .map(str::to_string)
        .collect();
    let mut layers = BTreeMap::new();
    for name in names {
        let down = tensor::<B, 2>(
            path,
            take_tensor(path, tensors, &format!("lora.{name}.down"))?,
            device,
        )?;
        let up = tensor::<B, 2>(
            path,
            take_tensor(path, tensors, &format!("lora.{name}.up"))?,
            device,
        )?;
        layers.insert(name, LoraFactors { down, up });
    }
    Ok(LoraAdapter::new(config, layers)?)
}

pub(crate) fn take_tensor(
    path: &Path,
    tensors: &mut BTreeMap<String, RawTensor>,
    name: &str,
) -> Result<RawTensor> {
    tensors
        .remove(name)
        .ok_or_else(|| corrupt(path, format!("tensor {name:?} is missing")))
}

pub(crate) fn raw<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Result<RawTensor> {
    raw_data(&tensor.to_data())
}

pub(crate) fn raw_data(data: &TensorData) -> Result<RawTensor> {
    let values = data
        .clone()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("reading a tensor: {e:?}")))?;
    Ok(RawTensor {
        shape: data.shape.to_vec(),
        values,
    })
}

pub(crate) fn data(path: &Path, raw: RawTensor) -> Result<TensorData> {
    if raw.shape.iter().product::<usize>() != raw.values.len() {
        return Err(corrupt(
            path,
            format!(
                "a tensor of shape {:?} has {} values",
                raw.shape,
                raw.values.len()
            ),
        ));
    }
    Ok(TensorData::new(raw.values, raw.shape))
}

pub(crate) fn tensor<B: Backend, const D: usize>(
    path: &Path,
    raw: RawTensor,
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    if raw.shape.len() != D {
        return Err(corrupt(
            path,
            format!(
                "a tensor of shape {:?} where rank {D} was expected",
                raw.shape
            ),
        ));
    }
    // Everything these files hold is trainable state: f32 whatever the device's default.
    Ok(param_from_data(data(path, raw)?, device))
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidInput(format!("serialising: {e}")))
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    key: &str,
) -> Result<T> {
    let text = metadata.get(key).ok_or_else(|| {
        corrupt(
            path,
            format!("no {key:?} metadata: not written by this crate"),
        )
    })?;
    serde_json::from_str(text).map_err(|e| corrupt(path, format!("{key}: {e}")))
}

pub(crate) fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}
