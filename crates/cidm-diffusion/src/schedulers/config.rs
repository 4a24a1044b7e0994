//! [`SchedulerConfig`]: the subset of a diffusers `scheduler/scheduler_config.json` that DDPM
//! noising, DDIM and DPM-Solver++ read.
//!
//! diffusers builds any scheduler from any scheduler's saved config (`from_config`), so one
//! config type serves all of them: keys no scheduler here reads are ignored, and every field
//! defaults to the diffusers default. Keys whose value would change the result in a way this
//! crate does not implement (`thresholding: true`, Karras sigmas, `algorithm_type: "dpmsolver"`,
//! ...) are rejected with [`Error::UnsupportedConfig`] instead of being ignored, whichever
//! scheduler the config is later used for.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::loading::json::read_text;

/// Path reported in errors for configs that did not come from a file.
const MEMORY: &str = "<memory>";

/// The most training timesteps a config may declare (Stable Diffusion: 1000). Schedules are
/// tables of this length, so the bound keeps a hostile config from asking for gigabytes.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// How betas grow over the training timesteps (diffusers `beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `"linear"`: betas evenly spaced from `beta_start` to `beta_end`.
    Linear,
    /// `"scaled_linear"`: square roots of the betas evenly spaced (Stable Diffusion).
    ScaledLinear,
    /// `"squaredcos_cap_v2"`: the Glide cosine schedule, betas capped at 0.999; ignores
    /// `beta_start` and `beta_end`.
    SquaredcosCapV2,
}

/// What the denoising model predicts (diffusers `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// `"epsilon"`: the noise that was added.
    Epsilon,
    /// `"v_prediction"`: the velocity `sqrt(a) * noise - sqrt(1 - a) * sample`.
    VPrediction,
    /// `"sample"`: the clean sample itself.
    Sample,
}

/// How inference timesteps are spread over the training timesteps (diffusers
/// `timestep_spacing`, table 2 of <https://huggingface.co/papers/2305.08891>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// `"leading"`: multiples of `num_train_timesteps / steps` from 0, plus `steps_offset`.
    Leading,
    /// `"trailing"`: counted down from the last training timestep.
    Trailing,
    /// `"linspace"`: evenly spaced over the whole range, rounded.
    Linspace,
}

/// The noise level DPM-Solver++ steps to last (diffusers `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmasType {
    /// `"zero"`: the last step lands on a clean sample.
    Zero,
    /// `"sigma_min"`: the last step lands on the noise level of training timestep 0.
    SigmaMin,
}

/// A validated scheduler config. Every field has the diffusers default (see [`Default`]); the
/// DPM-Solver fields are ignored by DDIM and DDPM and vice versa, as in diffusers.
///
/// Deserialising (with serde or [`SchedulerConfig::from_json_str`]) checks the values; a config
/// built in code is checked by [`SchedulerConfig::validate`], which every scheduler calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSchedulerConfig")]
pub struct SchedulerConfig {
    /// Number of diffusion steps the model was trained with.
    pub num_train_timesteps: usize,
    /// First beta (for `Linear` and `ScaledLinear`).
    pub beta_start: f64,
    /// Last beta (for `Linear` and `ScaledLinear`).
    pub beta_end: f64,
    /// How betas are spaced.
    pub beta_schedule: BetaSchedule,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Added to every `Leading` timestep (1 for Stable Diffusion 1.x/2.x).
    pub steps_offset: usize,
    /// Timestep spacing; `None` means each scheduler's diffusers default (DDIM `Leading`,
    /// DPM-Solver++ `Linspace`).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM: whether the step to the clean sample uses `alphas_cumprod = 1` (otherwise that
    /// of timestep 0).
    pub set_alpha_to_one: bool,
    /// DDIM: whether the predicted clean sample is clamped to `±clip_sample_range`.
    pub clip_sample: bool,
    /// DDIM: the clamp bound used when `clip_sample` is set.
    pub clip_sample_range: f64,
    /// DPM-Solver++: 1 (DDIM-like) or 2 ("2M"); diffusers' third order is not implemented.
    pub solver_order: usize,
    /// DPM-Solver++: use first order for the last step when there are fewer than 15 steps.
    pub lower_order_final: bool,
    /// DPM-Solver++: always use first order (Euler) for the last step.
    pub euler_at_final: bool,
    /// DPM-Solver++: the noise level after the last step.
    pub final_sigmas_type: FinalSigmasType,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 0,
            timestep_spacing: None,
            set_alpha_to_one: true,
            clip_sample: true,
            clip_sample_range: 1.0,
            solver_order: 2,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmasType::Zero,
        }
    }
}

