//! The capture scope: task-local metadata that tells a [`RetryConnection`](crate::RetryConnection)
//! to turn failed writes into tasks, and with what source, retries, mode and context.
//!
//! `#[redis_retry]` opens a scope around a method body; the scope lives in a tokio task-local,
//! so it follows the future wherever it is polled (including after a `.await` on another
//! worker thread) but not into tasks started with `tokio::spawn`, which need their own scope.
//!
//! The scope also remembers whether a `RetryConnection` in it saw a transient failure, so that
//! an annotated method returning a transient Redis error that nothing captured is reported
//! (see [`__macro`]): its write went through a connection redis-retry does not wrap.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
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

/// What the task-local holds: the state, and whether a connection in it saw a failure.
struct Scope {
    state: ScopeState,
    // A `Cell` in the task-local itself: only the task polling the scope touches it, and
    // noting a failure costs no allocation per annotated call.
    saw_failure: Cell<bool>,
}

impl Scope {
    fn new(state: ScopeState) -> Scope {
        Scope { state, saw_failure: Cell::new(false) }
    }
}

tokio::task_local! {
    static SCOPE: Scope;
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
    SCOPE.scope(Scope::new(ScopeState::Capture(meta)), fut).await
}

/// [`capture_shared`] with metadata that lives as long as the program.
#[doc(hidden)]
pub async fn capture_static<F: Future>(meta: &'static Arc<ScopeMeta>, fut: F) -> F::Output {
    SCOPE.scope(Scope::new(ScopeState::Static(meta)), fut).await
}

/// Runs `fut` with capture switched off, whatever scope or default the connections have.
/// The consumer applies tasks this way so that its own failures are never queued again.
pub async fn suppressed<F: Future>(fut: F) -> F::Output {
    SCOPE.scope(Scope::new(ScopeState::Suppressed), fut).await
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
        .try_with(|s| match &s.state {
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

/// Notes that a `RetryConnection` in the current scope saw a transient failure: whatever the
/// method then returns, the failure went through the wrapped connection.
pub(crate) fn note_failure() {
    let _ = SCOPE.try_with(|s| s.saw_failure.set(true));
}

/// What `#[redis_retry]` expands to; not a public API.
#[doc(hidden)]
pub mod __macro {
    use std::error::Error;
    use std::future::Future;
    use std::sync::Arc;

    use redis::RedisError;

    use super::{run, ScopeMeta, ScopeState};
    use crate::counters;
    use crate::errors::{classify, Failure};

    /// The scope an annotated call ran in, once its future is done.
    pub struct Report {
        state: ScopeState,
        saw_failure: bool,
    }

    /// [`capture`](super::capture), reporting on the scope as well.
    pub async fn capture<F: Future>(meta: ScopeMeta, fut: F) -> (F::Output, Report) {
        run(ScopeState::Capture(Arc::new(meta)), fut).await
    }

    /// [`capture_static`](super::capture_static), reporting on the scope as well. Not an
    /// `async fn`: every annotated call polls through it, and one state machine fewer is
    /// one copy of the method's future and one layer of polling fewer per call.
    pub fn capture_static<F: Future>(
        meta: &'static Arc<ScopeMeta>,
        fut: F,
    ) -> impl Future<Output = (F::Output, Report)> {
        run(ScopeState::Static(meta), fut)
    }

    impl Report {
        pub(super) fn new(state: ScopeState, saw_failure: bool) -> Report {
            Report { state, saw_failure }
        }

        /// Warns when the method returned a transient Redis error that no `RetryConnection`
        /// in its scope saw: a write that failed there was not captured.
        pub fn check(&self, returned: Option<&RedisError>) {
            let Some(error) = returned else { return };
            if self.saw_failure || classify(error) == Failure::Permanent {
                return;
            }
            let source = match &self.state {
                ScopeState::Capture(meta) => meta.source.as_str(),
                ScopeState::Static(meta) => meta.source.as_str(),
                ScopeState::Suppressed => return,
            };
            metrics::counter!(counters::UNCAPTURED_ERRORS, "source" => source.to_string()).increment(1);
            // The kind and code only: the message of a server error may quote what was sent.
            tracing::warn!(
                source,
                error_kind = ?error.kind(),
                error_code = error.code().unwrap_or(""),
                "#[redis_retry] method returned a transient Redis error that no RetryConnection in \
                 its scope saw, so nothing was captured: is the write going through an unwrapped \
                 connection?"
            );
        }
    }

    /// The value an annotated call returned, to look for a Redis error in with autoref
    /// specialisation on its concrete type, written `(&&&Returned(&output)).redis_error()`:
    /// a `RedisResult` finds it through [`ReturnsRedis`], a `Result` with a boxed error
    /// through [`ReturnsBoxed`], a `Result` whose error wraps one (`#[from] RedisError`)
    /// through [`ReturnsResult`], and any other value falls back to [`ReturnsOther`], which
    /// finds none. No impl asks more of a user's error type than `Error`: a bound like
    /// `'static` would be ignored when the impl is chosen and then fail to compile for an
    /// error type that borrows.
    pub struct Returned<'a, T>(pub &'a T);

    // By hand: a derive would require `T: Copy`, and the fallback takes the probe by value.
    impl<T> Clone for Returned<'_, T> {
        fn clone(&self) -> Self {
            *self
        }
    }

    impl<T> Copy for Returned<'_, T> {}

    pub trait ReturnsRedis<'a> {
        fn redis_error(self) -> Option<&'a RedisError>;
    }

    impl<'a, T> ReturnsRedis<'a> for &&&Returned<'a, Result<T, RedisError>> {
        fn redis_error(self) -> Option<&'a RedisError> {
            self.0.as_ref().err()
        }
    }

    pub trait ReturnsBoxed<'a> {
        fn redis_error(self) -> Option<&'a RedisError>;
    }

    impl<'a, T> ReturnsBoxed<'a> for &&Returned<'a, Result<T, Box<dyn Error + Send + Sync>>> {
        fn redis_error(self) -> Option<&'a RedisError> {
            let error: &'a (dyn Error + 'static) = self.0.as_ref().err()?.as_ref();
            find(error)
        }
    }

    impl<'a, T> ReturnsBoxed<'a> for &&Returned<'a, Result<T, Box<dyn Error>>> {
        fn redis_error(self) -> Option<&'a RedisError> {
            find(self.0.as_ref().err()?.as_ref())
        }
    }

    pub trait ReturnsResult<'a> {
        fn redis_error(self) -> Option<&'a RedisError>;
    }

    impl<'a, T, E: Error> ReturnsResult<'a> for &Returned<'a, Result<T, E>> {
        fn redis_error(self) -> Option<&'a RedisError> {
            find(self.0.as_ref().err()?.source()?)
        }
    }

    pub trait ReturnsOther<'a> {
        fn redis_error(self) -> Option<&'a RedisError>;
    }

    impl<'a, T> ReturnsOther<'a> for Returned<'a, T> {
        fn redis_error(self) -> Option<&'a RedisError> {
            None
        }
    }

    /// The error itself, or what it wraps (`thiserror`'s `#[from] RedisError`).
    fn find<'a>(mut error: &'a (dyn Error + 'static)) -> Option<&'a RedisError> {
        loop {
            if let Some(redis) = error.downcast_ref::<RedisError>() {
                return Some(redis);
            }
            error = error.source()?;
        }
    }
}

