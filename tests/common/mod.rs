//! Shared set-up of the integration tests: a temp function + extensions dir, the emulator config.
#![allow(dead_code)]

use lambda_emulator::{EmulatorConfig, OutputSource};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const EXT: &str = "lambda-memory-profiler";

#[allow(unused_imports)] // not every test uses every helper
pub(crate) use lambda_emulator::testing::{free_port, python, TempDir};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the target dir, removed when dropped by a passing test.
pub(crate) fn temp_dir(tag: &str) -> TempDir {
    TempDir::new_in(&repo().join("target").join("it-tmp"), tag)
}

/// Links the built extension into `<dir>/extensions/` under its extension name.
///
/// A symlink, not a copy: a copy's write descriptor can leak into a child forked by another test
/// thread before it is closed, and exec'ing the copy then fails with ETXTBSY.
pub(crate) fn extensions_dir(dir: &Path) -> PathBuf {
    let ext_dir = dir.join("extensions");
    std::fs::create_dir_all(&ext_dir).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_lambda-memory-profiler"),
        ext_dir.join(EXT),
    )
    .unwrap();
    ext_dir
}

/// Writes `app.py` with `source` into `<dir>/fn/`.
pub(crate) fn function_dir(dir: &Path, source: &str) -> PathBuf {
    let f = dir.join("fn");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("app.py"), source).unwrap();
    f
}

/// Emulator config running `app.handler` with the extension and the decorator's package.
pub(crate) fn config(
    python: PathBuf,
    dir: &Path,
    source: &str,
    env: &[(&str, String)],
) -> EmulatorConfig {
    let layer = dir.join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    // The decorator package, as the layer ships it under /opt/python.
    let _ = std::os::unix::fs::symlink(repo().join("layer/python"), layer.join("python"));
    EmulatorConfig {
        extensions_dir: Some(extensions_dir(dir)),
        function_dir: function_dir(dir, source),
        handler: "app.handler".into(),
        layer_dirs: vec![layer],
        python,
        memory_mb: 256,
        timeout: Duration::from_secs(10),
        function_name: "lmp-it".into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        echo_output: std::env::var_os("LMP_TEST_ECHO").is_some(),
        ..EmulatorConfig::default()
    }
}

