//! The fuzz harness shared by the `hostile_*` tests: proptest mutations of valid fixture files
//! (byte flips and overwrites, truncation, splices of random or repeated bytes, a rewritten
//! length prefix), run for a bounded number of cases and a bounded time, with a count of the
//! inputs tried and of those rejected printed for the docs (`--nocapture` shows it).
//!
//! A panic in the parser fails the test with proptest's shrunk input; each target's check
//! asserts that every rejection is one of the typed errors that parser may return.

#![allow(dead_code)]

use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// One edit of a byte string. Positions are fractions of the length (in 1/65536ths) so that
/// one strategy fits files of any size; `focus` confines them to the first `focus` bytes (a
/// safetensors header) when set.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip { at: u16, mask: u8 },
    /// Overwrite one byte with an "interesting" value (0, 0xff, digits, quotes, braces).
    Set { at: u16, value: u8 },
    /// Cut the input at a position.
    Truncate { at: u16 },
    /// Replace a range with other bytes.
    Splice { at: u16, len: u8, with: Vec<u8> },
    /// Repeat a range in place (duplicated keys, duplicated lines).
    Repeat { at: u16, len: u8 },
    /// Overwrite the first 8 bytes (a safetensors header length) with a little-endian u64.
    Prefix { value: u64 },
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(b'0'),
        Just(b'9'),
        Just(b'-'),
        Just(b'"'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b','),
        Just(b' '),
        Just(b'\n'),
        any::<u8>(),
    ]
}

/// Mutations of any input.
pub fn mutation(with_prefix: bool) -> BoxedStrategy<Mutation> {
    let base = prop_oneof![
        4 => (any::<u16>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        4 => (any::<u16>(), interesting_byte()).prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<u16>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<u16>(), any::<u8>(), prop::collection::vec(interesting_byte(), 0..24))
            .prop_map(|(at, len, with)| Mutation::Splice { at, len: len % 32, with }),
        1 => (any::<u16>(), 1..64u8).prop_map(|(at, len)| Mutation::Repeat { at, len }),
    ];
    if with_prefix {
        let prefix = prop_oneof![
            Just(u64::MAX),
            Just(0u64),
            Just(100_000_001u64),
            any::<u64>(),
            0..4096u64
        ]
        .prop_map(|value| Mutation::Prefix { value });
        prop_oneof![9 => base, 1 => prefix].boxed()
    } else {
        base.boxed()
    }
}

/// Applies `edits` to `input`; positions fall within the first `focus` bytes (or all).
pub fn mutate(input: &[u8], edits: &[Mutation], focus: Option<usize>) -> Vec<u8> {
    let mut out = input.to_vec();
    for edit in edits {
        let span = focus.unwrap_or(out.len()).min(out.len()).max(1);
        let pos = |at: u16| (at as usize * span) >> 16;
        match edit {
            Mutation::Flip { at, mask } if !out.is_empty() => {
                let i = pos(*at).min(out.len() - 1);
                out[i] ^= mask;
            }
            Mutation::Set { at, value } if !out.is_empty() => {
                let i = pos(*at).min(out.len() - 1);
                out[i] = *value;
            }
            Mutation::Truncate { at } => out.truncate(pos(*at)),
            Mutation::Splice { at, len, with } => {
                let start = pos(*at).min(out.len());
                let end = (start + *len as usize).min(out.len());
                out.splice(start..end, with.iter().copied());
            }
            Mutation::Repeat { at, len } => {
                let start = pos(*at).min(out.len());
                let end = (start + *len as usize).min(out.len());
                let copy = out[start..end].to_vec();
                out.splice(end..end, copy);
            }
            Mutation::Prefix { value } if out.len() >= 8 => {
                out[..8].copy_from_slice(&value.to_le_bytes());
            }
            _ => {}
        }
    }
    out
}

/// Edits to apply to one input: one to four mutations.
pub fn edits(with_prefix: bool) -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(with_prefix), 1..=4)
}

/// Runs `check` on up to `cases` inputs drawn from `strategy` (deterministic seed, so a
/// failure reproduces), stopping early once `budget` has passed. `check` returns whether the
/// input was rejected; it panics (failing the test) on anything but a valid load or a typed
/// error. Prints and returns `(tried, rejected)`.
pub fn fuzz<S: Strategy>(
    parser: &str,
    cases: u32,
    budget: Duration,
    strategy: S,
    check: impl Fn(S::Value) -> bool,
) -> (usize, usize) {
    let config = Config {
        cases,
        failure_persistence: None,
        // Shrinking a real failure can take long; a small bound keeps CI time bounded.
        max_shrink_iters: 256,
        ..Config::default()
    };
    let seed = {
        let mut seed = [0u8; 32];
        for (i, b) in parser.bytes().enumerate() {
            seed[i % 32] ^= b;
        }
        seed
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let start = Instant::now();
    let (tried, rejected) = (Cell::new(0usize), Cell::new(0usize));
    let result = runner.run(&strategy, |input| {
        if start.elapsed() > budget {
            return Ok(());
        }
        tried.set(tried.get() + 1);
        if check(input) {
            rejected.set(rejected.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz {parser}: {e}");
    }
    eprintln!(
        "fuzz {parser}: {} inputs, {} rejected ({:.1} s)",
        tried.get(),
        rejected.get(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        tried.get() > 0,
        "fuzz {parser}: the time budget allowed no input"
    );
    (tried.get(), rejected.get())
}
