//! The plain-text report: one block per function, one figure per line.

use super::{bytes, header, mib, oom, opt, short_stream, thousands, to_oom, verdict, UNITS};
use crate::model::{FunctionReport, Report};
use std::fmt::Write as _;

/// Environments listed per function; the JSON has them all.
pub(super) const MAX_ENVIRONMENTS: usize = 10;

/// The plain-text report (the default `--format`): header, units, notes, one block per function.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(r));
    let _ = writeln!(out, "{UNITS}");
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for f in &r.functions {
        out.push('\n');
        function(&mut out, f);
    }
    out
}

fn row(out: &mut String, label: &str, value: impl AsRef<str>) {
    let _ = writeln!(out, "  {label:<26}{}", value.as_ref());
}

fn function(out: &mut String, f: &FunctionReport) {
    let _ = writeln!(
        out,
        "== {}: {}, {} invocations in {} environment{}{}",
        f.function,
        opt(f.memory_size_mb, mib),
        thousands(f.invocations),
        f.environments.seen,
        if f.environments.seen == 1 { "" } else { "s" },
        f.environments
            .cold_starts
            .map(|c| format!(" ({c} cold starts)"))
            .unwrap_or_default()
    );
    row(
        out,
        "memory utilization",
        format!(
            "max {}, p99 {}   (max memory used {} of {})",
            opt(f.utilization_percent.max, |v| format!("{v:.1}%")),
            opt(f.utilization_percent.p99, |v| format!("{v:.1}%")),
            opt(f.max_memory_used_mb, mib),
            opt(f.memory_size_mb, mib)
        ),
    );
    row(
        out,
        "Python heap peak",
        opt(f.python_heap_peak_bytes, bytes),
    );
    let g = &f.heap_growth_bytes_per_invoke;
    row(
        out,
        "heap growth / invocation",
        if g.judged_invocations == 0 {
            "— (no environment has a full window yet)".to_string()
        } else {
            format!(
                "mean {}, max {} over {} judged invocations (resident anonymous memory)",
                opt(g.mean, bytes),
                opt(g.max, bytes),
                thousands(g.judged_invocations)
            )
        },
    );
    row(out, "leak verdict", verdict(f));
    if let Some(s) = to_oom(f) {
        row(out, "out of memory in", s);
    }
    sites(out, f);
    row(out, "out of memory", oom(f));
    match &f.right_size {
        Some(rs) => {
            row(out, "right size", &rs.advice);
            if let (Some(n), Some(ms)) = (rs.invocations_per_month, rs.mean_billed_ms) {
                row(
                    out,
                    "",
                    format!(
                        "(at {} invocations/month, mean billed {ms:.1} ms, {} USD per GB-second)",
                        thousands(n.round() as u64),
                        rs.price_per_gb_second
                    ),
                );
            }
            if let Some(note) = &rs.cpu_note {
                row(out, "", note);
            }
        }
        None => row(out, "right size", "— (no recommendation published yet)"),
    }
    if let Some(l) = &f.leak {
        if !l.environments.is_empty() {
            row(
                out,
                "environments",
                "status        since                 growth/inv   to OOM",
            );
            for e in l.environments.iter().take(MAX_ENVIRONMENTS) {
                row(
                    out,
                    "",
                    format!(
                        "{:<14}{:<22}{:<13}{}  {}",
                        e.status.as_str(),
                        e.since,
                        opt(e.heap_growth_bytes_per_invoke, bytes),
                        opt(e.invocations_to_out_of_memory, |n| format!(
                            "{} inv",
                            thousands(n as u64)
                        )),
                        short_stream(&e.log_stream)
                    ),
                );
            }
        }
    }
    if let Some(more) = f
        .leak
        .as_ref()
        .and_then(|l| l.environments.len().checked_sub(MAX_ENVIRONMENTS))
        .filter(|n| *n > 0)
    {
        row(
            out,
            "",
            format!("… {more} more (--format json lists every environment)"),
        );
    }
    for n in &f.notes {
        row(out, "note", n);
    }
}

fn sites(out: &mut String, f: &FunctionReport) {
    let Some(sites) = &f.growing_sites else {
        row(out, "growing sites", "— (log group not read)");
        return;
    };
    if sites.is_empty() {
        row(out, "growing sites", "none named by a leak line");
        return;
    }
    row(out, "growing sites", "bytes/invocation  environments  site");
    for s in sites {
        row(
            out,
            "",
            format!(
                "{:>16}  {:>12}  {}{}",
                bytes(s.bytes_per_invoke),
                format!("{}/{}", s.environments, f.environments.seen),
                s.site,
                s.via
                    .as_deref()
                    .map(|v| format!(" (via {v})"))
                    .unwrap_or_default()
            ),
        );
    }
}
