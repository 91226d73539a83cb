//! The capture scope: task-local metadata that tells a [`RetryConnection`](crate::RetryConnection)
//! to turn failed writes into tasks, and with what source, retries, mode and context.
//!
//! `#[redis_retry]` opens a scope around a method body. The scope is held by the future and
//! set as the thread's current scope for the length of each poll of it, as a tokio task-local
//! is, so it follows the future wherever it is polled (including after a `.await` on another
//! worker thread) but not into tasks started with `tokio::spawn`, which need their own scope.
//!
//! The scope also remembers whether a `RetryConnection` in it saw a transient failure, so that
//! an annotated method returning a transient Redis error that nothing captured is reported
//! (see [`__macro`]): its write went through a connection redis-retry does not wrap.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// Which scope is current, as the thread-local holds it: `Copy`, so that entering and leaving
/// a scope on every poll is a swap of a few words with no drop to run.
#[derive(Clone, Copy)]
enum Kind {
    /// Outside any scope: the connection's default decides.
    Outside,
    // Metadata that lives as long as the program (an annotated method's `static`): entering
    // and leaving its scope touches no reference count, which 64 tasks on two threads would
    // otherwise fight over.
    Static(&'static Arc<ScopeMeta>),
    /// Metadata owned by the scope's future, in `OWNED` while the scope is current.
    Owned,
    // Inside the consumer: its own failed writes are its business, never a new task.
    Suppressed,
}

/// A scope as the thread-local holds it: which one, and whether a connection in it saw a
/// failure.
#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    saw_failure: bool,
}

thread_local! {
    // The scope of the future being polled on this thread. Rather than tokio's task-local
    // (a `RefCell<Option<T>>` behind a fallible accessor, whose `T` here would need a drop),
    // a `Cell` of a `Copy` value with a constant initialiser: no borrow flag, no
    // registration check, no drop glue on the path every poll of every annotated call takes.
    static CURRENT: Cell<Frame> = const { Cell::new(Frame { kind: Kind::Outside, saw_failure: false }) };
    // The metadata of the current scope when it is `Kind::Owned`.
    static OWNED: Cell<Option<Arc<ScopeMeta>>> = const { Cell::new(None) };
}

/// What a scope's future holds. While the scope is current (during a poll) the two fields
/// hold what was current before, swapped with the thread-locals; the second swap puts both
/// back.
struct Scope {
    frame: Frame,
    owned: Option<Arc<ScopeMeta>>,
}

impl Scope {
    fn new(state: ScopeState) -> Scope {
        let (kind, owned) = match state {
            ScopeState::Capture(meta) => (Kind::Owned, Some(meta)),
            ScopeState::Static(meta) => (Kind::Static(meta), None),
            ScopeState::Suppressed => (Kind::Suppressed, None),
        };
        Scope { frame: Frame { kind, saw_failure: false }, owned }
    }

    /// The metadata of this scope, when it is not current.
    fn meta(&self) -> Option<&ScopeMeta> {
        match self.frame.kind {
            Kind::Static(meta) => Some(meta),
            Kind::Owned => self.owned.as_deref(),
            Kind::Outside | Kind::Suppressed => None,
        }
    }

    /// Enters this scope, or leaves it and puts the outer one back: the same swap.
    #[inline]
    fn swap(&mut self, ours: Kind) {
        CURRENT.with(|current| current.swap(Cell::from_mut(&mut self.frame)));
        if let Kind::Owned = ours {
            OWNED.with(|current| current.swap(Cell::from_mut(&mut self.owned)));
        }
    }
}

/// How a scope's future says which scope it runs in.
enum ScopeState {
    Capture(Arc<ScopeMeta>),
    Static(&'static Arc<ScopeMeta>),
    Suppressed,
}

/// A scope made the thread's current one for one poll; the outer one is put back when this
/// drops, even if the poll panics.
struct Entered<'a> {
    scope: &'a mut Scope,
    ours: Kind,
}

