//! The CLIP tokenizer reproduces transformers' `CLIPTokenizer` id for id on the real CLIP
//! vocabulary (tools/clip_fixtures.py), for SD 1.5 and SD 2.x folders and with added concept
//! tokens; broken tokenizer files give typed errors.

mod common;

use std::fs;
use std::path::PathBuf;

use cidm_diffusion::{CLIPTokenizer, Error, ModelDir};
use common::fixtures;
use serde_json::Value;
use tempfile::TempDir;

fn vocab_folder() -> PathBuf {
    fixtures().join("clip-tokenizer")
}

fn cases(name: &str) -> Value {
    let text = fs::read_to_string(fixtures().join("clip-tokenizer-cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

/// Checks every case of a list: the ids and the truncation flag.
fn check(tokenizer: &CLIPTokenizer, cases: &Value) {
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 10);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let encoded = tokenizer.encode(prompt).unwrap();
        assert_eq!(encoded.ids, expected, "ids of {prompt:?}");
        assert_eq!(
            encoded.truncated,
            case["truncated"].as_bool().unwrap(),
            "truncation flag of {prompt:?}"
        );
    }
}

/// A folder with the real vocabulary and the given extra files (name, contents).
fn folder_with(files: &[(&str, &str)], copy: &[&str]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in copy {
        fs::copy(vocab_folder().join(name), dir.path().join(name)).unwrap();
    }
    for (name, contents) in files {
        fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

fn sd2_folder() -> TempDir {
    let dir = folder_with(&[], &["vocab.json", "merges.txt"]);
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let from = fixtures().join("clip-tokenizer-sd2-config").join(name);
        fs::copy(from, dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn sd15_folder_matches_transformers() {
    let tokenizer = CLIPTokenizer::from_folder(vocab_folder()).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49408);
    assert_eq!(tokenizer.model_max_length(), 77);
    assert_eq!(
        (tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()),
        (49406, 49407, 49407)
    );
    check(&tokenizer, &cases("sd15"));
}

/// SD 2.x pads with `!` (id 0), which also makes `!` a special token inside prompts.
#[test]
fn sd2_configs_match_transformers() {
    let dir = sd2_folder();
    let tokenizer = CLIPTokenizer::from_folder(dir.path()).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    check(&tokenizer, &cases("sd2"));
}

#[test]
fn added_concept_tokens_match_transformers() {
    let expected = cases("added");
    let mut tokenizer = CLIPTokenizer::from_folder(vocab_folder()).unwrap();
    let ids = tokenizer.add_tokens(&["<dog1>", "<cat2>"]).unwrap();
    let expected_ids: Vec<u32> = serde_json::from_value(expected["ids"].clone()).unwrap();
    assert_eq!(ids.collect::<Vec<_>>(), expected_ids);
    assert_eq!(tokenizer.vocab_size(), 49410);
    check(&tokenizer, &expected["cases"]);

    let prompt = tokenizer
        .encode("a <dog1> dog and a <cat2> cat, <dog1>")
        .unwrap();
    assert_eq!(prompt.positions_of(&[49408]), vec![2, 9]);
    assert_eq!(prompt.positions_of(&[49408, 49409]), vec![2, 6, 9]);
    assert_eq!(prompt.positions_of(&[12345]), Vec::<usize>::new());
}

#[test]
fn tokens_cannot_be_added_twice_or_shadow_the_vocabulary() {
    let mut tokenizer = CLIPTokenizer::from_folder(vocab_folder()).unwrap();
    tokenizer.add_tokens(&["<dog1>"]).unwrap();
    for words in [
        &["<dog1>"][..],
        &["<DOG1>"],
        &["dog</w>"],
        &["<a>", "<a>"],
        &["two words"],
        &[""],
    ] {
        let err = tokenizer.add_tokens(words).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{words:?}: {err}");
    }
    assert_eq!(tokenizer.vocab_size(), 49409);
}

/// A diffusers model directory lists the tokenizer as `CLIPTokenizer`.
#[test]
fn loads_from_a_model_dir() {
    let dir = tempfile::tempdir().unwrap();
    let index = r#"{"_class_name": "StableDiffusionPipeline", "tokenizer": ["transformers", "CLIPTokenizer"]}"#;
    fs::write(dir.path().join("model_index.json"), index).unwrap();
    let folder = dir.path().join("tokenizer");
    fs::create_dir(&folder).unwrap();
    for entry in fs::read_dir(vocab_folder()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
    }
    let tokenizer = CLIPTokenizer::from_model_dir(&ModelDir::open(dir.path()).unwrap()).unwrap();
    assert_eq!(
        &tokenizer.encode("a photo of a dog").unwrap().ids[..7],
        &[49406, 320, 1125, 539, 320, 1929, 49407]
    );
}

/// The same vocabulary as a `tokenizer.json` (merges in both serialisations), with the
/// added token stored in its `added_tokens`, gives the same ids.
#[test]
fn tokenizer_json_matches_the_vocab_files() {
    let vocab: Value =
        serde_json::from_str(&fs::read_to_string(vocab_folder().join("vocab.json")).unwrap())
            .unwrap();
    let merges_text = fs::read_to_string(vocab_folder().join("merges.txt")).unwrap();
    let merges: Vec<&str> = merges_text.lines().skip(1).collect();
    let (joined, pairs) = merges.split_at(merges.len() / 2);
    let pairs: Vec<Vec<&str>> = pairs.iter().map(|m| m.split(' ').collect()).collect();
    let mut merge_values: Vec<Value> = joined.iter().map(|m| Value::from(*m)).collect();
    merge_values.extend(pairs.iter().map(|p| serde_json::json!(p)));
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 49406, "content": "<|startoftext|>", "normalized": true, "special": true},
            {"id": 49407, "content": "<|endoftext|>", "normalized": false, "special": true},
            {"id": 49408, "content": "<sks>", "normalized": true, "special": false},
        ],
        "normalizer": null,
        "model": {"type": "BPE", "vocab": vocab, "merges": merge_values, "end_of_word_suffix": "</w>"},
    });
    let dir = folder_with(&[("tokenizer.json", &json.to_string())], &[]);
    let tokenizer = CLIPTokenizer::from_folder(dir.path()).unwrap();
    check(&tokenizer, &cases("sd15"));
    assert_eq!(
        &tokenizer.encode("a<SKS>dog").unwrap().ids[..5],
        &[49406, 320, 49408, 1929, 49407]
    );
}

