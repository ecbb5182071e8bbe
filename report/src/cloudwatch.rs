//! What the extension published as metrics, read back with ListMetrics and GetMetricData.
//!
//! Names and the dimension come from the extension's own table (`lambda_memory_profiler::metrics`).
//! One GetMetricData call per function asks for every statistic over the whole window as one
//! period (CloudWatch aggregates over all execution environments), plus the invocation count per
//! bin, whose first and last bins give the span the saving's rate is taken over. Percentiles are a
//! second call without retries: some local endpoints do not compute them.

use crate::error::ReportError;
use crate::window::Window;
use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric as CwMetric, MetricDataQuery, MetricStat,
};
use aws_sdk_cloudwatch::Client;
use lambda_memory_profiler::metrics::Metric;
use std::collections::{BTreeSet, HashMap};

/// The dimension every datum carries.
pub const FUNCTION_NAME: &str = "FunctionName";
/// The optional second dimension (`LMP_DIMENSIONS=FunctionName,FunctionVersion`), matched by
/// `--function-version`.
pub const FUNCTION_VERSION: &str = "FunctionVersion";

/// A statistic as GetMetricData names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stat {
    /// Total of the datums (counts such as `OutOfMemory`, `ColdStart`).
    Sum,
    /// Number of datums (for `Duration`: invocations).
    SampleCount,
    /// Largest datum (sizes, peaks, utilization).
    Maximum,
    /// Smallest datum (`InvocationsToOutOfMemory`).
    Minimum,
}

impl Stat {
    fn as_str(self) -> &'static str {
        match self {
            Stat::Sum => "Sum",
            Stat::SampleCount => "SampleCount",
            Stat::Maximum => "Maximum",
            Stat::Minimum => "Minimum",
        }
    }

    /// Combines the values of several periods (a window CloudWatch split).
    fn combine(self, values: &[f64]) -> Option<f64> {
        let finite = values.iter().copied().filter(|v| v.is_finite());
        match self {
            Stat::Sum | Stat::SampleCount => finite.reduce(|a, b| a + b),
            Stat::Maximum => finite.reduce(f64::max),
            Stat::Minimum => finite.reduce(f64::min),
        }
    }
}

/// Every statistic the report reads over the whole window.
pub const WHOLE_WINDOW: &[(Metric, Stat)] = &[
    (Metric::Duration, Stat::SampleCount),
    (Metric::BilledDuration, Stat::Sum),
    (Metric::BilledDuration, Stat::SampleCount),
    (Metric::Duration, Stat::Sum),
    (Metric::MemorySize, Stat::Maximum),
    (Metric::MaxMemoryUsed, Stat::Maximum),
    (Metric::MemoryUtilization, Stat::Maximum),
    (Metric::PythonHeapPeak, Stat::Maximum),
    (Metric::HeapGrowthPerInvoke, Stat::Sum),
    (Metric::HeapGrowthPerInvoke, Stat::SampleCount),
    (Metric::HeapGrowthPerInvoke, Stat::Maximum),
    (Metric::LeakSuspected, Stat::Sum),
    (Metric::LeakSuspected, Stat::SampleCount),
    (Metric::InvocationsToOutOfMemory, Stat::Minimum),
    (Metric::OutOfMemory, Stat::Sum),
    (Metric::RecommendedMemorySize, Stat::Maximum),
    (Metric::ColdStart, Stat::Sum),
];

/// The metric figures of one function over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricFigures {
    values: HashMap<(Metric, Stat), f64>,
    /// MemoryUtilization p99, when the endpoint computes percentiles.
    pub utilization_p99: Option<f64>,
    /// Why there is no p99 (the endpoint's error), when there is none for that reason.
    pub p99_error: Option<String>,
    /// Start of the first and end of the last bin with an invocation (epoch ms).
    pub active_span_ms: Option<(i64, i64)>,
}

