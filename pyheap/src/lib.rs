//! `lambda_memory_profiler._native`: a sampling heap profiler for CPython.
//!
//! A PEP 445 allocator hook on the OBJ and MEM domains samples allocations by bytes (a
//! Poisson process with a mean gap of `mean` bytes, `interval`), records the Python stack of
//! each sampled block (`capture`, interned in `stacks`) and keeps it until the block is freed
//! (`samples`). The weighted live samples are an unbiased estimate of the live heap, by
//! allocation site, at any moment (`profiler`). `hook` is the allocator, `state` what it
//! shares, `module` the Python functions the decorator calls; `record` (with `json`) encodes the
//! decorator's every-invocation record, `probes` (with `memory`) reads its memory figures.
//!
//! The pure parts (`interval`, `samples`, `stacks`, `profiler`, `state`) have no Python in
//! them and are unit-tested here; the FFI parts are tested through Python (tests/native).
#![warn(missing_docs)]

pub mod interval;
pub mod json;
pub mod memory;
pub mod profiler;
pub mod samples;
pub mod stacks;
pub mod state;

#[cfg(not(test))]
mod capture;
#[cfg(not(test))]
mod hook;
#[cfg(not(test))]
mod module;
#[cfg(not(test))]
mod probes;
#[cfg(not(test))]
mod record;
