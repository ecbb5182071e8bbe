//! An example Rust Lambda function profiled per invocation.
//!
//! The event chooses what an invocation does with memory:
//! `{"keep": <bytes>}` keeps that many bytes for the life of the process (a leak),
//! `{"transient": <bytes>}` allocates and frees that many bytes, `{"fail": true}` returns an error.

use std::sync::Mutex;

use lambda_memory_profile::{CountingAlloc, MemoryProfileLayer};
use lambda_runtime::{Error, LambdaEvent, Runtime};
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::system();

/// What the function keeps across invocations.
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A handler error with its own name: the record's `error_type` shows it.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

fn touch(n: usize) -> Vec<u8> {
    // Written, not only reserved: the pages count in RSS as they would for real data.
    vec![1u8; n]
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let p = &event.payload;
    if p["fail"].as_bool() == Some(true) {
        return Err(Box::new(Refused("asked to fail".into())));
    }
    let size = |k: &str| p[k].as_u64().and_then(|v| usize::try_from(v).ok());
    if let Some(n) = size("transient") {
        let buf = touch(n);
        std::hint::black_box(&buf);
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = size("keep") {
        kept.push(touch(n));
    }
    Ok(json!({"kept_chunks": kept.len()}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let profile = MemoryProfileLayer::new();
    // On the handler too, so the record carries the handler's error type.
    let handler = tower::ServiceBuilder::new()
        .layer(profile.clone())
        .service_fn(handler);
    Runtime::new(handler).layer(profile).run().await
}
