//! A diffusers model directory: `model_index.json` naming the components, each in its own
//! folder with a `config.json` and safetensors weights (single file, variant such as `fp16`,
//! or shards with an index).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::json::read_json;
use super::SafetensorsWeights;
use crate::error::{Error, Result};

/// An opened diffusers model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
    /// Component name to `[library, class]`, as `model_index.json` lists them.
    components: BTreeMap<String, (String, String)>,
}

impl ModelDir {
    /// Opens `root` and reads its `model_index.json`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::Io {
                path: root,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        let index_path = root.join("model_index.json");
        let raw: BTreeMap<String, serde_json::Value> = read_json(&index_path)?;
        let components = raw
            .into_iter()
            .filter(|(key, _)| !key.starts_with('_'))
            .filter_map(|(key, value)| match value {
                serde_json::Value::Array(pair) => match pair.as_slice() {
                    [serde_json::Value::String(lib), serde_json::Value::String(class)] => {
                        Some((key, (lib.clone(), class.clone())))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok(Self { root, components })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class `model_index.json` gives for `component` (e.g. `UNet2DConditionModel`).
    pub fn class_of(&self, component: &str) -> Option<&str> {
        self.components
            .get(component)
            .map(|(_, class)| class.as_str())
    }

    /// The folder of `component` after checking that `model_index.json` lists it with class
    /// `class`.
    pub fn component(&self, component: &str, class: &str) -> Result<PathBuf> {
        match self.class_of(component) {
            Some(found) if found == class => Ok(self.root.join(component)),
            Some(found) => Err(Error::unsupported(
                self.root.join("model_index.json"),
                component,
                found,
                class,
            )),
            None => Err(Error::config(
                self.root.join("model_index.json"),
                format!("no `{component}` component is listed"),
            )),
        }
    }

    /// The folder and the weights of a component, after checking its class: what every
    /// model's `from_model_dir` needs (the config is at `folder/config.json`).
    pub fn open_component(
        &self,
        component: &str,
        class: &str,
        weights_stem: &str,
        variant: Option<&str>,
    ) -> Result<(PathBuf, SafetensorsWeights)> {
        let folder = self.component(component, class)?;
        let weights = Self::weights(&folder, weights_stem, variant)?;
        Ok((folder, weights))
    }

    /// Opens the safetensors weights of a component folder: `{stem}.safetensors`, or the
    /// `variant` (`{stem}.fp16.safetensors`), or a sharded `{stem}.safetensors.index.json`.
    pub fn weights(folder: &Path, stem: &str, variant: Option<&str>) -> Result<SafetensorsWeights> {
        let name = match variant {
            Some(v) => format!("{stem}.{v}.safetensors"),
            None => format!("{stem}.safetensors"),
        };
        let single = folder.join(&name);
        if single.is_file() {
            return SafetensorsWeights::open(single);
        }
        let index = folder.join(format!("{name}.index.json"));
        if index.is_file() {
            return SafetensorsWeights::open_sharded(index);
        }
        Err(Error::Io {
            path: single,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no safetensors weights (single file or sharded index) in the component folder",
            ),
        })
    }
}
