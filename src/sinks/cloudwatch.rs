//! CloudWatch `PutMetricData` sink.
//!
//! Many invocations pack into one datum (`Values`/`Counts`, ≤ 150 distinct values), requests hold
//! ≤ 1,000 datums and stay under 1 MB, the SDK gzips large requests and retries throttling and 5xx
//! with backoff. The client is built on the first flush, never on the init path, and reused.

use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_cloudwatch::Client;
use std::time::Duration;

use super::group;
use crate::config::StorageResolution;
use crate::metrics::{Datum, Dimensions, Metric};

/// PutMetricData: datums per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1_000;
/// PutMetricData: request size, kept under 1 MB with room for the envelope.
pub const MAX_REQUEST_BYTES: usize = 1_000_000 - 4_096;
/// PutMetricData: distinct values per datum in `Values`/`Counts`.
pub const MAX_VALUES_PER_DATUM: usize = 150;

/// One datum as sent: distinct values with their counts, for one metric and period.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// The metric; its name and unit come from the `METRICS` table.
    pub metric: Metric,
    /// Start of the aggregation period, in ms since the Unix epoch (see [`super::bucket_ms`]).
    pub timestamp_ms: u64,
    /// Distinct values, ascending, at most [`MAX_VALUES_PER_DATUM`]; in the metric's unit.
    pub values: Vec<f64>,
    /// How many times each of `values` occurred (same length and order).
    pub counts: Vec<f64>,
}

impl Packed {
    /// How many raw values this datum carries.
    pub fn value_count(&self) -> u64 {
        self.counts.iter().map(|c| *c as u64).sum()
    }
}

/// Packs raw values into datums: per metric and period, distinct values with counts, split at
/// [`MAX_VALUES_PER_DATUM`].
pub fn pack(datums: &[Datum], storage_resolution: StorageResolution) -> Vec<Packed> {
    let mut out = Vec::new();
    for (bucket, metrics) in group(datums, storage_resolution) {
        for (metric, mut vals) in metrics {
            vals.sort_by(f64::total_cmp);
            let mut distinct: Vec<(f64, f64)> = Vec::new();
            for v in vals {
                match distinct.last_mut() {
                    Some((last, n)) if last.to_bits() == v.to_bits() => *n += 1.0,
                    _ => distinct.push((v, 1.0)),
                }
            }
            for chunk in distinct.chunks(MAX_VALUES_PER_DATUM) {
                out.push(Packed {
                    metric,
                    timestamp_ms: bucket,
                    values: chunk.iter().map(|(v, _)| *v).collect(),
                    counts: chunk.iter().map(|(_, n)| *n).collect(),
                });
            }
        }
    }
    out
}

/// An upper bound of a datum's encoded size (CBOR: a double takes 9 bytes; keys are spelled out).
/// A packed datum goes out once per dimension set (`Dimensions::sets`): this is all of them.
pub fn estimated_bytes(p: &Packed, dims: &Dimensions) -> usize {
    dims.sets()
        .map(|set| {
            let dims_bytes: usize = set.iter().map(|(k, v)| k.len() + v.len() + 24).sum();
            96 + p.metric.name().len() + dims_bytes + p.values.len() * 20
        })
        .sum()
}

/// Splits datums into requests within the API's count and size limits.
pub fn batches(packed: Vec<Packed>, dims: &Dimensions) -> Vec<Vec<Packed>> {
    let mut out: Vec<Vec<Packed>> = Vec::new();
    let mut cur: Vec<Packed> = Vec::new();
    let mut cur_bytes = 0;
    let per_packed = dims.sets().count().max(1);
    for p in packed {
        let b = estimated_bytes(&p, dims);
        if !cur.is_empty()
            && ((cur.len() + 1) * per_packed > MAX_DATUMS_PER_REQUEST
                || cur_bytes + b > MAX_REQUEST_BYTES)
        {
            out.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes += b;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The datums of one packed figure: one per dimension set.
fn to_sdk_all(
    p: &Packed,
    dims: &Dimensions,
    storage_resolution: StorageResolution,
) -> Vec<MetricDatum> {
    dims.sets()
        .map(|set| to_sdk(p, set, storage_resolution))
        .collect()
}

fn to_sdk(
    p: &Packed,
    set: &[(String, String)],
    storage_resolution: StorageResolution,
) -> MetricDatum {
    let dimensions = set
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    MetricDatum::builder()
        .metric_name(p.metric.name())
        .set_dimensions(Some(dimensions))
        .timestamp(DateTime::from_millis(p.timestamp_ms as i64))
        .set_values(Some(p.values.clone()))
        .set_counts(Some(p.counts.clone()))
        .unit(StandardUnit::from(p.metric.unit().as_str()))
        .storage_resolution(i32::from(storage_resolution.seconds()))
        .build()
}

/// Retries: the SDK's standard mode (exponential backoff with jitter; throttling and 5xx).
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(2))
}

/// Timeouts: short, so a slow or dead endpoint cannot hold a flush for long.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

/// Builds the client: credentials, region and endpoint from the environment (Lambda provides
/// them); rustls with ring for TLS.
pub async fn build_client() -> Client {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .load()
        .await;
    Client::new(&conf)
}

/// What one send did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// `PutMetricData` requests made (each after the SDK's retries).
    pub requests: u64,
    /// Requests that still failed after the SDK's retries and timeouts.
    pub failed_requests: u64,
    /// Raw values (sum of counts) in requests that succeeded.
    pub sent_values: u64,
    /// Raw values in failed requests: dropped and counted in `RecordsDropped`.
    pub failed_values: u64,
}

