//! Embedded Metric Format: JSON lines on stdout that CloudWatch Logs turns into metrics.
//!
//! Limits honoured: ≤ 100 metrics per line, ≤ 100 values per metric array, ≤ 30 dimensions.

use lmp_protocol::emf::{self as doc, Header};
use serde_json::Number;

use super::group;
use crate::config::StorageResolution;
use crate::metrics::{Datum, Dimensions};

/// The format's limits are the protocol crate's, beside its renderer.
pub use lmp_protocol::emf::{MAX_METRICS_PER_LINE, MAX_VALUES_PER_METRIC};

/// Renders datums as EMF lines (one JSON object each, no newline inside): one per aggregation
/// period, split so that no line exceeds the format's limits.
pub fn lines(
    namespace: &str,
    dims: &Dimensions,
    datums: &[Datum],
    storage_resolution: StorageResolution,
) -> Vec<String> {
    let mut out = Vec::new();
    for (bucket, metrics) in group(datums, storage_resolution) {
        let header = Header {
            namespace,
            timestamp_ms: bucket,
            dimensions: &dims.0,
            storage_resolution,
        };
        let rounds = metrics
            .values()
            .map(|v| v.len().div_ceil(MAX_VALUES_PER_METRIC))
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            let in_round: Vec<doc::Metric<'_>> = metrics
                .iter()
                .filter_map(|(m, vals)| {
                    let chunk = vals.chunks(MAX_VALUES_PER_METRIC).nth(round)?;
                    Some(doc::Metric {
                        name: m.name(),
                        unit: m.unit(),
                        // `group` keeps finite values only: every one is a JSON number.
                        values: chunk.iter().filter_map(|v| Number::from_f64(*v)).collect(),
                    })
                })
                .collect();
            for part in in_round.chunks(MAX_METRICS_PER_LINE) {
                out.push(doc::render(&header, part, []));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DimensionSet;
    use crate::metrics::{Metric, METRICS};
    use serde_json::{json, Value};

    /// Checks one line against the EMF specification's limits and structure.
    pub(crate) fn validate(line: &str) -> Result<Value, String> {
        if line.len() > 1_000_000 || line.contains('\n') {
            return Err("too long or multi-line".into());
        }
        let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let aws = &v["_aws"];
        aws["Timestamp"].as_u64().ok_or("Timestamp")?;
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .ok_or("CloudWatchMetrics")?;
        for d in directives {
            d["Namespace"].as_str().ok_or("Namespace")?;
            for set in d["Dimensions"].as_array().ok_or("Dimensions")? {
                let set = set.as_array().ok_or("dimension set")?;
                if set.len() > 30 {
                    return Err("> 30 dimensions".into());
                }
                for name in set {
                    let name = name.as_str().ok_or("dimension name")?;
                    v[name]
                        .as_str()
                        .ok_or(format!("dimension {name} has no string value"))?;
                }
            }
            let metrics = d["Metrics"].as_array().ok_or("Metrics")?;
            if metrics.len() > MAX_METRICS_PER_LINE {
                return Err("> 100 metrics".into());
            }
            for m in metrics {
                let name = m["Name"].as_str().ok_or("Name")?;
                let val = &v[name];
                let n = match val {
                    Value::Number(_) => 1,
                    Value::Array(a) if a.iter().all(Value::is_number) => a.len(),
                    _ => return Err(format!("metric {name} has no numeric value")),
                };
                if n == 0 || n > MAX_VALUES_PER_METRIC {
                    return Err(format!("metric {name} has {n} values"));
                }
            }
        }
        Ok(v)
    }

    fn dims() -> Dimensions {
        Dimensions::new(
            DimensionSet {
                function_version: true,
            },
            "orders",
            "$LATEST",
        )
    }

    #[test]
    fn one_invocation_gives_one_valid_line() {
        let datums: Vec<Datum> = [(Metric::MaxMemoryUsed, 96.0), (Metric::Duration, 12.5)]
            .iter()
            .map(|(m, v)| Datum {
                metric: *m,
                value: *v,
                timestamp_ms: 1_764_000_012_345,
            })
            .collect();
        let lines = lines("NS", &dims(), &datums, StorageResolution::Standard);
        assert_eq!(lines.len(), 1);
        let v = validate(&lines[0]).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_764_000_000_000u64);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "NS");
        // Both sets: dashboards and alarms on {FunctionName} keep working with a version.
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName"], ["FunctionName", "FunctionVersion"]])
        );
        assert_eq!(v["MaxMemoryUsed"], 96.0);
        assert_eq!(v["FunctionName"], "orders");
        let m = &v["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert!(m
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["Name"] == "Duration" && d["Unit"] == "Milliseconds"));
    }

    #[test]
    fn many_values_split_into_arrays_of_at_most_100() {
        let datums: Vec<Datum> = (0..250)
            .flat_map(|i| {
                METRICS.iter().enumerate().map(move |(k, _)| Datum {
                    metric: Metric::ALL[k],
                    value: i as f64,
                    timestamp_ms: 1_764_000_000_000 + i,
                })
            })
            .collect();
        let lines = lines("NS", &dims(), &datums, StorageResolution::Standard);
        assert_eq!(lines.len(), 3, "250 values → 100 + 100 + 50");
        let mut total = 0;
        for l in &lines {
            let v = validate(l).unwrap();
            for m in Metric::ALL {
                total += v[m.name()].as_array().map_or(1, Vec::len);
            }
        }
        assert_eq!(total, 250 * METRICS.len(), "no value lost");
    }

    #[test]
    fn different_minutes_give_different_lines_and_high_resolution_uses_seconds() {
        let d = |t| Datum {
            metric: Metric::Duration,
            value: 1.0,
            timestamp_ms: t,
        };
        let datums = [d(0), d(59_999), d(60_000)];
        assert_eq!(
            lines("NS", &dims(), &datums, StorageResolution::Standard).len(),
            2
        );
        let hi = lines("NS", &dims(), &datums, StorageResolution::High);
        assert_eq!(hi.len(), 3);
        let v = validate(&hi[0]).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"],
            1
        );
    }

    #[test]
    fn validator_rejects_broken_documents() {
        assert!(validate("{}").is_err());
        let too_many = format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"n","Dimensions":[[]],"Metrics":[{{"Name":"a"}}]}}]}},"a":[{}]}}"#,
            vec!["1"; 101].join(",")
        );
        assert!(validate(&too_many).is_err());
        let no_dim = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["F"]],"Metrics":[]}]}}"#;
        assert!(validate(no_dim).is_err());
        assert!(lines("NS", &dims(), &[], StorageResolution::Standard).is_empty());
    }
}
