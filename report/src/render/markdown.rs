//! The Markdown report: a table of figures per function, then its sites and environments, for
//! pasting into an issue or a pull request.

use super::{bytes, header, mib, oom, opt, short_stream, thousands, to_oom, verdict, UNITS};
use crate::model::{FunctionReport, Report};
use std::fmt::Write as _;

/// `|` inside a cell would end it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown report: header, units, notes, then per function a table of figures, its sites
/// and its environments.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Memory report\n\n{}\n\n{UNITS}", header(r));
    for n in &r.notes {
        let _ = writeln!(out, "\n> note: {}", n);
    }
    for f in &r.functions {
        function(&mut out, f);
    }
    out
}

fn function(out: &mut String, f: &FunctionReport) {
    let _ = writeln!(
        out,
        "\n## {}\n\n{} configured, {} invocations in {} environments.\n",
        f.function,
        opt(f.memory_size_mb, mib),
        thousands(f.invocations),
        f.environments.seen
    );
    let _ = writeln!(out, "| figure | value |\n|---|---|");
    let g = &f.heap_growth_bytes_per_invoke;
    let rows = [
        (
            "memory utilization (max / p99)",
            format!(
                "{} / {}",
                opt(f.utilization_percent.max, |v| format!("{v:.1}%")),
                opt(f.utilization_percent.p99, |v| format!("{v:.1}%"))
            ),
        ),
        ("max memory used", opt(f.max_memory_used_mb, mib)),
        ("Python heap peak", opt(f.python_heap_peak_bytes, bytes)),
        (
            "heap growth per invocation (mean / max)",
            format!(
                "{} / {} over {} judged invocations",
                opt(g.mean, bytes),
                opt(g.max, bytes),
                thousands(g.judged_invocations)
            ),
        ),
        ("leak verdict", verdict(f)),
        ("out of memory in", to_oom(f).unwrap_or_else(|| "—".into())),
        ("out of memory", oom(f)),
        (
            "right size",
            f.right_size
                .as_ref()
                .map_or_else(|| "—".into(), |r| r.advice.clone()),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }
    if let Some(note) = f.right_size.as_ref().and_then(|r| r.cpu_note.as_ref()) {
        let _ = writeln!(out, "\n{note}.");
    }
    if let Some(sites) = f.growing_sites.as_ref().filter(|s| !s.is_empty()) {
        let _ = writeln!(
            out,
            "\n### Growing sites\n\n| bytes/invocation | environments | site | via |\n|---:|---:|---|---|"
        );
        for s in sites {
            let _ = writeln!(
                out,
                "| {} | {}/{} | `{}` | {} |",
                bytes(s.bytes_per_invoke),
                s.environments,
                f.environments.seen,
                cell(&s.site),
                s.via
                    .as_deref()
                    .map_or_else(|| "—".into(), |v| format!("`{}`", cell(v)))
            );
        }
    }
    if let Some(l) = f.leak.as_ref().filter(|l| !l.environments.is_empty()) {
        let _ = writeln!(
            out,
            "\n### Environments with a verdict\n\n| environment | status | since | growth/invocation | to OOM |\n|---|---|---|---:|---:|"
        );
        for e in l.environments.iter().take(super::text::MAX_ENVIRONMENTS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                short_stream(&e.log_stream),
                e.status.as_str(),
                e.since,
                opt(e.heap_growth_bytes_per_invoke, bytes),
                opt(e.invocations_to_out_of_memory, |n| thousands(n as u64))
            );
        }
    }
    for n in &f.notes {
        let _ = writeln!(out, "\n> note: {n}");
    }
}
