//! A view of `/etc/hosts` in which `sandbox.localdomain` resolves to 127.0.0.1, for every
//! process the emulator starts.
//!
//! Lambda's sandbox resolves its own name, and extensions rely on it: the AWS Telemetry API
//! example binds its listener to `sandbox.localdomain:PORT`. On a developer machine the name is
//! unknown, so such a listener dies with `Name or service not known` and every invocation fails
//! with `Extension.Crash`.
//!
//! Where the machine allows it, each process starts in a private mount namespace (created
//! directly when the emulator runs as root, inside a new user namespace otherwise) where a
//! generated copy of the hosts file, plus the sandbox's name, is bind-mounted over `/etc/hosts`.
//! The host's own file is never modified and no mount is visible outside the namespace. Where the
//! machine refuses (no unprivileged user namespaces, a seccomp filter, ...), the processes see the
//! host's file and one warning says how to fix it.

use std::ffi::CString;
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The name Lambda's sandbox resolves to its loopback address.
pub const SANDBOX_HOST: &str = "sandbox.localdomain";

const HOSTS: &str = "/etc/hosts";

/// How the emulated processes get a hosts file naming the sandbox.
pub(crate) struct HostsView {
    hook: Option<Arc<Hook>>,
    /// Cleared when a spawn showed that the namespace cannot be created here.
    active: AtomicBool,
    /// Directory holding the generated hosts file, removed on drop.
    dir: Option<PathBuf>,
    warning: Mutex<Option<String>>,
}

/// Everything the child needs between `fork` and `exec`, prepared beforehand: nothing may
/// allocate there (another thread of the emulator may hold the allocator's lock at fork time).
struct Hook {
    source: CString,
    target: CString,
    root: CString,
    /// `None` when the emulator runs as root: a mount namespace needs no user namespace then.
    user_maps: Option<UserMaps>,
}

struct UserMaps {
    setgroups: CString,
    uid_map_path: CString,
    gid_map_path: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

impl HostsView {
    /// A view that changes nothing (disabled by configuration).
    pub(crate) fn off() -> HostsView {
        HostsView {
            hook: None,
            active: AtomicBool::new(false),
            dir: None,
            warning: Mutex::new(None),
        }
    }

    /// Prepares the view: nothing to do when the host's file already names the sandbox,
    /// otherwise a generated hosts file for the namespace hook.
    pub(crate) fn prepare(enabled: bool) -> HostsView {
        if !enabled {
            return HostsView::off();
        }
        let original = std::fs::read_to_string(HOSTS).unwrap_or_default();
        if names_sandbox(&original) {
            return HostsView::off();
        }
        match write_hosts_file(&original) {
            Ok((dir, file)) => match Hook::new(&file) {
                Some(hook) => HostsView {
                    hook: Some(Arc::new(hook)),
                    active: AtomicBool::new(true),
                    dir: Some(dir),
                    warning: Mutex::new(None),
                },
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    HostsView::unavailable("the generated hosts file path is not a C string")
                }
            },
            Err(e) => HostsView::unavailable(&format!("cannot write a hosts file: {e}")),
        }
    }

    fn unavailable(reason: &str) -> HostsView {
        let view = HostsView::off();
        view.set_warning(reason);
        view
    }

    /// The hook to run in a child before `exec`, while the namespace is known to work.
    pub(crate) fn hook(&self) -> Option<impl FnMut() -> io::Result<()> + Send + Sync + 'static> {
        if !self.active.load(Ordering::SeqCst) {
            return None;
        }
        let hook = self.hook.clone()?;
        // SAFETY (of the closure's body): see `Hook::enter`.
        Some(move || unsafe { hook.enter() })
    }

    /// A spawn with the hook failed and one without it worked: the namespace is what fails here.
    pub(crate) fn disable(&self, error: &io::Error) {
        if self.active.swap(false, Ordering::SeqCst) {
            self.set_warning(&format!(
                "cannot create a private mount namespace ({error})"
            ));
        }
    }

    fn set_warning(&self, reason: &str) {
        let text = format!(
            "{SANDBOX_HOST} does not resolve for the emulated processes: {reason}. \
             Run as root, allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000 \
             and, where it exists, kernel.unprivileged_userns_clone=1), or add \
             \"127.0.0.1 {SANDBOX_HOST}\" to /etc/hosts"
        );
        tracing::warn!("{text}");
        if let Ok(mut w) = self.warning.lock() {
            *w = Some(text);
        }
    }

    /// The warning, when the processes cannot resolve the sandbox's name.
    pub(crate) fn warning(&self) -> Option<String> {
        self.warning.lock().ok().and_then(|w| w.clone())
    }
}

