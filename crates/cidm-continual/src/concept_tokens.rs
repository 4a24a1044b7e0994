//! Layer-wise concept tokens (METHOD.md section 2): each concept word gets one learnable
//! embedding row per cross-attention layer, so layer l of the UNet attends to a prompt whose
//! concept words carry their layer-l rows.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use cidm_diffusion::precision::{cast_to, param_from_data, to_param_dtype};
use cidm_diffusion::{CLIPTextModel, CLIPTokenizer, Conditioning};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};

/// How a concept word's rows start.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenInit {
    /// Every row drawn independently from `N(0, sigma^2)` with a ChaCha8 stream seeded by
    /// `seed` on the host, so the draw is the same on every backend.
    Normal {
        /// Standard deviation (0.013 in the paper's setting).
        sigma: f64,
        /// Seed of the host random stream.
        seed: u64,
    },
    /// Every layer's row is a copy of a class word's token row (e.g. "dog"), which must be a
    /// single token.
    ClassWord(String),
}

/// One concept word to register and how to initialise it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptWord {
    /// The word as it appears in prompts, e.g. `<dog1>`.
    pub word: String,
    /// Its initial rows.
    pub init: TokenInit,
}

/// The layer-wise embeddings of one or more concept words: the only trainable part of the
/// text side. The text encoder stays frozen; its table gets one row per word only so that
/// the ids exist.
#[derive(Module, Debug)]
pub struct ConceptTokens<B: Backend> {
    /// `[words, layers, hidden]`: row `[w, l]` is word w's embedding for cross-attention
    /// layer l (stable down-mid-up order).
    pub embeddings: Param<Tensor<B, 3>>,
    #[module(skip)]
    words: Vec<String>,
    #[module(skip)]
    ids: Vec<u32>,
}

impl<B: Backend> ConceptTokens<B> {
    /// Adds `words` to the tokenizer and their rows to the text encoder's table, and returns
    /// their `layers` learnable rows each (`layers` = the UNet's
    /// `cross_attention_layers()`).
    ///
    /// Everything is checked before either model is changed: an empty list, a word already in
    /// the vocabulary ([`Error::WordInVocabulary`]), a class word that is not one token
    /// ([`Error::ClassWordNotSingleToken`]), a tokenizer and encoder whose vocabularies
    /// differ, or a non-positive sigma are errors. The encoder's new row is each word's
    /// layer-0 row; it is only used by encodings that bypass [`Self::encode`].
    pub fn register(
        words: &[ConceptWord],
        layers: usize,
        tokenizer: &mut CLIPTokenizer,
        encoder: &mut CLIPTextModel<B>,
    ) -> Result<Self> {
        if words.is_empty() || layers == 0 {
            return Err(Error::InvalidInput(format!(
                "need at least one concept word and one layer, got {} words and {layers} layers",
                words.len()
            )));
        }
        let names: Vec<String> = words.iter().map(|w| w.word.clone()).collect();
        check_new_words(&names, tokenizer, encoder)?;
        let hidden = encoder.config().hidden_size;
        let rows = words
            .iter()
            .map(|w| initial_rows(&w.init, layers, hidden, tokenizer, encoder))
            .collect::<Result<Vec<_>>>()?;
        Self::install(&names, Tensor::stack::<3>(rows, 0), tokenizer, encoder)
    }

    /// Registers `words` with already trained rows `[words, layers, hidden]` (a stored task
    /// learner's tokens), with the checks of [`Self::register`]. Several tasks' words can be
    /// registered together so that one prompt may name concepts of different tasks.
    pub fn register_rows(
        words: &[String],
        rows: Tensor<B, 3>,
        tokenizer: &mut CLIPTokenizer,
        encoder: &mut CLIPTextModel<B>,
    ) -> Result<Self> {
        let [count, layers, hidden] = rows.dims();
        if count != words.len() || layers == 0 || hidden != encoder.config().hidden_size {
            return Err(Error::Shape {
                what: "concept token rows".into(),
                found: rows.dims().to_vec(),
                expected: format!(
                    "[{} words, layers >= 1, {}]",
                    words.len(),
                    encoder.config().hidden_size
                ),
            });
        }
        check_new_words(words, tokenizer, encoder)?;
        Self::install(words, rows, tokenizer, encoder)
    }

