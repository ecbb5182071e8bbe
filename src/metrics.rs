//! Profile → named metric values. THE table of every metric the extension publishes.
//!
//! The sinks own how values travel (batching, `Values`/`Counts`, EMF arrays); this module only
//! says which values a profile yields. Dimensions are fixed per environment (function name,
//! optionally version): request ids and allocation sites never become dimensions — the sites go to
//! one structured JSON log line per traced invocation ([`top_sites_line`]).

use crate::analysis::environment::Findings;
use crate::config::DimensionSet;
use crate::invocation::InvocationProfile;
use serde::Serialize;

/// CloudWatch units: the protocol crate's, shared with the Rust layer's fallback line.
pub use lmp_protocol::Unit;

/// One row of the metric table.
#[derive(Debug)]
pub struct MetricDef {
    /// The CloudWatch metric name (the [`Metric`] variant's name).
    pub name: &'static str,
    /// The CloudWatch unit its values are published with.
    pub unit: Unit,
    /// Where the figure comes from (`platform.report`, the decorator, `/proc`, the analysis).
    pub source: &'static str,
    /// What the figure means, as the README's metric table says.
    pub meaning: &'static str,
}

macro_rules! metric_table {
    ($($id:ident, $unit:ident, $source:literal, $meaning:literal;)*) => {
        /// Every metric the extension publishes (the README's metric table).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric {
            $(
                #[doc = concat!(
                    "`", stringify!($id), "` (", stringify!($unit), ", from `", $source, "`): ",
                    $meaning, "."
                )]
                $id
            ),*
        }

        /// The table, in [`Metric`] order.
        pub const METRICS: &[MetricDef] = &[
            $(MetricDef { name: stringify!($id), unit: Unit::$unit, source: $source, meaning: $meaning }),*
        ];

        impl Metric {
            /// Every metric, in table order (index `i` is the row `METRICS[i]`).
            pub const ALL: &'static [Metric] = &[$(Metric::$id),*];
        }
    };
}

metric_table! {
    MaxMemoryUsed, Megabytes, "platform.report", "environment's memory high-water mark (never decreases)";
    MemorySize, Megabytes, "platform.report", "configured memory";
    MemoryUtilization, Percent, "platform.report", "MaxMemoryUsed / MemorySize";
    EnvironmentMemory, Megabytes, "/proc (Managed Instances)", "memory of the runtime's processes and this extension, each page counted once (summed Pss), sampled at most once a second";
    PythonHeapPeak, Bytes, "decorator (traced)", "peak of memory allocated during the invocation";
    PythonHeapRetained, Bytes, "decorator (traced)", "memory allocated during the invocation and still held at its end";
    PythonHeapGrowth, Bytes, "decorator (traced)", "net growth of the Python heap over the invocation (only from a tracemalloc session spanning invocations)";
    PythonHeapLive, Bytes, "decorator (native sampler)", "estimated live bytes of the Python heap (OBJ+MEM domains) at the invocation's end, from allocations sampled by bytes";
    PythonHeapAllocated, Bytes, "decorator (native sampler)", "bytes requested from the Python heap during the invocation (exact, freed ones included)";
    RuntimeRss, Bytes, "/proc/<pid> (extension)", "runtime process RSS after the invocation";
    RuntimeRssPeak, Bytes, "decorator / /proc", "runtime process peak RSS during the invocation";
    GcCollections, Count, "decorator", "garbage collections during the invocation";
    GcCollected, Count, "decorator", "objects freed by the collector";
    GcUncollectable, Count, "decorator", "uncollectable objects found";
    Duration, Milliseconds, "platform.report (decorator without telemetry)", "invocation duration";
    BilledDuration, Milliseconds, "platform.report", "billed duration";
    InitDuration, Milliseconds, "platform.report", "init duration (cold starts only)";
    RestoreDuration, Milliseconds, "platform.report", "SnapStart: the snapshot restore's duration (first invocation of a restored copy only)";
    ColdStart, Count, "decorator / telemetry", "1 on the first invocation of an environment (of a SnapStart copy: its first after the restore)";
    OutOfMemory, Count, "analysis", "1 for the invocation that ran out of memory (counted once)";
    HeapGrowthPerInvoke, Bytes, "analysis", "slope per warm invocation (full window) of PythonHeapLive when the records carry it, else of the runtime's resident anonymous memory";
    LeakSuspected, Count, "analysis", "1 while a leak verdict stands, 0 once judged clean (full window)";
    InvocationsToOutOfMemory, Count, "analysis", "while a leak stands: invocations until the memory size at the current slope";
    RecommendedMemorySize, Megabytes, "analysis", "smallest memory size with headroom";
    ExtensionRss, Bytes, "extension", "the extension's own RSS";
    RecordsDropped, Count, "extension", "records dropped (malformed, oversized, unknown request id, out of range, kernel queue full, buffer full)";
}