/// The Embedded Metric Format documents among output lines.
pub(crate) fn emf_docs(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// Every value of metric `name` across EMF documents (single values and arrays), in order.
pub(crate) fn metric_values(docs: &[serde_json::Value], name: &str) -> Vec<f64> {
    docs.iter()
        .flat_map(|d| match &d[name] {
            serde_json::Value::Array(a) => a.iter().filter_map(serde_json::Value::as_f64).collect(),
            serde_json::Value::Number(n) => n.as_f64().into_iter().collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// Shuts the environment down (spindown); returns the report and this extension's figures.
pub(crate) async fn shut_down(
    em: lambda_emulator::Emulator,
) -> (
    lambda_emulator::ShutdownReport,
    lambda_emulator::ExtensionStats,
) {
    let shut = em
        .shutdown(lambda_emulator::ShutdownReason::Spindown)
        .await
        .expect("shutdown");
    let ext = shut
        .extensions
        .iter()
        .find(|e| e.name == EXT)
        .cloned()
        .expect("extension ran");
    (shut, ext)
}

/// Shuts the environment down and checks that this extension ended by itself after SHUTDOWN,
/// within the deadline, with code 0.
pub(crate) async fn shut_down_checked(
    em: lambda_emulator::Emulator,
) -> (
    lambda_emulator::ShutdownReport,
    lambda_emulator::ExtensionStats,
) {
    let (shut, ext) = shut_down(em).await;
    assert!(
        !ext.exit.exited_before_shutdown
            && !ext.exit.killed_at_deadline
            && ext.exit.code == Some(0),
        "{ext:?}"
    );
    (shut, ext)
}

/// Every line this extension printed, its SHUTDOWN-time output included.
pub(crate) fn ext_output(shut: &lambda_emulator::ShutdownReport) -> Vec<String> {
    shut.extension_output.get(EXT).cloned().unwrap_or_default()
}

/// [`shut_down_checked`], then every line the extension printed.
pub(crate) async fn shut_down_cleanly(em: lambda_emulator::Emulator) -> Vec<String> {
    let (shut, _) = shut_down_checked(em).await;
    ext_output(&shut)
}

pub(crate) fn ext_lines(em: &lambda_emulator::Emulator) -> Vec<String> {
    em.output_lines(OutputSource::Extension(EXT.into()))
}

/// A handler using the real decorator; it keeps 1 MiB per call (a leak) so traces see retention.
pub(crate) const DECORATED: &str = r#"
from lambda_memory_profiler import memory_profile

_kept = []

@memory_profile
def handler(event, context):
    _kept.append(bytearray(1024 * 1024))
    return {"n": len(_kept)}
"#;

/// A CloudWatch query-protocol request that changes nothing.
const LIST_METRICS: &str = "Action=ListMetrics&Version=2010-08-01";

/// LocalStack (the local CloudWatch) on a free loopback port, killed with its process group on drop.
pub(crate) struct LocalStack {
    pub port: u16,
    child: std::process::Child,
    pub dir: PathBuf,
}

impl LocalStack {
    /// Starts `scripts/localstack.sh run` (path from `LMP_LOCALSTACK`); `None` skips the test.
    pub(crate) fn start(dir: &Path) -> Option<LocalStack> {
        use std::os::unix::process::CommandExt;
        let script = match std::env::var_os("LMP_LOCALSTACK") {
            Some(s) if !s.is_empty() => PathBuf::from(s),
            _ => {
                eprintln!("LMP_LOCALSTACK not set: skipping (run through `make rust-test`)");
                return None;
            }
        };
        let port = free_port();
        let state = dir.join("localstack");
        let log = std::fs::File::create(dir.join("localstack.log")).unwrap();
        let child = std::process::Command::new(script)
            .arg("run")
            .arg(port.to_string())
            .arg(&state)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start LocalStack");
        let ls = LocalStack {
            port,
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !ls.healthy() {
            assert!(
                std::time::Instant::now() < deadline,
                "LocalStack not ready; log:\n{}",
                std::fs::read_to_string(dir.join("localstack.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        // LocalStack loads a service at its first request (~2 s, more on a loaded machine):
        // load CloudWatch now, so that the function's first flush does not race the test's
        // reads of what it sent.
        while !ls.health().contains("\"cloudwatch\": \"running\"") {
            assert!(
                std::time::Instant::now() < deadline,
                "LocalStack's CloudWatch not loaded; log:\n{}",
                std::fs::read_to_string(dir.join("localstack.log")).unwrap_or_default()
            );
            ls.request(&format!(
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=00\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{LIST_METRICS}",
                LIST_METRICS.len()
            ));
        }
        Some(ls)
    }

    fn healthy(&self) -> bool {
        let resp = self.health();
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"cloudwatch\": \"available\"")
            || resp.contains("\"cloudwatch\": \"running\"")
    }

    /// The answer to `GET /_localstack/health` (empty when there is none).
    fn health(&self) -> String {
        self.request(
            "GET /_localstack/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
    }

    /// Sends one raw HTTP request and reads the whole answer (empty on any failure).
    fn request(&self, req: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        if s.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        // The whole group: the script's Python may have started helpers.
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Environment pointing the AWS SDK at a loopback endpoint with dummy credentials.
pub(crate) fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The platform's per-invocation log line in Lambda's text format (what Lambda writes to the
/// environment's log stream), from a `platform.report` record; `None` without its metrics.
pub(crate) fn lambda_report_line(record: &serde_json::Value) -> Option<String> {
    let m = record.get("metrics")?;
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {:.0} ms\tMemory Size: {:.0} MB\tMax Memory Used: {:.0} MB\t",
        record.get("requestId")?.as_str()?,
        m.get("durationMs")?.as_f64()?,
        m.get("billedDurationMs")?.as_f64()?,
        m.get("memorySizeMB")?.as_f64()?,
        m.get("maxMemoryUsedMB")?.as_f64()?,
    );
    if let Some(init) = m.get("initDurationMs").and_then(serde_json::Value::as_f64) {
        line.push_str(&format!("Init Duration: {init:.2} ms\t"));
    }
    Some(line)
}
