//! The binary as a user runs it, with nothing listening: usage errors, no credentials, no region
//! and an unreachable endpoint each end with exit status 1 or 2 and a sentence that says what to
//! do, after the progress lines on stderr. Only loopback addresses are used.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn home() -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-home-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp home");
    d
}

/// The binary with an empty environment: no credentials, no profile, no instance metadata.
fn report(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = home();
    Command::new(env!("CARGO_BIN_EXE_lambda-memory-profiler-report"))
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_function_is_a_usage_error() {
    let o = report(&[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--function <NAME>"), "{}", stderr(&o));
}

#[test]
fn no_credentials_is_said_as_such() {
    let o = report(
        &[
            "--function",
            "orders",
            "--region",
            "us-east-1",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ],
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("loading AWS configuration and credentials"),
        "progress line: {err}"
    );
    assert!(err.contains("error: no AWS credentials found"), "{err}");
    assert!(
        err.contains("aws sso login"),
        "says where credentials come from: {err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn no_region_is_said_as_such() {
    let o = report(
        &["--function", "orders"],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error: no AWS region: pass --region"), "{err}");
}

#[test]
fn an_unreachable_endpoint_names_the_call_and_the_cause() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let o = report(
        &[
            "--function",
            "orders",
            "--region",
            "us-east-1",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("orders: ListMetrics in LambdaMemoryProfiler"),
        "progress: {err}"
    );
    assert!(err.contains("error: ListMetrics failed:"), "{err}");
    assert!(err.to_lowercase().contains("connect"), "the cause: {err}");
}
