//! The CLIP tokenizer as transformers 5's `CLIPTokenizer` builds it on the tokenizers
//! library, so both sides run the same code: NFC, whitespace runs collapsed to one space,
//! lower-casing; the CLIP split regex; byte-level BPE with a `</w>` end-of-word suffix; start
//! and end tokens; truncation and padding to `model_max_length` as diffusers asks for them.
//!
//! transformers 5 does not use ftfy (its fast tokenizer never did, and the slow one is gone),
//! so neither does this.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as Normalizers, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::tokenizer_files::TokenizerFiles;
use crate::error::{Error, Result};
use crate::loading::ModelDir;

/// CLIP's pre-tokenization: the special tokens, English contractions, letter runs, single
/// digits, and runs of other non-space characters; whitespace between them is dropped.
pub const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt as the text encoder takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Exactly `model_max_length` ids: start token, prompt tokens, end token, padding.
    pub ids: Vec<u32>,
    /// Whether prompt tokens were dropped to fit (diffusers warns; the tail is lost).
    pub truncated: bool,
}

impl TokenizedPrompt {
    /// The positions whose id is one of `tokens`, in order (where concept words sit).
    pub fn positions_of(&self, tokens: &[u32]) -> Vec<usize> {
        self.ids
            .iter()
            .enumerate()
            .filter(|(_, id)| tokens.contains(id))
            .map(|(i, _)| i)
            .collect()
    }
}

/// transformers' `CLIPTokenizer` (Stable Diffusion's `tokenizer` component).
#[derive(Debug, Clone)]
pub struct CLIPTokenizer {
    inner: Tokenizer,
    folder: PathBuf,
    model_max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
}

impl CLIPTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json`, or `vocab.json` + `merges.txt`, with the
    /// optional `tokenizer_config.json` and `special_tokens_map.json`.
    pub fn from_folder(folder: impl AsRef<Path>) -> Result<Self> {
        let folder = folder.as_ref();
        Self::build(TokenizerFiles::read(folder)?, folder)
    }

    /// Loads the `tokenizer` component of a diffusers model directory.
    pub fn from_model_dir(dir: &ModelDir) -> Result<Self> {
        let class = match dir.class_of("tokenizer") {
            Some("CLIPTokenizerFast") => "CLIPTokenizerFast",
            _ => "CLIPTokenizer",
        };
        Self::from_folder(dir.component("tokenizer", class)?)
    }

    fn build(files: TokenizerFiles, folder: &Path) -> Result<Self> {
        let error = |reason: String| Error::Tokenizer {
            path: folder.to_path_buf(),
            reason,
        };
        let lib = |e: tokenizers::Error| error(e.to_string());
        let named = |name: &str| {
            files
                .special(name)
                .map(|t| t.content.clone())
                .ok_or_else(|| error(format!("no {name}")))
        };
        let (bos, eos, unk, pad) = (
            named("bos_token")?,
            named("eos_token")?,
            named("unk_token")?,
            named("pad_token")?,
        );
        let bpe = BPE::builder()
            .vocab_and_merges(files.vocab, files.merges)
            .unk_token(unk)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .build()
            .map_err(lib)?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(Normalizers::new(vec![
                NFC.into(),
                Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                    .map_err(lib)?
                    .into(),
                Lowercase.into(),
            ])))
            .map_err(lib)?;
        inner.with_pre_tokenizer(Some(PreTokenizers::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_SPLIT.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(lib)?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner
            .add_tokens(files.added.iter().map(|(_, t)| t.clone()))
            .map_err(lib)?;
        inner
            .add_special_tokens(files.specials.iter().map(|(_, t)| t.clone()))
            .map_err(lib)?;
        for (id, token) in &files.added {
            let got = inner.token_to_id(&token.content);
            if got != Some(*id) {
                return Err(error(format!(
                    "added token `{}` is listed with id {id} but gets {got:?}",
                    token.content
                )));
            }
        }
        let id_of = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| error(format!("special token `{token}` is not in the vocabulary")))
        };
        let (bos_id, eos_id, pad_id) = (id_of(&bos)?, id_of(&eos)?, id_of(&pad)?);
        let max = files.model_max_length;
        inner.with_post_processor(Some(
            RobertaProcessing::new((eos, eos_id), (bos, bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(lib)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad,
        }));
        Ok(Self {
            inner,
            folder: folder.to_path_buf(),
            model_max_length: max,
            bos_id,
            eos_id,
            pad_id,
        })
    }

    /// Tokenizes `prompt` as diffusers does (`padding="max_length", truncation=True`).
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| self.error(e.to_string()))?;
        Ok(TokenizedPrompt {
            ids: encoding.get_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }

    /// [`Self::encode`] for each prompt; every result has `model_max_length` ids, so the
    /// batch is rectangular.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Vec<TokenizedPrompt>> {
        prompts.iter().map(|p| self.encode(p.as_ref())).collect()
    }

    /// Adds words (concept tokens such as `<dog1>`) that must stay single tokens, as
    /// transformers' `add_tokens` does: matched after normalization, so case-insensitively,
    /// anywhere in a prompt. Returns their ids, consecutive from the current vocabulary size,
    /// which are the ids [`crate::clip::CLIPTextModel::add_token_embeddings`] gives their rows
    /// when called with the same count.
    ///
    /// A word that is empty, contains whitespace, repeats, or is already a token (in any
    /// case) is an [`Error::InvalidInput`]: concept words need fresh rows.
    pub fn add_tokens(&mut self, words: &[&str]) -> Result<Range<u32>> {
        for (i, word) in words.iter().enumerate() {
            let reason = if word.is_empty() || word.chars().any(char::is_whitespace) {
                Some("is empty or contains whitespace")
            } else if words[..i].contains(word) {
                Some("is listed twice")
            } else if self.inner.token_to_id(word).is_some()
                || self.inner.token_to_id(&word.to_lowercase()).is_some()
            {
                Some("is already in the vocabulary")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::InvalidInput(format!(
                    "cannot add token {word:?}: it {reason}"
                )));
            }
        }
        let start = self.vocab_size() as u32;
        self.inner
            .add_tokens(words.iter().map(|w| AddedToken::from(*w, false)))
            .map_err(|e| self.error(e.to_string()))?;
        let ids = start..start + words.len() as u32;
        for (word, id) in words.iter().zip(ids.clone()) {
            if self.inner.token_to_id(word) != Some(id) {
                return Err(self.error(format!("added token {word:?} did not get id {id}")));
            }
        }
        Ok(ids)
    }

    /// The id of a token (a vocabulary entry such as `dog</w>`, or an added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Length of every encoded prompt (77 for Stable Diffusion).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// Id of the start token.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of the end token.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id of the padding token (`<|endoftext|>` in SD 1.x, `!` in SD 2.x).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    fn error(&self, reason: String) -> Error {
        Error::Tokenizer {
            path: self.folder.clone(),
            reason,
        }
    }
}
