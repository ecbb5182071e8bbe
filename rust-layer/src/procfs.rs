//! RSS and peak RSS of this process from `/proc/self`, with the peak reset per invocation.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

/// Whether the peak RSS covers one invocation or the whole process (`rss_peak_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssScope {
    /// The high-water mark was reset at the invocation's start.
    Invocation,
    /// The reset is not permitted: the mark is the process's lifetime peak.
    Process,
}

impl RssScope {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RssScope::Invocation => "invocation",
            RssScope::Process => "process",
        }
    }
}

/// The figures of a status file and their parser: the protocol crate's, shared with the
/// extension (which reads the same file of the runtime process).
pub use lmp_protocol::status::{parse_status, ProcMemory};

/// Kept-open `/proc/self/clear_refs` and `/proc/self/status`: a reset is one `write`, a read one
/// `pread`, with no path lookup per invocation.
///
/// The peak comes from `VmHWM`, not from the cheaper `getrusage` (`ru_maxrss`): the kernel folds
/// the mark into `ru_maxrss` whenever a thread exits, so after a reset `ru_maxrss` can still show
/// an earlier invocation's peak.
#[derive(Debug)]
pub struct RssProbe {
    clear_refs: Option<File>,
    status: Option<File>,
}

impl RssProbe {
    /// Opens both files; what cannot be opened is left out (figures then absent or process-wide).
    pub fn open() -> Self {
        let clear_refs = OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .ok();
        let status = File::open("/proc/self/status").ok();
        Self { clear_refs, status }
    }

    /// Resets the high-water mark to the current RSS; the scope says whether it worked.
    pub fn reset_peak(&mut self) -> RssScope {
        let Some(f) = self.clear_refs.as_mut() else {
            return RssScope::Process;
        };
        if f.write_all(b"5").is_ok() {
            RssScope::Invocation
        } else {
            // Not permitted here: do not try again at every invocation.
            self.clear_refs = None;
            RssScope::Process
        }
    }

    /// Current `VmRSS`, `VmHWM` and `RssAnon`.
    pub fn read(&self) -> ProcMemory {
        let Some(f) = self.status.as_ref() else {
            return ProcMemory::default();
        };
        // The status file is ~1.5 KB: a stack buffer keeps the read off the heap being measured.
        let mut buf = [0u8; 4096];
        let mut len = 0;
        while len < buf.len() {
            match f.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(_) => return ProcMemory::default(),
            }
        }
        match std::str::from_utf8(&buf[..len]) {
            Ok(text) => parse_status(text),
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()])
                .map(parse_status)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peak reset is process-wide: one such test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_peak_follows_a_touched_allocation_after_a_reset() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = RssProbe::open();
        if p.reset_peak() != RssScope::Invocation {
            return; // clear_refs not permitted here: nothing to check
        }
        let before = p.read().hwm.unwrap();
        let v = vec![1u8; 32 << 20];
        std::hint::black_box(&v);
        let during = p.read().hwm.unwrap();
        drop(v);
        assert!(during >= before + (30 << 20), "{before} -> {during}");
        // A new window starts from the current RSS, below the freed 32 MiB.
        assert_eq!(p.reset_peak(), RssScope::Invocation);
        let after = p.read().hwm.unwrap();
        assert!(after + (16 << 20) < during, "{during} -> {after}");
    }

    #[test]
    fn reads_this_process() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = RssProbe::open();
        let _ = p.reset_peak();
        let r = p.read();
        let rss = r.rss.unwrap();
        let hwm = r.hwm.unwrap();
        assert!(rss > 0 && hwm >= rss / 2, "{r:?}");
    }
}
