//! Telemetry API (`PUT /2022-07-01/telemetry`) and Logs API (`PUT /2020-08-15/logs`):
//! subscription validation, the record shapes each API delivers, buffered delivery.
//!
//! Lambda keeps the older Logs API working beside the Telemetry API; both buffer and deliver the
//! same way and differ in their schema versions, defaults and record shapes ([`render`]).

pub mod delivery;
pub mod render;

use std::time::Duration;

use serde_json::Value;

pub use delivery::{deliver_loop, Msg};

/// Accepted Telemetry API `schemaVersion` values (the reference lists these three; `2025-01-29`
/// is backward compatible with the others for on-demand functions).
pub const SCHEMA_VERSIONS: &[&str] = &["2022-07-01", "2022-12-13", "2025-01-29"];
/// The only Telemetry API schema Lambda Managed Instances accept.
pub const MANAGED_INSTANCES_SCHEMA: &str = "2025-01-29";
/// Accepted Logs API `schemaVersion` values; `2021-03-18` adds `platform.runtimeDone`.
pub const LOGS_SCHEMA_VERSIONS: &[&str] = &["2020-08-15", "2021-03-18"];
/// Accepted `types` (both APIs).
pub const TYPES: &[&str] = &["platform", "function", "extension"];

/// Which API a subscription came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `PUT /2022-07-01/telemetry`: schema required, `maxItems` default 1,000.
    Telemetry,
    /// The older `PUT /2020-08-15/logs`: schema defaults to `2020-08-15`, `maxItems` to 10,000.
    Logs,
}

impl Api {
    /// The error type of a refused subscription (the Logs API's is documented; the Telemetry
    /// API's is not, and the emulator keeps a neutral one).
    pub fn validation_error(self) -> &'static str {
        match self {
            Api::Telemetry => "ValidationError",
            Api::Logs => "Logs.ValidationError",
        }
    }

    /// The API's name as messages say it (`Telemetry API`, `Logs API`).
    pub fn name(self) -> &'static str {
        match self {
            Api::Telemetry => "Telemetry API",
            Api::Logs => "Logs API",
        }
    }
}

/// A validated subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// The API it came through, which decides the record shapes delivered.
    pub api: Api,
    /// `schemaVersion`, one of [`SCHEMA_VERSIONS`] or [`LOGS_SCHEMA_VERSIONS`].
    pub schema: String,
    /// Record types asked for, among [`TYPES`]; never empty.
    pub types: Vec<String>,
    /// `buffering.maxItems`: records per batch, 1,000–10,000.
    pub max_items: usize,
    /// `buffering.maxBytes`: bytes per batch, 262,144–1,048,576 (default 262,144).
    pub max_bytes: usize,
    /// `buffering.timeoutMs`: a batch is sent this long after its first record (25 ms–30 s).
    pub timeout: Duration,
    /// Where to connect (host already mapped to loopback) and the request path.
    pub addr: std::net::SocketAddr,
    /// `Host` header of the deliveries: the URI's `host:port` as the extension wrote it.
    pub host_header: String,
    /// Request path of the deliveries (the URI's path, `/` when it has none).
    pub path: String,
}

/// Why a subscription was refused (answered 400 with this message).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct InvalidSubscription(pub String);

fn bad(msg: impl Into<String>) -> InvalidSubscription {
    InvalidSubscription(msg.into())
}

/// Validates a `PUT /2022-07-01/telemetry` body like Lambda does.
pub fn parse_subscription(body: &[u8]) -> Result<Subscription, InvalidSubscription> {
    parse(Api::Telemetry, body)
}

/// Validates a `PUT /2020-08-15/logs` body like Lambda does.
pub fn parse_logs_subscription(body: &[u8]) -> Result<Subscription, InvalidSubscription> {
    parse(Api::Logs, body)
}

fn parse(api: Api, body: &[u8]) -> Result<Subscription, InvalidSubscription> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let (versions, default_schema, default_items) = match api {
        // The Telemetry API requires the version; the Logs API defaults it. Their documented
        // default maxItems differ (1,000 and 10,000).
        Api::Telemetry => (SCHEMA_VERSIONS, None, 1000),
        Api::Logs => (LOGS_SCHEMA_VERSIONS, Some("2020-08-15"), 10_000),
    };
    let schema = match (
        v.get("schemaVersion").and_then(Value::as_str),
        default_schema,
    ) {
        (Some(s), _) => s,
        (None, Some(d)) => d,
        (None, None) => return Err(bad("schemaVersion is required")),
    };
    if !versions.contains(&schema) {
        return Err(bad(format!(
            "unsupported schemaVersion {schema} (valid: {})",
            versions.join(", ")
        )));
    }
    let types: Vec<String> = v
        .get("types")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("types must be an array"))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("types must be strings"))
        })
        .collect::<Result<_, _>>()?;
    if types.is_empty() {
        return Err(bad("types must not be empty"));
    }
    if let Some(t) = types.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(bad(format!("unknown type {t}")));
    }
    let buffering = v.get("buffering").cloned().unwrap_or(Value::Null);
    let range = |key: &str, default: u64, lo: u64, hi: u64| -> Result<u64, InvalidSubscription> {
        match buffering.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => {
                let n = x
                    .as_u64()
                    .ok_or_else(|| bad(format!("buffering.{key} must be an integer")))?;
                if (lo..=hi).contains(&n) {
                    Ok(n)
                } else {
                    Err(bad(format!(
                        "buffering.{key} must be in {lo}..={hi}, got {n}"
                    )))
                }
            }
        }
    };
    let max_items = range("maxItems", default_items, 1000, 10_000)? as usize;
    let max_bytes = range("maxBytes", 262_144, 262_144, 1_048_576)? as usize;
    let timeout_ms = range("timeoutMs", 1000, 25, 30_000)?;
    let dest = v
        .get("destination")
        .ok_or_else(|| bad("destination is required"))?;
    let protocol = dest.get("protocol").and_then(Value::as_str).unwrap_or("");
    match protocol {
        "HTTP" => {}
        "TCP" => {
            return Err(bad(
                "TCP destinations are not supported by the emulator: use HTTP",
            ))
        }
        other => {
            return Err(bad(format!(
                "destination.protocol must be HTTP, got {other:?}"
            )))
        }
    }
    let uri = dest
        .get("URI")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("destination.URI is required"))?;
    let (addr, host_header, path) = parse_uri(uri)?;
    Ok(Subscription {
        api,
        schema: schema.to_string(),
        types,
        max_items,
        max_bytes,
        timeout: Duration::from_millis(timeout_ms),
        addr,
        host_header,
        path,
    })
}

