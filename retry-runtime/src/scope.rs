//! The capture scope: task-local metadata that tells a [`RetryConnection`](crate::RetryConnection)
//! to turn failed writes into tasks, and with what source, retries, mode and context.
//!
//! `#[redis_retry]` opens a scope around a method body; the scope lives in a tokio task-local,
//! so it follows the future wherever it is polled (including after a `.await` on another
//! worker thread) but not into tasks started with `tokio::spawn`, which need their own scope.

use std::future::Future;
use std::sync::Arc;

use crate::errors::TaskError;
use crate::task::{Mode, TaskContext, DEFAULT_MAX_RETRIES, MAX_RETRIES_LIMIT};

/// Metadata every task captured in a scope carries.
///
/// ```
/// use redis_retry_runtime::{scope::ScopeMeta, Mode};
/// let meta = ScopeMeta::new("UserRepository.DeleteUserCache").mode(Mode::Invalidate);
/// assert_eq!(meta.max_retries, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeMeta {
    /// Where the writes come from.
    pub source: String,
    /// Retries the consumer makes before dead-lettering.
    pub max_retries: u32,
    /// What the consumer does with the tasks.
    pub mode: Mode,
    /// Trace metadata.
    pub context: TaskContext,
}

impl ScopeMeta {
    /// Metadata with the seed's defaults.
    pub fn new(source: impl Into<String>) -> Self {
        ScopeMeta {
            source: source.into(),
            max_retries: DEFAULT_MAX_RETRIES,
            mode: Mode::Replay,
            context: TaskContext::default(),
        }
    }
    /// Sets `max_retries`.
    ///
    /// # Errors
    ///
    /// [`TaskError::MaxRetriesOutOfRange`] outside 1 to 100, as for a task's own.
    pub fn max_retries(mut self, n: u32) -> Result<Self, TaskError> {
        if !(1..=MAX_RETRIES_LIMIT).contains(&n) {
            return Err(TaskError::MaxRetriesOutOfRange(n));
        }
        self.max_retries = n;
        Ok(self)
    }
    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the trace context.
    pub fn context(mut self, context: TaskContext) -> Self {
        self.context = context;
        self
    }
}

#[derive(Clone)]
enum ScopeState {
    Capture(Arc<ScopeMeta>),
    // Metadata that lives as long as the program (an annotated method's `static`): entering
    // and leaving its scope touches no reference count, which 64 tasks on two threads would
    // otherwise fight over.
    Static(&'static Arc<ScopeMeta>),
    // Inside the consumer: its own failed writes are its business, never a new task.
    Suppressed,
}

tokio::task_local! {
    static SCOPE: ScopeState;
}

/// Runs `fut` inside a capture scope: failed writes through a `RetryConnection` become tasks
/// carrying `meta`. Nested scopes replace the outer one for their duration.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use redis_retry_runtime::scope::{self, ScopeMeta};
/// let source = scope::capture(ScopeMeta::new("Repo.save"), async {
///     scope::current().map(|m| m.source.clone())
/// })
/// .await;
/// assert_eq!(source.as_deref(), Some("Repo.save"));
/// assert!(scope::current().is_none());
/// # }
/// ```
pub async fn capture<F: Future>(meta: ScopeMeta, fut: F) -> F::Output {
    capture_shared(Arc::new(meta), fut).await
}

/// [`capture`] with metadata shared between calls: a hot path builds its `ScopeMeta` once
/// instead of allocating one per call.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use redis_retry_runtime::scope::{self, ScopeMeta};
/// let meta = Arc::new(ScopeMeta::new("Repo.save"));
/// for _ in 0..3 {
///     let inside = scope::capture_shared(meta.clone(), async { scope::current() }).await;
///     assert!(inside.is_some_and(|m| Arc::ptr_eq(&m, &meta)));
/// }
/// # }
/// ```
pub async fn capture_shared<F: Future>(meta: Arc<ScopeMeta>, fut: F) -> F::Output {
    SCOPE.scope(ScopeState::Capture(meta), fut).await
}

/// [`capture_shared`] with metadata that lives as long as the program.
#[doc(hidden)]
pub async fn capture_static<F: Future>(meta: &'static Arc<ScopeMeta>, fut: F) -> F::Output {
    SCOPE.scope(ScopeState::Static(meta), fut).await
}

/// Runs `fut` with capture switched off, whatever scope or default the connections have.
/// The consumer applies tasks this way so that its own failures are never queued again.
pub async fn suppressed<F: Future>(fut: F) -> F::Output {
    SCOPE.scope(ScopeState::Suppressed, fut).await
}

/// What the current task-local scope says.
pub(crate) enum Current {
    /// No scope: the connection's default decides.
    None,
    /// Capture with this metadata.
    Capture(Arc<ScopeMeta>),
    /// Never capture.
    Suppressed,
}

pub(crate) fn lookup() -> Current {
    SCOPE
        .try_with(|s| match s {
            ScopeState::Capture(meta) => Current::Capture(meta.clone()),
            ScopeState::Static(meta) => Current::Capture(Arc::clone(meta)),
            ScopeState::Suppressed => Current::Suppressed,
        })
        .unwrap_or(Current::None)
}

/// The metadata of the enclosing capture scope, if any.
pub fn current() -> Option<Arc<ScopeMeta>> {
    match lookup() {
        Current::Capture(meta) => Some(meta),
        _ => None,
    }
}
