//! The key conventions of LoRA files for a Stable Diffusion UNet, and their parsing.
//!
//! | writer | down factor key | up factor key | alpha |
//! |---|---|---|---|
//! | diffusers `save_lora_weights` of a PEFT state dict | `unet.<module>.lora_A.weight` `[r, in]` | `unet.<module>.lora_B.weight` `[out, r]` | metadata `lora_adapter_metadata` |
//! | diffusers training scripts (`convert_state_dict_to_diffusers`) | `unet.<module>.lora.down.weight` | `unet.<module>.lora.up.weight` | metadata |
//! | `unet.save_lora_adapter`, `get_peft_model_state_dict` | `<module>.lora_A.weight` | `<module>.lora_B.weight` | metadata, unprefixed |
//! | PEFT `save_pretrained` | `base_model.model.<module>.lora_A.weight` | `...lora_B.weight` | `adapter_config.json` beside |
//! | kohya sd-scripts | `lora_unet_<module with _>.lora_down.weight` | `.lora_up.weight` | `.alpha` scalar per module |
//!
//! `<module>` is the full diffusers path, e.g.
//! `down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q`. Keys of other pipeline
//! components (the text encoders) are recognised so that they can be skipped.

/// Which value of a module a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// PEFT `lora_A`, kohya `lora_down`: `[r, in]`.
    Down,
    /// PEFT `lora_B`, kohya `lora_up`: `[out, r]`.
    Up,
    /// The module's alpha, a scalar (kohya and old diffusers files).
    Alpha,
}

/// What a key is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParsedKey {
    /// A UNet module's factor, named by its diffusers path.
    Module { path: String, role: Role },
    /// A UNet module's factor, named the kohya way (dots replaced by underscores), which only
    /// the model's own module names can resolve.
    KohyaModule { name: String, role: Role },
    /// A key of another component (text encoder), not for the UNet.
    OtherComponent,
}

/// The key prefix diffusers writes before UNet keys.
pub(crate) const UNET_PREFIX: &str = "unet.";

const OTHER_COMPONENT_PREFIXES: [&str; 5] = [
    "text_encoder.",
    "text_encoder_2.",
    "lora_te_",
    "lora_te1_",
    "lora_te2_",
];

/// Parses one key; `None` when it is not a LoRA key in any known convention.
pub(crate) fn parse(key: &str) -> Option<ParsedKey> {
    if OTHER_COMPONENT_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return Some(ParsedKey::OtherComponent);
    }
    if let Some(rest) = key.strip_prefix("lora_unet_") {
        let (name, suffix) = rest.split_once('.')?;
        let role = match suffix {
            "lora_down.weight" => Role::Down,
            "lora_up.weight" => Role::Up,
            "alpha" => Role::Alpha,
            _ => return None,
        };
        return Some(ParsedKey::KohyaModule {
            name: name.to_string(),
            role,
        });
    }
    let rest = key
        .strip_prefix(UNET_PREFIX)
        .or_else(|| key.strip_prefix("base_model.model."))
        .unwrap_or(key);
    const SUFFIXES: [(&str, Role); 5] = [
        (".lora_A.weight", Role::Down),
        (".lora_B.weight", Role::Up),
        (".lora.down.weight", Role::Down),
        (".lora.up.weight", Role::Up),
        (".alpha", Role::Alpha),
    ];
    SUFFIXES.iter().find_map(|(suffix, role)| {
        rest.strip_suffix(suffix)
            .filter(|path| !path.is_empty())
            .map(|path| ParsedKey::Module {
                path: path.to_string(),
                role: *role,
            })
    })
}

/// The kohya name of a module path: dots become underscores.
pub(crate) fn kohya_name(path: &str) -> String {
    path.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0";

    fn module(role: Role) -> Option<ParsedKey> {
        Some(ParsedKey::Module {
            path: PATH.into(),
            role,
        })
    }

    #[test]
    fn every_convention_parses() {
        assert_eq!(
            parse(&format!("unet.{PATH}.lora_A.weight")),
            module(Role::Down)
        );
        assert_eq!(
            parse(&format!("unet.{PATH}.lora_B.weight")),
            module(Role::Up)
        );
        assert_eq!(parse(&format!("{PATH}.lora_A.weight")), module(Role::Down));
        assert_eq!(
            parse(&format!("base_model.model.{PATH}.lora_B.weight")),
            module(Role::Up)
        );
        assert_eq!(
            parse(&format!("unet.{PATH}.lora.down.weight")),
            module(Role::Down)
        );
        assert_eq!(
            parse(&format!("unet.{PATH}.lora.up.weight")),
            module(Role::Up)
        );
        assert_eq!(parse(&format!("unet.{PATH}.alpha")), module(Role::Alpha));
        let kohya = kohya_name(PATH);
        assert_eq!(
            parse(&format!("lora_unet_{kohya}.lora_down.weight")),
            Some(ParsedKey::KohyaModule {
                name: kohya.clone(),
                role: Role::Down
            })
        );
        assert_eq!(
            parse(&format!("lora_unet_{kohya}.alpha")),
            Some(ParsedKey::KohyaModule {
                name: kohya,
                role: Role::Alpha
            })
        );
        assert_eq!(
            parse("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"),
            Some(ParsedKey::OtherComponent)
        );
        assert_eq!(parse(&format!("unet.{PATH}.weight")), None);
        assert_eq!(parse(&format!("unet.{PATH}.lora_magnitude_vector")), None);
        assert_eq!(parse("lora_unet_x.lora_mid.weight"), None);
        assert_eq!(parse(".lora_A.weight"), None);
    }
}
