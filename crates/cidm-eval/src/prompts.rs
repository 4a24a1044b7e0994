//! Prompts for text alignment: the paper scores an image against its prompt with every
//! concept word replaced by its class word (`a photo of a <dog1>` becomes `a photo of a
//! dog`), since CLIP has never seen the concept word and would score it as noise.

use std::str::FromStr;

use crate::error::{EvalError, Result};

/// One replacement, `WORD=CLASS`: every occurrence of `word` in a prompt becomes `class`
/// (which may be empty, to drop a word that precedes its class word: `<dog1>=` turns
/// `a <dog1> dog` into `a dog`, the whitespace left behind being collapsed by the tokenizer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassWord {
    /// The concept word, matched exactly (case-sensitive).
    pub word: String,
    /// What it is replaced by.
    pub class: String,
}

impl FromStr for ClassWord {
    type Err = EvalError;

    fn from_str(spec: &str) -> Result<Self> {
        match spec.split_once('=') {
            Some((word, class)) if !word.trim().is_empty() => Ok(Self {
                word: word.trim().to_string(),
                class: class.trim().to_string(),
            }),
            _ => Err(EvalError::ClassWord(spec.to_string())),
        }
    }
}

/// `prompt` with each replacement applied in order.
pub fn replace_class_words(prompt: &str, words: &[ClassWord]) -> String {
    words
        .iter()
        .fold(prompt.to_string(), |p, w| p.replace(&w.word, &w.class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_replaces() {
        let words: Vec<ClassWord> = ["<dog1>=dog", "<cat2> = cat", "<x>="]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(words[1].word, "<cat2>");
        assert_eq!(
            replace_class_words("a <dog1> and a <cat2>, <dog1> again <x>", &words),
            "a dog and a cat, dog again "
        );
        assert!("=dog".parse::<ClassWord>().is_err());
        assert!("dog".parse::<ClassWord>().is_err());
    }
}