impl Drop for HostsView {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Hook {
    fn new(file: &Path) -> Option<Hook> {
        // SAFETY: getuid/getgid/geteuid cannot fail and touch no memory.
        let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
        let user_maps = (euid != 0).then(|| UserMaps {
            setgroups: c("/proc/self/setgroups"),
            uid_map_path: c("/proc/self/uid_map"),
            gid_map_path: c("/proc/self/gid_map"),
            // The process keeps its own ids inside the namespace: files it writes, signals and
            // /proc access stay as without the namespace.
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        });
        Some(Hook {
            source: CString::new(file.as_os_str().as_bytes()).ok()?,
            target: c(HOSTS),
            root: c("/"),
            user_maps,
        })
    }

    /// Runs in the child between `fork` and `exec`.
    ///
    /// # Safety
    /// Only async-signal-safe system calls on memory prepared before the fork.
    unsafe fn enter(&self) -> io::Result<()> {
        match &self.user_maps {
            None => check(libc::unshare(libc::CLONE_NEWNS))?,
            Some(maps) => {
                check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                write_all(&maps.setgroups, b"deny")?;
                write_all(&maps.uid_map_path, &maps.uid_map)?;
                write_all(&maps.gid_map_path, &maps.gid_map)?;
            }
        }
        // Private propagation first, or the bind mount would appear in the host's namespace.
        check(libc::mount(
            std::ptr::null(),
            self.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            self.source.as_ptr(),
            self.target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))
    }
}

fn c(s: &str) -> CString {
    // The constant paths above hold no NUL byte.
    CString::new(s).unwrap_or_default()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// # Safety
/// Async-signal-safe: open/write/close on prepared buffers.
unsafe fn write_all(path: &CString, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let result = if n == data.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    libc::close(fd);
    result
}

/// Whether a hosts file maps the sandbox's name to a loopback address.
pub(crate) fn names_sandbox(hosts: &str) -> bool {
    hosts.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let loopback = fields
            .next()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        loopback && fields.any(|n| n.eq_ignore_ascii_case(SANDBOX_HOST))
    })
}

/// The host's hosts file plus the sandbox's name, in a fresh private directory.
fn write_hosts_file(original: &str) -> io::Result<(PathBuf, PathBuf)> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lambda-emulator-hosts-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("hosts");
    let mut text = original.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# Added by lambda-emulator: the Lambda sandbox's own name.\n127.0.0.1\t{SANDBOX_HOST}\n"
    ));
    std::fs::write(&file, text)?;
    Ok((dir, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_hosts_file_that_already_names_the_sandbox() {
        assert!(names_sandbox(
            "127.0.0.1 localhost\n127.0.0.1\tsandbox.localdomain\n"
        ));
        assert!(names_sandbox("::1 Sandbox.LocalDomain # mixed case"));
        assert!(!names_sandbox("127.0.0.1 localhost\n"));
        assert!(!names_sandbox("# 127.0.0.1 sandbox.localdomain\n"));
        assert!(!names_sandbox("10.0.0.1 sandbox.localdomain\n"));
    }

    #[test]
    fn the_generated_file_keeps_the_hosts_entries_and_adds_the_sandbox() {
        let (dir, file) = write_hosts_file("127.0.0.1 localhost\n10.1.2.3 db").expect("write");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.starts_with("127.0.0.1 localhost\n10.1.2.3 db\n"),
            "{text}"
        );
        assert!(names_sandbox(&text));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn a_failed_namespace_leaves_one_warning_with_the_fix() {
        let view = HostsView::prepare(true);
        view.disable(&io::Error::from_raw_os_error(libc::EPERM));
        view.disable(&io::Error::from_raw_os_error(libc::EPERM));
        let w = view.warning().unwrap_or_default();
        if view.hook.is_some() {
            assert!(
                w.contains(SANDBOX_HOST) && w.contains("user namespaces"),
                "{w}"
            );
            assert!(!w.contains('\n'), "one line: {w}");
        }
        assert!(view.hook().is_none());
    }
}
