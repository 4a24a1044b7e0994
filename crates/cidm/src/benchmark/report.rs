//! The report folder of a benchmark run: `results.json` (everything, as serde data),
//! `report.md` (the paper's table per concept and method, the forgetting table, regions,
//! timings), `concepts.png` (one generation per concept and method beside a training image),
//! `regions.png` (the multi-concept images) and `forgetting.png` (mean image alignment of the
//! concepts learned so far, after each task).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use cidm_continual::Method;
use cidm_diffusion::io::write_atomic;
use cidm_shapes::eval::markdown_table;
use image::RgbImage;

use super::error::{BenchmarkError, Result};
use super::plan::BenchmarkPlan;
use super::runner::{method_label, BenchmarkResults};
use crate::figures::{image_grid, line_plot, ImageGrid, LinePlot, Series};

/// Writes the report of `results` into `out` and returns the files written.
pub fn write_report(
    plan: &BenchmarkPlan,
    results: &BenchmarkResults,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let json = serde_json::to_vec_pretty(results).map_err(|e| BenchmarkError::Report {
        path: out.join("results.json"),
        reason: e.to_string(),
    })?;
    written.push(write(out, "results.json", &json)?);
    let concepts = concept_grid(plan, results)?;
    written.push(write_png(out, "concepts.png", &concepts)?);
    if results.methods.iter().any(|m| !m.layouts.is_empty()) {
        written.push(write_png(out, "regions.png", &layout_grid(plan, results)?)?);
    }
    let plot = forgetting_plot(results)?;
    if let Some(plot) = &plot {
        written.push(write_png(out, "forgetting.png", plot)?);
    }
    let markdown = markdown(plan, results, plot.is_some());
    written.push(write(out, "report.md", markdown.as_bytes())?);
    Ok(written)
}

fn markdown(plan: &BenchmarkPlan, results: &BenchmarkResults, plot: bool) -> String {
    let mut md = String::from("# Continual customization benchmark\n\n");
    let _ = writeln!(
        md,
        "{} tasks ({}) learned in order by {} on `{}` ({} backend), {} training steps per \
         task, rank {}; {} sampling steps, guidance {}, {} image(s) per prompt. Wall time {:.0} s.\n",
        results.tasks.len(),
        results.tasks.join(", "),
        results
            .methods
            .iter()
            .map(|m| method_label(m.method))
            .collect::<Vec<_>>()
            .join(", "),
        plan.model.display(),
        results.backend,
        plan.training.steps,
        plan.training.lora.rank,
        plan.sampling.steps,
        plan.sampling.guidance,
        plan.sampling.images_per_prompt,
        results.seconds,
    );
    let finals: Vec<_> = results
        .methods
        .iter()
        .filter_map(|m| m.final_scores.clone())
        .collect();
    match &results.evaluator {
        Some(name) => {
            let _ = writeln!(
                md,
                "## Every concept after the last task\n\nScored by the {name}: IA is image \
                 alignment, TA text alignment, both in [0, 1].\n"
            );
            md.push_str(&markdown_table(&finals));
            md.push('\n');
            md.push_str(&verdict(results));
        }
        None => md.push_str("No evaluator was given: images only.\n"),
    }
    md.push_str("\n![one generation per concept and method](concepts.png)\n");
    if results.methods.iter().any(|m| !m.history.is_empty()) {
        md.push_str("\n## Forgetting\n\nMean IA over the concepts learned so far, after each task.\n\n| after task |");
        for m in &results.methods {
            let _ = write!(md, " {} |", method_label(m.method));
        }
        md.push_str("\n|---|");
        md.push_str(&"---:|".repeat(results.methods.len()));
        md.push('\n');
        for g in 1..=results.tasks.len() {
            let _ = write!(md, "| {g} |");
            for m in &results.methods {
                let value = m
                    .history
                    .iter()
                    .find(|(n, _)| *n == g)
                    .and_then(|(_, s)| s.mean_image_alignment());
                let _ = write!(md, " {} |", value.map_or("-".into(), |v| format!("{v:.3}")));
            }
            md.push('\n');
        }
        if plot {
            md.push_str("\n![forgetting](forgetting.png)\n");
        }
    }
    if results.methods.iter().any(|m| !m.layouts.is_empty()) {
        md.push_str("\n## Multi-concept generation with regions\n\n| method | prompt | boxes showing their concept |\n|---|---|---:|\n");
        for m in &results.methods {
            for layout in &m.layouts {
                let shown = layout.regions.as_ref().map_or("-".to_string(), |r| {
                    format!(
                        "{}/{}",
                        r.iter().filter(|s| s.shows_concept).count(),
                        r.len()
                    )
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {shown} |",
                    method_label(m.method),
                    layout.prompt
                );
            }
        }
        md.push_str("\n![multi-concept images](regions.png)\n");
    }
    md.push_str("\n## Training\n\nDenoising loss at each task's last step.\n\n| task |");
    for m in &results.methods {
        let _ = write!(md, " {} |", method_label(m.method));
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(results.methods.len()));
    md.push('\n');
    for (t, name) in results.tasks.iter().enumerate() {
        let _ = write!(md, "| {name} |");
        for m in &results.methods {
            let loss = m.final_losses.get(t).copied().flatten();
            let _ = write!(md, " {} |", loss.map_or("-".into(), |v| format!("{v:.4}")));
        }
        md.push('\n');
    }
    md.push_str(
        "\n## Time\n\n| method | training (s) | generation and scoring (s) |\n|---|---:|---:|\n",
    );
    for m in &results.methods {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} |",
            method_label(m.method),
            m.train_seconds,
            m.eval_seconds
        );
    }
    md
}