impl SchedulerConfig {
    /// Reads and validates a diffusers `scheduler_config.json`; errors name `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::parse(&read_text(path)?, path)
    }

    /// Parses and validates the text of a diffusers scheduler config; errors name `<memory>`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Self::parse(json, Path::new(MEMORY))
    }

    /// Checks the numeric ranges and the solver order of a config (built in code or read):
    /// `num_train_timesteps` in `1..=MAX_TRAIN_TIMESTEPS`, `steps_offset` below it, betas in
    /// (0, 1), `clip_sample_range > 0`, `solver_order` 1
    /// or 2. Errors name `<memory>`.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new(MEMORY))
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawSchedulerConfig = serde_json::from_str(&negative_infinity_to_null(text))
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        raw.into_config(path)
    }

    fn validate_at(&self, path: &Path) -> Result<()> {
        if self.num_train_timesteps == 0 || self.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
            return Err(Error::config(
                path,
                format!(
                    "num_train_timesteps = {} is outside 1..={MAX_TRAIN_TIMESTEPS}",
                    self.num_train_timesteps
                ),
            ));
        }
        // `leading` spacing adds the offset to timesteps; past training it can only index out
        // of the schedule (and near `usize::MAX` it would overflow).
        if self.steps_offset >= self.num_train_timesteps {
            return Err(Error::config(
                path,
                format!(
                    "steps_offset = {} must be below num_train_timesteps",
                    self.steps_offset
                ),
            ));
        }
        for (name, beta) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if !(beta > 0.0 && beta < 1.0) {
                return Err(Error::config(
                    path,
                    format!("{name} = {beta} is not in (0, 1)"),
                ));
            }
        }
        if !(self.clip_sample_range > 0.0 && self.clip_sample_range.is_finite()) {
            return Err(Error::config(
                path,
                format!("clip_sample_range = {} must be > 0", self.clip_sample_range),
            ));
        }
        if !matches!(self.solver_order, 1 | 2) {
            return Err(Error::unsupported(
                path,
                "solver_order",
                self.solver_order,
                "1 or 2",
            ));
        }
        Ok(())
    }
}

impl TryFrom<RawSchedulerConfig> for SchedulerConfig {
    type Error = Error;

    fn try_from(raw: RawSchedulerConfig) -> Result<Self> {
        raw.into_config(Path::new(MEMORY))
    }
}

/// Python's `json.dumps` writes `float("-inf")` as the bare token `-Infinity`, which diffusers
/// does for DPM-Solver's default `lambda_min_clipped`; JSON has no such token, so it is
/// rewritten to `null` (outside strings) before parsing and read back as "no clipping".
fn negative_infinity_to_null(text: &str) -> std::borrow::Cow<'_, str> {
    const TOKEN: &str = "-Infinity";
    if !text.contains(TOKEN) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string && rest.starts_with(TOKEN) {
            out.push_str("null");
            rest = &rest[TOKEN.len()..];
            continue;
        }
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// The config as written, with strings for the choices so that an unknown value becomes a
/// typed [`Error::UnsupportedConfig`] rather than a serde message, and with the diffusers
/// options this crate does not implement so that non-default values can be refused.
#[derive(Deserialize)]
#[serde(default)]
struct RawSchedulerConfig {
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    beta_schedule: String,
    trained_betas: Option<serde_json::Value>,
    prediction_type: String,
    steps_offset: usize,
    timestep_spacing: Option<String>,
    set_alpha_to_one: bool,
    clip_sample: bool,
    clip_sample_range: f64,
    thresholding: bool,
    rescale_betas_zero_snr: bool,
    solver_order: usize,
    algorithm_type: String,
    solver_type: String,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigmas_type: String,
    /// `None` (absent, `null` or `-Infinity`) is diffusers' default of no clipping.
    lambda_min_clipped: Option<f64>,
    variance_type: Option<String>,
    use_karras_sigmas: bool,
    use_exponential_sigmas: bool,
    use_beta_sigmas: bool,
    use_lu_lambdas: bool,
    use_flow_sigmas: bool,
    use_dynamic_shifting: bool,
}

