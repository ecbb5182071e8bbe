//! `/proc/<pid>/status` memory figures: the one parser of the extension (which reads the
//! runtime's file and its own) and of the Rust layer (which reads its own process's).
//!
//! Each side keeps its own file reading: the Rust layer reads into a stack buffer from a file
//! kept open, so measuring the heap does not allocate on it. The parser does not allocate either.

/// Memory figures of one process, in bytes; a figure the text lacks or garbles is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcMemory {
    /// `VmRSS`: resident set size now.
    pub rss: Option<u64>,
    /// `VmHWM`: resident set high-water mark (since start, or since the last `clear_refs` reset).
    pub hwm: Option<u64>,
    /// `RssAnon`: resident anonymous memory (heap, arenas, native buffers; no file pages).
    pub anon: Option<u64>,
}

/// Parses the text of a `/proc/<pid>/status` file. Lines that do not parse are skipped; a key
/// written twice keeps its last value.
pub fn parse_status(text: &str) -> ProcMemory {
    let mut m = ProcMemory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "VmRSS" => &mut m.rss,
            "VmHWM" => &mut m.hwm,
            "RssAnon" => &mut m.anon,
            _ => continue,
        };
        *slot = parse_kb(rest);
    }
    m
}

/// `"   61234 kB"` → bytes. The kernel always writes `kB`: another unit, a second word or a
/// count whose bytes overflow a `u64` is rejected, never wrapped.
fn parse_kb(field: &str) -> Option<u64> {
    let mut it = field.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match (it.next(), it.next()) {
        (Some("kB"), None) => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status file of `tests/fixtures/proc` (shared with the extension's other `/proc` tests).
    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/proc")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_a_real_status_file() {
        let m = parse_status(&fixture("status_python.txt"));
        assert_eq!(m.rss, Some(61_340 * 1024));
        assert_eq!(m.hwm, Some(75_112 * 1024));
        assert!(m.anon.is_some_and(|a| a <= m.rss.unwrap_or(0)), "{m:?}");
    }

    #[test]
    fn kernel_thread_status_has_no_memory_lines() {
        let m = parse_status(&fixture("status_kthread.txt"));
        assert_eq!(m, ProcMemory::default());
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        let m = parse_status(&fixture("status_malformed.txt"));
        // VmHWM has a bad unit, VmRSS is a valid line after garbage.
        assert_eq!(m.hwm, None);
        assert_eq!(m.rss, Some(1024));
        assert_eq!(parse_status(""), ProcMemory::default());
        for bad in [
            "VmRSS:",
            "VmRSS:\t12",
            "VmRSS:\tlots kB",
            "VmRSS:\t12 kB extra",
            "VmRSS:\t12 KB",
            "VmRSS:\t-12 kB",
            " VmRSS:\t12 kB",
        ] {
            assert_eq!(parse_status(bad), ProcMemory::default(), "{bad:?}");
        }
    }

    #[test]
    fn a_count_whose_bytes_overflow_is_rejected() {
        let max_kb = u64::MAX / 1024;
        assert_eq!(
            parse_status(&format!("VmRSS:\t{max_kb} kB")).rss,
            Some(max_kb * 1024)
        );
        let over = max_kb + 1;
        assert_eq!(parse_status(&format!("VmRSS:\t{over} kB")).rss, None);
        assert_eq!(
            parse_status("VmHWM: 99999999999999999999999 kB"),
            ProcMemory::default()
        );
    }

    #[test]
    fn the_three_figures_of_one_file() {
        let text = "Name:\tfn\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n\
                    RssAnon:\t     512 kB\nThreads:\t1\n";
        assert_eq!(
            parse_status(text),
            ProcMemory {
                rss: Some(1024 * 1024),
                hwm: Some(2048 * 1024),
                anon: Some(512 * 1024),
            }
        );
    }
}