fn load_error(files: &[(&str, &str)], copy: &[&str]) -> Error {
    let dir = folder_with(files, copy);
    CLIPTokenizer::from_folder(dir.path()).unwrap_err()
}

fn names_file(err: &Error, name: &str) -> bool {
    match err {
        Error::Io { path, .. } | Error::Json { path, .. } | Error::Tokenizer { path, .. } => {
            path.ends_with(name)
        }
        _ => false,
    }
}

#[test]
fn missing_files_are_io_errors_naming_them() {
    let err = load_error(&[], &["merges.txt"]);
    assert!(
        matches!(err, Error::Io { .. }) && names_file(&err, "vocab.json"),
        "{err}"
    );
    let err = load_error(&[], &["vocab.json"]);
    assert!(
        matches!(err, Error::Io { .. }) && names_file(&err, "merges.txt"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_what_they_claim_are_typed_errors() {
    // vocab.json that is a list, not a token -> id map.
    let err = load_error(&[("vocab.json", "[\"a\", \"b\"]")], &["merges.txt"]);
    assert!(
        matches!(err, Error::Json { .. }) && names_file(&err, "vocab.json"),
        "{err}"
    );
    // merges.txt that is JSON.
    let err = load_error(&[("merges.txt", "{\"a\": 1, \"b\": 2}\n")], &["vocab.json"]);
    assert!(
        matches!(err, Error::Tokenizer { .. }) && names_file(&err, "merges.txt"),
        "{err}"
    );
    // A merge of tokens the vocabulary does not have.
    let err = load_error(&[("merges.txt", "#version: 0.2\nqq zz\n")], &["vocab.json"]);
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    // A vocabulary that gives two tokens one id.
    let err = load_error(
        &[("vocab.json", "{\"a\": 0, \"b\": 0}"), ("merges.txt", "")],
        &[],
    );
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    // A tokenizer.json of another model type.
    let wordpiece = r#"{"model": {"type": "WordPiece", "vocab": {"a": 0}, "merges": []}}"#;
    let err = load_error(&[("tokenizer.json", wordpiece)], &[]);
    assert!(
        matches!(err, Error::Tokenizer { .. }) && names_file(&err, "tokenizer.json"),
        "{err}"
    );
    // A config whose model_max_length cannot hold the start and end tokens.
    let err = load_error(
        &[("tokenizer_config.json", "{\"model_max_length\": 1}")],
        &["vocab.json", "merges.txt"],
    );
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    // A special token that the vocabulary does not have and cannot be added under its id.
    let err = load_error(
        &[(
            "tokenizer_config.json",
            r#"{"added_tokens_decoder": {"5": {"content": "<new>", "special": true}}}"#,
        )],
        &["vocab.json", "merges.txt"],
    );
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
}

/// transformers' "no limit" sentinel falls back to CLIP's 77, and a shorter limit applies.
#[test]
fn model_max_length_comes_from_the_config() {
    for (config, length) in [
        (
            "{\"model_max_length\": 1000000000000000019884624838656}",
            77,
        ),
        ("{\"model_max_length\": 16}", 16),
    ] {
        let dir = folder_with(
            &[("tokenizer_config.json", config)],
            &["vocab.json", "merges.txt"],
        );
        let tokenizer = CLIPTokenizer::from_folder(dir.path()).unwrap();
        let encoded = tokenizer.encode(&"dog ".repeat(20)).unwrap();
        assert_eq!(encoded.ids.len(), length);
        assert_eq!(encoded.truncated, length < 22);
        assert_eq!(*encoded.ids.last().unwrap(), 49407);
    }
}
