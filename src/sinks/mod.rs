//! Sinks: turn metric values into CloudWatch data. Each owns its batching and limits.

pub mod cloudwatch;
pub mod emf;

use crate::config::StorageResolution;
use crate::metrics::Datum;

/// Start of the aggregation period a timestamp falls in (1 s or 60 s storage resolution).
pub fn bucket_ms(timestamp_ms: u64, storage_resolution: StorageResolution) -> u64 {
    let period = storage_resolution.period_ms();
    timestamp_ms - timestamp_ms % period
}

/// Groups values by (aggregation period, metric), keeping first-seen order of periods.
pub fn group(
    datums: &[Datum],
    storage_resolution: StorageResolution,
) -> Vec<(
    u64,
    std::collections::BTreeMap<crate::metrics::Metric, Vec<f64>>,
)> {
    let mut groups: Vec<(u64, std::collections::BTreeMap<_, Vec<f64>>)> = Vec::new();
    for d in datums.iter().filter(|d| d.value.is_finite()) {
        let b = bucket_ms(d.timestamp_ms, storage_resolution);
        let idx = match groups.iter().position(|(t, _)| *t == b) {
            Some(i) => i,
            None => {
                groups.push((b, Default::default()));
                groups.len() - 1
            }
        };
        groups[idx].1.entry(d.metric).or_default().push(d.value);
    }
    groups
}

use crate::metrics::{self, Dimensions};
use crate::sources::procfs;
use crate::stats::{Counters, RateLimiter};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Writes one line to stdout. Errors (closed stdout) are ignored: logging must never kill us.
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The configured sink.
pub enum Sink {
    /// `LMP_SINK=cloudwatch`: `PutMetricData` requests through the AWS SDK.
    CloudWatch(cloudwatch::CloudWatchSink),
    /// `LMP_SINK=emf`: Embedded Metric Format lines on stdout, which CloudWatch Logs extracts.
    Emf {
        /// CloudWatch namespace of the lines (`LMP_NAMESPACE`, or the decorator's `namespace=`).
        namespace: String,
        /// Dimension sets every figure is published under (`LMP_DIMENSIONS`).
        dims: Dimensions,
        /// Aggregation period of the values: 60 s, or 1 s for high resolution.
        storage_resolution: StorageResolution,
    },
}

impl Sink {
    /// Publishes under `to` from now on.
    pub fn retarget(&mut self, to: Destination) {
        match self {
            Sink::CloudWatch(cw) => cw.retarget(to),
            Sink::Emf {
                namespace,
                dims,
                storage_resolution,
            } => {
                *namespace = to.namespace;
                *dims = to.dims;
                *storage_resolution = to.storage_resolution;
            }
        }
    }
}

/// What the decorator's own arguments (`@memory_profile(namespace=..., dimensions=...,
/// storage_resolution=...)`) ask of the sink, carried in its `hello`. A field left `None` keeps
/// the extension's `LMP_*` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkSettings {
    /// `namespace=`: CloudWatch namespace to publish under; `None` keeps `LMP_NAMESPACE`.
    pub namespace: Option<String>,
    /// `Some(true)`: `FunctionName,FunctionVersion`; `Some(false)`: `FunctionName`.
    pub function_version: Option<bool>,
    /// `storage_resolution=`: 60 s or 1 s; `None` keeps `LMP_STORAGE_RESOLUTION`.
    pub storage_resolution: Option<StorageResolution>,
    /// Fields no rule takes, as `field="value" (reason)`: logged, never applied.
    pub rejected: Vec<String>,
}

impl SinkSettings {
    /// True when it asks for nothing (every field absent or rejected).
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.function_version.is_none()
            && self.storage_resolution.is_none()
    }
}

/// Where the sink publishes: namespace, dimensions and storage resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// CloudWatch namespace (1–255 ASCII characters).
    pub namespace: String,
    /// Dimension sets every figure goes out under: `{FunctionName}`, optionally with version.
    pub dims: Dimensions,
    /// Aggregation period: 60 s (standard) or 1 s (high resolution, billed higher).
    pub storage_resolution: StorageResolution,
}

/// Commands for the sink worker.
pub enum Command {
    /// Metric values to buffer; out-of-range values and those beyond the buffer are dropped.
    Data(Vec<Datum>),
    /// Send everything buffered; the sender (if any) is told when done.
    Flush(Option<oneshot::Sender<()>>),
}

/// Buffer fill (in values) at which the worker flushes on its own.
pub const FLUSH_AT_VALUES: usize = 5_000;

