//! The progress display of benchmark runs: one bar that follows training and generation.

use cidm::benchmark::{method_label, BenchmarkEvent};
use indicatif::{ProgressBar, ProgressStyle};

/// An empty bar; [`show`] sets its phase, length and position.
pub fn benchmark_bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    )
}

/// Moves `bar` for one runner event.
pub fn show(bar: &ProgressBar, event: BenchmarkEvent) {
    match event {
        BenchmarkEvent::Training {
            method,
            task,
            tasks,
            step,
            steps,
        } => {
            bar.set_message(format!(
                "{} task {task}/{tasks}: training",
                method_label(method)
            ));
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
        }
        BenchmarkEvent::Generating {
            method,
            done,
            total,
        } => {
            bar.set_message(format!("{}: generating", method_label(method)));
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        BenchmarkEvent::Evaluated {
            method,
            after_task,
            mean_image_alignment,
        } => {
            if let Some(ia) = mean_image_alignment {
                bar.println(format!(
                    "{} after task {after_task}: mean IA {ia:.3}",
                    method_label(method)
                ));
            }
        }
    }
}
