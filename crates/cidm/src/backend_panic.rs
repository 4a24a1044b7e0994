//! Backend failures that burn reports by panicking. burn 0.21's tensor API has no error
//! path for a device that runs out of memory or refuses a kernel: burn and CubeCL panic,
//! first on CubeCL's device thread (whose panic message says what failed) and then, the
//! device's channel being down, on the caller's thread (`RecvError`, which says nothing).
//! [`catch_backend_panic`] turns the caller's panic into an error that also carries the
//! panics of other threads during the work, so a program (the `cidm` CLI, the GPU benchmark)
//! can report what failed and exit, or go on with other work, instead of aborting.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::sync::{Mutex, Once, PoisonError};
use std::thread::{self, ThreadId};

/// A panic caught by [`catch_backend_panic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a panic stopped the work: {}", self.what_failed())]
pub struct BackendPanic {
    /// The panic's message (`&str` or `String` payloads; a placeholder for others).
    pub message: String,
    /// The panics of other threads while the work ran, oldest first, as `thread 'NAME':
    /// MESSAGE` (each message cut at [`MESSAGE_CHARS`] characters): where CubeCL's device
    /// thread panicked first, what failed (a library not found, a kernel that did not
    /// compile, memory that ran out). Empty when no other thread panicked; a panic that
    /// reached the caller itself (rayon passes a task's panic on to the thread that waits
    /// for it) is not repeated here.
    pub elsewhere: Vec<String>,
}

impl BackendPanic {
    /// The message, then those of the other threads' panics: one line for an error report.
    pub fn what_failed(&self) -> String {
        let mut text = self.message.clone();
        for other in &self.elsewhere {
            text.push_str("; after a panic on ");
            text.push_str(other);
        }
        text
    }
}

/// Characters kept of another thread's panic message (a library search lists every name it
/// tried: kilobytes).
pub const MESSAGE_CHARS: usize = 400;

/// One panic the hook saw.
struct Recorded {
    /// Its number, counted from the first the hook saw.
    number: u64,
    thread: ThreadId,
    /// The thread's name, `unnamed` for a thread without one.
    name: String,
    /// The panic's message, cut by [`cut`].
    message: String,
}

/// Panics the hook has seen that [`catch_backend_panic`] may still ask for, oldest first.
static PANICS: Mutex<Vec<Recorded>> = Mutex::new(Vec::new());

/// Panics kept in [`PANICS`] at most (a work's device thread panics once or twice).
const KEPT: usize = 32;

/// Installs, once, a panic hook that records each panic in [`PANICS`] and then runs the hook
/// that was there before (which prints it).
fn record_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let current = thread::current();
            let mut panics = PANICS.lock().unwrap_or_else(PoisonError::into_inner);
            let number = next_number(&panics);
            panics.push(Recorded {
                number,
                thread: current.id(),
                name: current.name().unwrap_or("unnamed").to_string(),
                message: cut(message(info.payload())),
            });
            if panics.len() > KEPT {
                panics.remove(0);
            }
            drop(panics);
            previous(info);
        }));
    });
}

/// The number the next panic recorded after `panics` gets.
fn next_number(panics: &[Recorded]) -> u64 {
    panics.last().map_or(0, |p| p.number + 1)
}

/// `text` cut at [`MESSAGE_CHARS`] characters (`...` marks a cut).
fn cut(mut text: String) -> String {
    if let Some((end, _)) = text.char_indices().nth(MESSAGE_CHARS) {
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Runs `work`, turning a panic into [`BackendPanic`], with the panics of other threads since
/// `work` began. The panic hook still prints each panic and its location to stderr (the first
/// call installs a hook that records panics before handing them to the one there was).
/// Whatever `work` was changing may be left half-changed: use this where the work's state is
/// dropped after a failure (a command, a benchmark workload), not to retry on the same
/// tensors.
pub fn catch_backend_panic<T>(work: impl FnOnce() -> T) -> Result<T, BackendPanic> {
    record_panics();
    let first = next_number(&PANICS.lock().unwrap_or_else(PoisonError::into_inner));
    let caller = thread::current().id();
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let message = message(payload.as_ref());
        let own = cut(message.clone());
        let panics = PANICS.lock().unwrap_or_else(PoisonError::into_inner);
        let elsewhere = panics
            .iter()
            .filter(|p| p.number >= first && p.thread != caller && p.message != own)
            .map(|p| format!("thread '{}': {}", p.name, p.message))
            .collect();
        BackendPanic { message, elsewhere }
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal and formatted panic messages come back as they were written, other payloads
    /// as a placeholder; a result without a panic passes through.
    #[test]
    fn panics_become_errors() {
        let literal = catch_backend_panic(|| panic!("kernel failed"));
        assert_eq!(literal.unwrap_err().message, "kernel failed");
        let bytes = 141_557_760;
        let formatted = catch_backend_panic(|| panic!("can't allocate buffer of size: {bytes}"));
        assert_eq!(
            formatted.unwrap_err().message,
            "can't allocate buffer of size: 141557760"
        );
        let other = catch_backend_panic(|| std::panic::panic_any(7u8));
        assert_eq!(other.unwrap_err().message, "a panic without a message");
        assert_eq!(catch_backend_panic(|| 3), Ok(3));
    }

    /// A panic on another thread during the work (CubeCL's device thread, whose panic says
    /// what failed, before the caller's `RecvError`) comes with the caller's, named by its
    /// thread and cut at `MESSAGE_CHARS` characters; the caller's own panic is not repeated
    /// there. (Other tests may panic on their threads meanwhile, so the test looks for its
    /// own entries rather than counting them.)
    #[test]
    fn panics_on_other_threads_come_with_the_callers() {
        let long = "x".repeat(2 * MESSAGE_CHARS);
        let err = catch_backend_panic(|| {
            for text in ["the \"cuda\" library was not found", long.as_str()] {
                let text = text.to_string();
                let device = thread::Builder::new().name("device".into());
                let worker = device.spawn(move || panic!("{text}")).expect("a thread");
                assert!(worker.join().is_err());
            }
            panic!("RecvError");
        })
        .unwrap_err();
        assert_eq!(err.message, "RecvError");
        let first = "thread 'device': the \"cuda\" library was not found".to_string();
        let cut = format!("thread 'device': {}...", "x".repeat(MESSAGE_CHARS));
        let position = |entry: &String| err.elsewhere.iter().position(|e| e == entry);
        let (Some(first_at), Some(cut_at)) = (position(&first), position(&cut)) else {
            panic!("the device thread's panics are missing: {err:?}");
        };
        assert!(first_at < cut_at, "{err:?}");
        assert!(!err.elsewhere.iter().any(|e| e.ends_with(": RecvError")));
        let report = err.to_string();
        assert!(report.starts_with("a panic stopped the work: RecvError; after a panic on "));
        assert!(report.contains(&first), "{report}");
    }

    /// A task's panic that reaches the caller itself (as rayon passes it on: the same
    /// payload, unwound again on the waiting thread) is the error's message, not also one
    /// of the other threads'.
    #[test]
    fn a_panic_passed_on_to_the_caller_is_not_repeated() {
        let err = catch_backend_panic(|| {
            let task = thread::Builder::new().name("task".into());
            let worker = task.spawn(|| panic!("index out of bounds in a task"));
            let payload = worker.expect("a thread").join().unwrap_err();
            std::panic::resume_unwind(payload)
        })
        .unwrap_err();
        assert_eq!(err.message, "index out of bounds in a task");
        let repeated = "thread 'task': index out of bounds in a task";
        assert!(!err.elsewhere.iter().any(|e| e == repeated), "{err:?}");
    }
}