/// Owns the buffer and the sink; runs until the command channel closes.
///
/// A flush takes everything queued behind it (data and other flush requests) into one send, so
/// that invocations held up by a slow endpoint go out together, in full requests, once it
/// answers. `counters.values_pending` says how many values are buffered or in flight.
/// `destination` is read before every flush: a change (the decorator's own sink arguments)
/// applies to what is buffered too, and is never lost to a full command queue.
pub async fn worker(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Command>,
    mut destination: watch::Receiver<Destination>,
    buffer_max: usize,
    counters: Arc<Counters>,
) {
    let mut buf: Vec<Datum> = Vec::new();
    let mut reported_drops = 0u64;
    let mut warn = RateLimiter::new(Duration::from_secs(60));
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Data(d) => {
                take_data(&mut buf, d, buffer_max, &counters, &mut warn);
                if buf.len() >= FLUSH_AT_VALUES.min(buffer_max) {
                    retarget(&mut sink, &mut destination);
                    flush(&mut sink, &mut buf, &counters, &mut reported_drops).await;
                }
            }
            Command::Flush(ack) => {
                let mut acks: Vec<oneshot::Sender<()>> = ack.into_iter().collect();
                while let Ok(more) = rx.try_recv() {
                    match more {
                        Command::Data(d) => {
                            take_data(&mut buf, d, buffer_max, &counters, &mut warn)
                        }
                        Command::Flush(a) => acks.extend(a),
                    }
                }
                retarget(&mut sink, &mut destination);
                flush(&mut sink, &mut buf, &counters, &mut reported_drops).await;
                for ack in acks {
                    let _ = ack.send(());
                }
            }
        }
    }
}

/// Points the sink at the newest destination, if it changed.
fn retarget(sink: &mut Sink, destination: &mut watch::Receiver<Destination>) {
    if destination.has_changed().unwrap_or(false) {
        let to = destination.borrow_and_update().clone();
        sink.retarget(to);
    }
}

/// Adds values to the buffer: those CloudWatch would reject and those beyond its room are
/// dropped and counted.
fn take_data(
    buf: &mut Vec<Datum>,
    mut d: Vec<Datum>,
    buffer_max: usize,
    counters: &Counters,
    warn: &mut RateLimiter,
) {
    Counters::add(&counters.values_offered, d.len() as u64);
    // The last guard: one value CloudWatch rejects would lose its whole request.
    let before = d.len();
    d.retain(|x| x.metric.accepts(x.value));
    if d.len() < before {
        Counters::add(&counters.values_out_of_range, (before - d.len()) as u64);
    }
    let room = buffer_max.saturating_sub(buf.len());
    if d.len() > room {
        let lost = (d.len() - room) as u64;
        Counters::add(&counters.datums_dropped, lost);
        if let Some(s) = warn.check(Instant::now()) {
            tracing::warn!(lost, suppressed = s, "metric buffer full; values dropped");
        }
    }
    buf.extend(d.into_iter().take(room));
    counters
        .values_pending
        .store(buf.len() as u64, Ordering::Relaxed);
}

async fn flush(sink: &mut Sink, buf: &mut Vec<Datum>, counters: &Counters, reported: &mut u64) {
    // Self-metrics ride along with data: an idle flush would cost a request for nothing.
    if buf.is_empty() {
        return;
    }
    counters.refresh_kernel_drops();
    let dropped = counters.dropped_total();
    let now_ms = crate::epoch_ms();
    let mut data = std::mem::take(buf);
    let own = metrics::self_datums(
        procfs::read_self().and_then(|m| m.rss),
        dropped.saturating_sub(*reported),
        now_ms,
    );
    Counters::add(&counters.values_offered, own.len() as u64);
    data.extend(own);
    *reported = dropped;
    counters
        .values_pending
        .store(data.len() as u64, Ordering::Relaxed);
    match sink {
        Sink::Emf {
            namespace,
            dims,
            storage_resolution,
        } => {
            for line in emf::lines(namespace, dims, &data, *storage_resolution) {
                print_line(&line);
            }
            Counters::add(&counters.values_sent, data.len() as u64);
        }
        Sink::CloudWatch(cw) => {
            let r = cw.send(&data).await;
            Counters::add(&counters.datums_dropped, r.failed_values);
            Counters::add(&counters.values_sent, r.sent_values);
            tracing::debug!(
                requests = r.requests,
                sent = r.sent_values,
                failed = r.failed_values,
                "flushed"
            );
        }
    }
    counters.values_pending.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metric;

    #[test]
    fn a_value_cloudwatch_rejects_costs_only_itself() {
        let counters = Counters::default();
        let mut warn = RateLimiter::new(Duration::from_secs(60));
        let mut buf = Vec::new();
        let at = |metric, value| Datum {
            metric,
            value,
            timestamp_ms: 1,
        };
        let data = vec![
            at(Metric::Duration, 12.0),
            at(Metric::Duration, f64::NAN),
            at(Metric::RuntimeRss, 1e300),
            at(Metric::RuntimeRss, -5.0),
            at(Metric::HeapGrowthPerInvoke, -4096.0),
            at(Metric::MaxMemoryUsed, 80.0),
        ];
        take_data(&mut buf, data, 100, &counters, &mut warn);
        let kept: Vec<(Metric, f64)> = buf.iter().map(|d| (d.metric, d.value)).collect();
        assert_eq!(
            kept,
            vec![
                (Metric::Duration, 12.0),
                (Metric::HeapGrowthPerInvoke, -4096.0),
                (Metric::MaxMemoryUsed, 80.0)
            ]
        );
        assert_eq!(counters.values_out_of_range.load(Ordering::Relaxed), 3);
        assert_eq!(counters.values_pending.load(Ordering::Relaxed), 3);
    }
}