/// Largest magnitude CloudWatch accepts (PutMetricData rejects the whole request otherwise).
pub const MAX_VALUE: f64 = 2.348_542_582_773_833e108; // 2^360

impl Metric {
    /// Metrics whose values may be negative (a heap that shrank); every other is a size, a
    /// count, a share or a duration.
    pub fn signed(self) -> bool {
        matches!(self, Metric::HeapGrowthPerInvoke | Metric::PythonHeapGrowth)
    }

    /// A value CloudWatch accepts and this metric can take.
    pub fn accepts(self, value: f64) -> bool {
        value.is_finite() && value.abs() <= MAX_VALUE && (self.signed() || value >= 0.0)
    }

    /// This metric's row of [`METRICS`].
    pub fn def(self) -> &'static MetricDef {
        // ok: METRICS is generated from the same list as the enum, so every index exists.
        &METRICS[self as usize]
    }

    /// The CloudWatch metric name, e.g. `MaxMemoryUsed`.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// The CloudWatch unit its values are in.
    pub fn unit(self) -> Unit {
        self.def().unit
    }
}

/// One value of one metric at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datum {
    /// Which metric the value is of.
    pub metric: Metric,
    /// The value, in the metric's [`Metric::unit`].
    pub value: f64,
    /// Epoch milliseconds: when the invocation was first seen, or the flush for self-metrics.
    pub timestamp_ms: u64,
}

/// The fixed dimensions of this environment, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dimensions(pub Vec<(String, String)>);

impl Dimensions {
    /// `FunctionName` always; `FunctionVersion` when configured. Empty values are left out.
    pub fn new(set: DimensionSet, function_name: &str, function_version: &str) -> Self {
        let mut v = vec![("FunctionName".to_string(), function_name.to_string())];
        if set.function_version {
            v.push(("FunctionVersion".to_string(), function_version.to_string()));
        }
        v.retain(|(_, val)| !val.is_empty());
        Dimensions(v)
    }

    /// The dimension sets every metric is published under: `{FunctionName}` always, and the
    /// full set too when it has more, as CloudWatch Lambda Insights does (the rule is the
    /// protocol crate's, so the Rust layer's fallback line has the same sets).
    pub fn sets(&self) -> impl Iterator<Item = &[(String, String)]> {
        lmp_protocol::emf::dimension_sets(&self.0)
    }
}

/// Datums of one instant; absent and non-finite figures yield none (never a zero).
struct DatumsAt {
    out: Vec<Datum>,
    timestamp_ms: u64,
}

impl DatumsAt {
    fn push(&mut self, metric: Metric, value: Option<f64>) {
        if let Some(value) = value.filter(|v| metric.accepts(*v)) {
            self.out.push(Datum {
                metric,
                value,
                timestamp_ms: self.timestamp_ms,
            });
        }
    }
}

