//! The run-time switches of the fused kernels, so one build can time and check both paths.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Environment variable that turns the fused attention off when set to `0`, `false`, `off`
/// or `no` (any case); unset or any other value leaves it on. Read once, on the first call;
/// [`set_fused_attention`] overrides it from then on.
pub const SWITCH_VAR: &str = "CIDM_FUSED_ATTENTION";

/// Environment variable that keeps cubek's tensor-core attention out of the f16 inference
/// attention's autotune (so every call runs this crate's kernel) when set like
/// [`SWITCH_VAR`]; [`set_attention_tensor_cores`] overrides it.
pub const TENSOR_CORES_SWITCH_VAR: &str = "CIDM_ATTENTION_TENSOR_CORES";

/// Environment variable that turns the fused group norm off, read like [`SWITCH_VAR`];
/// [`set_fused_group_norm`] overrides it.
pub const GROUP_NORM_SWITCH_VAR: &str = "CIDM_FUSED_GROUP_NORM";

/// Environment variable that turns the fused layer norm off, read like [`SWITCH_VAR`];
/// [`set_fused_layer_norm`] overrides it.
pub const LAYER_NORM_SWITCH_VAR: &str = "CIDM_FUSED_LAYER_NORM";

/// Environment variable that turns the fused GEGLU off, read like [`SWITCH_VAR`];
/// [`set_fused_geglu`] overrides it.
pub const GEGLU_SWITCH_VAR: &str = "CIDM_FUSED_GEGLU";

/// Environment variable that turns the CPU convolution off, read like [`SWITCH_VAR`];
/// [`set_fused_conv`] overrides it.
pub const CONV_SWITCH_VAR: &str = "CIDM_FUSED_CONV";

/// Environment variable that turns the CPU linear layer off, read like [`SWITCH_VAR`];
/// [`set_fused_linear`] overrides it.
pub const LINEAR_SWITCH_VAR: &str = "CIDM_FUSED_LINEAR";

/// Environment variable that sets how many f32 values of rows one unit (GPU thread) of the
/// attention kernels may hold before its rows are split over more units (see
/// `docs/performance.md`, "Registers per thread"): a whole number from 1 on; unset or not
/// such a number, [`DEFAULT_ATTENTION_HELD_VALUES`]. Read once, on the first attention
/// launch. For weighing the split on a GPU (`tools/gpu_bench.sh --held-values`) and reading
/// the registers it gives (`tools/kernel_registers.sh`).
pub const HELD_VALUES_VAR: &str = "CIDM_ATTENTION_HELD_VALUES";

/// [`HELD_VALUES_VAR`]'s default. What NVIDIA's compiler makes of a limit (sm_90): a unit
/// holding 80 values takes about 128 registers, 120 to 128 values about 168, 160 up to all
/// 255 a thread has; 192 and more spill to local memory.
pub const DEFAULT_ATTENTION_HELD_VALUES: usize = 128;

/// The limit [`HELD_VALUES_VAR`] sets (its default when unset).
pub fn attention_held_values() -> usize {
    static HELD: OnceLock<usize> = OnceLock::new();
    *HELD.get_or_init(|| held_values_from(std::env::var(HELD_VALUES_VAR).ok().as_deref()))
}

/// [`HELD_VALUES_VAR`]'s value read: a whole number from 1 on, else the default (with a
/// warning when the variable is set to something else).
fn held_values_from(value: Option<&str>) -> usize {
    match value.map(|v| v.trim().parse::<usize>()) {
        None => DEFAULT_ATTENTION_HELD_VALUES,
        Some(Ok(held)) if held >= 1 => held,
        Some(_) => {
            tracing::warn!(
                value,
                "{HELD_VALUES_VAR} is not a whole number from 1 on; using {DEFAULT_ATTENTION_HELD_VALUES}"
            );
            DEFAULT_ATTENTION_HELD_VALUES
        }
    }
}

/// [`Switch::state`]'s values: follow the variable, forced on, forced off.
const FOLLOW_ENV: u8 = 0;
const FORCED_ON: u8 = 1;
const FORCED_OFF: u8 = 2;

/// One kernel's switch: an environment variable, read once (kernels run hundreds of times
/// per UNet step, and the environment does not change under a running program), and the
/// process-wide override set from code.
pub(crate) struct Switch {
    var: &'static str,
    state: AtomicU8,
    env: OnceLock<bool>,
}

