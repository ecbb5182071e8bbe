//! `/proc/<pid>/status` figures of the runtime process (and of the extension itself).
//!
//! `RssAnon` is the leak analysis' byte signal: page-exact, and read by the extension, so it
//! costs the handler nothing. Kernels before 6.2 batch each thread's RSS counters (up to 64
//! pages behind); the Theil–Sen slope over a window absorbs that staircase.

use std::path::Path;

/// The status parser is the protocol crate's, shared with the Rust layer.
pub use lmp_protocol::status::{parse_status, ProcMemory};

/// Reads and parses a status file; `None` when it cannot be read (process gone, no permission).
pub fn read_status(path: &Path) -> Option<ProcMemory> {
    std::fs::read_to_string(path).ok().map(|t| parse_status(&t))
}

/// Memory figures of the process `pid`.
pub fn read_pid(pid: u32) -> Option<ProcMemory> {
    read_status(Path::new(&format!("/proc/{pid}/status")))
}

/// The state of one UDP socket as `/proc/net/udp` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSocketState {
    /// Bytes waiting in the receive queue.
    pub queued_bytes: u64,
    /// Datagrams the kernel dropped (a full receive queue among the causes), since creation.
    pub drops: u64,
}

/// The state of the UDP socket bound to 127.0.0.1:`port`, in the `/proc/net/udp` text.
pub fn parse_udp_socket(text: &str, port: u16) -> Option<UdpSocketState> {
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.len() < 13 {
            return None;
        }
        // `tx_queue:rx_queue`, both hexadecimal.
        let (_, rx) = fields.get(4)?.split_once(':')?;
        Some(UdpSocketState {
            queued_bytes: u64::from_str_radix(rx, 16).ok()?,
            drops: fields.last()?.parse().ok()?,
        })
    })
}

/// The state of this process's UDP socket on 127.0.0.1:`port`.
pub fn udp_socket(port: u16) -> Option<UdpSocketState> {
    let text = std::fs::read_to_string("/proc/self/net/udp").ok()?;
    parse_udp_socket(&text, port)
}

/// Memory figures of this process.
pub fn read_self() -> Option<ProcMemory> {
    read_status(Path::new("/proc/self/status"))
}

/// The parent pid in the text of a `/proc/<pid>/stat` file (its 4th field, after the command
/// name, which may itself hold spaces and parentheses).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The `Pss:` figure of a `/proc/<pid>/smaps_rollup` text, in bytes.
pub fn parse_pss(rollup: &str) -> Option<u64> {
    rollup.lines().find_map(|l| {
        let kb = l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim();
        kb.parse::<u64>().ok().map(|k| k * 1024)
    })
}

/// The memory of a set of processes, each page counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMemory {
    /// Summed proportional set size (a page shared by `n` processes counts `1/n` in each), or
    /// resident set size where `smaps_rollup` cannot be read (then shared pages count more
    /// than once).
    pub bytes: u64,
    /// Processes counted.
    pub processes: usize,
}

/// Whether process `pid` still exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The parent of every process `/proc` shows, read once.
fn parents_by_pid() -> std::collections::BTreeMap<u32, u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_ppid(&stat)?))
        })
        .collect()
}

/// The memory of the runtime's process tree: the parents of `workers` (the runtime's
/// bootstrap, which forked them), every child of those parents (workers that sent no record
/// included), and this process. `None` when no worker is alive.
pub fn runtime_tree_memory(workers: &[u32]) -> Option<GroupMemory> {
    let me = std::process::id();
    let parent_of = parents_by_pid();
    // Our own parent started the runtime too (the platform's init): it is not the runtime's
    // bootstrap, and its children are every extension (a worker that is the bootstrap itself,
    // in a runtime that does not fork, has that parent).
    let ours = parent_of.get(&me).copied();
    let parents: std::collections::BTreeSet<u32> = workers
        .iter()
        .filter_map(|w| parent_of.get(w).copied())
        .filter(|p| *p > 1 && *p != me && Some(*p) != ours)
        .collect();
    let mut members: std::collections::BTreeSet<u32> = parents.clone();
    members.extend(workers.iter().filter(|w| parent_of.contains_key(w)));
    members.extend(
        parent_of
            .iter()
            .filter(|(_, pp)| parents.contains(pp))
            .map(|(pid, _)| *pid),
    );
    members.insert(me);
    let mut total = GroupMemory {
        bytes: 0,
        processes: 0,
    };
    for pid in &members {
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| parse_pss(&t));
        let Some(bytes) = pss.or_else(|| read_pid(*pid).and_then(|m| m.rss)) else {
            continue;
        };
        total.bytes += bytes;
        total.processes += 1;
    }
    // Only this process: every worker is gone.
    (total.processes > 1).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_rollup_figures_parse() {
        assert_eq!(parse_ppid("123 (python3) S 77 123 123 0 -1"), Some(77));
        assert_eq!(parse_ppid("9 (a b) c)) R 5 9 9"), Some(5));
        assert_eq!(parse_ppid("garbage"), None);
        let rollup = "55d0-7ff [rollup]\nRss:               10240 kB\nPss:                4096 kB\nPss_Anon:           1000 kB\n";
        assert_eq!(parse_pss(rollup), Some(4096 * 1024));
        assert_eq!(parse_pss("Rss: 3 kB\n"), None);
    }

    #[test]
    fn the_tree_of_a_real_child_counts_it_its_parent_and_us() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let m = runtime_tree_memory(&[child.id()]).unwrap();
        // The child, its parent (this test process, which is also "us": counted once).
        assert!(m.processes >= 2, "{m:?}");
        assert!(m.bytes > 1024 * 1024, "{m:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(runtime_tree_memory(&[u32::MAX]), None);
    }

    #[test]
    fn udp_drops_are_read_for_the_intake_port_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:1093 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 17\n\
            2: 00000000:1093 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1235 2 0000000000000000 99\n";
        assert_eq!(parse_udp_socket(text, 4243).map(|s| s.drops), Some(17));
        assert_eq!(
            parse_udp_socket(
                "h\n 1: 0100007F:1093 00000000:0000 07 00000000:00000A00 00:00000000 00000000 0 0 1 2 0 3\n",
                4243
            ),
            Some(UdpSocketState {
                queued_bytes: 0xA00,
                drops: 3
            })
        );
        assert_eq!(parse_udp_socket(text, 4244), None);
        assert_eq!(parse_udp_socket("", 4243), None);
        assert_eq!(
            parse_udp_socket("header\n1: 0100007F:1093 x drops", 4243),
            None
        );
    }

    #[test]
    fn kernel_drops_of_a_flooded_socket_are_seen() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = vec![b'x'; 8192];
        // Nobody reads: the default receive queue overflows.
        for _ in 0..2000 {
            let _ = client.send_to(&datagram, ("127.0.0.1", port));
        }
        let drops = udp_socket(port).expect("the socket is listed").drops;
        assert!(drops > 0, "drops {drops}");
    }

    #[test]
    fn reads_this_process() {
        let m = read_self().expect("/proc/self/status readable");
        let rss = m.rss.expect("VmRSS present");
        let hwm = m.hwm.expect("VmHWM present");
        assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
        let anon = m.anon.expect("RssAnon present");
        assert!(anon > 0 && anon <= rss, "anon {anon} rss {rss}");
        assert_eq!(read_pid(u32::MAX), None);
    }
}
