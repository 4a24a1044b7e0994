//! The deterministic evaluator of the shapes world (see docs/shapes-world.md): image alignment
//! in a fixed feature space, a shape-and-colour detector for text alignment, per-box region
//! checks, and the detector's own calibration.

mod alignment;
mod calibration;
mod detector;
mod features;
mod mask;
mod report;

pub use alignment::{ConceptReference, ShapesEvaluator};
pub use calibration::{detector_report, DetectorReport};
pub use detector::{
    classify_shape, detect, lobe_prototype, text_alignment, DetectedObject, Detection,
    ShapeFeatures, Target, TextAlignment,
};
pub use features::{image_features, Features};
pub use report::{markdown_table, ConceptScores, MethodScores, RegionScore};
