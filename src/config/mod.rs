//! Every setting of the extension, read once at start from `LMP_*` environment variables.
//!
//! A bad value never stops the extension: it is reported as a [`ConfigWarning`] (logged once by the
//! caller, after logging is set up) and the default is used.

use std::time::Duration;

pub use lmp_protocol::StorageResolution;

mod values;

use values::{parse_bool, parse_float_in, parse_flush, parse_whole_in};
pub use values::{parse_dimensions, parse_namespace, parse_storage_resolution};

/// Where metric data go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// CloudWatch `PutMetricData` (batched, gzip, retried).
    CloudWatch,
    /// Embedded Metric Format lines on stdout (CloudWatch Logs turns them into metrics).
    Emf,
}

/// When buffered metric data are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// At the end of every invocation, before the extension calls `/next`.
    End,
    /// In the background every given period (only runs while the environment is not frozen).
    Periodic(Duration),
    /// End-of-invoke while invocations are rare, periodic once they are frequent.
    Adaptive,
}

/// Which dimensions every datum carries. `FunctionName` always; the rest on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DimensionSet {
    /// `FunctionVersion` too: both sets `{FunctionName}` and `{FunctionName, FunctionVersion}`.
    pub function_version: bool,
}

/// What Lambda tells every process of the environment, read with the rest of the settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LambdaEnv {
    /// `AWS_LAMBDA_RUNTIME_API`: `host:port` of the Extensions API.
    pub runtime_api: Option<String>,
    /// `AWS_LAMBDA_FUNCTION_NAME` (the registration's name is the fallback).
    pub function_name: Option<String>,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, MB.
    pub memory_mb: Option<u32>,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE`: `on-demand`, `provisioned-concurrency`, `snap-start`,
    /// `lambda-managed-instances`, ...
    pub initialization_type: Option<String>,
}

/// The whole configuration. Field docs are the user documentation (docs/extension.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The environment Lambda set up (`AWS_LAMBDA_*`), not a setting of ours.
    pub lambda: LambdaEnv,
    /// `LMP_DISABLE`: `true` turns the extension into a do-nothing one (it registers for
    /// SHUTDOWN only and exits cleanly there) and the decorator into a pass-through: one switch
    /// for both. Default `false`.
    pub disabled: bool,
    /// `LMP_NAMESPACE`: CloudWatch namespace. Default [`lmp_protocol::DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// `LMP_SINK`: `cloudwatch` (default) or `emf`.
    pub sink: SinkKind,
    /// `LMP_FLUSH`: `end`, `periodic:<seconds>` or `adaptive` (default).
    pub flush: FlushMode,
    /// `LMP_INTAKE_PORT`: UDP port on 127.0.0.1 for the decorator's records. Default
    /// [`lmp_protocol::DEFAULT_INTAKE_PORT`].
    pub intake_port: u16,
    /// `LMP_DIMENSIONS`: `FunctionName` (default) or `FunctionName,FunctionVersion`.
    pub dimensions: DimensionSet,
    /// `LMP_MAX_PENDING`: invocations held while waiting for their parts. Default 64.
    pub max_pending: usize,
    /// `LMP_PENDING_TIMEOUT_MS`: how long an incomplete invocation waits (once two later
    /// invocations started) before it is published as partial. Default 2000.
    pub pending_timeout: Duration,
    /// `LMP_BUFFER_MAX`: metric values held between flushes; beyond it values are dropped and
    /// counted. Default 10000.
    pub buffer_max: usize,
    /// `LMP_TELEMETRY_TIMEOUT_MS`: Telemetry API buffering timeout (25..=30000). Default 50.
    pub telemetry_timeout_ms: u32,
    /// `LMP_STORAGE_RESOLUTION`: 60 (default) or 1 (high-resolution metrics, billed higher).
    pub storage_resolution: StorageResolution,
    /// `LMP_SHUTDOWN_MARGIN_MS`: time kept free before SHUTDOWN's deadline. Default 300.
    pub shutdown_margin: Duration,
    /// `LMP_END_FLUSH_BUDGET_MS`: how long an `end` flush may hold an invocation (billed time)
    /// before it goes on in the background. Default 100.
    pub end_flush_budget: Duration,
    /// `LMP_LOG_LEVEL`: `error`, `warn`, `info` (default), `debug`, `trace`.
    pub log_level: tracing::Level,
    /// Leak rule: `LMP_LEAK_WINDOW` (warm invocations judged, default 40), `LMP_LEAK_WARMUP`
    /// (invocations ignored after a cold start, default 3), `LMP_LEAK_MIN_POINTS` (default 8),
    /// `LMP_LEAK_MIN_HEAP_BYTES` (growth of the runtime's resident anonymous memory per
    /// invocation that counts, default 1024),
    /// `LMP_LEAK_MAX_P` (largest Mann–Kendall p-value taken as a trend, default 0.01),
    /// `LMP_LEAK_CONFIRM` (consecutive invocations the rule must hold, default 5),
    /// `LMP_LEAK_SIGNAL` (`resident`, default, or `heap`: the native sampler's estimate).
    pub leak: crate::analysis::leak::LeakConfig,
    /// Right-size: `LMP_HEADROOM` (fraction over the peak, default 0.3) and
    /// `LMP_PRICE_PER_GB_SECOND` (default: Lambda's x86_64 or arm64 price, by build target).
    pub rightsize: crate::analysis::rightsize::RightSizeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lambda: LambdaEnv::default(),
            disabled: false,
            namespace: lmp_protocol::DEFAULT_NAMESPACE.to_string(),
            sink: SinkKind::CloudWatch,
            flush: FlushMode::Adaptive,
            intake_port: lmp_protocol::DEFAULT_INTAKE_PORT,
            dimensions: DimensionSet::default(),
            max_pending: 64,
            pending_timeout: Duration::from_millis(2000),
            buffer_max: 10_000,
            telemetry_timeout_ms: 50,
            storage_resolution: StorageResolution::Standard,
            shutdown_margin: Duration::from_millis(300),
            end_flush_budget: Duration::from_millis(100),
            log_level: tracing::Level::INFO,
            leak: crate::analysis::leak::LeakConfig::default(),
            rightsize: crate::analysis::rightsize::RightSizeConfig::default(),
        }
    }
}