/// Runs `fut` in a scope of `state` and reports whether a connection in it saw a failure.
async fn run<F: Future>(state: ScopeState, fut: F) -> (F::Output, __macro::Report) {
    let mut scoped = pin!(SCOPE.scope(Scope::new(state), fut));
    let output = scoped.as_mut().await;
    let (state, saw_failure) = match scoped.as_mut().take_value() {
        Some(scope) => (scope.state, scope.saw_failure.get()),
        None => (ScopeState::Suppressed, false),
    };
    (output, __macro::Report::new(state, saw_failure))
}

#[cfg(test)]
// The probe is called as the expansion calls it, `(&&&Returned(&output))`: the depth of the
// reference is what selects the impl.
#[allow(clippy::needless_borrow)]
mod tests {
    use std::error::Error;
    use std::fmt;

    use redis::{ErrorKind, RedisError};

    use super::__macro::{
        Returned, ReturnsBoxed as _, ReturnsOther as _, ReturnsRedis as _, ReturnsResult as _,
    };

    fn refused() -> RedisError {
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    }

    #[derive(Debug)]
    struct Wrapper(RedisError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("repository failed")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_probe_finds_a_redis_error_however_the_result_holds_it() {
        let direct: Result<(), RedisError> = Err(refused());
        assert!((&&&Returned(&direct)).redis_error().is_some_and(|e| e.is_connection_refusal()));
        let wrapped: Result<u8, Wrapper> = Err(Wrapper(refused()));
        assert!((&&&Returned(&wrapped)).redis_error().is_some());
        let boxed: Result<(), Box<dyn Error + Send + Sync>> = Err(Box::new(refused()));
        assert!((&&&Returned(&boxed)).redis_error().is_some());
        let boxed_local: Result<(), Box<dyn Error>> = Err(Box::new(Wrapper(refused())));
        assert!((&&&Returned(&boxed_local)).redis_error().is_some());
    }

    /// An error type that borrows: the probe must compile for it (and look into its source).
    #[derive(Debug)]
    struct Borrowing<'a>(&'a RedisError);

    impl fmt::Display for Borrowing<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "borrowing {}", self.0)
        }
    }

    impl Error for Borrowing<'_> {}

    #[test]
    fn the_probe_compiles_for_an_error_type_that_borrows() {
        let inner = refused();
        let borrowing: Result<(), Borrowing<'_>> = Err(Borrowing(&inner));
        assert!((&&&Returned(&borrowing)).redis_error().is_none());
    }

    #[test]
    fn the_probe_finds_nothing_elsewhere() {
        let ok: Result<(), RedisError> = Ok(());
        assert!((&&&Returned(&ok)).redis_error().is_none());
        let other: Result<(), std::io::Error> = Err(std::io::Error::other("disk"));
        assert!((&&&Returned(&other)).redis_error().is_none());
        let not_an_error: Result<(), String> = Err("text".into());
        assert!((&&&Returned(&not_an_error)).redis_error().is_none());
        let plain = RedisError::from((ErrorKind::Io, "not returned in a Result"));
        assert!((&&&Returned(&plain)).redis_error().is_none());
        assert!((&&&Returned(&42)).redis_error().is_none());
    }
}
