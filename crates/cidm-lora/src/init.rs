//! PEFT's default LoRA initialisation, drawn on the host so that it is reproducible on every
//! backend: the down factor is Kaiming-uniform, the up factor zero, so a fresh adapter leaves
//! the model's output unchanged.
//!
//! PEFT calls `kaiming_uniform_(lora_A, a=sqrt(5))` on `lora_A` of shape `[r, in]`: gain
//! `sqrt(2 / (1 + 5))`, bound `gain * sqrt(3 / in) = 1 / sqrt(in)`, so every entry is
//! `U(-1/sqrt(in), 1/sqrt(in))`.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The entries of a `[d_in, rank]` down factor (row-major) for module `path`: uniform on
/// `[-1/sqrt(d_in), 1/sqrt(d_in))`.
///
/// Each module draws from its own ChaCha8 stream, selected by a hash of its path, so a module's
/// initial value depends only on the seed and its name, not on which other modules are
/// targeted.
pub(crate) fn kaiming_uniform_down(seed: u64, path: &str, d_in: usize, rank: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(fnv1a(path));
    let bound = 1.0 / (d_in as f64).sqrt();
    (0..d_in * rank)
        .map(|_| ((2.0 * unit_interval(&mut rng) - 1.0) * bound) as f32)
        .collect()
}

/// A uniform draw from `[0, 1)` with 53 random bits, defined here rather than through a
/// distribution crate so that the values can never change with a dependency update.
fn unit_interval(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// 64-bit FNV-1a: a stable hash of a module path (std's hashers are not stable across
/// releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_bounded_seeded_and_per_module() {
        let a = kaiming_uniform_down(7, "x.attn2.to_q", 64, 4);
        let bound = 1.0 / 8.0;
        assert_eq!(a.len(), 256);
        assert!(a.iter().all(|v| v.abs() <= bound));
        // Spread over the interval, not stuck near zero.
        assert!(a.iter().any(|v| *v > 0.9 * bound) && a.iter().any(|v| *v < -0.9 * bound));
        assert_eq!(a, kaiming_uniform_down(7, "x.attn2.to_q", 64, 4));
        assert_ne!(a, kaiming_uniform_down(8, "x.attn2.to_q", 64, 4));
        assert_ne!(a, kaiming_uniform_down(7, "x.attn2.to_k", 64, 4));
    }
}