/// The values one profile yields. Absent figures yield no datum (never a zero).
pub fn profile_datums(p: &InvocationProfile) -> Vec<Datum> {
    let mut datums = DatumsAt {
        out: Vec::with_capacity(20),
        timestamp_ms: p.timestamp_ms,
    };
    let mut push = |metric: Metric, value: Option<f64>| datums.push(metric, value);
    let r = p.report.as_ref();
    let d = p.decorator.as_deref();
    let trace = d.and_then(|d| d.trace.as_ref());
    let heap = d.and_then(|d| d.heap.as_ref());
    let gc = d.and_then(|d| d.gc.as_ref());
    let u = |x: Option<u64>| x.map(|v| v as f64);

    let max_used = r.and_then(|r| r.max_memory_used_mb);
    let size = r.and_then(|r| r.memory_size_mb);
    push(Metric::MaxMemoryUsed, max_used);
    push(Metric::MemorySize, size);
    push(
        Metric::MemoryUtilization,
        match (max_used, size) {
            (Some(u), Some(s)) if s > 0.0 => Some(u / s * 100.0),
            _ => None,
        },
    );
    push(Metric::PythonHeapPeak, u(trace.and_then(|t| t.peak_bytes)));
    push(
        Metric::PythonHeapRetained,
        u(trace.and_then(|t| t.retained_bytes)),
    );
    push(
        Metric::PythonHeapGrowth,
        trace.and_then(|t| t.growth_bytes).map(|v| v as f64),
    );
    push(Metric::PythonHeapLive, u(heap.and_then(|h| h.live_bytes)));
    push(
        Metric::PythonHeapAllocated,
        u(heap.and_then(|h| h.allocated_bytes)),
    );
    push(Metric::RuntimeRss, u(p.runtime_proc.and_then(|m| m.rss)));
    push(
        Metric::RuntimeRssPeak,
        u(d.and_then(|d| d.rss_peak_bytes)
            .or_else(|| p.runtime_proc.and_then(|m| m.hwm))),
    );
    push(Metric::GcCollections, u(gc.and_then(|g| g.collections)));
    push(Metric::GcCollected, u(gc.and_then(|g| g.collected)));
    push(Metric::GcUncollectable, u(gc.and_then(|g| g.uncollectable)));
    push(
        Metric::Duration,
        r.and_then(|r| r.duration_ms)
            .or_else(|| d.and_then(|d| d.duration_ms)),
    );
    push(Metric::BilledDuration, r.and_then(|r| r.billed_duration_ms));
    push(Metric::InitDuration, r.and_then(|r| r.init_duration_ms));
    push(
        Metric::RestoreDuration,
        r.and_then(|r| r.restore_duration_ms),
    );
    let cold = d
        .and_then(|d| d.cold_start)
        .or_else(|| r.map(|r| r.init_duration_ms.is_some() || r.restore_duration_ms.is_some()))
        .unwrap_or(p.first_in_environment);
    push(Metric::ColdStart, Some(if cold { 1.0 } else { 0.0 }));
    datums.out
}

/// The values the analysis of one profile yields (out of memory, leak, right-size).
pub fn findings_datums(f: &Findings) -> Vec<Datum> {
    let mut datums = DatumsAt {
        out: Vec::with_capacity(5),
        timestamp_ms: f.timestamp_ms,
    };
    let mut push = |metric: Metric, value: Option<f64>| datums.push(metric, value);
    push(
        Metric::OutOfMemory,
        f.out_of_memory.map(|o| f64::from(u8::from(o))),
    );
    if let Some(leak) = &f.leak {
        push(
            Metric::LeakSuspected,
            Some(f64::from(u8::from(leak.suspected))),
        );
        push(
            Metric::HeapGrowthPerInvoke,
            Some(leak.growth_bytes_per_invoke),
        );
        push(
            Metric::InvocationsToOutOfMemory,
            leak.invocations_to_out_of_memory,
        );
    }
    push(
        Metric::RecommendedMemorySize,
        f.recommended_memory_mb.map(f64::from),
    );
    datums.out
}

/// The extension's self-metrics at a flush.
pub fn self_datums(extension_rss: Option<u64>, dropped: u64, timestamp_ms: u64) -> Vec<Datum> {
    let mut v = vec![Datum {
        metric: Metric::RecordsDropped,
        value: dropped as f64,
        timestamp_ms,
    }];
    if let Some(rss) = extension_rss {
        v.push(Datum {
            metric: Metric::ExtensionRss,
            value: rss as f64,
            timestamp_ms,
        });
    }
    v
}

/// The `{"lmp":"top_sites",...}` log line of [`top_sites_line`].
#[derive(Serialize)]
struct TopSitesLine<'a> {
    lmp: &'static str,
    request_id: &'a str,
    function_name: &'a str,
    timestamp_ms: u64,
    reason: Option<&'a str>,
    retained_bytes: Option<u64>,
    growth_bytes: Option<i64>,
    sites: &'a [crate::sources::intake::TopSite],
    top_truncated: u64,
}

