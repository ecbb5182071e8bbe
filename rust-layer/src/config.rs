//! Options of the layer and their `LMP_*` environment defaults (the same variables as the
//! Python decorator and the extension read).

use lmp_protocol::{StorageResolution, DEFAULT_INTAKE_PORT, DEFAULT_NAMESPACE};
use tracing::warn;

/// Which dimensions the fallback EMF line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimensions {
    /// `FunctionName`.
    FunctionName,
    /// `FunctionName` and `FunctionVersion`.
    FunctionNameAndVersion,
}

/// Everything the layer reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `LMP_DISABLE`: pass every invocation through untouched.
    pub disabled: bool,
    /// `LMP_INTAKE_PORT`: the extension's UDP port on 127.0.0.1.
    pub intake_port: u16,
    /// `LMP_NAMESPACE`: namespace of the fallback EMF line.
    pub namespace: String,
    /// `LMP_DIMENSIONS`: `FunctionName` or `FunctionName,FunctionVersion`.
    pub dimensions: Dimensions,
    /// `LMP_STORAGE_RESOLUTION`: 60 or 1.
    pub storage_resolution: StorageResolution,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            disabled: false,
            intake_port: DEFAULT_INTAKE_PORT,
            namespace: DEFAULT_NAMESPACE.to_string(),
            dimensions: Dimensions::FunctionName,
            storage_resolution: StorageResolution::Standard,
        }
    }
}

fn parse_bool(raw: &str) -> Result<bool, &'static str> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false"),
    }
}

fn parse_port(raw: &str) -> Result<u16, &'static str> {
    match raw.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("expected a port in [1, 65535]"),
    }
}

fn parse_namespace(raw: &str) -> Result<String, &'static str> {
    let v = raw.trim();
    // CloudWatch namespaces: 1-255 characters, no leading colon.
    if v.is_empty() || v.len() > 255 || v.starts_with(':') {
        return Err("expected 1-255 characters, not starting with ':'");
    }
    Ok(v.to_string())
}

fn parse_dimensions(raw: &str) -> Result<Dimensions, &'static str> {
    let parts: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let known = parts
        .iter()
        .all(|p| *p == "FunctionName" || *p == "FunctionVersion");
    if !known || !parts.contains(&"FunctionName") {
        return Err("expected FunctionName or FunctionName,FunctionVersion");
    }
    Ok(if parts.contains(&"FunctionVersion") {
        Dimensions::FunctionNameAndVersion
    } else {
        Dimensions::FunctionName
    })
}

fn parse_resolution(raw: &str) -> Result<StorageResolution, &'static str> {
    raw.trim()
        .parse()
        .ok()
        .and_then(StorageResolution::from_seconds)
        .ok_or("expected 1 or 60")
}

impl Config {
    /// Reads the `LMP_*` variables of this process; a bad value is logged and the default kept.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the options through `lookup` (the environment in [`Config::from_env`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        fn get<T: std::fmt::Debug>(
            lookup: &impl Fn(&str) -> Option<String>,
            name: &str,
            parse: impl Fn(&str) -> Result<T, &'static str>,
            default: T,
        ) -> T {
            let Some(raw) = lookup(name) else {
                return default;
            };
            match parse(&raw) {
                Ok(v) => v,
                Err(reason) => {
                    warn!(%name, value = %raw, %reason, ?default, "lambda_memory_profile: ignoring a bad setting");
                    default
                }
            }
        }
        let d = Config::default();
        Self {
            disabled: get(&lookup, "LMP_DISABLE", parse_bool, d.disabled),
            intake_port: get(&lookup, "LMP_INTAKE_PORT", parse_port, d.intake_port),
            namespace: get(&lookup, "LMP_NAMESPACE", parse_namespace, d.namespace),
            dimensions: get(&lookup, "LMP_DIMENSIONS", parse_dimensions, d.dimensions),
            storage_resolution: get(
                &lookup,
                "LMP_STORAGE_RESOLUTION",
                parse_resolution,
                d.storage_resolution,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_without_variables() {
        assert_eq!(cfg(&[]), Config::default());
    }

    #[test]
    fn reads_every_variable() {
        let c = cfg(&[
            ("LMP_DISABLE", "true"),
            ("LMP_INTAKE_PORT", "5000"),
            ("LMP_NAMESPACE", " Mine "),
            ("LMP_DIMENSIONS", "FunctionName, FunctionVersion"),
            ("LMP_STORAGE_RESOLUTION", "1"),
        ]);
        assert!(c.disabled);
        assert_eq!(c.intake_port, 5000);
        assert_eq!(c.namespace, "Mine");
        assert_eq!(c.dimensions, Dimensions::FunctionNameAndVersion);
        assert_eq!(c.storage_resolution, StorageResolution::High);
    }

    #[test]
    fn bad_values_keep_the_defaults() {
        let c = cfg(&[
            ("LMP_DISABLE", "maybe"),
            ("LMP_INTAKE_PORT", "0"),
            ("LMP_NAMESPACE", ":x"),
            ("LMP_DIMENSIONS", "FunctionVersion"),
            ("LMP_STORAGE_RESOLUTION", "5"),
        ]);
        assert_eq!(c, Config::default());
        assert_eq!(
            cfg(&[("LMP_INTAKE_PORT", "70000")]).intake_port,
            DEFAULT_INTAKE_PORT
        );
    }
}
