//! Naming every parameter of this project's modules as the diffusers/transformers checkpoint
//! does, so a trained model can be written in the layout that both this project's loader and
//! diffusers read.
//!
//! The core's module tree mirrors the checkpoint's key tree (DESIGN.md), so a parameter's
//! diffusers name is its module path with a few structural differences undone:
//! burn stores linear weights `[in, out]` (PyTorch: `[out, in]`) and calls group-norm
//! affines `gamma`/`beta`; an adaptable projection wraps its linear in `base`; a transformer's
//! input projection is an enum (conv or linear); some single children are stored as a field
//! where diffusers has a one-element list (`to_out.0`, `downsamplers.0`, the VAE's
//! `attentions.0`), and the feed-forward and CLIP layers sit under other names. Loading the
//! written file back with the project's loader, which rejects missing, extra and misshaped
//! tensors, checks the naming end to end (tests/export_roundtrip.rs).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use cidm_lora::tensor_file::{RawFile, RawTensor};

use crate::error::{PretrainError, Result};

/// One step of a module path: the field or index name and the container it belongs to
/// (`Struct:Linear`, `Vec`, `Enum:Projection`, as burn's visitor reports them).
#[derive(Debug, Clone)]
struct Segment {
    name: String,
    container: String,
}

/// The diffusers name of one module-path segment; `None` drops it.
fn rename(segment: &Segment) -> Option<String> {
    let container = segment.container.as_str();
    let name = segment.name.as_str();
    let renamed = match (container, name) {
        ("Struct:AdaptableLinear", "base") => return None,
        (c, _) if c.starts_with("Enum:") => return None,
        ("Struct:MidBlockAttention", "attention") => return None,
        ("Struct:Attention", "to_out") => "to_out.0",
        ("Struct:FeedForward", "proj") => "net.0.proj",
        ("Struct:FeedForward", "out") => "net.2",
        (_, "downsampler") => "downsamplers.0",
        (_, "upsampler") => "upsamplers.0",
        ("Struct:UNetMidBlock2D", "attention") => "attentions.0",
        ("Struct:CLIPTextModel", "layers") => "encoder.layers",
        ("Struct:GroupNorm", "gamma") => "weight",
        ("Struct:GroupNorm", "beta") => "bias",
        ("Struct:CLIPTextEmbeddings", table) => return Some(format!("{table}.weight")),
        _ => name,
    };
    Some(renamed.to_string())
}

/// Collects every float parameter under its diffusers name, in PyTorch layout.
struct Collector {
    prefix: String,
    path: Vec<Segment>,
    tensors: BTreeMap<String, RawTensor>,
    error: Option<PretrainError>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(Segment {
            name: name.to_string(),
            container: container_type.to_string(),
        });
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let parts: Vec<String> = self.path.iter().filter_map(rename).collect();
        let owner = self.path.last().map(|s| s.container.as_str());
        let raw = self.path.last().map(|s| s.name.as_str());
        let tensor = param.val();
        // burn's Linear stores `[in, out]`; checkpoints store `[out, in]`.
        let (shape, data) = if owner == Some("Struct:Linear") && raw == Some("weight") && D == 2 {
            let t = tensor.transpose();
            (t.dims().to_vec(), t.into_data())
        } else {
            (tensor.dims().to_vec(), tensor.into_data())
        };
        let name = if self.prefix.is_empty() {
            parts.join(".")
        } else {
            format!("{}.{}", self.prefix, parts.join("."))
        };
        match data.convert::<f32>().into_vec::<f32>() {
            Ok(values) => {
                if self
                    .tensors
                    .insert(name.clone(), RawTensor { shape, values })
                    .is_some()
                    && self.error.is_none()
                {
                    self.error = Some(PretrainError::UnnamedParameter(format!(
                        "{name} (two parameters map to it)"
                    )));
                }
            }
            Err(e) => {
                self.error
                    .get_or_insert(PretrainError::UnnamedParameter(format!(
                        "{name}: not readable as f32 ({e:?})"
                    )));
            }
        }
    }
}

/// Every float parameter of `module` under its checkpoint name (prefixed with `prefix.`
/// when `prefix` is not empty), as a safetensors file body with `format: pt` metadata (which
/// transformers requires).
pub fn checkpoint<B: Backend, M: Module<B>>(module: &M, prefix: &str) -> Result<RawFile> {
    let mut collector = Collector {
        prefix: prefix.to_string(),
        path: Vec::new(),
        tensors: BTreeMap::new(),
        error: None,
    };
    module.visit(&mut collector);
    if let Some(error) = collector.error {
        return Err(error);
    }
    Ok(RawFile {
        tensors: collector.tensors,
        metadata: BTreeMap::from([("format".to_string(), "pt".to_string())]),
    })
}
