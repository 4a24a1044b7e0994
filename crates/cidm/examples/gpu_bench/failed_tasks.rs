//! Kernels that failed on CubeCL's device thread. CubeCL 0.10 compiles and launches kernels on
//! a thread of its own per device, and when a task panics there (a kernel that does not
//! compile for the device, a launch the device refuses) it logs the warning `Task failed:
//! ...` and goes on: the calling thread never sees it, and a workload's timing would count
//! work that did not run. This tracing layer counts those warnings (CubeCL logs through the
//! `log` crate, which the subscriber bridges into tracing events), so that
//! [`crate::error::guarded`] can turn a workload during which one was logged into an error.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Failed device tasks logged since the program started.
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// The start of CubeCL's warning for a task that panicked on its device thread.
const FAILED_TASK: &str = "Task failed";

/// Failed device tasks logged so far (compare before and after a workload).
pub fn count() -> usize {
    FAILED.load(Ordering::SeqCst)
}

/// The layer that counts CubeCL's failed-task warnings; install it with a `WARN` filter.
pub struct FailedTasks;

impl<S: Subscriber> Layer<S> for FailedTasks {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // A record bridged from `log` carries its target as a field; the event's own
        // metadata says `log`.
        let target = fields
            .log_target
            .as_deref()
            .unwrap_or(event.metadata().target());
        if target.starts_with("cubecl") && fields.failed_task {
            FAILED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What the layer reads of an event: whether its message starts with [`FAILED_TASK`], and
/// the target of a record bridged from `log`.
#[derive(Default)]
struct Fields {
    failed_task: bool,
    log_target: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.failed_task = value.starts_with(FAILED_TASK),
            "log.target" => self.log_target = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.failed_task = format!("{value:?}").starts_with(FAILED_TASK);
        }
    }
}
