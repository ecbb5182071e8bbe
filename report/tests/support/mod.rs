//! Helpers shared by the report's integration tests (and `tests/report_localstack.rs`).

pub(crate) mod schema;