/// `http://host:port/path` with host `sandbox.localdomain`, `localhost` or `127.0.0.1`
/// (all mapped to 127.0.0.1: the emulator only talks to loopback).
fn parse_uri(uri: &str) -> Result<(std::net::SocketAddr, String, String), InvalidSubscription> {
    let rest = uri.strip_prefix("http://").ok_or_else(|| {
        bad(format!(
            "destination.URI must start with http://, got {uri}"
        ))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("destination.URI needs a port: {uri}")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad(format!("bad port in destination.URI: {uri}")))?;
    if !matches!(
        host,
        "sandbox.localdomain" | "sandbox" | "localhost" | "127.0.0.1"
    ) {
        return Err(bad(format!(
            "destination host must be sandbox.localdomain (or loopback), got {host}"
        )));
    }
    Ok((
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        authority.to_string(),
        path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(buffering: &str, uri: &str) -> String {
        format!(
            r#"{{"schemaVersion":"2022-12-13","types":["platform","function"],"buffering":{buffering},"destination":{{"protocol":"HTTP","URI":"{uri}"}}}}"#
        )
    }

    #[test]
    fn accepts_a_valid_subscription_and_maps_the_sandbox_host() {
        let s = parse_subscription(
            body(
                r#"{"maxItems":1000,"maxBytes":262144,"timeoutMs":25}"#,
                "http://sandbox.localdomain:4321/t",
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(s.addr, std::net::SocketAddr::from(([127, 0, 0, 1], 4321)));
        assert_eq!(s.path, "/t");
        assert_eq!(s.timeout, Duration::from_millis(25));
        assert_eq!(s.types, vec!["platform", "function"]);
        assert_eq!((s.api, s.schema.as_str()), (Api::Telemetry, "2022-12-13"));
    }

    #[test]
    fn every_documented_telemetry_schema_is_accepted() {
        for v in ["2022-07-01", "2022-12-13", "2025-01-29"] {
            let b = body("{}", "http://sandbox.localdomain:1/").replace("2022-12-13", v);
            assert_eq!(
                parse_subscription(b.as_bytes()).map(|s| s.schema),
                Ok(v.into())
            );
        }
    }

    #[test]
    fn rejects_out_of_range_buffering_bad_types_schema_and_hosts() {
        let ok_uri = "http://sandbox.localdomain:1/";
        for b in [
            r#"{"maxItems":999}"#,
            r#"{"maxItems":10001}"#,
            r#"{"maxBytes":1000}"#,
            r#"{"maxBytes":1048577}"#,
            r#"{"timeoutMs":24}"#,
            r#"{"timeoutMs":30001}"#,
            r#"{"timeoutMs":"100"}"#,
        ] {
            assert!(
                parse_subscription(body(b, ok_uri).as_bytes()).is_err(),
                "{b}"
            );
        }
        assert!(parse_subscription(body("{}", "http://example.com:80/").as_bytes()).is_err());
        assert!(
            parse_subscription(body("{}", "https://sandbox.localdomain:1/").as_bytes()).is_err()
        );
        let wrong_schema = body("{}", ok_uri).replace("2022-12-13", "2021-01-01");
        assert!(parse_subscription(wrong_schema.as_bytes()).is_err());
        let wrong_type = body("{}", ok_uri).replace("\"function\"", "\"metrics\"");
        assert!(parse_subscription(wrong_type.as_bytes()).is_err());
        assert!(parse_subscription(b"not json").is_err());
    }

    #[test]
    fn logs_subscriptions_default_their_schema_and_max_items() {
        let b = r#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:9/l"}}"#;
        let s = parse_logs_subscription(b.as_bytes()).expect("valid");
        assert_eq!((s.api, s.schema.as_str()), (Api::Logs, "2020-08-15"));
        assert_eq!((s.max_items, s.max_bytes), (10_000, 262_144));
        assert_eq!(s.timeout, Duration::from_millis(1000));
        let telemetry_schema =
            b.replace("{\"types\"", "{\"schemaVersion\":\"2022-12-13\",\"types\"");
        assert!(parse_logs_subscription(telemetry_schema.as_bytes()).is_err());
        // A Telemetry API subscription must name its schema.
        assert!(parse_subscription(b.as_bytes()).is_err());
    }
}
