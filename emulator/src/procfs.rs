//! Memory of whole process groups, as the sandbox's memory limit counts it.
//!
//! Every emulated process leads its own process group. A launcher script that starts
//! `python3 extension.py` without `exec` is a shell of a few MB whose child holds the real
//! memory; Lambda's limit (a cgroup) counts both, so the emulator sums the RSS of every process
//! of the group. Finding the members needs each process's group id (`/proc/<pid>/stat`); the ids
//! are cached, so a sample reads only the `/proc` listing, the `stat` of processes not seen
//! before, and the `statm` of members. The cache is rebuilt now and then, for a process that
//! moved to another group.

use std::collections::{HashMap, HashSet};

use crate::process::rss_bytes;

/// Samples between two full re-reads of every process's group id.
const REFRESH_EVERY: u32 = 100;

/// Summed resident memory of one process group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupRss {
    pub bytes: u64,
    /// Processes that had memory (zombies and exited ones excluded).
    pub processes: u32,
}

/// Caches the process group of every pid seen in `/proc`.
#[derive(Default)]
pub(crate) struct GroupScanner {
    group_of: HashMap<u32, u32>,
    samples: u32,
}

impl GroupScanner {
    /// The RSS of each group led by one of `leaders` (a group's id is its leader's pid). The
    /// leader itself is counted even when it moved to another group.
    pub(crate) fn sample(&mut self, leaders: &[u32]) -> HashMap<u32, GroupRss> {
        self.samples = self.samples.wrapping_add(1);
        if self.samples.is_multiple_of(REFRESH_EVERY) {
            self.group_of.clear();
        }
        let wanted: HashSet<u32> = leaders.iter().copied().collect();
        let mut seen = HashSet::new();
        let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                seen.insert(pid);
                let group = match self.group_of.get(&pid) {
                    Some(g) => *g,
                    None => match process_group(pid) {
                        Some(g) => {
                            self.group_of.insert(pid, g);
                            g
                        }
                        None => continue,
                    },
                };
                if wanted.contains(&group) || wanted.contains(&pid) {
                    let leader = if wanted.contains(&pid) { pid } else { group };
                    members.entry(leader).or_default().push(pid);
                }
            }
        }
        // Forget pids that are gone: the kernel reuses them.
        self.group_of.retain(|pid, _| seen.contains(pid));
        let mut out = HashMap::new();
        for (leader, pids) in members {
            let mut usage = GroupRss::default();
            for pid in pids {
                if let Some(rss) = rss_bytes(pid) {
                    usage.bytes += rss;
                    usage.processes += 1;
                }
            }
            if usage.processes > 0 {
                out.insert(leader, usage);
            }
        }
        out
    }
}

/// Field 5 of `/proc/<pid>/stat` (after the parenthesised command name, which may hold spaces).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // state, ppid, pgrp
    after_name.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_sums_its_leader_and_its_children() {
        use std::os::unix::process::CommandExt;
        // A shell that leads its own group and waits on a child (no `exec`).
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let leader = child.id();
        let mut scanner = GroupScanner::default();
        let mut got = GroupRss::default();
        for _ in 0..300 {
            got = scanner
                .sample(&[leader])
                .get(&leader)
                .copied()
                .unwrap_or_default();
            if got.processes >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let leader_alone = rss_bytes(leader).unwrap_or(0);
        // SAFETY: kill(2) of the group this test started.
        unsafe {
            libc::kill(-(leader as i32), libc::SIGKILL);
        }
        let _ = child.wait();
        assert_eq!(got.processes, 2, "{got:?}");
        assert!(got.bytes > leader_alone, "{got:?} vs {leader_alone}");
        assert!(process_group(std::process::id()).is_some());
    }
}
