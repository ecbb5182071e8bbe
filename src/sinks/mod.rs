//! Sinks: turn metric values into CloudWatch data. Each owns its batching and limits.

pub mod cloudwatch;
pub mod emf;

use crate::metrics::Datum;

/// Start of the aggregation period a timestamp falls in (1 s or 60 s storage resolution).
pub fn bucket_ms(timestamp_ms: u64, storage_resolution: u8) -> u64 {
    let period = if storage_resolution == 1 {
        1_000
    } else {
        60_000
    };
    timestamp_ms - timestamp_ms % period
}

/// Groups values by (aggregation period, metric), keeping first-seen order of periods.
pub fn group(
    datums: &[Datum],
    storage_resolution: u8,
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
