//! [`on_cpu_pool`]: a program's work run on the CPU paths' thread pool rather than beside it.

/// Stack of the pool's threads when [`on_cpu_pool`] builds the pool: a main thread's (8 MiB
/// on Linux), since the work it moves there ran on the main thread; std's default for other
/// threads, which rayon keeps, is 2 MiB.
#[cfg(feature = "flex")]
const STACK_BYTES: usize = 8 << 20;

/// Runs `work` on one of the threads of rayon's global pool (Flex's own, and the pool of this
/// crate's CPU paths), and returns its result; without the `flex` feature, on the calling
/// thread. For programs whose tensor work runs on Flex: call it once around that work (the
/// `cidm` command line runs every command through it).
///
/// Why: every parallel loop of Flex and of the CPU paths called from a thread outside the pool
/// hands its tasks to the pool and puts the caller to sleep until the last one ends (a futex
/// wake and wait each time), and between two such loops the pool's threads spin and yield
/// looking for work, beside the calling thread, on the same cores. At the tiny model's sizes a
/// loop lasts tens of microseconds, and the hand-offs were a third of `cidm demo`'s time (72
/// against 46 s on two cores; 37 against 8 s of system time, in `futex` and `sched_yield`).
/// From inside the pool a loop's tasks go on the calling thread's own queue: it runs them
/// itself unless an idle thread steals them first, and no thread sleeps on it.
///
/// If the global pool is not built yet, it is built here with 8 MiB stacks (a main thread's); a pool
/// the program built itself is used as it is.
pub fn on_cpu_pool<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    #[cfg(feature = "flex")]
    {
        // An error means the pool exists already (built by the program, or by an earlier
        // parallel loop): it is used as it is.
        let _ = rayon::ThreadPoolBuilder::new()
            .stack_size(STACK_BYTES)
            .build_global();
        rayon::scope(|_| work())
    }
    #[cfg(not(feature = "flex"))]
    {
        work()
    }
}
