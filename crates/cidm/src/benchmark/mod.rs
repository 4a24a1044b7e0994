//! The continual customization benchmark (issue: the paper's protocol on any task list): a
//! plan ([`BenchmarkPlan`], TOML), a runner that trains every method on every task in order
//! and scores generations after the last task (or after each, for forgetting), pluggable
//! evaluators ([`ConceptEvaluator`]), and the report folder. [`shapes_demo`] is the embedded
//! default that `cidm demo` runs.

mod demo;
mod error;
mod evaluator;
mod plan;
mod report;
mod runner;

pub use demo::{shapes_demo, DemoConfig};
pub use error::{BenchmarkError, Result};
pub use evaluator::{class_prompt, ClipConceptEvaluator, ConceptEvaluator, ShapesConceptEvaluator};
pub use plan::{BenchmarkPlan, LayoutSpec, SamplingPlan, TaskSpec};
pub use report::write_report;
pub use runner::{
    method_label, run_benchmark, to_rgb_image, BenchmarkEvent, BenchmarkResults, LayoutRun,
    MethodRun,
};
