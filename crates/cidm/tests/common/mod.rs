//! What the facade's integration tests share: the tiny complete model, running the `cidm`
//! binary, and task images.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tiny complete Stable Diffusion fixture of the core (16 px images).
pub fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/pipeline-model")
}

/// Runs the `cidm` binary built for these tests.
pub fn cidm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cidm"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The process's standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Two 16x16 training images of a `colour` square on grey, at two positions.
pub fn write_images(dir: &Path, colour: [u8; 3]) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..2u32 {
        image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb(if x.abs_diff(4 + 6 * i) < 3 && y.abs_diff(8) < 3 {
                colour
            } else {
                [128, 128, 128]
            })
        })
        .save(dir.join(format!("{i}.png")))
        .unwrap();
    }
}