impl Switch {
    const fn new(var: &'static str) -> Self {
        Self {
            var,
            state: AtomicU8::new(FOLLOW_ENV),
            env: OnceLock::new(),
        }
    }

    /// The override if one is set, else the variable.
    pub(crate) fn enabled(&self) -> bool {
        resolve(self.state.load(Ordering::Relaxed), || {
            *self
                .env
                .get_or_init(|| enabled_by(std::env::var(self.var).ok().as_deref()))
        })
    }

    fn set(&self, enabled: Option<bool>) {
        let state = match enabled {
            None => FOLLOW_ENV,
            Some(true) => FORCED_ON,
            Some(false) => FORCED_OFF,
        };
        self.state.store(state, Ordering::Relaxed);
    }
}

/// The switch of [`crate::fused_attention`].
pub(crate) static ATTENTION: Switch = Switch::new(SWITCH_VAR);
/// The switch of the tensor-core candidate of the f16 inference attention.
pub(crate) static TENSOR_CORES: Switch = Switch::new(TENSOR_CORES_SWITCH_VAR);
/// The switch of [`crate::fused_group_norm`].
pub(crate) static GROUP_NORM: Switch = Switch::new(GROUP_NORM_SWITCH_VAR);
/// The switch of [`crate::fused_layer_norm`].
pub(crate) static LAYER_NORM: Switch = Switch::new(LAYER_NORM_SWITCH_VAR);
/// The switch of [`crate::fused_geglu`].
pub(crate) static GEGLU: Switch = Switch::new(GEGLU_SWITCH_VAR);
/// The switch of [`crate::fused_conv2d`].
pub(crate) static CONV: Switch = Switch::new(CONV_SWITCH_VAR);
/// The switch of [`crate::fused_linear`].
pub(crate) static LINEAR: Switch = Switch::new(LINEAR_SWITCH_VAR);

/// Whether [`crate::fused_attention`] may use the fused kernel: the override of
/// [`set_fused_attention`] if one is set, else [`SWITCH_VAR`]. "May": the kernel still only
/// runs on the backends, shapes and dtypes it supports.
pub fn fused_attention_enabled() -> bool {
    ATTENTION.enabled()
}

/// Overrides [`SWITCH_VAR`] for the whole process: `Some(false)` forces the plain path,
/// `Some(true)` allows the kernel whatever the variable says, `None` returns to the variable.
/// Calls already running are not affected. The GPU benchmark uses it to time and check the
/// fused and the plain attention side by side in one run.
pub fn set_fused_attention(enabled: Option<bool>) {
    ATTENTION.set(enabled);
}

/// Whether the fused attention's f16 forwards without autodiff may run on cubek's
/// tensor-core attention where CubeCL's autotune finds it faster (see
/// [`crate::tensor_core_attention_calls`]): the override of [`set_attention_tensor_cores`]
/// if one is set, else [`TENSOR_CORES_SWITCH_VAR`].
pub fn attention_tensor_cores_enabled() -> bool {
    TENSOR_CORES.enabled()
}

/// Overrides [`TENSOR_CORES_SWITCH_VAR`] for the whole process, as [`set_fused_attention`]
/// does [`SWITCH_VAR`].
pub fn set_attention_tensor_cores(enabled: Option<bool>) {
    TENSOR_CORES.set(enabled);
}

/// Whether [`crate::fused_group_norm`] may use the fused kernels, as
/// [`fused_attention_enabled`] says for the attention.
pub fn fused_group_norm_enabled() -> bool {
    GROUP_NORM.enabled()
}

/// Overrides [`GROUP_NORM_SWITCH_VAR`] for the whole process, as [`set_fused_attention`]
/// does [`SWITCH_VAR`].
pub fn set_fused_group_norm(enabled: Option<bool>) {
    GROUP_NORM.set(enabled);
}

/// Whether [`crate::fused_layer_norm`] may use the fused kernels, as
/// [`fused_attention_enabled`] says for the attention.
pub fn fused_layer_norm_enabled() -> bool {
    LAYER_NORM.enabled()
}

/// Overrides [`LAYER_NORM_SWITCH_VAR`] for the whole process, as [`set_fused_attention`]
/// does [`SWITCH_VAR`].
pub fn set_fused_layer_norm(enabled: Option<bool>) {
    LAYER_NORM.set(enabled);
}