impl<'a> Entered<'a> {
    #[inline]
    fn new(scope: &'a mut Scope) -> Entered<'a> {
        let ours = scope.frame.kind;
        scope.swap(ours);
        Entered { scope, ours }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        self.scope.swap(self.ours);
    }
}

pin_project_lite::pin_project! {
    /// A future run in a scope: the future of [`capture`], [`capture_shared`] and
    /// [`suppressed`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        scope: Scope,
        #[pin]
        future: F,
    }
}

impl<F> Scoped<F> {
    fn new(state: ScopeState, future: F) -> Scoped<F> {
        Scoped { scope: Scope::new(state), future }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = Entered::new(this.scope);
        this.future.poll(cx)
    }
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
pub fn capture<F: Future>(meta: ScopeMeta, fut: F) -> Scoped<F> {
    capture_shared(Arc::new(meta), fut)
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
pub fn capture_shared<F: Future>(meta: Arc<ScopeMeta>, fut: F) -> Scoped<F> {
    Scoped::new(ScopeState::Capture(meta), fut)
}

/// [`capture_shared`] with metadata that lives as long as the program.
#[doc(hidden)]
pub fn capture_static<F: Future>(meta: &'static Arc<ScopeMeta>, fut: F) -> Scoped<F> {
    Scoped::new(ScopeState::Static(meta), fut)
}

/// Runs `fut` with capture switched off, whatever scope or default the connections have.
/// The consumer applies tasks this way so that its own failures are never queued again.
pub fn suppressed<F: Future>(fut: F) -> Scoped<F> {
    Scoped::new(ScopeState::Suppressed, fut)
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
    match CURRENT.with(Cell::get).kind {
        Kind::Outside => Current::None,
        Kind::Static(meta) => Current::Capture(Arc::clone(meta)),
        Kind::Suppressed => Current::Suppressed,
        Kind::Owned => {
            let meta = OWNED.try_with(|owned| {
                let meta = owned.take();
                owned.set(meta.clone());
                meta
            });
            meta.ok().flatten().map_or(Current::None, Current::Capture)
        }
    }
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
    CURRENT.with(|current| {
        let frame = current.get();
        if !matches!(frame.kind, Kind::Outside) {
            current.set(Frame { saw_failure: true, ..frame });
        }
    });
}

/// What `#[redis_retry]` expands to; not a public API.
#[doc(hidden)]
pub mod __macro {
    use std::error::Error;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{ready, Context, Poll};

    use redis::RedisError;

    use super::{Entered, Scope, ScopeMeta, ScopeState};
    use crate::counters;
    use crate::errors::{classify, Failure};

    pin_project_lite::pin_project! {
        /// An annotated call: its body run in a scope and, once done, what it returned looked
        /// at by `check` (see [`Returned`]) unless a connection in the scope saw a failure.
        /// One future for both, so that a call polls through no more layers than it must.
        #[must_use = "futures do nothing unless polled"]
        pub struct Call<F, C> {
            scope: Scope,
            check: C,
            #[pin]
            future: F,
        }
    }

    /// [`capture`](super::capture) for a method with a `context`, whose metadata is built
    /// per call.
    pub fn capture<F, C>(meta: ScopeMeta, fut: F, check: C) -> Call<F, C>
    where
        F: Future,
        C: Fn(&F::Output) -> Option<&RedisError>,
    {
        Call { scope: Scope::new(ScopeState::Capture(Arc::new(meta))), check, future: fut }
    }

    /// [`capture_static`](super::capture_static) for every other annotated method.
    pub fn capture_static<F, C>(meta: &'static Arc<ScopeMeta>, fut: F, check: C) -> Call<F, C>
    where
        F: Future,
        C: Fn(&F::Output) -> Option<&RedisError>,
    {
        Call { scope: Scope::new(ScopeState::Static(meta)), check, future: fut }
    }

    impl<F, C> Future for Call<F, C>
    where
        F: Future,
        C: Fn(&F::Output) -> Option<&RedisError>,
    {
        type Output = F::Output;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let this = self.project();
            let output = {
                let _entered = Entered::new(this.scope);
                ready!(this.future.poll(cx))
            };
            if !this.scope.frame.saw_failure {
                if let Some(error) = (this.check)(&output) {
                    uncaptured(this.scope, error);
                }
            }
            Poll::Ready(output)
        }
    }

    /// Warns when the method returned a transient Redis error that no `RetryConnection` in
    /// its scope saw: a write that failed there was not captured.
    #[cold]
    #[inline(never)]
    fn uncaptured(scope: &Scope, error: &RedisError) {
        if classify(error) == Failure::Permanent {
            return;
        }
        let Some(meta) = scope.meta() else { return };
        let source = meta.source.as_str();
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

#[cfg(test)]
mod scope_tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::{
        capture, capture_shared, capture_static, current, lookup, note_failure, suppressed, Current,
        ScopeMeta,
    };

    fn source() -> Option<String> {
        current().map(|m| m.source.clone())
    }

    /// Polls `fut` once, pending or not.
    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn nested_scopes_replace_the_outer_one_and_put_it_back() {
        static META: std::sync::OnceLock<Arc<ScopeMeta>> = std::sync::OnceLock::new();
        let fixed = META.get_or_init(|| Arc::new(ScopeMeta::new("static")));
        let seen = capture(ScopeMeta::new("outer"), async {
            let mut seen = vec![source()];
            seen.push(capture_static(fixed, async { source() }).await);
            seen.push(source());
            seen.push(capture_shared(Arc::new(ScopeMeta::new("inner")), async { source() }).await);
            seen.push(suppressed(async { source() }).await);
            seen.push(source());
            seen
        })
        .await;
        let names: Vec<_> = seen.iter().map(|s| s.as_deref().unwrap_or("-")).collect();
        assert_eq!(names, ["outer", "static", "outer", "inner", "-", "outer"]);
        assert!(matches!(lookup(), Current::None));
    }

    #[test]
    fn a_scope_is_current_only_while_its_future_is_polled() {
        let mut pending = true;
        let mut scoped = pin!(capture(
            ScopeMeta::new("polled"),
            std::future::poll_fn(|_| {
                let inside = source();
                if std::mem::take(&mut pending) {
                    Poll::Pending
                } else {
                    Poll::Ready(inside)
                }
            })
        ));
        assert!(poll_once(scoped.as_mut()).is_pending());
        assert_eq!(source(), None, "left when the poll returned");
        assert_eq!(poll_once(scoped.as_mut()), Poll::Ready(Some("polled".to_string())));
    }

    #[test]
    fn a_panicking_poll_leaves_the_scope() {
        let caught = std::panic::catch_unwind(|| {
            let mut scoped = pin!(capture(ScopeMeta::new("panics"), async { panic!("in the body") }));
            let _ = poll_once(scoped.as_mut());
        });
        assert!(caught.is_err());
        assert!(matches!(lookup(), Current::None), "the scope must not outlive its poll");
    }

    #[test]
    fn a_failure_is_noted_on_the_innermost_scope_only() {
        let mut outer_saw = None;
        let mut inner =
            pin!(super::__macro::capture(ScopeMeta::new("inner"), async { note_failure() }, |_: &()| None));
        let mut outer = pin!(capture(
            ScopeMeta::new("outer"),
            std::future::poll_fn(|cx| {
                let _ = inner.as_mut().poll(cx);
                outer_saw = Some(super::CURRENT.with(|c| c.get().saw_failure));
                Poll::Ready(())
            })
        ));
        assert!(poll_once(outer.as_mut()).is_ready());
        assert_eq!(outer_saw, Some(false), "the inner scope's failure is its own");
        assert!(!super::CURRENT.with(|c| c.get().saw_failure));
    }
}
