//! The tower layer: measures each invocation around the handler and hands the record off.
//!
//! One [`MemoryProfileLayer`] works at two levels:
//! - on the runtime (`Runtime::new(..).layer(layer)`): the service sees a `LambdaInvocation`
//!   and covers the event's parsing, the handler and the response; it answers `()`, so it cannot
//!   see the handler's error by itself;
//! - on the handler (`ServiceBuilder::new().layer(layer).service_fn(handler)`): the service sees
//!   `LambdaEvent<T>` and the handler's `Result`, and turns the error into the `Diagnostic` the
//!   runtime would report anyway, so its `errorType` is known.
//!
//! Clones of one layer share their state: put a clone on both levels and the handler-level
//! service only notes the error type for the runtime-level one, which measures.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use lambda_runtime::{Diagnostic, LambdaEvent, LambdaInvocation};
use tower::{Layer, Service};

use crate::config::Config;
use crate::handoff::{HandoffStats, Sender};
use crate::measure::{lock, panic_error_type, Begin, Shared, State};

type BoxError = lambda_runtime::Error;

/// Measures every invocation and hands its record to the extension (see the module docs).
///
/// ```no_run
/// use lambda_memory_profile::{CountingAlloc, MemoryProfileLayer};
/// use lambda_runtime::{service_fn, Error, LambdaEvent, Runtime};
/// use serde_json::Value;
///
/// #[global_allocator]
/// static GLOBAL: CountingAlloc = CountingAlloc::system();
///
/// async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
///     Ok(event.payload)
/// }
///
/// # async fn run() -> Result<(), Error> {
/// Runtime::new(service_fn(handler))
///     .layer(MemoryProfileLayer::new())
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryProfileLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryProfileLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProfileLayer")
            .field("config", &lock(&self.shared.state).config)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryProfileLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProfileLayer {
    /// A layer configured by the `LMP_*` environment variables.
    pub fn new() -> Self {
        Self::with_config(Config::from_env())
    }

    /// A layer with explicit options.
    pub fn with_config(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    config,
                    out: None,
                    sender: None,
                    probe: None,
                }),
                runtime_active: AtomicBool::new(false),
                error_slot: Mutex::new(None),
            }),
        }
    }

    /// Prints the fallback EMF lines to `out` instead of stdout. Takes effect when set before
    /// the first invocation.
    pub fn with_emf_writer(self, out: impl std::io::Write + Send + 'static) -> Self {
        lock(&self.shared.state).out = Some(Box::new(out));
        self
    }

    /// What became of the records so far.
    pub fn handoff_stats(&self) -> HandoffStats {
        lock(&self.shared.state)
            .sender
            .as_ref()
            .map(Sender::stats)
            .unwrap_or_default()
    }
}

impl<S> Layer<S> for MemoryProfileLayer {
    type Service = MemoryProfile<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MemoryProfile {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`MemoryProfileLayer`]: a `Service<LambdaInvocation>` on the runtime and a
/// `Service<LambdaEvent<T>>` on a handler.
#[derive(Clone)]
pub struct MemoryProfile<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for MemoryProfile<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProfile").finish_non_exhaustive()
    }
}

/// The measurement of one invocation, ended once (completion or panic).
struct Guard {
    shared: Arc<Shared>,
    begin: Option<Begin>,
    /// Runtime level: clears `runtime_active` when done.
    runtime: bool,
    /// Handler level inside a measuring runtime-level service: only notes the error.
    note_only: bool,
    done: bool,
}

impl Guard {
    fn finish(&mut self, error_type: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        if self.note_only {
            self.shared.note_error(error_type);
            return;
        }
        let error_type = if self.runtime {
            self.shared.runtime_active.store(false, Ordering::Relaxed);
            self.shared.take_error()
        } else {
            error_type
        };
        if let Some(b) = self.begin.take() {
            self.shared.end(b, error_type);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.runtime && !self.done {
            // Cancelled: no record, but the next invocation must not look nested.
            self.shared.runtime_active.store(false, Ordering::Relaxed);
        }
    }
}

/// Polls `f`, ending the measurement with the runtime's panic error type when it panics, then
/// lets the panic go on (the runtime catches it and reports the invocation as failed).
fn poll_noting_panics<T>(guard: &mut Guard, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let panic = (!guard.runtime).then(panic_error_type);
            guard.finish(panic);
            std::panic::resume_unwind(payload)
        }
    }
}

pin_project_lite::pin_project! {
    /// Future of the runtime-level service.
    pub struct RuntimeFuture<F> {
        #[pin]
        inner: F,
        guard: Guard,
    }
}

impl<F> Future for RuntimeFuture<F>
where
    F: Future<Output = Result<(), BoxError>>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let out = ready!(poll_noting_panics(this.guard, || inner.poll(cx)));
        this.guard.finish(None);
        Poll::Ready(out)
    }
}

impl<S> Service<LambdaInvocation> for MemoryProfile<S>
where
    S: Service<LambdaInvocation, Response = (), Error = BoxError>,
{
    type Response = ();
    type Error = BoxError;
    type Future = RuntimeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: LambdaInvocation) -> Self::Future {
        let _ = self.shared.take_error();
        let begin = self.shared.begin(&req.context.request_id);
        self.shared
            .runtime_active
            .store(begin.is_some(), Ordering::Relaxed);
        let mut guard = Guard {
            shared: Arc::clone(&self.shared),
            done: begin.is_none(),
            begin,
            runtime: true,
            note_only: false,
        };
        let inner = &mut self.inner;
        let inner = poll_noting_panics(&mut guard, || inner.call(req));
        RuntimeFuture { inner, guard }
    }
}

pin_project_lite::pin_project! {
    /// Future of the handler-level service.
    pub struct HandlerFuture<F> {
        #[pin]
        inner: F,
        guard: Guard,
    }
}

impl<F, R, E> Future for HandlerFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<Diagnostic>,
{
    type Output = Result<R, Diagnostic>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let out = ready!(poll_noting_panics(this.guard, || inner.poll(cx))).map_err(Into::into);
        let error_type = out.as_ref().err().map(|d| d.error_type.clone());
        this.guard.finish(error_type);
        Poll::Ready(out)
    }
}

impl<S, T> Service<LambdaEvent<T>> for MemoryProfile<S>
where
    S: Service<LambdaEvent<T>>,
    S::Error: Into<Diagnostic>,
{
    type Response = S::Response;
    /// The `Diagnostic` the runtime would build from the handler's error: the same error
    /// type and message reach Lambda with or without the layer.
    type Error = Diagnostic;
    type Future = HandlerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: LambdaEvent<T>) -> Self::Future {
        let note_only = self.shared.runtime_active.load(Ordering::Relaxed);
        let begin = if note_only {
            None
        } else {
            self.shared.begin(&req.context.request_id)
        };
        let mut guard = Guard {
            shared: Arc::clone(&self.shared),
            done: !note_only && begin.is_none(),
            begin,
            runtime: false,
            note_only,
        };
        // The guard exists before the call: a panic inside `call` is recorded too.
        let inner = &mut self.inner;
        let inner = poll_noting_panics(&mut guard, || inner.call(req));
        HandlerFuture { inner, guard }
    }
}
