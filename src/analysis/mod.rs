//! Analysis: pure functions over invocation profiles — leak trend, out-of-memory, right-size.
//!
//! Nothing here does I/O or reads the clock: the caller feeds figures in and publishes what comes
//! out, so every rule is unit-tested on synthetic series.

pub mod environment;
pub mod leak;
mod lines;
pub mod oom;
pub mod processes;
pub mod rightsize;
pub mod sites;
pub mod trend;
