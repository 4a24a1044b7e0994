//! The `cidm` binary end to end on the tiny pipeline fixture: images and latents are written,
//! bad input fails with a clear message and a non-zero exit, never a panic.

mod common;

use common::{cidm, fixture_model, stderr, write_images};

#[test]
fn generate_writes_pngs_and_latents_that_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model();
    let out = dir.path().join("img.png");
    let latents = dir.path().join("final.safetensors");
    let common = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red star",
        "--width",
        "16",
        "--height",
        "16",
        "--steps",
        "3",
    ];
    let run = cidm(
        &[
            &common[..],
            &[
                "--num-images",
                "2",
                "--out",
                out.to_str().unwrap(),
                "--output-latents",
                latents.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    for i in 0..2 {
        let png = std::fs::read(dir.path().join(format!("img-{i}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    // Feeding the written latents back as initial latents is accepted (shape and format agree).
    let again = cidm(
        &[
            &common[..],
            &[
                "--num-images",
                "2",
                "--latents",
                latents.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn bad_input_fails_cleanly() {
    let model = fixture_model();
    let model = model.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "generate",
                "--model",
                "/nonexistent-model-dir",
                "--prompt",
                "x",
                "--out",
                "x.png",
            ],
            "nonexistent-model-dir",
        ),
        (
            &[
                "generate", "--model", model, "--prompt", "x", "--width", "15", "--out", "x.png",
            ],
            "multiples",
        ),
        (
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "x",
                "--guidance",
                "inf",
                "--out",
                "x.png",
            ],
            "not finite",
        ),
        (
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "x",
                "--scheduler",
                "euler",
                "--out",
                "x.png",
            ],
            "use ddim or dpm++",
        ),
        (
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "x",
                "--latents",
                "/nonexistent.safetensors",
                "--out",
                "x.png",
            ],
            "nonexistent.safetensors",
        ),
        (
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "x",
                "--region",
                "x@0,0,1,1",
                "--out",
                "x.png",
            ],
            "need --store",
        ),
        (
            &[
                "generate",
                "--model",
                model,
                "--store",
                "/nonexistent-store",
                "--prompt",
                "x",
                "--out",
                "x.png",
            ],
            "nonexistent-store",
        ),
    ];
    for (args, expected) in cases {
        let run = cidm(args);
        let err = stderr(&run);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

/// Two tasks trained in sequence land in the store; `store list`, `export` and `remove` work
/// on it; bad input is a clear error.
#[test]
fn train_task_and_store_commands_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model();
    let store = dir.path().join("store");
    let (kings, lands) = (dir.path().join("kings"), dir.path().join("lands"));
    write_images(&kings, [220, 20, 20]);
    write_images(&lands, [20, 220, 20]);
    let train = |images: &std::path::Path, word: &str, class: &str| {
        cidm(&[
            "train-task",
            "--model",
            model.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--concept",
            word,
            "--class",
            class,
            "--steps",
            "2",
            "--rank",
            "2",
        ])
    };
    let first = train(&kings, "<king1>", "king");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("task 1 (<king1>) added"));
    let second = train(&lands, "<land1>", "land");
    assert!(second.status.success(), "{}", stderr(&second));

    let list = cidm(&["store", "list", "--store", store.to_str().unwrap()]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        listed.contains("method cidm") && listed.contains("2 task(s)"),
        "{listed}"
    );
    assert!(
        listed.contains("<king1>") && listed.contains("<land1>"),
        "{listed}"
    );

    // Generation with every stored task: EWA, the paper's variant, and two regions.
    let generate = |extra: &[&str], out: &std::path::Path| {
        generate_with_store(&store, "a <king1> king and a <land1> land", out, extra)
    };
    for (name, extra) in [
        ("ewa", vec![]),
        ("paper", vec!["--ewa", "paper"]),
        (
            "regions",
            vec![
                "--region",
                "a <king1> king@0,0,0.5,1",
                "--region",
                "a <land1> land@0.5,0,1,1",
                "--num-images",
                "2",
            ],
        ),
    ] {
        let out = dir.path().join(format!("{name}.png"));
        let run = generate(&extra, &out);
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let first = if name == "regions" {
            dir.path().join(format!("{name}-0.png"))
        } else {
            out
        };
        assert_eq!(image::open(&first).unwrap().width(), 16, "{name}");
    }
    for (extra, expected) in [
        (vec!["--region", "a <king1> king@0.5,0,0.2,1"], "inverted"),
        (
            vec!["--region", "a <king1> king@0,0,1.5,1"],
            "outside [0, 1]",
        ),
        (vec!["--region", "no box"], "expected `PROMPT@x0,y0,x1,y1`"),
        (vec!["--ewa", "sideways"], "sideways"),
    ] {
        let run = generate(&extra, &dir.path().join("bad.png"));
        assert!(!run.status.success(), "{extra:?} succeeded");
        let err = stderr(&run);
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{extra:?}: {err}"
        );
    }

    let out = dir.path().join("export");
    let export = cidm(&[
        "store",
        "export",
        "--store",
        store.to_str().unwrap(),
        "--task",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert!(out.join("task-002.lora.safetensors").is_file());
    assert!(out.join("task-002.tokens.safetensors").is_file());

    let remove = cidm(&[
        "store",
        "remove",
        "--store",
        store.to_str().unwrap(),
        "--task",
        "1",
    ]);
    assert!(remove.status.success(), "{}", stderr(&remove));
    let list = cidm(&["store", "list", "--store", store.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("1 task(s)"));

    // The same word again, a missing folder, and a class per concept missing.
    let again = train(&lands, "<land1>", "land");
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already learned by task 2"),
        "{}",
        stderr(&again)
    );
    let missing = train(&dir.path().join("nowhere"), "<x1>", "king");
    assert!(!missing.status.success() && stderr(&missing).contains("nowhere"));
    let unknown_task = cidm(&[
        "store",
        "remove",
        "--store",
        store.to_str().unwrap(),
        "--task",
        "9",
    ]);
    assert!(
        stderr(&unknown_task).contains("no task 9"),
        "{}",
        stderr(&unknown_task)
    );
    for output in [&again, &missing, &unknown_task] {
        assert!(!stderr(output).contains("panicked"));
    }
}

/// A `finetune` store generates with its last LoRA and refuses `--ewa`, which does not apply
/// to one LoRA continued across tasks.
#[test]
fn finetune_store_uses_its_last_lora_and_refuses_ewa() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model();
    let store = dir.path().join("store");
    let kings = dir.path().join("kings");
    write_images(&kings, [220, 20, 20]);
    let train = cidm(&[
        "train-task",
        "--model",
        model.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--images",
        kings.to_str().unwrap(),
        "--concept",
        "<king1>",
        "--class",
        "king",
        "--method",
        "finetune",
        "--steps",
        "2",
        "--rank",
        "2",
    ]);
    assert!(train.status.success(), "{}", stderr(&train));
    let out = dir.path().join("out.png");
    let generate = |extra: &[&str]| generate_with_store(&store, "a <king1> king", &out, extra);
    let plain = generate(&[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("LastTask"), "{}", stderr(&plain));
    let refused = generate(&["--ewa", "code"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("does not apply"),
        "{}",
        stderr(&refused)
    );
}

/// `cidm generate` of `prompt` with every task of `store`, 16x16, 2 steps, plus `extra` flags.
fn generate_with_store(
    store: &std::path::Path,
    prompt: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let model = fixture_model();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--prompt",
        prompt,
        "--width",
        "16",
        "--height",
        "16",
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cidm(&args)
}
