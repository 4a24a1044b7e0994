//! The run-time switch of the fused kernels, so one build can time both paths.

/// Environment variable that turns the fused attention off when set to `0`, `false`, `off`
/// or `no` (any case); unset or any other value leaves it on.
pub const SWITCH_VAR: &str = "CIDM_FUSED_ATTENTION";

/// Whether [`crate::fused_attention`] may use the fused kernel, per [`SWITCH_VAR`]. Read on
/// every call, so a benchmark can flip it between runs in one process.
pub fn fused_attention_enabled() -> bool {
    enabled_by(std::env::var(SWITCH_VAR).ok().as_deref())
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
    use super::enabled_by;

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
}
