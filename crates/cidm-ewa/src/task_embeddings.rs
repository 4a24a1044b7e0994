//! e_i^l: the text-encoder output at task i's concept-token positions, layer l.
//!
//! Each task's concept words are placed in a template prompt (default `"a photo of {}"`, the
//! words joined by spaces), encoded through [`cidm_continual::ConceptTokens::encode`] so that
//! layer l's copy carries the words' layer-l rows, and the output rows at the words' positions
//! are kept. All tasks are encoded in one batch; the result depends only on the stored tasks,
//! so it is computed once per store and can be cached (it is a serde type).

use serde::{Deserialize, Serialize};

use burn::tensor::backend::Backend;

use crate::config::EwaConfig;
use crate::error::{EwaError, Result};
use crate::prompt::PromptEncoder;
use crate::rows::TokenRows;

/// The concept embeddings of every task: `tasks[i][l]` is e_i^l, `[positions_i, hidden]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEmbeddings {
    tasks: Vec<Vec<TokenRows>>,
}

impl TaskEmbeddings {
    /// Task embeddings from rows; errors when there is no task, the tasks' layer counts or
    /// widths differ, or a task has no layer.
    pub fn new(tasks: Vec<Vec<TokenRows>>) -> Result<Self> {
        let Some(first) = tasks.first() else {
            return Err(EwaError::InvalidInput("no task".into()));
        };
        let (layers, dim) = (first.len(), first.first().map_or(0, TokenRows::dim));
        if layers == 0 {
            return Err(EwaError::InvalidInput("task 0 has no layer".into()));
        }
        for (i, task) in tasks.iter().enumerate() {
            if task.len() != layers || task.iter().any(|r| r.dim() != dim) {
                return Err(EwaError::Shape {
                    what: format!("concept embeddings of task {i}"),
                    found: vec![task.len()],
                    expected: format!("{layers} layers of width {dim}"),
                });
            }
        }
        Ok(Self { tasks })
    }

    /// Encodes every task's concept words (`task_words[i]`, in task order) in the config's
    /// template. Errors when a task has no word, a word is not one of the encoder's concept
    /// tokens, or truncation dropped a task's words from its template.
    pub fn encode<B: Backend>(
        encoder: &PromptEncoder<'_, B>,
        config: &EwaConfig,
        task_words: &[Vec<String>],
    ) -> Result<Self> {
        config.validate()?;
        let mut ids = Vec::with_capacity(task_words.len());
        for (task, words) in task_words.iter().enumerate() {
            if words.is_empty() {
                return Err(EwaError::InvalidInput(format!(
                    "task {task} has no concept word"
                )));
            }
            let task_ids = words
                .iter()
                .map(|word| {
                    let known = encoder.concepts.words().iter().position(|w| w == word);
                    known
                        .map(|k| encoder.concepts.ids()[k])
                        .ok_or_else(|| EwaError::UnknownWord {
                            task,
                            word: word.clone(),
                        })
                })
                .collect::<Result<Vec<u32>>>()?;
            ids.push(task_ids);
        }
        let prompts: Vec<String> = task_words
            .iter()
            .map(|w| config.template_prompt(w))
            .collect();
        let batch = encoder.encode(&prompts)?;
        let tasks = ids
            .iter()
            .enumerate()
            .map(|(task, task_ids)| {
                let positions = batch.tokenized()[task].positions_of(task_ids);
                if positions.is_empty() {
                    return Err(EwaError::NoConceptPositions {
                        task,
                        prompt: prompts[task].clone(),
                    });
                }
                batch.rows(task, &positions)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(tasks)
    }

    /// Number of tasks g.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Cross-attention layers L.
    pub fn layers(&self) -> usize {
        self.tasks[0].len()
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.tasks[0][0].dim()
    }

    /// e_i^l.
    pub fn get(&self, task: usize, layer: usize) -> Option<&TokenRows> {
        self.tasks.get(task).and_then(|t| t.get(layer))
    }
}
