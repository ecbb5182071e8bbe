//! The decorator's two per-invocation memory reads, as plain system calls (`probes` exposes
//! them to Python): the peak resident set from `getrusage`, and the anonymous resident pages
//! from `/proc/self/statm`.

/// This process's peak resident set, KiB, as the kernel keeps it for `getrusage`.
pub fn peak_kib() -> Option<i64> {
    // SAFETY: `rusage` is plain data that getrusage fills; zeroed is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage for the call to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (rc == 0).then_some(usage.ru_maxrss)
}

/// Resident minus shared pages of the `statm` file open on `fd` (read from its start).
pub fn anon_pages_of(fd: i32) -> Option<i64> {
    let mut buf = [0u8; 128];
    // SAFETY: reads at most buf.len() bytes into buf; a bad descriptor fails with -1.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let len = usize::try_from(n).ok()?;
    anon_pages(buf.get(..len)?)
}

/// Resident minus shared pages of a `statm` text (its second and third fields).
pub fn anon_pages(text: &[u8]) -> Option<i64> {
    let mut fields = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let mut number = || -> Option<i64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    let _size = number()?;
    let resident = number()?;
    let shared = number()?;
    Some(resident - shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_gives_resident_minus_shared() {
        assert_eq!(anon_pages(b"12345 678 90 1 0 4000 0\n"), Some(588));
        assert_eq!(anon_pages(b"1 2"), None);
        assert_eq!(anon_pages(b""), None);
        assert_eq!(anon_pages(b"1 x 3"), None);
    }

    #[test]
    fn this_process_has_a_peak_and_an_anon_figure() {
        assert!(peak_kib().is_some_and(|k| k > 0));
        let text = std::fs::read("/proc/self/statm").unwrap_or_default();
        assert!(anon_pages(&text).is_some_and(|p| p > 0));
        let file = std::fs::File::open("/proc/self/statm");
        let fd = file
            .as_ref()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .unwrap_or(-1);
        assert!(anon_pages_of(fd).is_some_and(|p| p > 0));
        assert_eq!(anon_pages_of(-1), None);
    }
}