/// Why a request failed, as the warnings group them (one warning per class per minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The endpoint did not answer in time.
    Timeout,
    /// No connection (no endpoint, DNS, TLS, refused).
    Unreachable,
    /// Throttled (HTTP 429 or a `Throttling` error code).
    Throttled,
    /// The service failed (HTTP 5xx).
    ServerError,
    /// The request was refused (HTTP 4xx other than throttling: credentials, permissions).
    Refused,
    /// Anything else (a request that could not be built, an unexpected status).
    Other,
}

impl FailureClass {
    /// The class of a `PutMetricData` error.
    pub fn of(
        e: &aws_sdk_cloudwatch::error::SdkError<
            aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError,
            aws_sdk_cloudwatch::config::http::HttpResponse,
        >,
    ) -> Self {
        use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
        match e {
            SdkError::TimeoutError(_) => Self::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => Self::Timeout,
            SdkError::DispatchFailure(_) => Self::Unreachable,
            SdkError::ServiceError(s) if s.err().code().is_some_and(|c| c.contains("Throttl")) => {
                Self::Throttled
            }
            SdkError::ServiceError(s) => Self::of_status(s.raw().status().as_u16()),
            SdkError::ResponseError(r) => Self::of_status(r.raw().status().as_u16()),
            _ => Self::Other,
        }
    }

    fn of_status(status: u16) -> Self {
        match status {
            429 => Self::Throttled,
            500..=599 => Self::ServerError,
            400..=499 => Self::Refused,
            _ => Self::Other,
        }
    }

    /// The class as the warning's `class` field spells it (`"timeout"`, `"server error"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Throttled => "throttled",
            Self::ServerError => "server error",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

/// The sink: namespace, dimensions and the lazily built client.
pub struct CloudWatchSink {
    namespace: String,
    dims: Dimensions,
    storage_resolution: StorageResolution,
    client: Option<Client>,
    /// One warning per failure class per minute, with the number held back.
    warnings: std::collections::HashMap<FailureClass, crate::stats::RateLimiter>,
}

impl CloudWatchSink {
    /// A sink publishing under `namespace` and `dims`; the client is built on the first send.
    pub fn new(namespace: String, dims: Dimensions, storage_resolution: StorageResolution) -> Self {
        CloudWatchSink {
            namespace,
            dims,
            storage_resolution,
            client: None,
            warnings: std::collections::HashMap::new(),
        }
    }

    /// Publishes under `to` from now on (values already buffered included).
    pub fn retarget(&mut self, to: super::Destination) {
        self.namespace = to.namespace;
        self.dims = to.dims;
        self.storage_resolution = to.storage_resolution;
    }