/// A setting that could not be used as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The variable, e.g. `LMP_FLUSH`.
    pub var: &'static str,
    /// Its value as set, untrimmed.
    pub value: String,
    /// Why no parser took it (the accepted form or range).
    pub reason: String,
    /// The default used instead, as the variable would spell it.
    pub default: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} ignored ({}); using the default {}",
            self.var, self.value, self.reason, self.default
        )
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> (Config, Vec<ConfigWarning>) {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (the environment in production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigWarning>) {
        let mut c = Config::default();
        let set = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        c.lambda = LambdaEnv {
            runtime_api: set("AWS_LAMBDA_RUNTIME_API"),
            function_name: set("AWS_LAMBDA_FUNCTION_NAME"),
            memory_mb: set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse().ok()),
            initialization_type: set("AWS_LAMBDA_INITIALIZATION_TYPE"),
        };
        let mut warnings = Vec::new();
        let mut apply = |var: &'static str, parse: &mut dyn FnMut(&str) -> Result<(), String>| {
            if let Some(raw) = get(var) {
                let v = raw.trim();
                if v.is_empty() {
                    return;
                }
                if let Err(reason) = parse(v) {
                    warnings.push(ConfigWarning {
                        var,
                        value: raw.clone(),
                        reason,
                        default: default_text(var),
                    });
                }
            }
        };

        apply("LMP_DISABLE", &mut |v| {
            c.disabled = parse_bool(v)?;
            Ok(())
        });
        apply("LMP_NAMESPACE", &mut |v| {
            c.namespace = parse_namespace(v)?;
            Ok(())
        });
        apply("LMP_SINK", &mut |v| {
            c.sink = match v.to_ascii_lowercase().as_str() {
                "cloudwatch" => SinkKind::CloudWatch,
                "emf" => SinkKind::Emf,
                _ => return Err("expected `cloudwatch` or `emf`".into()),
            };
            Ok(())
        });
        apply("LMP_FLUSH", &mut |v| {
            c.flush = parse_flush(v)?;
            Ok(())
        });
        apply("LMP_INTAKE_PORT", &mut |v| {
            c.intake_port = parse_whole_in(v, 1, 65535)? as u16;
            Ok(())
        });
        apply("LMP_DIMENSIONS", &mut |v| {
            c.dimensions = parse_dimensions(v)?;
            Ok(())
        });
        apply("LMP_MAX_PENDING", &mut |v| {
            c.max_pending = parse_whole_in(v, 1, 10_000)? as usize;
            Ok(())
        });
        apply("LMP_PENDING_TIMEOUT_MS", &mut |v| {
            c.pending_timeout = Duration::from_millis(parse_whole_in(v, 0, 3_600_000)?);
            Ok(())
        });
        apply("LMP_BUFFER_MAX", &mut |v| {
            c.buffer_max = parse_whole_in(v, 100, 1_000_000)? as usize;
            Ok(())
        });
        apply("LMP_TELEMETRY_TIMEOUT_MS", &mut |v| {
            c.telemetry_timeout_ms = parse_whole_in(v, 25, 30_000)? as u32;
            Ok(())
        });
        apply("LMP_STORAGE_RESOLUTION", &mut |v| {
            c.storage_resolution = parse_storage_resolution(v)?;
            Ok(())
        });
        apply("LMP_SHUTDOWN_MARGIN_MS", &mut |v| {
            c.shutdown_margin = Duration::from_millis(parse_whole_in(v, 0, 1900)?);
            Ok(())
        });
        apply("LMP_END_FLUSH_BUDGET_MS", &mut |v| {
            c.end_flush_budget = Duration::from_millis(parse_whole_in(v, 10, 5000)?);
            Ok(())
        });
        apply("LMP_LOG_LEVEL", &mut |v| {
            c.log_level = v
                .parse::<tracing::Level>()
                .map_err(|_| "expected error, warn, info, debug or trace".to_string())?;
            Ok(())
        });
        apply("LMP_LEAK_WINDOW", &mut |v| {
            c.leak.window = parse_whole_in(v, 6, 500)? as usize;
            Ok(())
        });
        apply("LMP_LEAK_WARMUP", &mut |v| {
            c.leak.warmup = parse_whole_in(v, 0, 1000)? as usize;
            Ok(())
        });
        apply("LMP_LEAK_MIN_POINTS", &mut |v| {
            c.leak.min_points = parse_whole_in(v, 6, 500)? as usize;
            Ok(())
        });
        apply("LMP_LEAK_MIN_HEAP_BYTES", &mut |v| {
            c.leak.min_growth_bytes = parse_float_in(v, 0.0, 1e12)?;
            Ok(())
        });
        apply("LMP_LEAK_MAX_P", &mut |v| {
            c.leak.max_p_value = parse_float_in(v, 1e-12, 0.5)?;
            Ok(())
        });
        apply("LMP_LEAK_CONFIRM", &mut |v| {
            c.leak.confirm = parse_whole_in(v, 1, 500)? as usize;
            Ok(())
        });
        apply("LMP_LEAK_SIGNAL", &mut |v| {
            c.leak.judge_python_heap = match v {
                "resident" => false,
                "heap" => true,
                _ => return Err("expected resident or heap".to_string()),
            };
            Ok(())
        });
        apply("LMP_HEADROOM", &mut |v| {
            c.rightsize.headroom = parse_float_in(v, 0.0, 10.0)?;
            Ok(())
        });
        apply("LMP_PRICE_PER_GB_SECOND", &mut |v| {
            c.rightsize.price_per_gb_second = parse_float_in(v, 0.0, 1.0)?;
            Ok(())
        });
        (c, warnings)
    }
}

