//! Shared set-up of the integration tests: a temp function + extensions dir, the emulator config.
#![allow(dead_code)]

use lambda_emulator::{EmulatorConfig, OutputSource};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const EXT: &str = "lambda-memory-profiler";

/// The Python with awslambdaric (set by `make rust-test`); `None` skips the test with a note.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("LMP_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!("LMP_TEST_PYTHON not set: skipping (run through `make rust-test`)");
            None
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory under the target dir, removed by the caller when the test passes.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = repo().join("target").join("it-tmp").join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free port on 127.0.0.1 (UDP and TCP both free at the time of the call).
pub fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Copies the built extension into `<dir>/extensions/` under its extension name.
pub fn extensions_dir(dir: &Path) -> PathBuf {
    let ext_dir = dir.join("extensions");
    std::fs::create_dir_all(&ext_dir).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_lambda-memory-profiler"),
        ext_dir.join(EXT),
    )
    .unwrap();
    ext_dir
}

/// Writes `app.py` with `source` into `<dir>/fn/`.
pub fn function_dir(dir: &Path, source: &str) -> PathBuf {
    let f = dir.join("fn");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("app.py"), source).unwrap();
    f
}

/// Emulator config running `app.handler` with the extension and the decorator's package.
pub fn config(python: PathBuf, dir: &Path, source: &str, env: &[(&str, String)]) -> EmulatorConfig {
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

pub fn ext_lines(em: &lambda_emulator::Emulator) -> Vec<String> {
    em.output_lines(OutputSource::Extension(EXT.into()))
}

/// A handler using the real decorator; it keeps 1 MiB per call (a leak) so traces see retention.
pub const DECORATED: &str = r#"
from lambda_memory_profiler import memory_profile

_kept = []

@memory_profile
def handler(event, context):
    _kept.append(bytearray(1024 * 1024))
    return {"n": len(_kept)}
"#;
