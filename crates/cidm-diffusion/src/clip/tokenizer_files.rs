//! Reading a transformers CLIP tokenizer folder: the BPE vocabulary and merges (from
//! `tokenizer.json`, or `vocab.json` + `merges.txt`), the added tokens, the special tokens and
//! `model_max_length` (from `tokenizer_config.json` and `special_tokens_map.json`).
//!
//! transformers 5 builds `CLIPTokenizer` the same way whichever files it finds: the CLIP
//! pipeline is fixed by the class and only the vocabulary, merges and token lists come from
//! the files. The special-token rules below copy its `from_pretrained`, because SD folders
//! depend on them: SD 2.x pads with `!`, which thereby becomes a special token that splits
//! `!!` into two id-0 tokens, and SD 1.5's plain-string pad token makes `<|endoftext|>`
//! match case-sensitively.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokenizers::models::bpe::{Merges, Vocab};
use tokenizers::AddedToken;

use crate::error::{Error, Result};
use crate::loading::json::{read_json, read_text};

/// CLIP's context length, used when `tokenizer_config.json` declares no limit.
const CLIP_CONTEXT: usize = 77;
/// The longest `model_max_length` accepted as a real limit.
const MAX_MODEL_LENGTH: usize = 1 << 16;
/// transformers writes `1e30` for "no limit"; anything this large means the same.
const NO_LIMIT: f64 = 1e18;
/// Larger vocabularies are taken for corrupt files.
const MAX_VOCAB: usize = 1 << 20;

/// Named special tokens in transformers' attribute order, with `CLIPTokenizer`'s defaults.
/// The order matters: a content named twice keeps the flags of its last mention.
const NAMED: [(&str, Option<&str>); 7] = [
    ("bos_token", Some("<|startoftext|>")),
    ("eos_token", Some("<|endoftext|>")),
    ("unk_token", Some("<|endoftext|>")),
    ("sep_token", None),
    ("pad_token", Some("<|endoftext|>")),
    ("cls_token", None),
    ("mask_token", None),
];

/// An added token as the JSON files write it (`AddedToken` fields; `normalized` defaults to
/// `!special`, as in transformers).
#[derive(Debug, Clone, Deserialize)]
struct TokenSpec {
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    normalized: Option<bool>,
    #[serde(default)]
    special: bool,
}

impl TokenSpec {
    fn to_token(&self, special: bool) -> AddedToken {
        AddedToken {
            content: self.content.clone(),
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized.unwrap_or(!special),
            special,
        }
    }
}

/// A special token given by content alone or with its flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialValue {
    Plain(String),
    Token(TokenSpec),
}

/// The keys of `tokenizer_config.json` / `special_tokens_map.json` that matter here.
#[derive(Debug, Default, Deserialize)]
struct ConfigJson {
    model_max_length: Option<f64>,
    added_tokens_decoder: Option<BTreeMap<String, TokenSpec>>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// The part of a `tokenizer.json` transformers 5 takes for CLIP.
#[derive(Debug, Deserialize)]
struct TokenizerJson {
    model: ModelJson,
    #[serde(default)]
    added_tokens: Vec<AddedTokenJson>,
}

#[derive(Debug, Deserialize)]
struct ModelJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: Vocab,
    merges: Vec<MergeJson>,
}

/// Merges are `"a b"` strings in older files and `["a", "b"]` pairs in newer ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Joined(String),
    Pair(String, String),
}

#[derive(Debug, Deserialize)]
struct AddedTokenJson {
    id: u32,
    #[serde(flatten)]
    token: TokenSpec,
}

/// Everything a CLIP tokenizer is built from.
#[derive(Debug)]
pub(crate) struct TokenizerFiles {
    /// Token to id.
    pub vocab: Vocab,
    /// Merge rules, highest priority first.
    pub merges: Merges,
    /// Tokens added after training, in id order, with the id the files give them.
    pub added: Vec<(u32, AddedToken)>,
    /// Named special tokens in transformers' order, flags resolved.
    pub specials: Vec<(&'static str, AddedToken)>,
    /// Padded and truncated length.
    pub model_max_length: usize,
}

impl TokenizerFiles {
    /// Reads a tokenizer folder.
    pub fn read(folder: &Path) -> Result<Self> {
        let json_path = folder.join("tokenizer.json");
        let (vocab, merges, json_added) = if json_path.is_file() {
            read_tokenizer_json(&json_path)?
        } else {
            let vocab_path = folder.join("vocab.json");
            let vocab: Vocab = read_json(&vocab_path)?;
            let merges = parse_merges(&folder.join("merges.txt"))?;
            (vocab, merges, Vec::new())
        };
        check_vocab(&vocab, folder)?;

        let config_path = folder.join("tokenizer_config.json");
        let config: ConfigJson = read_optional_json(&config_path)?.unwrap_or_default();
        let model_max_length = resolve_max_length(config.model_max_length, &config_path)?;
        let mut values = named_values(&config.rest, &config_path)?;
        let mut added = match &config.added_tokens_decoder {
            Some(decoder) => decoder
                .iter()
                .map(|(id, spec)| {
                    let id = id.parse::<u32>().map_err(|_| {
                        tokenizer_error(&config_path, format!("added token id `{id}`"))
                    })?;
                    Ok((id, spec.to_token(spec.special)))
                })
                .collect::<Result<Vec<_>>>()?,
            None => {
                // transformers reads special_tokens_map.json only for folders whose config
                // has no added_tokens_decoder; its entries win over the config's.
                let map_path = folder.join("special_tokens_map.json");
                if let Some(map) = read_optional_json::<ConfigJson>(&map_path)? {
                    values.extend(named_values(&map.rest, &map_path)?);
                }
                json_added
                    .into_iter()
                    .map(|t| (t.id, t.token.to_token(t.token.special)))
                    .collect()
            }
        };
        added.sort_by_key(|(id, _)| *id);

        let specials = resolve_specials(&values, &added);
        Ok(Self {
            vocab,
            merges,
            added,
            specials,
            model_max_length,
        })
    }