/// States, from the numbers, whether CIDM's mean image alignment beats every baseline, as the
/// paper's table has it.
fn verdict(results: &BenchmarkResults) -> String {
    let mean = |method: Method| {
        results
            .methods
            .iter()
            .find(|m| m.method == method)
            .and_then(|m| m.final_scores.as_ref())
            .and_then(|s| s.mean_image_alignment())
    };
    let Some(cidm) = mean(Method::Cidm) else {
        return String::new();
    };
    let others: Vec<(Method, f32)> = results
        .methods
        .iter()
        .filter(|m| m.method != Method::Cidm)
        .filter_map(|m| mean(m.method).map(|v| (m.method, v)))
        .collect();
    if others.is_empty() {
        return String::new();
    }
    let beaten: Vec<&(Method, f32)> = others.iter().filter(|(_, v)| cidm > *v).collect();
    let list = |items: &[&(Method, f32)]| {
        items
            .iter()
            .map(|(m, v)| format!("{} {v:.3}", method_label(*m)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if beaten.len() == others.len() {
        format!(
            "\nCIDM's mean IA ({cidm:.3}) is above every baseline's ({}), as in the paper's table.\n",
            list(&beaten)
        )
    } else {
        let not: Vec<&(Method, f32)> = others.iter().filter(|(_, v)| cidm <= *v).collect();
        format!(
            "\nCIDM's mean IA ({cidm:.3}) is NOT above every baseline: {} score at least as \
             high, so this run does not reproduce the paper's ordering.\n",
            list(&not)
        )
    }
}

fn concept_grid(plan: &BenchmarkPlan, results: &BenchmarkResults) -> Result<RgbImage> {
    let mut columns = vec!["training".to_string()];
    columns.extend(
        results
            .methods
            .iter()
            .map(|m| method_label(m.method).to_string()),
    );
    let generated: Vec<Vec<Option<RgbImage>>> = (0..plan.tasks.len())
        .map(|t| {
            results
                .methods
                .iter()
                .map(|m| {
                    m.images
                        .get(t)
                        .and_then(|prompts| prompts.first())
                        .and_then(|files| files.first())
                        .and_then(|f| read(f))
                })
                .collect()
        })
        .collect();
    // Training images come at any size: show them at the generated images' size.
    let size = generated
        .iter()
        .flatten()
        .flatten()
        .next()
        .map(|i| i.dimensions());
    let cells = plan
        .tasks
        .iter()
        .zip(generated)
        .map(|(task, row)| {
            let reference = first_image_in(&task.images).map(|image| match size {
                Some((w, h)) if image.dimensions() != (w, h) => {
                    image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle)
                }
                _ => image,
            });
            std::iter::once(reference).chain(row).collect()
        })
        .collect();
    grid(
        "one generation per concept, after the last task",
        plan.tasks.iter().map(|t| t.name.clone()).collect(),
        columns,
        cells,
    )
}

fn layout_grid(plan: &BenchmarkPlan, results: &BenchmarkResults) -> Result<RgbImage> {
    let cells = (0..plan.layouts.len())
        .map(|i| {
            results
                .methods
                .iter()
                .map(|m| m.layouts.get(i).and_then(|l| read(&l.image)))
                .collect()
        })
        .collect();
    grid(
        "multi-concept generation with regions",
        plan.layouts.iter().map(|l| l.prompt.clone()).collect(),
        results
            .methods
            .iter()
            .map(|m| method_label(m.method).to_string())
            .collect(),
        cells,
    )
}

fn grid(
    title: &str,
    rows: Vec<String>,
    columns: Vec<String>,
    cells: Vec<Vec<Option<RgbImage>>>,
) -> Result<RgbImage> {
    image_grid(&ImageGrid {
        title: Some(title.into()),
        row_labels: rows,
        column_labels: columns,
        cells,
        scale: 4,
    })
    .map_err(|e| BenchmarkError::Report {
        path: PathBuf::from(title),
        reason: e.to_string(),
    })
}

fn forgetting_plot(results: &BenchmarkResults) -> Result<Option<RgbImage>> {
    let series: Vec<Series> = results
        .methods
        .iter()
        .filter(|m| !m.history.is_empty())
        .map(|m| Series {
            name: method_label(m.method).to_string(),
            points: m
                .history
                .iter()
                .filter_map(|(g, s)| s.mean_image_alignment().map(|v| (*g as f64, v as f64)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    line_plot(&LinePlot {
        title: "mean image alignment of the concepts learned so far".into(),
        x_label: "after task".into(),
        y_label: "mean IA".into(),
        series,
        width: 640,
        height: 400,
        y_range: None,
    })
    .map(Some)
    .map_err(|e| BenchmarkError::Report {
        path: PathBuf::from("forgetting.png"),
        reason: e.to_string(),
    })
}

/// The first PNG or JPEG of a folder, by name, if it can be read.
fn first_image_in(dir: &Path) -> Option<RgbImage> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    files.first().and_then(|f| read(f))
}

fn read(path: &Path) -> Option<RgbImage> {
    image::open(path).ok().map(|i| i.to_rgb8())
}

fn write(out: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = out.join(name);
    write_atomic(&path, bytes)?;
    Ok(path)
}

fn write_png(out: &Path, name: &str, image: &RgbImage) -> Result<PathBuf> {
    let path = out.join(name);
    crate::images::save_rgb_png(image, &path)?;
    Ok(path)
}