/// The default of one variable, spelled as the variable takes it (for the warning about a bad
/// value: a user reading the log learns what the function runs with).
fn default_text(var: &str) -> String {
    let d = Config::default();
    match var {
        "LMP_DISABLE" => d.disabled.to_string(),
        "LMP_NAMESPACE" => d.namespace,
        "LMP_SINK" => "cloudwatch".into(),
        "LMP_FLUSH" => "adaptive".into(),
        "LMP_INTAKE_PORT" => d.intake_port.to_string(),
        "LMP_DIMENSIONS" => "FunctionName".into(),
        "LMP_MAX_PENDING" => d.max_pending.to_string(),
        "LMP_PENDING_TIMEOUT_MS" => d.pending_timeout.as_millis().to_string(),
        "LMP_BUFFER_MAX" => d.buffer_max.to_string(),
        "LMP_TELEMETRY_TIMEOUT_MS" => d.telemetry_timeout_ms.to_string(),
        "LMP_STORAGE_RESOLUTION" => d.storage_resolution.seconds().to_string(),
        "LMP_SHUTDOWN_MARGIN_MS" => d.shutdown_margin.as_millis().to_string(),
        "LMP_END_FLUSH_BUDGET_MS" => d.end_flush_budget.as_millis().to_string(),
        "LMP_LOG_LEVEL" => d.log_level.to_string().to_ascii_lowercase(),
        "LMP_LEAK_WINDOW" => d.leak.window.to_string(),
        "LMP_LEAK_WARMUP" => d.leak.warmup.to_string(),
        "LMP_LEAK_MIN_POINTS" => d.leak.min_points.to_string(),
        "LMP_LEAK_MIN_HEAP_BYTES" => d.leak.min_growth_bytes.to_string(),
        "LMP_LEAK_MAX_P" => d.leak.max_p_value.to_string(),
        "LMP_LEAK_CONFIRM" => d.leak.confirm.to_string(),
        "LMP_LEAK_SIGNAL" => if d.leak.judge_python_heap {
            "heap"
        } else {
            "resident"
        }
        .into(),
        "LMP_HEADROOM" => d.rightsize.headroom.to_string(),
        "LMP_PRICE_PER_GB_SECOND" => d.rightsize.price_per_gb_second.to_string(),
        _ => "(none)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn empty_environment_gives_defaults() {
        let (c, w) = parse(&[]);
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
    }

    #[test]
    fn every_setting_is_read() {
        let (c, w) = parse(&[
            ("LMP_NAMESPACE", "Team/Mem"),
            ("LMP_SINK", "EMF"),
            ("LMP_FLUSH", "periodic:15"),
            ("LMP_INTAKE_PORT", "5000"),
            ("LMP_DIMENSIONS", "FunctionName, FunctionVersion"),
            ("LMP_MAX_PENDING", "8"),
            ("LMP_PENDING_TIMEOUT_MS", "500"),
            ("LMP_BUFFER_MAX", "2000"),
            ("LMP_TELEMETRY_TIMEOUT_MS", "25"),
            ("LMP_STORAGE_RESOLUTION", "1"),
            ("LMP_SHUTDOWN_MARGIN_MS", "150"),
            ("LMP_END_FLUSH_BUDGET_MS", "250"),
            ("LMP_LOG_LEVEL", "debug"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.namespace, "Team/Mem");
        assert_eq!(c.sink, SinkKind::Emf);
        assert_eq!(c.flush, FlushMode::Periodic(Duration::from_secs(15)));
        assert_eq!(c.intake_port, 5000);
        assert!(c.dimensions.function_version);
        assert_eq!(c.max_pending, 8);
        assert_eq!(c.pending_timeout, Duration::from_millis(500));
        assert_eq!(c.buffer_max, 2000);
        assert_eq!(c.telemetry_timeout_ms, 25);
        assert_eq!(c.storage_resolution, StorageResolution::High);
        assert_eq!(c.shutdown_margin, Duration::from_millis(150));
        assert_eq!(c.end_flush_budget, Duration::from_millis(250));
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert_eq!(parse(&[("LMP_FLUSH", "end")]).0.flush, FlushMode::End);
    }

    #[test]
    fn analysis_settings_are_read() {
        let (c, w) = parse(&[
            ("LMP_LEAK_WINDOW", "60"),
            ("LMP_LEAK_MIN_HEAP_BYTES", "2048"),
            ("LMP_HEADROOM", "0.5"),
            ("LMP_PRICE_PER_GB_SECOND", "0.0000133334"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.leak.window, 60);
        assert_eq!(c.leak.min_growth_bytes, 2048.0);
        assert_eq!(c.rightsize.headroom, 0.5);
        assert_eq!(c.rightsize.price_per_gb_second, 0.000_013_333_4);
    }

    #[test]
    fn bad_values_warn_with_reason_and_keep_defaults() {
        let (c, w) = parse(&[
            ("LMP_SINK", "kafka"),
            ("LMP_FLUSH", "periodic:0"),
            ("LMP_INTAKE_PORT", "70000"),
            ("LMP_DIMENSIONS", "FunctionVersion"),
            ("LMP_MAX_PENDING", "-3"),
            ("LMP_TELEMETRY_TIMEOUT_MS", "5"),
            ("LMP_STORAGE_RESOLUTION", "10"),
            ("LMP_LOG_LEVEL", "loud"),
            ("LMP_NAMESPACE", ":bad"),
            ("LMP_LEAK_WINDOW", "2"),
            ("LMP_HEADROOM", "NaN"),
            ("LMP_LEAK_MAX_P", "0.9"),
            ("LMP_DISABLE", "maybe"),
        ]);
        assert_eq!(c, Config::default());
        let vars: Vec<&str> = w.iter().map(|w| w.var).collect();
        assert_eq!(vars.len(), 13, "{w:?}");
        for v in [
            "LMP_SINK",
            "LMP_FLUSH",
            "LMP_INTAKE_PORT",
            "LMP_DIMENSIONS",
            "LMP_MAX_PENDING",
            "LMP_TELEMETRY_TIMEOUT_MS",
            "LMP_STORAGE_RESOLUTION",
            "LMP_LOG_LEVEL",
            "LMP_NAMESPACE",
        ] {
            assert!(vars.contains(&v), "no warning for {v}");
        }
        let port = w.iter().find(|w| w.var == "LMP_INTAKE_PORT").unwrap();
        assert!(port.to_string().contains("out of range"), "{port}");
        assert!(
            port.to_string().ends_with("using the default 4243"),
            "{port}"
        );
    }

    #[test]
    fn the_default_a_warning_names_is_the_default_in_use() {
        // Every variable, given a value no parser takes: the default each warning names, set
        // as the variable, is taken without a warning and gives the default configuration.
        let vars = [
            "LMP_DISABLE",
            "LMP_NAMESPACE",
            "LMP_SINK",
            "LMP_FLUSH",
            "LMP_INTAKE_PORT",
            "LMP_DIMENSIONS",
            "LMP_MAX_PENDING",
            "LMP_PENDING_TIMEOUT_MS",
            "LMP_BUFFER_MAX",
            "LMP_TELEMETRY_TIMEOUT_MS",
            "LMP_STORAGE_RESOLUTION",
            "LMP_SHUTDOWN_MARGIN_MS",
            "LMP_END_FLUSH_BUDGET_MS",
            "LMP_LOG_LEVEL",
            "LMP_LEAK_WINDOW",
            "LMP_LEAK_WARMUP",
            "LMP_LEAK_MIN_POINTS",
            "LMP_LEAK_MIN_HEAP_BYTES",
            "LMP_LEAK_MAX_P",
            "LMP_LEAK_CONFIRM",
            "LMP_LEAK_SIGNAL",
            "LMP_HEADROOM",
            "LMP_PRICE_PER_GB_SECOND",
        ];
        let bad: Vec<(&str, &str)> = vars.iter().map(|v| (*v, ":\u{e9}-not-a-value")).collect();
        let (_, warnings) = parse(&bad);
        assert_eq!(warnings.len(), vars.len(), "{warnings:?}");
        let defaults: Vec<(&str, &str)> = warnings
            .iter()
            .map(|w| (w.var, w.default.as_str()))
            .collect();
        let (c, again) = parse(&defaults);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn disable_takes_the_decorators_booleans() {
        for (v, want) in [
            ("true", true),
            ("1", true),
            ("on", true),
            ("False", false),
            ("no", false),
        ] {
            let (c, w) = parse(&[("LMP_DISABLE", v)]);
            assert_eq!((c.disabled, w.len()), (want, 0), "{v}");
        }
    }

    #[test]
    fn lambdas_own_variables_are_read_through_the_config() {
        let (c, w) = parse(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
        ]);
        assert!(w.is_empty());
        assert_eq!(c.lambda.runtime_api.as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(c.lambda.function_name.as_deref(), Some("orders"));
        assert_eq!(c.lambda.memory_mb, Some(512));
        let (blank, _) = parse(&[
            ("AWS_LAMBDA_FUNCTION_NAME", " "),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "x"),
        ]);
        assert_eq!(blank.lambda, LambdaEnv::default());
    }

    #[test]
    fn blank_values_are_unset() {
        let (c, w) = parse(&[("LMP_SINK", "  ")]);
        assert_eq!(c.sink, SinkKind::CloudWatch);
        assert!(w.is_empty());
    }
}
