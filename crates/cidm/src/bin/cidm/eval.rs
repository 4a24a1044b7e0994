//! `cidm eval --clip`: the paper's CLIP metrics over a folder of generated images, image
//! alignment against reference images and text alignment against prompts.

use std::path::{Path, PathBuf};

use cidm::backend::{self, Selected};
use cidm::diffusion::io::write_atomic;
use cidm::diffusion::vae::Rgb8Image;
use cidm::eval::{
    image_alignment, image_files, load_image, read_captions, replace_class_words, text_alignment,
    ClassWord, ClipScorer, Score,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Score generated images with CLIP: image alignment (IA, mean CLIP image cosine with the
/// reference images) and text alignment (TA, CLIPScore with each image's prompt), both x100.
#[derive(clap::Args)]
pub struct Args {
    /// A transformers CLIPModel directory (config.json, model.safetensors, tokenizer files,
    /// preprocessor_config.json), e.g. openai/clip-vit-base-patch32 as the paper uses.
    #[arg(long = "clip")]
    clip: PathBuf,
    /// The folder of generated images (PNG or JPEG).
    #[arg(long)]
    images: PathBuf,
    /// A folder of reference images of the concept: computes IA.
    #[arg(long)]
    references: Option<PathBuf>,
    /// One prompt for every image; without it, each image's .txt caption beside it is used
    /// (computes TA).
    #[arg(long)]
    prompt: Option<String>,
    /// Replace a concept word by its class word in the prompts before scoring TA, e.g.
    /// `--class-word "<dog1>=dog"`; repeatable.
    #[arg(long = "class-word", value_name = "WORD=CLASS")]
    class_words: Vec<String>,
    /// Also write the scores, per image too, as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Images or prompts per CLIP forward pass.
    #[arg(long, default_value_t = cidm::eval::scorer::DEFAULT_BATCH)]
    batch_size: usize,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    ProgressBar::new(len as u64)
        .with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {elapsed} elapsed")
                .expect("the progress template is valid"),
        )
        .with_message(what.to_string())
}

fn load_folder(files: &[PathBuf], what: &str) -> Result<Vec<Rgb8Image>, cidm::eval::EvalError> {
    let bar = bar(files.len(), what);
    let images = files
        .iter()
        .map(|path| {
            let image = load_image(path);
            bar.inc(1);
            image
        })
        .collect();
    bar.finish_and_clear();
    images
}

/// Embeds images in batches with a progress bar.
fn embed(
    scorer: &ClipScorer<Selected>,
    images: &[Rgb8Image],
    batch: usize,
    what: &str,
) -> Result<Vec<Vec<f32>>, cidm::eval::EvalError> {
    let bar = bar(images.len(), what);
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        out.extend(scorer.image_embeddings(chunk)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let class_words = args
        .class_words
        .iter()
        .map(|spec| spec.parse::<ClassWord>())
        .collect::<Result<Vec<_>, _>>()?;
    let files = image_files(&args.images)?;
    let prompts = match &args.prompt {
        Some(prompt) => Some(vec![prompt.clone(); files.len()]),
        None => read_captions(&files)?,
    }
    .map(|prompts| {
        prompts
            .iter()
            .map(|p| replace_class_words(p, &class_words))
            .collect::<Vec<_>>()
    });
    let reference_files = args.references.as_deref().map(image_files).transpose()?;
    if prompts.is_none() && reference_files.is_none() {
        return Err(format!(
            "nothing to score: give --references for IA, and --prompt or .txt captions in {} for TA",
            args.images.display()
        )
        .into());
    }

    let device = backend::device();
    let scorer =
        ClipScorer::<Selected>::from_dir(&args.clip, &device)?.with_batch_size(args.batch_size);
    tracing::info!(
        model = %args.clip.display(),
        backend = backend::NAME,
        images = files.len(),
        "scoring with CLIP"
    );
    let generated = load_folder(&files, "loading images")?;
    let embeddings = embed(&scorer, &generated, args.batch_size, "embedding images")?;

    let ia: Option<Score> = match &reference_files {
        Some(reference_files) => {
            let references = load_folder(reference_files, "loading references")?;
            let refs = embed(
                &scorer,
                &references,
                args.batch_size,
                "embedding references",
            )?;
            Some(image_alignment(&embeddings, &refs)?)
        }
        None => None,
    };
    let ta: Option<Score> = match &prompts {
        Some(prompts) => Some(text_alignment(
            &embeddings,
            &scorer.text_embeddings(prompts)?,
        )?),
        None => None,
    };

    println!("images      {} in {}", files.len(), args.images.display());
    if let (Some(score), Some(refs)) = (&ia, &reference_files) {
        println!("references  {}", refs.len());
        println!("IA          {:.2}", score.mean);
    }
    if let Some(score) = &ta {
        println!("TA          {:.2}", score.mean);
    }

    if let Some(path) = &args.json {
        let per_image: Vec<serde_json::Value> = files
            .iter()
            .enumerate()
            .map(|(i, file)| {
                serde_json::json!({
                    "file": file_name(file),
                    "prompt": prompts.as_ref().map(|p| p[i].clone()),
                    "image_alignment": ia.as_ref().map(|s| s.per_image[i]),
                    "text_alignment": ta.as_ref().map(|s| s.per_image[i]),
                })
            })
            .collect();
        let report = serde_json::json!({
            "clip": args.clip.display().to_string(),
            "images": files.len(),
            "references": reference_files.as_ref().map(Vec::len),
            "image_alignment": ia.as_ref().map(|s| s.mean),
            "text_alignment": ta.as_ref().map(|s| s.mean),
            "per_image": per_image,
        });
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
