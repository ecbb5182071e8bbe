//! The Logs Insights queries the report runs: THE definition. `template.yaml` ships the same
//! text as `AWS::Logs::QueryDefinition`s and one of them as the dashboard's Logs Insights widget
//! (a test compares them).
//!
//! An execution environment is a log stream (`@logStream`): Lambda writes each environment's
//! output — the extension's lines and the platform's `REPORT` line of every invocation — to its
//! own stream of the function's log group. Every query groups by it.

/// One query: its name in `template.yaml`, its text, and the columns every row has (a server
/// that returns rows without them did not run the query's `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// `lambda-memory-profiler/<query>`, as errors and notes name it; `template.yaml` inserts the
    /// function (`lambda-memory-profiler/${Function}/<query>`).
    pub name: &'static str,
    /// The Logs Insights query text, identical to the template's `QueryString`.
    pub text: &'static str,
    /// Columns every result row has; rows without them mean the server ignored `stats`.
    pub columns: &'static [&'static str],
}

/// Allocation sites named by the leak lines, ranked by the bytes they keep per invocation across
/// environments.
pub const GROWING_SITES: Query = Query {
    name: "lambda-memory-profiler/growing-sites",
    text: r#"filter lmp = "leak_suspected"
| fields jsonParse(@message) as leak
| unnest leak.growing_sites into site
| stats count_distinct(@logStream) as environments, avg(site.bytes_per_traced_invoke) as bytes_per_invoke, max(site.seen_in) as traced_invocations, latest(site.via) as via by site.site
| sort bytes_per_invoke desc
| limit 100"#,
    columns: &["site.site", "environments"],
};

/// Leak verdicts per environment and episode (`since_invocation` of a raise, the
/// `raised_at_invocation` its withdrawal names): when raised, last said, withdrawn or not.
pub const LEAK_VERDICTS: Query = Query {
    name: "lambda-memory-profiler/leak-verdicts",
    text: r#"filter lmp = "leak_suspected" or lmp = "leak_withdrawn"
| fields coalesce(since_invocation, raised_at_invocation) as episode
| stats count(*) as lines, min(@timestamp) as first_at, max(@timestamp) as last_at, latest(heap_growth_bytes_per_invoke) as heap_growth_bytes_per_invoke, latest(invocations_to_out_of_memory) as invocations_to_out_of_memory, latest(hours_to_out_of_memory) as hours_to_out_of_memory, max(invocations) as invocations by @logStream, lmp, episode
| sort last_at desc
| limit 10000"#,
    columns: &["@logStream", "lmp", "lines", "last_at"],
};

/// Out-of-memory invocations per environment and cause.
pub const OUT_OF_MEMORY: Query = Query {
    name: "lambda-memory-profiler/out-of-memory",
    text: r#"filter lmp = "out_of_memory"
| stats count(*) as out_of_memory, max(@timestamp) as last_at, max(utilization) as utilization by @logStream, cause
| sort last_at desc
| limit 10000"#,
    columns: &["@logStream", "cause", "out_of_memory", "last_at"],
};

/// Memory used over time per environment, from the platform's `REPORT` lines (text log format)
/// or `platform.report` records (JSON log format). `@maxMemoryUsed` counts MB × 1,000,000.
pub const MEMORY_BY_ENVIRONMENT: Query = Query {
    name: "lambda-memory-profiler/memory-by-environment",
    text: r#"filter @type = "REPORT" or type = "platform.report"
| fields coalesce(@maxMemoryUsed / 1000 / 1000, record.metrics.maxMemoryUsedMB) as max_memory_used_mb
| stats max(max_memory_used_mb) as max_memory_used_mb, count(*) as invocations by @logStream, bin(5m)
| limit 10000"#,
    columns: &["@logStream", "invocations"],
};

/// Every query, in the order the template lists them.
pub const ALL: &[Query] = &[
    GROWING_SITES,
    LEAK_VERDICTS,
    OUT_OF_MEMORY,
    MEMORY_BY_ENVIRONMENT,
];

/// The bin the shipped memory query uses; the report substitutes its own.
pub const SHIPPED_BIN: &str = "bin(5m)";

/// The results column of a `bin(N)`.
pub fn bin_expr(bin_s: i64) -> String {
    format!("bin({bin_s}s)")
}

/// The memory query with the report's bin.
pub fn memory_query(bin_s: i64) -> String {
    MEMORY_BY_ENVIRONMENT
        .text
        .replace(SHIPPED_BIN, &bin_expr(bin_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `QueryString: |` block of each QueryDefinition, by the last part of its `Name`.
    fn template_queries(template: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let lines: Vec<&str> = template.lines().collect();
        let mut name: Option<String> = None;
        let mut i = 0;
        while i < lines.len() {
            let t = lines[i].trim_start();
            // `Name: !Sub "lambda-memory-profiler/${ExampleFunction}/growing-sites"`: the last part.
            if let Some(n) = t.strip_prefix("Name: ") {
                name = n
                    .trim()
                    .trim_matches('"')
                    .rsplit('/')
                    .next()
                    .map(str::to_string);
            }
            if t.starts_with("QueryString: |") {
                let indent = lines
                    .get(i + 1)
                    .map_or(0, |l| l.len() - l.trim_start().len());
                let mut body = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() >= indent)
                {
                    body.push(lines[i].get(indent..).unwrap_or("").to_string());
                    i += 1;
                }
                if let Some(n) = name.take() {
                    out.push((n, body.join("\n").trim_end().to_string()));
                }
                continue;
            }
            i += 1;
        }
        out
    }

    #[test]
    fn template_ships_the_same_queries() {
        let template = include_str!("../../template.yaml");
        let shipped = template_queries(template);
        for q in ALL {
            let id = q.name.rsplit('/').next().unwrap();
            let found = shipped.iter().find(|(n, _)| n == id);
            let Some((_, text)) = found else {
                panic!("template.yaml has no QueryDefinition named {}", q.name)
            };
            assert_eq!(text, q.text, "{} differs from the report's query", q.name);
        }
        assert_eq!(shipped.len(), ALL.len(), "{shipped:?}");
    }

    #[test]
    fn dashboard_widget_runs_the_site_ranking() {
        let template = include_str!("../../template.yaml");
        // In the dashboard body the query is a JSON string: newlines and quotes escaped.
        let escaped = serde_json::to_string(GROWING_SITES.text).unwrap();
        let inner = &escaped[1..escaped.len() - 1];
        assert!(
            template.contains(inner),
            "the dashboard's log widget does not run {}",
            GROWING_SITES.name
        );
    }

    #[test]
    fn memory_query_takes_the_reports_bin() {
        let q = memory_query(30);
        assert!(q.contains("by @logStream, bin(30s)"));
        assert!(!q.contains(SHIPPED_BIN));
    }
}
