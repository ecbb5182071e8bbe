//! Helpers for tests that run functions under the emulator, shared by this crate's tests and
//! the extension's: the test Python, temporary directories, free ports. One definition, so every
//! suite skips nothing silently and cleans up the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the Python interpreter (with `awslambdaric`) the tests run functions on.
pub const TEST_PYTHON_VAR: &str = "LMP_TEST_PYTHON";

/// The test Python from `LMP_TEST_PYTHON`. Panics when it is not set: a test that needs a
/// runtime must fail, not pass without running, when it cannot get one.
pub fn python() -> PathBuf {
    match std::env::var_os(TEST_PYTHON_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{TEST_PYTHON_VAR} is not set: these tests need a Python with awslambdaric. Run them \
             with `make test` (or `make venv` and {TEST_PYTHON_VAR}=$PWD/.venv/bin/python)."
        ),
    }
}

/// A fresh directory, removed on drop unless the test is failing (then kept, and its path
/// printed, for the post-mortem).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory under `base` (created if needed), named after `tag`, this process and a
    /// counter, so parallel tests and runs never share one.
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        TempDir(dir)
    }

    /// A new directory under the system's temporary directory.
    pub fn new(tag: &str) -> TempDir {
        Self::new_in(&std::env::temp_dir().join("lambda-emulator-tests"), tag)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for the failing test: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A port on 127.0.0.1 free for both TCP and UDP at the time of the call.
pub fn free_port() -> u16 {
    loop {
        let Ok(tcp) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if std::net::UdpSocket::bind(("127.0.0.1", addr.port())).is_ok() {
            return addr.port();
        }
    }
}