    /// Adds the words to the tokenizer and their layer-0 rows to the encoder's table.
    fn install(
        words: &[String],
        rows: Tensor<B, 3>,
        tokenizer: &mut CLIPTokenizer,
        encoder: &mut CLIPTextModel<B>,
    ) -> Result<Self> {
        let hidden = encoder.config().hidden_size;
        // A fresh leaf: a class word's row must not keep the encoder table's graph. Trainable,
        // so f32 whatever the model's dtype (`cidm_diffusion::precision`).
        let embeddings = to_param_dtype(rows.detach());
        let names: Vec<&str> = words.iter().map(String::as_str).collect();
        let token_ids = tokenizer.add_tokens(&names)?;
        let table_rows = embeddings
            .clone()
            .slice([0..words.len(), 0..1])
            .reshape([words.len(), hidden]);
        let row_ids = encoder.add_token_embeddings(table_rows)?;
        if row_ids != token_ids {
            return Err(Error::InvalidInput(format!(
                "tokenizer gave ids {token_ids:?}, the text encoder rows {row_ids:?}"
            )));
        }
        Ok(Self {
            embeddings: Param::from_tensor(embeddings),
            words: words.to_vec(),
            ids: token_ids.collect(),
        })
    }

    /// The concept words, in row order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Their token ids, in row order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Cross-attention layers L (rows per word).
    pub fn layers(&self) -> usize {
        self.embeddings.dims()[1]
    }

    /// Encodes a batch of prompts into per-layer conditioning: tokenize, embed, and for each
    /// layer l substitute every concept word's layer-l row at its positions, then run the
    /// frozen encoder on all L copies in one batched call. Without any concept word in the
    /// batch, one encoding is shared by all layers.
    ///
    /// Gradients flow from the output into [`Self::embeddings`]: only into the rows of words
    /// that occur.
    ///
    /// # Shapes
    /// - prompts: `batch` strings
    /// - output: `layers` (or one shared) tensors `[batch, model_max_length, hidden]`
    pub fn encode<S: AsRef<str>>(
        &self,
        tokenizer: &CLIPTokenizer,
        encoder: &CLIPTextModel<B>,
        prompts: &[S],
        clip_skip: usize,
    ) -> Result<Conditioning<B>> {
        let [words, layers, hidden] = self.embeddings.dims();
        if encoder.config().hidden_size != hidden {
            return Err(Error::Shape {
                what: "concept token rows".into(),
                found: vec![words, layers, hidden],
                expected: format!("[words, layers, {}]", encoder.config().hidden_size),
            });
        }
        let tokenized = tokenizer.encode_batch(prompts)?;
        let ids: Vec<Vec<u32>> = tokenized.iter().map(|t| t.ids.clone()).collect();
        let base = encoder.embed_tokens(&ids)?;
        let [batch, tokens, _] = base.dims();
        // One-hot selection [batch * tokens, words]: substitution as a product keeps the
        // graph differentiable and leaves absent words with exactly zero gradient.
        let mut select = vec![0.0f32; batch * tokens * words];
        for (b, prompt) in tokenized.iter().enumerate() {
            for (w, &id) in self.ids.iter().enumerate() {
                for t in prompt.positions_of(&[id]) {
                    select[(b * tokens + t) * words + w] = 1.0;
                }
            }
        }
        if select.iter().all(|&s| s == 0.0) {
            return Ok(Conditioning::shared(
                encoder.forward_embeds(base, clip_skip)?,
            ));
        }
        let device = base.device();
        let dtype = base.dtype();
        let select =
            Tensor::<B, 2>::from_data(TensorData::new(select, [batch * tokens, words]), &device);
        let keep = select.clone().sum_dim(1).neg().add_scalar(1.0);
        let kept = base.reshape([batch * tokens, hidden]) * keep;
        let table = cast_to(self.embeddings.val().to_device(&device), dtype);
        let copies = (0..layers)
            .map(|l| {
                let rows = table
                    .clone()
                    .slice([0..words, l..l + 1])
                    .reshape([words, hidden]);
                (kept.clone() + select.clone().matmul(rows)).reshape([batch, tokens, hidden])
            })
            .collect();
        let encoded = encoder.forward_embeds(Tensor::cat(copies, 0), clip_skip)?;
        Ok(Conditioning::per_layer(encoded.chunk(layers, 0)))
    }

