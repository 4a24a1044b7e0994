//! Pretrains the tiny shapes-world Stable Diffusion and writes it as a diffusers directory,
//! then measures how often it draws the asked shape and colour.
//!
//! Usage: `cargo run -p cidm-pretrain --example pretrain_base -- <out> [config.json] [prompts]`
//! (defaults: the committed recipe, `PretrainConfig::default()`, and 48 quality prompts; 0
//! skips the measurement). The CLIP tokenizer files
//! are copied from the core's test fixtures; `CIDM_TOKENIZER` names another folder.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use cidm_diffusion::StableDiffusion;
use cidm_pretrain::quality::grid;
use cidm_pretrain::{measure_quality, pretrain, PretrainConfig, QualitySettings};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: pretrain_base <out> [config.json] [prompts]")?,
    );
    let config: PretrainConfig = match args.next() {
        Some(path) if path != "-" => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        _ => PretrainConfig::default(),
    };
    let prompts: usize = args.next().map_or(Ok(48), |a| a.parse())?;
    let tokenizer = std::env::var_os("CIDM_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../cidm-diffusion/tests/fixtures/clip-tokenizer")
        });
    let device = Default::default();
    // On the pool's threads, not beside them (see `cidm_kernels::on_cpu_pool`).
    let record = cidm_kernels::on_cpu_pool(|| {
        pretrain::<Autodiff<Flex>>(&config, &tokenizer, &out, "flex", &device)
            .map_err(|e| e.to_string())
    })?;
    println!("{}", serde_json::to_string_pretty(&record)?);

    if prompts == 0 {
        return Ok(());
    }
    let model = StableDiffusion::<Flex>::from_model_dir(&out, None, &device)?;
    let settings = QualitySettings {
        prompts,
        ..QualitySettings::default()
    };
    let (report, images) = measure_quality(&model, &settings)?;
    println!(
        "quality ({settings:?}): {}",
        serde_json::to_string(&report)?
    );
    grid(&images, 12).save(out.join("samples.png"))?;
    Ok(())
}