impl Default for RawSchedulerConfig {
    fn default() -> Self {
        let d = SchedulerConfig::default();
        Self {
            num_train_timesteps: d.num_train_timesteps,
            beta_start: d.beta_start,
            beta_end: d.beta_end,
            beta_schedule: "linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            steps_offset: d.steps_offset,
            timestep_spacing: None,
            set_alpha_to_one: d.set_alpha_to_one,
            clip_sample: d.clip_sample,
            clip_sample_range: d.clip_sample_range,
            thresholding: false,
            rescale_betas_zero_snr: false,
            solver_order: d.solver_order,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: d.lower_order_final,
            euler_at_final: d.euler_at_final,
            final_sigmas_type: "zero".into(),
            lambda_min_clipped: None,
            variance_type: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            use_dynamic_shifting: false,
        }
    }
}

impl RawSchedulerConfig {
    fn into_config(self, path: &Path) -> Result<SchedulerConfig> {
        self.refuse_unsupported(path)?;
        let beta_schedule = match self.beta_schedule.as_str() {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredcosCapV2,
            other => {
                return Err(Error::unsupported(
                    path,
                    "beta_schedule",
                    other,
                    "\"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\"",
                ))
            }
        };
        let prediction_type = match self.prediction_type.as_str() {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(Error::unsupported(
                    path,
                    "prediction_type",
                    other,
                    "\"epsilon\", \"v_prediction\" or \"sample\"",
                ))
            }
        };
        let timestep_spacing = match self.timestep_spacing.as_deref() {
            None => None,
            Some("leading") => Some(TimestepSpacing::Leading),
            Some("trailing") => Some(TimestepSpacing::Trailing),
            Some("linspace") => Some(TimestepSpacing::Linspace),
            Some(other) => {
                return Err(Error::unsupported(
                    path,
                    "timestep_spacing",
                    other,
                    "\"leading\", \"trailing\" or \"linspace\"",
                ))
            }
        };
        let final_sigmas_type = match self.final_sigmas_type.as_str() {
            "zero" => FinalSigmasType::Zero,
            "sigma_min" => FinalSigmasType::SigmaMin,
            other => {
                return Err(Error::unsupported(
                    path,
                    "final_sigmas_type",
                    other,
                    "\"zero\" or \"sigma_min\"",
                ))
            }
        };
        let config = SchedulerConfig {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule,
            prediction_type,
            steps_offset: self.steps_offset,
            timestep_spacing,
            set_alpha_to_one: self.set_alpha_to_one,
            clip_sample: self.clip_sample,
            clip_sample_range: self.clip_sample_range,
            solver_order: self.solver_order,
            lower_order_final: self.lower_order_final,
            euler_at_final: self.euler_at_final,
            final_sigmas_type,
        };
        config.validate_at(path)?;
        Ok(config)
    }

    /// Refuses every diffusers option whose value asks for behaviour not implemented here.
    fn refuse_unsupported(&self, path: &Path) -> Result<()> {
        let unsupported = |field: &str, value: &dyn std::fmt::Debug, supported: &str| {
            Err(Error::unsupported(path, field, value, supported))
        };
        if matches!(&self.trained_betas, Some(v) if !v.is_null()) {
            return unsupported("trained_betas", &"[...]", "null (use beta_schedule)");
        }
        if self.algorithm_type != "dpmsolver++" {
            return unsupported("algorithm_type", &self.algorithm_type, "\"dpmsolver++\"");
        }
        if self.solver_type != "midpoint" {
            return unsupported("solver_type", &self.solver_type, "\"midpoint\"");
        }
        if let Some(lambda) = self.lambda_min_clipped {
            return unsupported("lambda_min_clipped", &lambda, "-Infinity (no clipping)");
        }
        if let Some(v @ ("learned" | "learned_range")) = self.variance_type.as_deref() {
            return unsupported(
                "variance_type",
                &v,
                "a fixed variance (null, \"fixed_small\", ...)",
            );
        }
        let flags = [
            ("thresholding", self.thresholding),
            ("rescale_betas_zero_snr", self.rescale_betas_zero_snr),
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
        ];
        match flags.into_iter().find(|&(_, on)| on) {
            Some((field, on)) => unsupported(field, &on, "false"),
            None => Ok(()),
        }
    }
}
