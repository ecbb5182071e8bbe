//! Text and Markdown renderings of a [`Report`], and the unit formatting they share: binary
//! units everywhere (MiB for memory sizes, which Lambda writes "MB"; B/KiB/MiB for byte
//! figures), said once in the header.

mod markdown;
mod text;

pub use markdown::markdown;
pub use text::text;

use crate::model::{FunctionReport, Leak, Report};
use crate::window::format_hours;

/// The units sentence, said once per report.
pub const UNITS: &str = "Units: memory in MiB (1 MiB = 1,048,576 bytes; Lambda's memory sizes, \
                         written \"MB\", are MiB), byte figures in B, KiB and MiB.";

/// Bytes in B, KiB or MiB.
pub fn bytes(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if a >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

/// A memory size or use in MiB.
pub fn mib(v: f64) -> String {
    if v.abs() < 10.0 && v.fract() != 0.0 {
        format!("{v:.1} MiB")
    } else {
        format!("{v:.0} MiB")
    }
}

/// `v` formatted by `f`, or an em dash where the figure is unknown.
pub fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

/// A count with thousands separators.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The report's first line.
pub fn header(r: &Report) -> String {
    let engine = match r.logs_engine {
        Some(crate::logs::Engine::Insights) => "Logs Insights",
        Some(crate::logs::Engine::FilterLogEvents) => {
            "FilterLogEvents (no Insights at the endpoint)"
        }
        None => "none",
    };
    format!(
        "lambda-memory-profiler report: namespace {}, {}{}, {} to {} ({}); log figures from {engine}",
        r.namespace,
        r.region,
        r.endpoint_url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default(),
        r.window.start,
        r.window.end,
        humantime::format_duration(std::time::Duration::from_secs(
            r.window.seconds.max(0) as u64
        )),
    )
}

/// "LEAK in 2 of 3 environments, since …" or "no leak verdict".
pub fn verdict(f: &FunctionReport) -> String {
    let Some(l) = &f.leak else {
        return "unknown (log group not read)".into();
    };
    let judged = f.environments.seen;
    let mut s = if l.environments_with_verdict == 0 {
        "no leak verdict standing".to_string()
    } else {
        format!(
            "LEAK SUSPECTED in {} of {judged} environments, since {}",
            l.environments_with_verdict,
            l.since.as_deref().unwrap_or("?")
        )
    };
    if let Some(share) = l.share_of_judged_invocations {
        s.push_str(&format!(" ({:.0}% of judged invocations)", share * 100.0));
    }
    let withdrawn = count_status(l, crate::model::EnvironmentStatus::Withdrawn);
    let oom = count_status(l, crate::model::EnvironmentStatus::OutOfMemory);
    if withdrawn > 0 {
        s.push_str(&format!("; withdrawn in {withdrawn}"));
    }
    if oom > 0 {
        s.push_str(&format!(
            "; {oom} ran out of memory after {}",
            if oom == 1 {
                "its verdict"
            } else {
                "their verdicts"
            }
        ));
    }
    s
}

fn count_status(l: &Leak, status: crate::model::EnvironmentStatus) -> usize {
    l.environments.iter().filter(|e| e.status == status).count()
}

/// "~9 invocations (~3 min)" for the soonest standing verdict.
pub fn to_oom(f: &FunctionReport) -> Option<String> {
    let l = f.leak.as_ref()?;
    let n = l.invocations_to_out_of_memory?;
    let mut s = format!("~{} invocations", thousands(n.max(0.0) as u64));
    if let Some(h) = l.hours_to_out_of_memory {
        s.push_str(&format!(
            " (~{} at that environment's rate)",
            format_hours(h)
        ));
    }
    Some(s)
}

/// "1: Runtime.OutOfMemory ×1 in 1 environment (last …)".
pub fn oom(f: &FunctionReport) -> String {
    let o = &f.out_of_memory;
    let causes = o.causes.as_deref().unwrap_or(&[]);
    if o.count == 0 && causes.is_empty() {
        return "none".into();
    }
    let detail: Vec<String> = causes
        .iter()
        .map(|c| {
            format!(
                "{} ×{} in {} environment{} (last {})",
                c.cause,
                c.count,
                c.environments,
                if c.environments == 1 { "" } else { "s" },
                c.last_at
            )
        })
        .collect();
    if detail.is_empty() {
        o.count.to_string()
    } else {
        format!("{}: {}", o.count, detail.join(", "))
    }
}

/// A short name for a log stream: the part after `]` (Lambda's `2026/01/31/[$LATEST]abc…`).
pub fn short_stream(s: &str) -> String {
    let tail = s.rsplit_once(']').map_or(s, |(_, t)| t);
    let chars: Vec<char> = tail.chars().collect();
    if chars.len() > 12 {
        chars[chars.len() - 12..].iter().collect()
    } else {
        tail.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(12_288.0), "12.0 KiB");
        assert_eq!(bytes(2.5 * 1024.0 * 1024.0), "2.5 MiB");
        assert_eq!(bytes(-2048.0), "-2.0 KiB");
        assert_eq!(mib(128.0), "128 MiB");
        assert_eq!(mib(2.5), "2.5 MiB");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn stream_names_are_shortened_to_the_environment_id() {
        assert_eq!(
            short_stream("2026/01/31/[$LATEST]0123456789abcdef0123"),
            "89abcdef0123"
        );
        assert_eq!(short_stream("env-1"), "env-1");
    }
}