    /// The resolved special token `name` (`bos_token`, ...), if the folder has one.
    pub fn special(&self, name: &str) -> Option<&AddedToken> {
        self.specials
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
    }
}

fn tokenizer_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_optional_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The named special-token entries of a config map; `null` counts as absent.
fn named_values(
    rest: &BTreeMap<String, serde_json::Value>,
    path: &Path,
) -> Result<BTreeMap<&'static str, SpecialValue>> {
    let mut values = BTreeMap::new();
    for (name, _) in NAMED {
        match rest.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(value) => {
                let parsed = serde_json::from_value(value.clone()).map_err(|e| {
                    tokenizer_error(
                        path,
                        format!("`{name}` is neither a string nor a token: {e}"),
                    )
                })?;
                values.insert(name, parsed);
            }
        }
    }
    Ok(values)
}

/// The named special tokens in transformers' order: the config's value (flags as given; a
/// plain string is a special, non-normalized token) or `CLIPTokenizer`'s default, with the
/// flags of the added-token entry of the same content where there is one.
fn resolve_specials(
    values: &BTreeMap<&'static str, SpecialValue>,
    added: &[(u32, AddedToken)],
) -> Vec<(&'static str, AddedToken)> {
    NAMED
        .iter()
        .filter_map(|&(name, default)| {
            let token = match values.get(name) {
                Some(SpecialValue::Token(spec)) => spec.to_token(true),
                Some(SpecialValue::Plain(content)) => AddedToken::from(content.clone(), true),
                None => AddedToken::from(default?, true),
            };
            let token = added
                .iter()
                .find(|(_, t)| t.content == token.content)
                .map(|(_, t)| AddedToken {
                    special: true,
                    ..t.clone()
                })
                .unwrap_or(token);
            Some((name, token))
        })
        .collect()
}

fn resolve_max_length(value: Option<f64>, path: &Path) -> Result<usize> {
    match value {
        None => Ok(CLIP_CONTEXT),
        Some(v) if v >= NO_LIMIT => {
            tracing::warn!(
                "{}: model_max_length declares no limit; using CLIP's {CLIP_CONTEXT}",
                path.display()
            );
            Ok(CLIP_CONTEXT)
        }
        Some(v) if v.fract() == 0.0 && (2.0..=MAX_MODEL_LENGTH as f64).contains(&v) => {
            Ok(v as usize)
        }
        Some(v) => Err(Error::config(
            path,
            format!("model_max_length {v} is not an integer within 2..={MAX_MODEL_LENGTH}"),
        )),
    }
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair per line.
fn parse_merges(path: &Path) -> Result<Merges> {
    let text = read_text(path)?;
    text.lines()
        .enumerate()
        .filter(|(i, line)| !(line.is_empty() || *i == 0 && line.starts_with("#version")))
        .map(
            |(i, line)| match line.split(' ').collect::<Vec<_>>().as_slice() {
                [left, right] if !left.is_empty() && !right.is_empty() => {
                    Ok((left.to_string(), right.to_string()))
                }
                _ => Err(tokenizer_error(
                    path,
                    format!("line {} is not a merge `left right`: {line:?}", i + 1),
                )),
            },
        )
        .collect()
}

fn read_tokenizer_json(path: &Path) -> Result<(Vocab, Merges, Vec<AddedTokenJson>)> {
    let json: TokenizerJson = read_json(path)?;
    if json.model.kind.as_deref().is_some_and(|kind| kind != "BPE") {
        return Err(tokenizer_error(
            path,
            format!("model type {:?}, CLIP needs BPE", json.model.kind),
        ));
    }
    let merges = json
        .model
        .merges
        .into_iter()
        .map(|merge| match merge {
            MergeJson::Pair(left, right) => Ok((left, right)),
            MergeJson::Joined(joined) => match joined.split_once(' ') {
                Some((left, right)) if !right.contains(' ') => {
                    Ok((left.to_string(), right.to_string()))
                }
                _ => Err(tokenizer_error(
                    path,
                    format!("merge {joined:?} is not `left right`"),
                )),
            },
        })
        .collect::<Result<Merges>>()?;
    Ok((json.model.vocab, merges, json.added_tokens))
}

/// A vocabulary must be non-empty, of sane size, and give every token its own id in
/// `0..len`: BPE vocabularies are dense, and an id past the end would collide with the ids
/// later given to added tokens (concept words) or index past the embedding table.
fn check_vocab(vocab: &Vocab, folder: &Path) -> Result<()> {
    if vocab.is_empty() || vocab.len() > MAX_VOCAB {
        return Err(tokenizer_error(
            folder,
            format!(
                "{} vocabulary entries, expected 1..={MAX_VOCAB}",
                vocab.len()
            ),
        ));
    }
    if let Some((token, id)) = vocab.iter().find(|(_, id)| **id as usize >= vocab.len()) {
        return Err(tokenizer_error(
            folder,
            format!(
                "`{token}` has id {id}, past the {} entries of the vocabulary",
                vocab.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(vocab.len());
    if let Some((token, id)) = vocab.iter().find(|(_, id)| !seen.insert(**id)) {
        return Err(tokenizer_error(
            folder,
            format!("id {id} is given to `{token}` and to another token"),
        ));
    }
    Ok(())
}
