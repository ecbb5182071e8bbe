//! The value rules of the settings: what each `LMP_*` variable takes, with the reason when a
//! value is not taken. Shared with the decorator's `hello` (its sink arguments pass the same
//! rules).

use std::time::Duration;

use super::{DimensionSet, FlushMode, StorageResolution};

/// A CloudWatch namespace: 1-255 ASCII characters, no leading colon.
pub fn parse_namespace(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 255 || v.starts_with(':') || !v.is_ascii() {
        return Err("must be 1-255 ASCII characters, not starting with ':'".into());
    }
    Ok(v.to_string())
}

/// `FunctionName` or `FunctionName,FunctionVersion` (any order, blanks ignored).
pub fn parse_dimensions(v: &str) -> Result<DimensionSet, String> {
    let mut set = DimensionSet::default();
    let mut has_name = false;
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "FunctionName" => has_name = true,
            "FunctionVersion" => set.function_version = true,
            other => return Err(format!("unknown dimension `{other}`")),
        }
    }
    if !has_name {
        return Err("must include FunctionName".into());
    }
    Ok(set)
}

/// CloudWatch storage resolution in seconds: 1 or 60.
pub fn parse_storage_resolution(v: &str) -> Result<StorageResolution, String> {
    v.parse()
        .ok()
        .and_then(StorageResolution::from_seconds)
        .ok_or_else(|| "expected 1 or 60".into())
}

/// The decorator's spelling of a boolean (`_config._parse_bool`), so one variable means the same
/// to both.
pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true/false".into()),
    }
}

/// A number within `min..=max`.
pub(super) fn parse_float_in(v: &str, min: f64, max: f64) -> Result<f64, String> {
    let n: f64 = v
        .parse()
        .map_err(|_| format!("not a number in {min}..={max}"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("out of range {min}..={max}"));
    }
    Ok(n)
}

/// A whole number within `min..=max`.
pub(super) fn parse_whole_in(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("not a whole number in {min}..={max}"))?;
    if n < min || n > max {
        return Err(format!("out of range {min}..={max}"));
    }
    Ok(n)
}

pub(super) fn parse_flush(v: &str) -> Result<FlushMode, String> {
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "end" => Ok(FlushMode::End),
        "adaptive" => Ok(FlushMode::Adaptive),
        _ => match lower.strip_prefix("periodic:") {
            Some(secs) => {
                let s = parse_whole_in(secs, 1, 3600)?;
                Ok(FlushMode::Periodic(Duration::from_secs(s)))
            }
            None => Err("expected `end`, `periodic:<seconds>` or `adaptive`".into()),
        },
    }
}
