//! The two SDK clients, from the default chain (credentials, region) and the command's
//! `--region` / `--endpoint-url`; credentials are checked before any request so that "no
//! credentials" is said as such, not as a signing failure.

use crate::cli::Args;
use crate::error::ReportError;
use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_credential_types::provider::ProvideCredentials;
use std::time::Duration;

/// CloudWatch and CloudWatch Logs clients sharing one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Reads the metrics (ListMetrics, GetMetricData).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Reads the log lines (Logs Insights, FilterLogEvents).
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Region both clients use, as the report's header names it.
    pub region: String,
}

impl Clients {
    /// Clients for already-built configurations (tests with mocked transports).
    pub fn from_parts(
        cloudwatch: aws_sdk_cloudwatch::Client,
        logs: aws_sdk_cloudwatchlogs::Client,
        region: &str,
    ) -> Self {
        Clients {
            cloudwatch,
            logs,
            region: region.to_string(),
        }
    }
}

/// Loads the shared configuration and checks that it has a region and credentials.
pub async fn connect(args: &Args) -> Result<Clients, ReportError> {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &args.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let conf = loader.load().await;
    let region = conf
        .region()
        .map(ToString::to_string)
        .ok_or(ReportError::NoRegion)?;
    let provider = conf
        .credentials_provider()
        .ok_or_else(|| ReportError::NoCredentials("no credential provider".into()))?;
    if let Err(e) = provider.provide_credentials().await {
        return Err(ReportError::NoCredentials(chain(&e)));
    }
    Ok(Clients {
        cloudwatch: aws_sdk_cloudwatch::Client::new(&conf),
        logs: aws_sdk_cloudwatchlogs::Client::new(&conf),
        region,
    })
}

/// An error and its causes, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}
