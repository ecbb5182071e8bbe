//! Helpers shared by the report's integration tests (and `tests/report_localstack.rs`).

pub mod schema;