/// One JSON line naming the allocation sites of a traced invocation; `None` when it has none.
pub fn top_sites_line(p: &InvocationProfile, function_name: &str) -> Option<String> {
    let t = p.decorator.as_deref()?.trace.as_ref()?;
    if t.top.is_empty() {
        return None;
    }
    serde_json::to_string(&TopSitesLine {
        lmp: "top_sites",
        request_id: &p.request_id,
        function_name,
        timestamp_ms: p.timestamp_ms,
        reason: t.reason.as_deref(),
        retained_bytes: t.retained_bytes,
        growth_bytes: t.growth_bytes,
        sites: &t.top,
        top_truncated: t.top_truncated.unwrap_or(0),
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::intake::{DecoratorRecord, GcStats, Heap, TopSite, Trace};
    use crate::sources::procfs::ProcMemory;
    use crate::sources::telemetry::{Report, RuntimeDone};

    fn value(d: &[Datum], m: Metric) -> Option<f64> {
        d.iter().find(|x| x.metric == m).map(|x| x.value)
    }

    fn full_profile() -> InvocationProfile {
        InvocationProfile {
            request_id: "r1".into(),
            timestamp_ms: 1_764_000_000_000,
            report: Some(Report {
                request_id: "r1".into(),
                status: Some("success".into()),
                duration_ms: Some(12.5),
                billed_duration_ms: Some(13.0),
                memory_size_mb: Some(128.0),
                max_memory_used_mb: Some(96.0),
                init_duration_ms: Some(400.0),
                ..Default::default()
            }),
            decorator: Some(Box::new(DecoratorRecord {
                request_id: "r1".into(),
                duration_ms: Some(11.0),
                cold_start: Some(true),
                rss_peak_bytes: Some(70_000_000),
                gc: Some(GcStats {
                    collections: Some(2),
                    collected: Some(140),
                    uncollectable: Some(0),
                    garbage: Some(0),
                }),
                trace: Some(Trace {
                    reason: Some("cold".into()),
                    peak_bytes: Some(5000),
                    retained_bytes: Some(3000),
                    growth_bytes: Some(-100),
                    top: vec![TopSite {
                        file: "app.py".into(),
                        line: 42,
                        size: 3000,
                        count: 1,
                        via: None,
                    }],
                    ..Default::default()
                }),
                heap: Some(Heap {
                    live_bytes: Some(52_428_800),
                    allocated_bytes: Some(1_048_576),
                    sample_bytes: Some(65_536),
                    samples: Some(812),
                    epoch: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            runtime_proc: Some(ProcMemory {
                rss: Some(60_000_000),
                hwm: Some(80_000_000),
                anon: Some(50_000_000),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn table_names_match_the_enum_and_are_unique() {
        assert_eq!(METRICS.len(), Metric::ALL.len());
        for m in Metric::ALL {
            assert_eq!(format!("{m:?}"), m.name());
        }
        let mut names: Vec<_> = METRICS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
    }

    #[test]
    fn every_table_row_is_in_the_readme() {
        let readme = include_str!("../README.md");
        for d in METRICS {
            let row = format!("| `{}` | {} |", d.name, d.unit.as_str());
            assert!(readme.contains(&row), "README lacks row {row}");
        }
    }

    #[test]
    fn a_full_profile_maps_to_every_per_invocation_metric() {
        let d = profile_datums(&full_profile());
        assert_eq!(value(&d, Metric::MaxMemoryUsed), Some(96.0));
        assert_eq!(value(&d, Metric::MemorySize), Some(128.0));
        assert_eq!(value(&d, Metric::MemoryUtilization), Some(75.0));
        assert_eq!(value(&d, Metric::PythonHeapPeak), Some(5000.0));
        assert_eq!(value(&d, Metric::PythonHeapRetained), Some(3000.0));
        assert_eq!(value(&d, Metric::PythonHeapGrowth), Some(-100.0));
        assert_eq!(value(&d, Metric::PythonHeapLive), Some(52_428_800.0));
        assert_eq!(value(&d, Metric::PythonHeapAllocated), Some(1_048_576.0));
        assert_eq!(value(&d, Metric::RuntimeRss), Some(60_000_000.0));
        assert_eq!(value(&d, Metric::RuntimeRssPeak), Some(70_000_000.0));
        assert_eq!(value(&d, Metric::GcCollections), Some(2.0));
        assert_eq!(value(&d, Metric::GcCollected), Some(140.0));
        assert_eq!(value(&d, Metric::GcUncollectable), Some(0.0));
        assert_eq!(
            value(&d, Metric::Duration),
            Some(12.5),
            "platform figure wins"
        );
        assert_eq!(value(&d, Metric::BilledDuration), Some(13.0));
        assert_eq!(value(&d, Metric::InitDuration), Some(400.0));
        assert_eq!(value(&d, Metric::ColdStart), Some(1.0));
        assert_eq!(d.len(), 17, "OutOfMemory comes from the analysis");
        assert!(d.iter().all(|x| x.timestamp_ms == 1_764_000_000_000));
    }

    #[test]
    fn absent_figures_yield_no_datum() {
        let mut p = full_profile();
        p.report = None;
        p.runtime_proc = None;
        if let Some(d) = p.decorator.as_mut() {
            d.trace = None;
            d.rss_peak_bytes = None;
            d.heap = None;
        }
        let d = profile_datums(&p);
        for m in [
            Metric::MaxMemoryUsed,
            Metric::MemoryUtilization,
            Metric::PythonHeapPeak,
            Metric::PythonHeapLive,
            Metric::PythonHeapAllocated,
            Metric::RuntimeRss,
            Metric::RuntimeRssPeak,
            Metric::BilledDuration,
            Metric::InitDuration,
        ] {
            assert_eq!(value(&d, m), None, "{m:?}");
        }
        assert_eq!(
            value(&d, Metric::Duration),
            Some(11.0),
            "decorator fallback"
        );
        assert_eq!(value(&d, Metric::ColdStart), Some(1.0));
    }

    #[test]
    fn rss_peak_falls_back_to_proc_hwm_and_cold_start_to_first_invoke() {
        let p = InvocationProfile {
            first_in_environment: true,
            runtime_proc: Some(ProcMemory {
                rss: Some(1),
                hwm: Some(2),
                anon: None,
            }),
            runtime_done: Some(RuntimeDone::default()),
            ..Default::default()
        };
        let d = profile_datums(&p);
        assert_eq!(value(&d, Metric::RuntimeRssPeak), Some(2.0));
        assert_eq!(value(&d, Metric::ColdStart), Some(1.0));
    }

    #[test]
    fn findings_become_analysis_datums() {
        use crate::analysis::environment::LeakFigures;
        let f = Findings {
            timestamp_ms: 7,
            out_of_memory: Some(false),
            leak: Some(LeakFigures {
                suspected: true,
                growth_bytes_per_invoke: 12_288.0,
                invocations_to_out_of_memory: Some(900.0),
            }),
            recommended_memory_mb: Some(256),
            log_lines: Vec::new(),
        };
        let d = findings_datums(&f);
        assert_eq!(value(&d, Metric::OutOfMemory), Some(0.0));
        assert_eq!(value(&d, Metric::LeakSuspected), Some(1.0));
        assert_eq!(value(&d, Metric::HeapGrowthPerInvoke), Some(12_288.0));
        assert_eq!(value(&d, Metric::InvocationsToOutOfMemory), Some(900.0));
        assert_eq!(value(&d, Metric::RecommendedMemorySize), Some(256.0));
        assert!(d.iter().all(|x| x.timestamp_ms == 7));
        // Before a window is judged, nothing about leaks is published (never a zero).
        let early = findings_datums(&Findings {
            out_of_memory: Some(true),
            ..Findings::default()
        });
        assert_eq!(value(&early, Metric::OutOfMemory), Some(1.0));
        assert_eq!(value(&early, Metric::LeakSuspected), None);
        assert_eq!(value(&early, Metric::HeapGrowthPerInvoke), None);
        assert!(findings_datums(&Findings::default()).is_empty());
    }

    #[test]
    fn non_finite_values_are_never_published() {
        let mut p = full_profile();
        if let Some(r) = p.report.as_mut() {
            r.duration_ms = Some(f64::NAN);
            r.memory_size_mb = Some(0.0);
        }
        let d = profile_datums(&p);
        assert_eq!(value(&d, Metric::Duration), None);
        assert_eq!(value(&d, Metric::MemoryUtilization), None);
        assert!(d.iter().all(|x| x.value.is_finite()));
    }

    #[test]
    fn dimensions_are_bounded_and_ordered() {
        let set = DimensionSet {
            function_version: true,
        };
        let d = Dimensions::new(set, "orders", "7");
        assert_eq!(
            d.0,
            vec![
                ("FunctionName".to_string(), "orders".to_string()),
                ("FunctionVersion".to_string(), "7".to_string())
            ]
        );
        assert_eq!(
            Dimensions::new(DimensionSet::default(), "orders", "7")
                .0
                .len(),
            1
        );
    }

    #[test]
    fn top_sites_line_is_one_json_object() {
        let line = top_sites_line(&full_profile(), "orders").unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["lmp"], "top_sites");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["function_name"], "orders");
        assert_eq!(v["sites"][0]["file"], "app.py");
        assert_eq!(v["sites"][0]["line"], 42);
        let mut p = full_profile();
        p.decorator = None;
        assert!(top_sites_line(&p, "orders").is_none());
    }

    #[test]
    fn self_datums_always_carry_the_drop_count() {
        let d = self_datums(None, 0, 5);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].metric, Metric::RecordsDropped);
        assert_eq!(self_datums(Some(4096), 3, 5).len(), 2);
    }
}
