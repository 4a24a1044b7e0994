//! transformers' `CLIPTextEmbeddings`: token rows plus learned absolute position rows.
//!
//! The two steps are separate methods because continual customization needs the gap between
//! them: per-layer concept tokens (METHOD.md section 2) replace the token rows of concept
//! words before positions are added, once per cross-attention layer.

use std::ops::Range;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};
use crate::loading::{Init, VarBuilder};
use crate::precision::cast_to;

/// Bound of the uniform draw for random tables: the standard deviation of transformers'
/// `normal(0, 0.02)` init (a uniform on `[-b, b]` has std `b / sqrt(3)`).
const RANDOM_BOUND: f64 = 0.02 * 1.732_050_807_568_877_2;

/// The token and position embedding tables.
#[derive(Module, Debug)]
pub struct CLIPTextEmbeddings<B: Backend> {
    /// `token_embedding.weight` `[vocab, hidden]`; grows when tokens are added.
    pub token_embedding: Param<Tensor<B, 2>>,
    /// `position_embedding.weight` `[max_positions, hidden]`.
    pub position_embedding: Param<Tensor<B, 2>>,
}

impl<B: Backend> CLIPTextEmbeddings<B> {
    /// Builds both tables from `vb` at the `embeddings` prefix.
    pub fn new(
        vb: &VarBuilder<B>,
        vocab: usize,
        max_positions: usize,
        hidden: usize,
    ) -> Result<Self> {
        let init = Init::Uniform(RANDOM_BOUND);
        Ok(Self {
            token_embedding: vb.param("token_embedding.weight", [vocab, hidden], init)?,
            position_embedding: vb.param(
                "position_embedding.weight",
                [max_positions, hidden],
                init,
            )?,
        })
    }

    /// Rows of the token table, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.shape().dims::<2>()[0]
    }

    /// Rows of the position table: the longest sequence the encoder accepts.
    pub fn max_positions(&self) -> usize {
        self.position_embedding.shape().dims::<2>()[0]
    }

    /// The token rows of `ids` (assumed within the table; the model checks them).
    ///
    /// # Shapes
    /// - ids: `[batch, tokens]` -> `[batch, tokens, hidden]`
    pub fn embed_tokens(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        embedding(self.token_embedding.val(), ids)
    }

    /// Adds the rows of positions `0..tokens` (assumed at most `max_positions`).
    ///
    /// # Shapes
    /// - embeds: `[batch, tokens, hidden]` -> `[batch, tokens, hidden]`
    pub fn add_positions(&self, embeds: Tensor<B, 3>) -> Tensor<B, 3> {
        let tokens = embeds.dims()[1];
        let positions = self.position_embedding.val().slice(0..tokens);
        embeds + positions.unsqueeze::<3>()
    }

    /// Appends `rows` to the token table and returns their ids. The parameter keeps its id,
    /// so records and optimizer state stay attached to it.
    ///
    /// # Shapes
    /// - rows: `[new, hidden]`
    pub fn extend(&mut self, rows: Tensor<B, 2>) -> Result<Range<u32>> {
        let [new, width] = rows.dims();
        let [vocab, hidden] = self.token_embedding.shape().dims::<2>();
        if width != hidden || new == 0 {
            return Err(Error::InvalidInput(format!(
                "new token rows have shape [{new}, {width}], expected [n >= 1, {hidden}]"
            )));
        }
        let start = u32::try_from(vocab).map_err(|_| {
            Error::InvalidInput(format!("a vocabulary of {vocab} rows cannot grow"))
        })?;
        let end = u32::try_from(vocab + new)
            .map_err(|_| Error::InvalidInput(format!("{new} more rows overflow the token ids")))?;
        // The grown table is a new leaf with the old table's gradient flag, not a node that
        // records a concatenation; the rows take the table's dtype (trainable rows are f32
        // under an f16 model, see `crate::precision`).
        self.token_embedding = self.token_embedding.clone().map(|table| {
            let require_grad = table.is_require_grad();
            let device = table.device();
            let rows = cast_to(rows.to_device(&device), table.dtype());
            Tensor::cat(vec![table, rows], 0)
                .detach()
                .set_require_grad(require_grad)
        });
        Ok(start..end)
    }
}