/// Whether [`crate::fused_geglu`] may use the fused kernels, as [`fused_attention_enabled`]
/// says for the attention.
pub fn fused_geglu_enabled() -> bool {
    GEGLU.enabled()
}

/// Overrides [`GEGLU_SWITCH_VAR`] for the whole process, as [`set_fused_attention`] does
/// [`SWITCH_VAR`].
pub fn set_fused_geglu(enabled: Option<bool>) {
    GEGLU.set(enabled);
}

/// Whether [`crate::fused_conv2d`] may use the CPU convolution, as
/// [`fused_attention_enabled`] says for the attention.
pub fn fused_conv_enabled() -> bool {
    CONV.enabled()
}

/// Overrides [`CONV_SWITCH_VAR`] for the whole process, as [`set_fused_attention`] does
/// [`SWITCH_VAR`].
pub fn set_fused_conv(enabled: Option<bool>) {
    CONV.set(enabled);
}

/// Whether [`crate::fused_linear`] may use the CPU linear layer, as
/// [`fused_attention_enabled`] says for the attention.
pub fn fused_linear_enabled() -> bool {
    LINEAR.enabled()
}

/// Overrides [`LINEAR_SWITCH_VAR`] for the whole process, as [`set_fused_attention`] does
/// [`SWITCH_VAR`].
pub fn set_fused_linear(enabled: Option<bool>) {
    LINEAR.set(enabled);
}

/// The switch from an override state and the variable's setting (asked only when needed).
fn resolve(state: u8, env: impl FnOnce() -> bool) -> bool {
    match state {
        FORCED_ON => true,
        FORCED_OFF => false,
        _ => env(),
    }
}

fn enabled_by(value: Option<&str>) -> bool {
    let off = |v: &str| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "off" | "no"
        )
    };
    !value.is_some_and(off)
}

#[cfg(test)]
mod tests {
    use super::{
        enabled_by, held_values_from, resolve, Switch, DEFAULT_ATTENTION_HELD_VALUES, FOLLOW_ENV,
        FORCED_OFF, FORCED_ON,
    };

    /// A whole number from 1 on sets the limit (spaces around it allowed); unset, zero,
    /// negative, fractional or other text keep the default.
    #[test]
    fn held_values() {
        assert_eq!(held_values_from(None), DEFAULT_ATTENTION_HELD_VALUES);
        assert_eq!(held_values_from(Some("64")), 64);
        assert_eq!(held_values_from(Some(" 1000 ")), 1000);
        assert_eq!(held_values_from(Some("1")), 1);
        for bad in ["0", "-5", "12.5", "", "many"] {
            assert_eq!(
                held_values_from(Some(bad)),
                DEFAULT_ATTENTION_HELD_VALUES,
                "{bad:?}"
            );
        }
    }

    /// Unset and unrelated values keep the kernel on; the four "off" spellings turn it off.
    #[test]
    fn switch_values() {
        assert!(enabled_by(None));
        assert!(enabled_by(Some("1")));
        assert!(enabled_by(Some("")));
        for off in ["0", "false", "OFF", " no "] {
            assert!(
                !enabled_by(Some(off)),
                "{off:?} should switch the kernel off"
            );
        }
    }

    /// A forced state wins over the variable either way (and does not even read it); without
    /// one the variable decides.
    #[test]
    fn override_wins() {
        let unread = || panic!("the variable must not be read under an override");
        assert!(resolve(FORCED_ON, unread));
        assert!(!resolve(FORCED_OFF, unread));
        assert!(resolve(FOLLOW_ENV, || true));
        assert!(!resolve(FOLLOW_ENV, || false));
    }

    /// Each switch has its own override: setting one leaves another as its variable says
    /// (here an unset variable: on), and `None` returns to the variable.
    #[test]
    fn switches_are_independent() {
        let first = Switch::new("CIDM_TEST_SWITCH_THAT_IS_NEVER_SET_A");
        let second = Switch::new("CIDM_TEST_SWITCH_THAT_IS_NEVER_SET_B");
        first.set(Some(false));
        assert!(!first.enabled());
        assert!(second.enabled());
        first.set(None);
        assert!(first.enabled());
    }
}
