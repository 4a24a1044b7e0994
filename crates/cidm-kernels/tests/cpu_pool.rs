//! `on_cpu_pool` in a process of its own: the global pool is built by its first call there,
//! as in the `cidm` command line (in the unit tests' process another test's parallel loop may
//! build it first, with rayon's default stacks).
#![cfg(feature = "flex")]

use cidm_kernels::on_cpu_pool;

/// Stack each level of [`deep`] uses.
const FRAME: usize = 64 << 10;

/// `levels + (levels - 1) + ... + 1`, recursing `levels` deep with a [`FRAME`]-byte array per
/// level that the sum is read from (so no level's frame is optimised away).
fn deep(levels: usize) -> u64 {
    let frame = std::hint::black_box([levels as u8; FRAME]);
    if levels == 0 {
        return 0;
    }
    u64::from(frame[levels]) + deep(levels - 1)
}

/// The work runs on one of the pool's threads and its result comes back; those threads have
/// a main thread's stack: 4 MiB of recursion (64 levels of 64 KiB), twice what std gives
/// other threads (on a 2 MiB stack this overflows and aborts the test process).
#[test]
fn work_runs_on_the_pool_with_a_main_threads_stack() {
    let (sum, thread) = on_cpu_pool(|| (deep(64), rayon::current_thread_index()));
    assert_eq!(sum, 64 * 65 / 2);
    assert!(thread.is_some(), "ran outside the pool");
}
