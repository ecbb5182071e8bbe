//! Time added per allocation + free by the counting wrapper, against the system allocator alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

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

criterion_group!(benches, bench);
criterion_main!(benches);
