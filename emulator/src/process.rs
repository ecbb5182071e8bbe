//! Child processes: spawning with a clean environment (in the sandbox's hosts view), signals,
//! `/proc` RSS of one process.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::sandbox::HostsView;
use crate::EmulatorError;

/// Environment variables kept from the emulator's own environment (everything else is cleared,
/// like the fresh environment of a Lambda sandbox).
const PASS_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

/// Starts `argv` in its own process group with piped stdout/stderr and exactly `env`
/// (plus a few pass-through variables), inside the sandbox's hosts view when there is one.
pub(crate) fn spawn(
    what: &str,
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    hosts: &HostsView,
) -> Result<Child, EmulatorError> {
    let Some(program) = argv.first() else {
        return Err(EmulatorError::Config(format!("empty command for {what}")));
    };
    let spawn_error = |source| EmulatorError::Spawn {
        what: what.to_string(),
        program: program.clone(),
        source,
    };
    if let Some(hook) = hosts.hook() {
        let mut cmd = command(argv, cwd, env);
        // SAFETY: the hook only makes async-signal-safe system calls on memory prepared
        // before the fork (see `sandbox::Hook::enter`).
        unsafe {
            cmd.pre_exec(hook);
        }
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(with_hook) => {
                // Tell a namespace the machine refuses from a command that cannot start at all.
                let plain = command(argv, cwd, env).spawn().map_err(spawn_error)?;
                hosts.disable(&with_hook);
                return Ok(plain);
            }
        }
    }
    command(argv, cwd, env).spawn().map_err(spawn_error)
}

fn command(argv: &[String], cwd: Option<&Path>, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(argv.first().map(String::as_str).unwrap_or_default());
    cmd.args(argv.iter().skip(1))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: signals reach helpers the process started, its memory is counted
        // with theirs, and a Ctrl-C on the emulator's terminal does not hit it directly.
        .process_group(0)
        .kill_on_drop(true);
    for key in PASS_THROUGH {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd
}

/// Sends `sig` to the process group led by `pid` (and to `pid` itself, in case it left it).
pub(crate) fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; errors (ESRCH) are expected and ignored.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

/// Resident set size of `pid` in bytes, from `/proc/<pid>/statm` (None if it is gone).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // A zombie (exited, not yet reaped) reads 0: that is no measurement.
    (pages > 0).then(|| pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf is always safe to call.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// Executable regular files directly in `dir`, sorted by name.
pub(crate) fn executables_in(dir: &Path) -> Result<Vec<PathBuf>, EmulatorError> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(dir).map_err(|source| EmulatorError::ExtensionsDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_positive() {
        let rss = rss_bytes(std::process::id()).unwrap_or(0);
        assert!(rss > 1024 * 1024, "rss {rss}");
        assert!(rss_bytes(u32::MAX).is_none());
    }
}
