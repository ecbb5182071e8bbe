//! The structured JSON lines the analysis writes to the function's log: leak suspected or
//! withdrawn, out of memory (with the profile before it), right-size. One struct per line kind,
//! serialized as is.

use serde::Serialize;

use super::sites::GrowingSite;
use crate::invocation::InvocationProfile;

/// A profile's figures kept for the out-of-memory log line ("the last profile before it").
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct ProfileSummary {
    pub(super) request_id: String,
    pub(super) status: Option<String>,
    pub(super) max_memory_used_mb: Option<f64>,
    pub(super) memory_size_mb: Option<f64>,
    pub(super) runtime_rss_bytes: Option<u64>,
    pub(super) runtime_anon_bytes: Option<u64>,
    pub(super) rss_peak_bytes: Option<u64>,
    pub(super) heap_blocks: Option<u64>,
    pub(super) python_heap_peak_bytes: Option<u64>,
    pub(super) python_heap_retained_bytes: Option<u64>,
    /// The native sampler's live-heap estimate, when the record carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) python_heap_live_bytes: Option<u64>,
}

impl ProfileSummary {
    pub(super) fn of(p: &InvocationProfile) -> Self {
        let report = p.report.as_ref();
        let record = p.decorator.as_deref();
        let trace = record.and_then(|d| d.trace.as_ref());
        ProfileSummary {
            request_id: p.request_id.clone(),
            status: report.and_then(|r| r.status.clone()),
            max_memory_used_mb: report.and_then(|r| r.max_memory_used_mb),
            memory_size_mb: report.and_then(|r| r.memory_size_mb),
            runtime_rss_bytes: p.runtime_proc.and_then(|m| m.rss),
            runtime_anon_bytes: record
                .and_then(|d| d.anon_bytes)
                .or_else(|| p.runtime_proc.and_then(|m| m.anon)),
            rss_peak_bytes: record.and_then(|d| d.rss_peak_bytes),
            heap_blocks: record.and_then(|d| d.heap_blocks),
            python_heap_peak_bytes: trace.and_then(|t| t.peak_bytes),
            python_heap_retained_bytes: trace.and_then(|t| t.retained_bytes),
            python_heap_live_bytes: record
                .and_then(|d| d.heap.as_ref())
                .and_then(|h| h.live_bytes),
        }
    }
}

#[derive(Serialize)]
pub(super) struct LeakLine<'a> {
    pub(super) lmp: &'static str,
    pub(super) function_name: &'a str,
    pub(super) request_id: &'a str,
    pub(super) invocations: u64,
    /// The invocation at which the standing verdict was raised.
    pub(super) since_invocation: u64,
    /// What the growth is measured on.
    pub(super) signal: &'static str,
    pub(super) heap_growth_bytes_per_invoke: f64,
    pub(super) p_value: f64,
    /// Python allocator blocks kept per invocation: a count, beside the bytes as a hint.
    pub(super) heap_blocks_per_invoke: Option<f64>,
    pub(super) invocations_to_out_of_memory: Option<f64>,
    pub(super) hours_to_out_of_memory: Option<f64>,
    pub(super) growing_sites: Vec<GrowingSite>,
}

#[derive(Serialize)]
pub(super) struct WithdrawnLine<'a> {
    pub(super) lmp: &'static str,
    pub(super) function_name: &'a str,
    pub(super) request_id: &'a str,
    pub(super) invocations: u64,
    pub(super) raised_at_invocation: u64,
    pub(super) heap_growth_bytes_per_invoke: f64,
}

#[derive(Serialize)]
pub(super) struct OomLine<'a> {
    pub(super) lmp: &'static str,
    pub(super) function_name: &'a str,
    pub(super) request_id: &'a str,
    pub(super) cause: &'static str,
    pub(super) utilization: Option<f64>,
    pub(super) invocation: ProfileSummary,
    pub(super) previous: Option<&'a ProfileSummary>,
}

#[derive(Serialize)]
pub(super) struct RightSizeLine<'a> {
    pub(super) lmp: &'static str,
    pub(super) function_name: &'a str,
    pub(super) memory_size_mb: u32,
    pub(super) peak_mb: f64,
    pub(super) peak_source: &'static str,
    pub(super) recommended_mb: u32,
    pub(super) invocations_per_month: Option<f64>,
    pub(super) monthly_saving_usd: Option<f64>,
    pub(super) cpu_note: Option<&'a str>,
}