impl MetricFigures {
    /// `stat` of `metric` over the window; `None` when the function published no datum of it.
    pub fn get(&self, metric: Metric, stat: Stat) -> Option<f64> {
        self.values.get(&(metric, stat)).copied()
    }

    /// Records `stat` of `metric` (as [`read`] does; tests build figures with it).
    pub fn set(&mut self, metric: Metric, stat: Stat, value: f64) {
        self.values.insert((metric, stat), value);
    }

    /// Sum ÷ SampleCount of `metric`: its mean over all datums.
    pub fn mean(&self, metric: Metric) -> Option<f64> {
        let n = self.get(metric, Stat::SampleCount).filter(|n| *n > 0.0)?;
        Some(self.get(metric, Stat::Sum)? / n)
    }
}

/// Which function's metrics: the dimensions of its datums.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The namespace the layer publishes to (`--namespace`).
    pub namespace: &'a str,
    /// The `FunctionName` dimension's value.
    pub function: &'a str,
    /// The `FunctionVersion` dimension's value (`--function-version`); `None`: metrics without it.
    pub version: Option<&'a str>,
}

impl Target<'_> {
    fn dimensions(&self) -> Vec<Dimension> {
        let mut dims = vec![Dimension::builder()
            .name(FUNCTION_NAME)
            .value(self.function)
            .build()];
        if let Some(v) = self.version {
            dims.push(Dimension::builder().name(FUNCTION_VERSION).value(v).build());
        }
        dims
    }

    fn query(&self, id: String, metric: Metric, stat: &str, period: i32) -> MetricDataQuery {
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        CwMetric::builder()
                            .namespace(self.namespace)
                            .metric_name(metric.name())
                            .set_dimensions(Some(self.dimensions()))
                            .build(),
                    )
                    .period(period)
                    .stat(stat)
                    .build(),
            )
            .return_data(true)
            .build()
    }
}

