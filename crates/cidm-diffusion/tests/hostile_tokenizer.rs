//! Hostile tokenizer folders: vocabularies and merges that are not what they claim, garbage
//! bytes, files of another tokenizer type. Each is a typed error naming the file or folder;
//! then a fuzz run over mutations of the committed tiny CLIP tokenizer, in both layouts
//! (`tokenizer.json`, and `vocab.json` + `merges.txt`), encoding prompts with whatever loads.

mod hostile_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cidm_diffusion::{CLIPTokenizer, Error};
use hostile_support::{edits, fuzz, mutate};
use serde_json::{json, Value};

fn fixture_folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline-model/tokenizer")
}

/// A copy of the fixture tokenizer in `dir`; with `json_layout` false, without its
/// `tokenizer.json`, so that `vocab.json` + `merges.txt` are read.
fn copy_fixture(dir: &Path, json_layout: bool) {
    for name in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "tokenizer.json",
    ] {
        if name != "tokenizer.json" || json_layout {
            std::fs::copy(fixture_folder().join(name), dir.join(name)).unwrap();
        }
    }
}

fn tokenizer_error(dir: &Path) -> Error {
    match CLIPTokenizer::from_folder(dir) {
        Ok(_) => panic!("the hostile folder loaded"),
        Err(e) => e,
    }
}

/// The typed errors a tokenizer folder may give.
fn is_tokenizer_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Tokenizer { .. }
            | Error::Json { .. }
            | Error::Io { .. }
            | Error::InvalidConfig { .. }
    )
}

fn vocab(dir: &Path) -> serde_json::Map<String, Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).unwrap()).unwrap()
}

#[test]
fn vocabularies_that_lie_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path(), false);
    CLIPTokenizer::from_folder(dir.path()).expect("the fixture loads");
    let write_vocab = |v: &Value| std::fs::write(dir.path().join("vocab.json"), v.to_string());
    let original = vocab(dir.path());

    // Two tokens with one id.
    let mut v = original.clone();
    v.insert("a".into(), json!(5));
    v.insert("b".into(), json!(5));
    write_vocab(&Value::Object(v)).unwrap();
    assert!(matches!(
        tokenizer_error(dir.path()),
        Error::Tokenizer { .. }
    ));

    // An id past the end of the table (would collide with added concept tokens).
    let mut v = original.clone();
    v.insert("a".into(), json!(u32::MAX));
    write_vocab(&Value::Object(v)).unwrap();
    let e = tokenizer_error(dir.path());
    assert!(e.to_string().contains("past the"), "{e}");

    // Empty, a list instead of a map, negative ids, garbage bytes.
    write_vocab(&json!({})).unwrap();
    assert!(matches!(
        tokenizer_error(dir.path()),
        Error::Tokenizer { .. }
    ));
    write_vocab(&json!(["a", "b"])).unwrap();
    assert!(matches!(tokenizer_error(dir.path()), Error::Json { .. }));
    write_vocab(&json!({"a": -1})).unwrap();
    assert!(matches!(tokenizer_error(dir.path()), Error::Json { .. }));
    std::fs::write(dir.path().join("vocab.json"), [0x00, 0xff, 0x7b, 0x80]).unwrap();
    assert!(matches!(tokenizer_error(dir.path()), Error::Io { .. }));
}

#[test]
fn merges_that_lie_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path(), false);
    for merges in [
        "#version: 0.2\na b c\n",  // three parts
        "#version: 0.2\nlonely\n", // one part
        "#version: 0.2\nzz qq\n",  // tokens not in the vocabulary
        "#version: 0.2\n a\n",     // empty left side
    ] {
        std::fs::write(dir.path().join("merges.txt"), merges).unwrap();
        let e = tokenizer_error(dir.path());
        assert!(matches!(e, Error::Tokenizer { .. }), "{merges:?}: {e}");
    }
}

#[test]
fn a_tokenizer_json_of_another_kind_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path(), true);
    let path = dir.path().join("tokenizer.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["model"]["type"] = json!("WordPiece");
    std::fs::write(&path, json.to_string()).unwrap();
    let e = tokenizer_error(dir.path());
    assert!(e.to_string().contains("CLIP needs BPE"), "{e}");
    // A merges entry that is neither "a b" nor a pair.
    json["model"]["type"] = json!("BPE");
    json["model"]["merges"] = json!(["a b c"]);
    std::fs::write(&path, json.to_string()).unwrap();
    assert!(matches!(
        tokenizer_error(dir.path()),
        Error::Tokenizer { .. }
    ));
}

/// Prompts that exercise normalisation, the split regex and byte-level BPE on whatever
/// vocabulary a mutation left.
const PROMPTS: [&str; 4] = [
    "a photo of a dog",
    "",
    "ÆØÅ 🙂 \u{0000}\u{202e} <|endoftext|>!!",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// Loads the folder and, if it loads, encodes the prompts and adds a concept word; returns
/// whether loading was rejected. Panics on anything but typed errors.
fn exercise(dir: &Path) -> bool {
    match CLIPTokenizer::from_folder(dir) {
        Err(e) => {
            assert!(is_tokenizer_error(&e), "{e}");
            true
        }
        Ok(mut tokenizer) => {
            for prompt in PROMPTS {
                match tokenizer.encode(prompt) {
                    Ok(t) => assert_eq!(t.ids.len(), tokenizer.model_max_length()),
                    Err(e) => assert!(matches!(e, Error::Tokenizer { .. }), "{e}"),
                }
            }
            if let Err(e) = tokenizer.add_tokens(&["<dog1>"]) {
                assert!(
                    matches!(e, Error::InvalidInput(_) | Error::Tokenizer { .. }),
                    "{e}"
                );
            }
            false
        }
    }
}

#[test]
fn fuzz_tokenizer_files() {
    const FILES: [&str; 4] = [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "tokenizer.json",
    ];
    let originals: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| std::fs::read(fixture_folder().join(f)).unwrap())
        .collect();
    let json_dir = tempfile::tempdir().unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    copy_fixture(json_dir.path(), true);
    copy_fixture(plain_dir.path(), false);
    assert!(!exercise(json_dir.path()) && !exercise(plain_dir.path()));
    // Which file to mutate: 0..3 in the plain layout, 2..4 in the tokenizer.json one.
    let strategy = (0..5usize, edits(false));
    fuzz(
        "tokenizer",
        5000,
        Duration::from_secs(15),
        strategy,
        |(choice, edits)| {
            let (dir, file) = match choice {
                0..=2 => (plain_dir.path(), choice),
                _ => (json_dir.path(), choice - 1),
            };
            let path = dir.join(FILES[file]);
            std::fs::write(&path, mutate(&originals[file], &edits, None)).unwrap();
            let rejected = exercise(dir);
            std::fs::write(&path, &originals[file]).unwrap();
            rejected
        },
    );
}
