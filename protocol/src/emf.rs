//! Embedded Metric Format documents: the one renderer of the extension's EMF sink and of the
//! Rust layer's fallback line (printed when no extension listens), so both have one shape.
//!
//! A document carries one namespace, one timestamp, the dimensions with their values, every
//! metric's definition (name, unit, storage resolution) and values, and plain properties
//! (searchable in CloudWatch Logs, never dimensions). Limits of the format that a caller must
//! split by: [`MAX_METRICS_PER_LINE`] and [`MAX_VALUES_PER_METRIC`].

use serde_json::{json, Map, Number, Value};

/// Metrics per document that CloudWatch reads.
pub const MAX_METRICS_PER_LINE: usize = 100;
/// Values per metric array that CloudWatch reads.
pub const MAX_VALUES_PER_METRIC: usize = 100;

/// CloudWatch units of the project's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `Megabytes`.
    Megabytes,
    /// `Bytes`.
    Bytes,
    /// `Percent`.
    Percent,
    /// `Count`.
    Count,
    /// `Milliseconds`.
    Milliseconds,
}

impl Unit {
    /// The unit's name as CloudWatch and EMF spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Megabytes => "Megabytes",
            Unit::Bytes => "Bytes",
            Unit::Percent => "Percent",
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// CloudWatch storage resolution of a metric: how finely its values are aggregated (and billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageResolution {
    /// One second (high resolution, billed higher).
    High,
    /// Sixty seconds, CloudWatch's standard.
    #[default]
    Standard,
}

impl StorageResolution {
    /// The value CloudWatch and EMF spell it with (`StorageResolution`): 1 or 60.
    pub const fn seconds(self) -> u8 {
        match self {
            StorageResolution::High => 1,
            StorageResolution::Standard => 60,
        }
    }

    /// The aggregation period in milliseconds.
    pub const fn period_ms(self) -> u64 {
        self.seconds() as u64 * 1000
    }

    /// From its spelling, 1 or 60; anything else is not a resolution CloudWatch has.
    pub fn from_seconds(seconds: u64) -> Option<StorageResolution> {
        match seconds {
            1 => Some(StorageResolution::High),
            60 => Some(StorageResolution::Standard),
            _ => None,
        }
    }
}

/// The dimension sets every metric is published under, from the dimensions in order: the first
/// alone (`{FunctionName}`) always, and all of them too when there are more, so that dashboards
/// and alarms on `{FunctionName}` keep working when a version dimension is asked for. With no
/// dimension at all, the one empty set.
pub fn dimension_sets<T>(all: &[T]) -> impl Iterator<Item = &[T]> {
    let first = all.get(..all.len().min(1));
    let full = (all.len() > 1).then_some(all);
    first.into_iter().chain(full)
}

/// What one document is about: where its metrics go and when they were taken.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// CloudWatch namespace.
    pub namespace: &'a str,
    /// `Timestamp`, epoch milliseconds.
    pub timestamp_ms: u64,
    /// Dimension names and values, in order (the first is the one always published alone).
    pub dimensions: &'a [(String, String)],
    /// `StorageResolution` of every metric.
    pub storage_resolution: StorageResolution,
}

/// One metric of a document and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric<'a> {
    /// The metric's name (a row of the README's metric table).
    pub name: &'a str,
    /// Its unit.
    pub unit: Unit,
    /// Its values: one is written as a number, more as an array, none leaves the metric out.
    pub values: Vec<Number>,
}

/// Renders one document as a JSON line (no newline inside or at the end). Keys are inserted in
/// the order read: `_aws`, the dimensions, the metrics, then the properties.
pub fn render<'k>(
    header: &Header<'_>,
    metrics: &[Metric<'_>],
    properties: impl IntoIterator<Item = (&'k str, Value)>,
) -> String {
    let metrics: Vec<&Metric<'_>> = metrics.iter().filter(|m| !m.values.is_empty()).collect();
    let dim_sets: Vec<Vec<&str>> = dimension_sets(header.dimensions)
        .map(|set| set.iter().map(|(k, _)| k.as_str()).collect())
        .collect();
    let defs: Vec<Value> = metrics
        .iter()
        .map(|m| {
            json!({"Name": m.name, "Unit": m.unit.as_str(),
                   "StorageResolution": header.storage_resolution.seconds()})
        })
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": header.timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": header.namespace,
                "Dimensions": dim_sets,
                "Metrics": defs,
            }]
        }),
    );
    for (k, v) in header.dimensions {
        doc.insert(k.clone(), Value::String(v.clone()));
    }
    for m in metrics {
        let v = match m.values.as_slice() {
            [one] => Value::Number(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::Number).collect()),
        };
        doc.insert(m.name.to_string(), v);
    }
    for (k, v) in properties {
        doc.insert(k.to_string(), v);
    }
    Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_first_dimension_alone_and_the_full_set() {
        let none: [u8; 0] = [];
        assert_eq!(dimension_sets(&none).collect::<Vec<_>>(), vec![&none[..]]);
        assert_eq!(dimension_sets(&[1]).collect::<Vec<_>>(), vec![&[1][..]]);
        assert_eq!(
            dimension_sets(&[1, 2]).collect::<Vec<_>>(),
            vec![&[1][..], &[1, 2][..]]
        );
    }

    #[test]
    fn a_document_with_both_sets_metrics_and_properties() {
        let d = dims(&[("FunctionName", "f"), ("FunctionVersion", "7")]);
        let header = Header {
            namespace: "Ns",
            timestamp_ms: 1_764_000_000_123,
            dimensions: &d,
            storage_resolution: StorageResolution::High,
        };
        let metrics = [
            Metric {
                name: "Duration",
                unit: Unit::Milliseconds,
                values: vec![Number::from_f64(12.5).unwrap()],
            },
            Metric {
                name: "ColdStart",
                unit: Unit::Count,
                values: vec![1.into(), 0.into()],
            },
            Metric {
                name: "RuntimeRss",
                unit: Unit::Bytes,
                values: vec![],
            },
        ];
        let line = render(&header, &metrics, [("RequestId", json!("r"))]);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "_aws": {"Timestamp": 1_764_000_000_123u64, "CloudWatchMetrics": [{
                    "Namespace": "Ns",
                    "Dimensions": [["FunctionName"], ["FunctionName", "FunctionVersion"]],
                    "Metrics": [
                        {"Name": "Duration", "Unit": "Milliseconds", "StorageResolution": 1},
                        {"Name": "ColdStart", "Unit": "Count", "StorageResolution": 1},
                    ],
                }]},
                "FunctionName": "f",
                "FunctionVersion": "7",
                "Duration": 12.5,
                "ColdStart": [1, 0],
                "RequestId": "r",
            })
        );
    }
}
