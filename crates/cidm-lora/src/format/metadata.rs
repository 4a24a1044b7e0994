//! The adapter config inside a LoRA file.
//!
//! Written: the safetensors `__metadata__` holds `format: pt`, diffusers'
//! `lora_adapter_metadata` (a JSON object of PEFT `LoraConfig` fields prefixed `unet.`, which
//! diffusers' `load_lora_weights` turns back into a `LoraConfig`, so alpha survives the trip)
//! and `cidm_lora_config` (this crate's [`LoraConfig`], with the target rule and init seed
//! PEFT has no field for).
//!
//! Read, in order of precedence: `cidm_lora_config`; `lora_adapter_metadata` (prefixed or
//! not); a PEFT `adapter_config.json` beside the file; else nothing (kohya alphas or
//! alpha = rank, as diffusers assumes).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::LoraConfig;
use crate::error::{LoraError, Result};

/// diffusers' metadata key (`LORA_ADAPTER_METADATA_KEY`).
pub(crate) const DIFFUSERS_KEY: &str = "lora_adapter_metadata";
/// This crate's metadata key.
pub(crate) const CIDM_KEY: &str = "cidm_lora_config";

/// The `__metadata__` of a file written for `config` adapting `paths`.
pub(crate) fn build(config: &LoraConfig, paths: &[&str]) -> Result<BTreeMap<String, String>> {
    let targets: Vec<Value> = paths.iter().map(|p| Value::from(*p)).collect();
    // PEFT LoraConfig fields; keys inserted in sorted order so that the JSON is the same with
    // or without serde_json's `preserve_order`.
    let fields = [
        ("unet.bias", Value::from("none")),
        ("unet.lora_alpha", Value::from(config.alpha)),
        ("unet.lora_dropout", Value::from(0.0)),
        ("unet.peft_type", Value::from("LORA")),
        ("unet.r", Value::from(config.rank)),
        ("unet.target_modules", Value::Array(targets)),
        ("unet.use_dora", Value::from(false)),
        ("unet.use_rslora", Value::from(false)),
    ];
    let peft: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let to_json = |value: serde_json::Result<String>| {
        value.map_err(|e| LoraError::InvalidConfig(format!("cannot serialise the config: {e}")))
    };
    Ok(BTreeMap::from([
        (
            CIDM_KEY.to_string(),
            to_json(serde_json::to_string(config))?,
        ),
        ("format".to_string(), "pt".to_string()),
        (
            DIFFUSERS_KEY.to_string(),
            to_json(serde_json::to_string_pretty(&Value::Object(peft)))?,
        ),
    ]))
}

/// What a file declares about its adapter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Declared {
    /// A file this crate wrote: the full config.
    Cidm(LoraConfig),
    /// A PEFT / diffusers config: rank and alpha where given.
    Peft {
        rank: Option<usize>,
        alpha: Option<f64>,
    },
    /// Nothing: the factors (and kohya alphas) must speak for themselves.
    Nothing,
}

/// Reads the declared config of the LoRA file at `path` from its metadata or a PEFT
/// `adapter_config.json` beside it.
pub(crate) fn declared(path: &Path, metadata: &BTreeMap<String, String>) -> Result<Declared> {
    let corrupt = |what: &str, e: serde_json::Error| LoraError::CorruptFile {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    if let Some(text) = metadata.get(CIDM_KEY) {
        let config: LoraConfig = serde_json::from_str(text).map_err(|e| corrupt(CIDM_KEY, e))?;
        config.validate()?;
        return Ok(Declared::Cidm(config));
    }
    if let Some(text) = metadata.get(DIFFUSERS_KEY) {
        let value: Value = serde_json::from_str(text).map_err(|e| corrupt(DIFFUSERS_KEY, e))?;
        return peft_settings(path, &value, "unet.");
    }
    let beside = path.with_file_name("adapter_config.json");
    if beside.is_file() {
        let text = std::fs::read_to_string(&beside).map_err(|source| LoraError::Io {
            path: beside.clone(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| LoraError::CorruptFile {
            path: beside.clone(),
            reason: format!("adapter_config.json: {e}"),
        })?;
        return peft_settings(&beside, &value, "");
    }
    Ok(Declared::Nothing)
}

/// Rank and alpha of a PEFT `LoraConfig` dict whose keys may carry `prefix`; errors for the
/// LoRA variants this crate does not implement.
fn peft_settings(path: &Path, value: &Value, prefix: &str) -> Result<Declared> {
    let Some(object) = value.as_object() else {
        return Err(LoraError::CorruptFile {
            path: path.to_path_buf(),
            reason: "the LoRA config is not a JSON object".into(),
        });
    };
    let get = |field: &str| {
        object
            .get(&format!("{prefix}{field}"))
            .or_else(|| object.get(field))
    };
    let unsupported = |feature: String| LoraError::Unsupported {
        path: path.to_path_buf(),
        feature,
    };
    for flag in ["use_dora", "use_rslora", "lora_bias", "fan_in_fan_out"] {
        if get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(unsupported(format!("`{flag}` is true")));
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if get(pattern)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(unsupported(format!("`{pattern}` is not empty")));
        }
    }
    let number = |field: &str| -> Result<Option<f64>> {
        match get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| LoraError::CorruptFile {
                path: path.to_path_buf(),
                reason: format!("`{field}` is {v}, not a number"),
            }),
        }
    };
    let rank = match number("r")? {
        Some(r) if r >= 1.0 && r.fract() == 0.0 => Some(r as usize),
        Some(r) => {
            return Err(LoraError::CorruptFile {
                path: path.to_path_buf(),
                reason: format!("`r` is {r}, not a positive integer"),
            })
        }
        None => None,
    };
    Ok(Declared::Peft {
        rank,
        alpha: number("lora_alpha")?,
    })
}
