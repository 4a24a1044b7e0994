//! Writes the shapes world to a folder: the base pretraining dataset (`<out>/base`) and the
//! concept stream (`<out>/concepts/<name>/`, with `stream.json`).
//!
//! Usage: `cargo run -p cidm-shapes --example write_world -- <out> [base images] [seed]`
//! (defaults: 2000 base images, seed 0).

use cidm_shapes::{write_base_dataset, write_concept_stream, ConceptStream, WorldConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: write_world <out> [base images] [seed]")?,
    );
    let count: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let config = WorldConfig::default();
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}")?;

    let progress = ProgressBar::new(0)
        .with_style(style.clone())
        .with_message("base");
    write_base_dataset(out.join("base"), &config, seed, count, &progress)?;
    progress.finish();

    let stream = ConceptStream::default();
    let progress = ProgressBar::new(0)
        .with_style(style)
        .with_message("concepts");
    write_concept_stream(out.join("concepts"), &stream, &config, seed, &progress)?;
    progress.finish();

    for concept in &stream.concepts {
        println!(
            "{:<12} {:<10} {}",
            concept.token(),
            concept.class_word(),
            concept.description
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}
