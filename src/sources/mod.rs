//! Sources: each turns its own wire format into small typed events as early as possible.

pub mod intake;
pub mod limits;
pub mod procfs;
pub mod telemetry;