/// Fails with a clear error when the namespace or the function has no metrics at all.
pub async fn check_target(cw: &Client, t: &Target<'_>, region: &str) -> Result<(), ReportError> {
    let mine = cw
        .list_metrics()
        .namespace(t.namespace)
        .dimensions(
            DimensionFilter::builder()
                .name(FUNCTION_NAME)
                .value(t.function)
                .build(),
        )
        .send()
        .await
        .map_err(|e| ReportError::aws("ListMetrics", e))?;
    if mine.metrics().is_empty() {
        let any = cw
            .list_metrics()
            .namespace(t.namespace)
            .send()
            .await
            .map_err(|e| ReportError::aws("ListMetrics", e))?;
        if any.metrics().is_empty() {
            return Err(ReportError::NoData {
                namespace: t.namespace.to_string(),
                region: region.to_string(),
            });
        }
        let known: BTreeSet<&str> = any
            .metrics()
            .iter()
            .flat_map(|m| m.dimensions())
            .filter(|d| d.name() == Some(FUNCTION_NAME))
            .filter_map(|d| d.value())
            .collect();
        return Err(ReportError::UnknownFunction {
            function: t.function.to_string(),
            namespace: t.namespace.to_string(),
            known: if known.is_empty() {
                String::new()
            } else {
                format!(
                    "; functions seen: {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )
            },
        });
    }
    let wanted = if t.version.is_some() { 2 } else { 1 };
    let versions: BTreeSet<&str> = mine
        .metrics()
        .iter()
        .flat_map(|m| m.dimensions())
        .filter(|d| d.name() == Some(FUNCTION_VERSION))
        .filter_map(|d| d.value())
        .collect();
    let matching = mine.metrics().iter().any(|m| {
        m.dimensions().len() == wanted
            && t.version
                .is_none_or(|v| m.dimensions().iter().any(|d| d.value() == Some(v)))
    });
    if !matching {
        return Err(ReportError::VersionedMetrics {
            function: t.function.to_string(),
            versions: versions.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(())
}

/// Reads every figure of one function over `window`.
pub async fn read(
    cw: &Client,
    t: &Target<'_>,
    window: &Window,
) -> Result<MetricFigures, ReportError> {
    let mut queries: Vec<MetricDataQuery> = WHOLE_WINDOW
        .iter()
        .enumerate()
        .map(|(i, (m, s))| t.query(format!("w{i}"), *m, s.as_str(), window.period_s()))
        .collect();
    queries.push(t.query(
        "series".into(),
        Metric::Duration,
        Stat::SampleCount.as_str(),
        window.metric_bin_s(),
    ));
    let results = get_all(cw, queries, window, None).await?;

    let mut figures = MetricFigures::default();
    for (i, (m, s)) in WHOLE_WINDOW.iter().enumerate() {
        if let Some(v) = results
            .get(&format!("w{i}"))
            .and_then(|(_, values)| s.combine(values))
        {
            figures.set(*m, *s, v);
        }
    }
    if let Some((stamps, values)) = results.get("series") {
        let bin_ms = i64::from(window.metric_bin_s()) * 1000;
        let active: Vec<i64> = stamps
            .iter()
            .zip(values)
            .filter(|(_, v)| **v > 0.0)
            .map(|(t, _)| *t)
            .collect();
        if let (Some(first), Some(last)) = (active.iter().min(), active.iter().max()) {
            figures.active_span_ms = Some((*first, *last + bin_ms));
        }
    }

    let p99 = t.query(
        "p99".into(),
        Metric::MemoryUtilization,
        "p99",
        window.period_s(),
    );
    match get_all(cw, vec![p99], window, Some(RetryConfig::disabled())).await {
        Ok(r) => {
            figures.utilization_p99 = r
                .get("p99")
                .and_then(|(_, values)| values.iter().copied().reduce(f64::max));
        }
        Err(e) => figures.p99_error = Some(e.to_string()),
    }
    Ok(figures)
}

type Series = (Vec<i64>, Vec<f64>);

/// Runs the queries, following pagination; results by query id (timestamps in epoch ms).
async fn get_all(
    cw: &Client,
    queries: Vec<MetricDataQuery>,
    window: &Window,
    retry: Option<RetryConfig>,
) -> Result<HashMap<String, Series>, ReportError> {
    let mut out: HashMap<String, Series> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(DateTime::from_millis(window.start_ms))
            .end_time(DateTime::from_millis(window.end_ms))
            .set_next_token(token.take())
            .customize();
        if let Some(retry) = &retry {
            req = req.config_override(
                aws_sdk_cloudwatch::config::Builder::default().retry_config(retry.clone()),
            );
        }
        let page = req
            .send()
            .await
            .map_err(|e| ReportError::aws("GetMetricData", e))?;
        for r in page.metric_data_results() {
            let entry = out
                .entry(r.id().unwrap_or_default().to_string())
                .or_default();
            entry
                .0
                .extend(r.timestamps().iter().map(|t| t.to_millis().unwrap_or(0)));
            entry.1.extend_from_slice(r.values());
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_combine_the_periods_of_a_split_window() {
        assert_eq!(Stat::Sum.combine(&[1.0, 2.0]), Some(3.0));
        assert_eq!(Stat::SampleCount.combine(&[4.0]), Some(4.0));
        assert_eq!(Stat::Maximum.combine(&[1.0, 7.0, 3.0]), Some(7.0));
        assert_eq!(Stat::Minimum.combine(&[5.0, 2.0]), Some(2.0));
        assert_eq!(Stat::Maximum.combine(&[]), None);
        assert_eq!(Stat::Sum.combine(&[f64::NAN]), None);
    }

    #[test]
    fn mean_is_sum_over_sample_count() {
        let mut f = MetricFigures::default();
        assert_eq!(f.mean(Metric::HeapGrowthPerInvoke), None);
        f.set(Metric::HeapGrowthPerInvoke, Stat::Sum, 30.0);
        f.set(Metric::HeapGrowthPerInvoke, Stat::SampleCount, 3.0);
        assert_eq!(f.mean(Metric::HeapGrowthPerInvoke), Some(10.0));
    }
}
