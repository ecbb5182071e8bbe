//! Time added per allocation + free by the counting wrapper, against the system allocator alone.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use lambda_memory_profile::CountingAlloc;

fn alloc_free<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a non-zero-sized layout; the block is freed with the layout it was allocated with.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        if !p.is_null() {
            a.dealloc(p, layout);
        }
    }
}

fn bench(c: &mut Criterion) {
    let counting = CountingAlloc::system();
    // The wrapper really counts here (the bench binary's own global allocator is the plain one,
    // so only these calls move the counters).
    let before = lambda_memory_profile::alloc::stats();
    alloc_free(&counting, Layout::new::<[u8; 64]>());
    let after = lambda_memory_profile::alloc::stats();
    assert_eq!(after.current_bytes, before.current_bytes);
    assert!(after.peak_bytes >= 64, "{after:?}");
    for size in [16usize, 256, 4096] {
        let Ok(layout) = Layout::from_size_align(size, 8) else {
            continue;
        };
        let mut g = c.benchmark_group(format!("alloc_free_{size}B"));
        g.bench_function("system", |b| {
            b.iter(|| alloc_free(black_box(&System), layout))
        });
        g.bench_function("counting", |b| {
            b.iter(|| alloc_free(black_box(&counting), layout))
        });
        g.finish();
    }
}

/// The same, while a second thread allocates and frees through the same allocator without
/// pause: the counters' cache line then moves between cores at every update.
fn bench_contended(c: &mut Criterion) {
    let Ok(layout) = Layout::from_size_align(16, 8) else {
        return;
    };
    let mut g = c.benchmark_group("alloc_free_16B_contended");
    fn with_noise<A: GlobalAlloc + Copy + Send + 'static>(a: A, f: impl FnOnce()) {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let noise = std::thread::spawn(move || {
            let Ok(layout) = Layout::from_size_align(16, 8) else {
                return;
            };
            while !s.load(Ordering::Relaxed) {
                alloc_free(&a, layout);
            }
        });
        f();
        stop.store(true, Ordering::Relaxed);
        let _ = noise.join();
    }
    with_noise(System, || {
        g.bench_function("system", |b| {
            b.iter(|| alloc_free(black_box(&System), layout))
        });
    });
    let counting = CountingAlloc::system();
    with_noise(counting, || {
        g.bench_function("counting", |b| {
            b.iter(|| alloc_free(black_box(&counting), layout))
        });
    });
    g.finish();
}

criterion_group!(benches, bench, bench_contended);
criterion_main!(benches);
