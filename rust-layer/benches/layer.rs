//! Time the layer adds to one invocation (peak resets, counters, `/proc/self/status`, the
//! record's encoding and its UDP send), against the bare handler.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::hint::black_box;
use std::net::UdpSocket;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use lambda_memory_profile::{Config, CountingAlloc, MemoryProfileLayer};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{json, Value};
use tower::{service_fn, Layer, Service};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::system();

/// The handlers here never wait: one poll completes them.
fn run_ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

async fn handler(e: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(json!({"n": e.payload["n"]}))
}

fn event() -> LambdaEvent<Value> {
    let mut ctx = lambda_runtime::Context::default();
    ctx.request_id = "8f3c0d1e-1b7a-4f0a-9c55-3b1c7a0e2d11".into();
    LambdaEvent::new(json!({"n": 1}), ctx)
}

fn bench(c: &mut Criterion) {
    // A drained socket stands in for the extension, so every record is really sent.
    let Ok(intake) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    let Ok(addr) = intake.local_addr() else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while intake.recv(&mut buf).is_ok() {}
    });
    let layer = MemoryProfileLayer::with_config(Config {
        intake_port: addr.port(),
        ..Config::default()
    });
    let mut bare = service_fn(handler);
    let mut profiled = layer.layer(service_fn(handler));
    let mut g = c.benchmark_group("invocation");
    g.bench_function("bare", |b| {
        b.iter(|| black_box(run_ready(bare.call(event())).is_ok()))
    });
    g.bench_function("profiled", |b| {
        b.iter(|| black_box(run_ready(profiled.call(event())).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