    /// A sink with a ready client (tests).
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Sends every datum; failed requests are logged and their values counted as failed.
    pub async fn send(&mut self, datums: &[Datum]) -> SendReport {
        let mut report = SendReport::default();
        if datums.is_empty() {
            return report;
        }
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let t0 = std::time::Instant::now();
                let c = build_client().await;
                tracing::debug!(
                    ms = t0.elapsed().as_millis() as u64,
                    "CloudWatch client built"
                );
                self.client = Some(c.clone());
                c
            }
        };
        for batch in batches(pack(datums, self.storage_resolution), &self.dims) {
            let values: u64 = batch.iter().map(Packed::value_count).sum();
            let data = batch
                .iter()
                .flat_map(|p| to_sdk_all(p, &self.dims, self.storage_resolution))
                .collect();
            report.requests += 1;
            let t0 = std::time::Instant::now();
            let result = client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(data))
                .send()
                .await;
            tracing::debug!(
                ms = t0.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "PutMetricData"
            );
            match result {
                Ok(_) => report.sent_values += values,
                Err(e) => {
                    report.failed_requests += 1;
                    report.failed_values += values;
                    let class = FailureClass::of(&e);
                    let limiter = self
                        .warnings
                        .entry(class)
                        .or_insert_with(|| crate::stats::RateLimiter::new(Duration::from_secs(60)));
                    if let Some(suppressed) = limiter.check(std::time::Instant::now()) {
                        tracing::warn!(
                            class = class.as_str(),
                            error = %DisplayErrorContext(&e),
                            values,
                            suppressed,
                            "PutMetricData failed; values dropped (counted in RecordsDropped)"
                        );
                    }
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DimensionSet;
    use crate::metrics::METRICS;

    fn dims() -> Dimensions {
        Dimensions::new(DimensionSet::default(), "orders", "1")
    }

    fn d(metric: Metric, value: f64, t: u64) -> Datum {
        Datum {
            metric,
            value,
            timestamp_ms: t,
        }
    }

    #[test]
    fn repeated_values_pack_into_values_and_counts() {
        let datums = [
            d(Metric::MaxMemoryUsed, 96.0, 1_000),
            d(Metric::MaxMemoryUsed, 96.0, 2_000),
            d(Metric::MaxMemoryUsed, 97.0, 3_000),
            d(Metric::Duration, 5.0, 4_000),
            d(Metric::Duration, 5.0, 61_000),
        ];
        let p = pack(&datums, StorageResolution::Standard);
        assert_eq!(p.len(), 3);
        let mm = p
            .iter()
            .find(|p| p.metric == Metric::MaxMemoryUsed)
            .unwrap();
        assert_eq!(mm.values, vec![96.0, 97.0]);
        assert_eq!(mm.counts, vec![2.0, 1.0]);
        assert_eq!(mm.timestamp_ms, 0);
        assert_eq!(mm.value_count(), 3);
        assert_eq!(p.iter().map(Packed::value_count).sum::<u64>(), 5);
    }

    #[test]
    fn more_than_150_distinct_values_split_datums() {
        let datums: Vec<Datum> = (0..400)
            .map(|i| d(Metric::RuntimeRss, i as f64, 0))
            .collect();
        let p = pack(&datums, StorageResolution::Standard);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.values.len() <= MAX_VALUES_PER_DATUM));
        assert_eq!(p.iter().map(Packed::value_count).sum::<u64>(), 400);
    }

    #[test]
    fn batches_respect_count_and_size_limits() {
        // 1,200 datums of one value each: split by count.
        let small: Vec<Packed> = (0..1_200)
            .map(|i| Packed {
                metric: Metric::ALL[i % METRICS.len()],
                timestamp_ms: i as u64 * 60_000,
                values: vec![1.0],
                counts: vec![1.0],
            })
            .collect();
        let b = batches(small, &dims());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![1_000, 200]);
        // 1,000 datums of 150 values each: split by size.
        let big: Vec<Packed> = (0..1_000)
            .map(|i| Packed {
                metric: Metric::RuntimeRss,
                timestamp_ms: i as u64 * 60_000,
                values: (0..150).map(f64::from).collect(),
                counts: vec![1.0; 150],
            })
            .collect();
        let b = batches(big, &dims());
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 1_000);
        for batch in &b {
            assert!(batch.len() <= MAX_DATUMS_PER_REQUEST);
            let bytes: usize = batch.iter().map(|p| estimated_bytes(p, &dims())).sum();
            assert!(bytes <= MAX_REQUEST_BYTES, "{bytes}");
        }
        assert!(batches(vec![], &dims()).is_empty());
    }

    #[test]
    fn sdk_datum_carries_unit_dimensions_and_resolution() {
        let p = &pack(
            &[d(Metric::MemorySize, 128.0, 120_500)],
            StorageResolution::High,
        )[0];
        // With a version dimension, every figure goes out under both sets.
        let versioned = Dimensions::new(
            DimensionSet {
                function_version: true,
            },
            "orders",
            "7",
        );
        let both = to_sdk_all(p, &versioned, StorageResolution::High);
        let sets: Vec<Vec<&str>> = both
            .iter()
            .map(|d| d.dimensions().iter().filter_map(|x| x.name()).collect())
            .collect();
        assert_eq!(
            sets,
            vec![
                vec!["FunctionName"],
                vec!["FunctionName", "FunctionVersion"]
            ]
        );
        assert_eq!(to_sdk_all(p, &dims(), StorageResolution::High).len(), 1);
        let m = to_sdk(p, &dims().0, StorageResolution::High);
        assert_eq!(m.metric_name(), Some("MemorySize"));
        assert_eq!(m.unit(), Some(&StandardUnit::Megabytes));
        assert_eq!(m.storage_resolution(), Some(1));
        assert_eq!(m.values(), &[128.0]);
        assert_eq!(m.counts(), &[1.0]);
        assert_eq!(m.timestamp().map(|t| t.to_millis().unwrap()), Some(120_000));
        assert_eq!(m.dimensions()[0].name(), Some("FunctionName"));
        assert_eq!(m.dimensions()[0].value(), Some("orders"));
    }
}