    /// The mean L2 norm of all `words * layers` rows, read back to the host: what the released
    /// code compares with its threshold (see [`keep_updating_tokens`]).
    pub fn mean_norm(&self) -> Result<f64> {
        let [words, layers, hidden] = self.embeddings.dims();
        let norms = self
            .embeddings
            .val()
            .reshape([words * layers, hidden])
            .square()
            .sum_dim(1)
            .sqrt()
            .mean();
        let values = norms
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("reading the token norms: {e:?}")))?;
        Ok(values.first().copied().unwrap_or(0.0) as f64)
    }
}

/// Whether the concept tokens should still be updated: the released code stops once their
/// mean row norm reaches the threshold (0.55), which keeps a token from growing until it
/// drowns the rest of the prompt. `None` never stops.
pub fn keep_updating_tokens(mean_norm: f64, threshold: Option<f64>) -> bool {
    threshold.is_none_or(|t| mean_norm < t)
}

/// Checks that the vocabularies agree and that no word is a token already (or twice).
fn check_new_words<B: Backend>(
    words: &[String],
    tokenizer: &CLIPTokenizer,
    encoder: &CLIPTextModel<B>,
) -> Result<()> {
    if tokenizer.vocab_size() != encoder.vocab_size() {
        return Err(Error::InvalidInput(format!(
            "the tokenizer has {} ids, the text encoder {} rows: they must match",
            tokenizer.vocab_size(),
            encoder.vocab_size()
        )));
    }
    for (i, word) in words.iter().enumerate() {
        // CLIP's BPE marks word ends with `</w>`: "dog" is the token "dog</w>".
        let lower = word.to_lowercase();
        let known = [word.clone(), lower.clone(), format!("{lower}</w>")]
            .iter()
            .any(|form| tokenizer.token_to_id(form).is_some());
        if known || words[..i].contains(word) {
            return Err(Error::WordInVocabulary(word.clone()));
        }
    }
    Ok(())
}

/// `[layers, hidden]` initial rows of one word.
fn initial_rows<B: Backend>(
    init: &TokenInit,
    layers: usize,
    hidden: usize,
    tokenizer: &CLIPTokenizer,
    encoder: &CLIPTextModel<B>,
) -> Result<Tensor<B, 2>> {
    match init {
        TokenInit::Normal { sigma, seed } => {
            let normal = Normal::new(0.0f32, *sigma as f32)
                .ok()
                .filter(|_| sigma.is_finite() && *sigma > 0.0)
                .ok_or_else(|| {
                    Error::InvalidInput(format!("token init sigma must be > 0, got {sigma}"))
                })?;
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let values: Vec<f32> = (0..layers * hidden)
                .map(|_| normal.sample(&mut rng))
                .collect();
            let device = encoder.embeddings.token_embedding.device();
            Ok(param_from_data(
                TensorData::new(values, [layers, hidden]),
                &device,
            ))
        }
        TokenInit::ClassWord(word) => {
            let ids = tokenizer.encode(word)?.ids;
            let body: Vec<u32> = ids
                .iter()
                .skip(1)
                .take_while(|&&id| id != tokenizer.eos_id())
                .copied()
                .collect();
            if body.len() != 1 {
                return Err(Error::ClassWordNotSingleToken {
                    word: word.clone(),
                    tokens: body.len(),
                });
            }
            let row = encoder.embed_tokens(&[body])?.reshape([1, hidden]);
            Ok(row.repeat_dim(0, layers))
        }
    }
}
