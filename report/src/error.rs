//! The report's errors: each says what is wrong and what to do about it.

use thiserror::Error;

/// Why a report could not be made; the message says what to do, and the command exits 1.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The default credential chain yielded none; holds the chain's error and its causes.
    #[error(
        "no AWS credentials found ({0}). The report uses the default credential chain: \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws (including SSO after \
         `aws sso login`), web identity, container or instance credentials"
    )]
    NoCredentials(String),

    /// Neither `--region`, the environment nor the AWS profile names a region.
    #[error("no AWS region: pass --region or set AWS_REGION (or a region in the AWS profile)")]
    NoRegion,

    /// ListMetrics found no metric at all in the namespace, in that region.
    #[error(
        "namespace {namespace:?} has no metrics in {region} (CloudWatch keeps metric names for two \
         weeks after the last datum): is the layer attached and publishing there (LMP_NAMESPACE), \
         or is it another region (--region) or namespace (--namespace)?"
    )]
    NoData {
        /// The namespace searched (`--namespace`).
        namespace: String,
        /// The region searched.
        region: String,
    },

    /// The namespace has metrics, but none with this `FunctionName`.
    #[error(
        "unknown function {function:?}: namespace {namespace:?} has no metrics with \
         FunctionName={function:?}{known}"
    )]
    UnknownFunction {
        /// The `--function` asked for.
        function: String,
        /// The namespace searched, which has other functions' metrics.
        namespace: String,
        /// "; functions seen: a, b" (the namespace's other `FunctionName`s) or empty.
        known: String,
    },

    /// No metric has the dimensions asked for: versioned metrics without `--function-version`,
    /// or none of that version.
    #[error(
        "the metrics of {function:?} carry a FunctionVersion dimension \
         (LMP_DIMENSIONS=FunctionName,FunctionVersion): pass --function-version (seen: {versions})"
    )]
    VersionedMetrics {
        /// The `--function` asked for.
        function: String,
        /// The `FunctionVersion` values its metrics carry, comma-separated.
        versions: String,
    },

    /// The function published no `Duration` datum (no invocation) in the window.
    #[error(
        "function {function:?} published no invocation in the last {since} (namespace \
         {namespace:?}): widen the window (--since 7d)"
    )]
    NoDataInWindow {
        /// The function without invocations.
        function: String,
        /// The namespace read.
        namespace: String,
        /// The `--since` window as humantime writes it (`1day`, `30m`).
        since: String,
    },

    /// An SDK call failed: the endpoint unreachable, access denied, a throttle, a bad request.
    #[error("{operation} failed: {message}")]
    Aws {
        /// The API operation, e.g. `GetMetricData`.
        operation: &'static str,
        /// The service's code and message, or the chain of causes ([`describe`]).
        message: String,
    },

    /// A Logs Insights query failed, was cancelled or outlived the deadline, or (with
    /// `--logs-engine insights`) returned rows without its aggregates.
    #[error("Logs Insights query {name} did not complete: {status}")]
    QueryFailed {
        /// The query's [`crate::queries::Query::name`].
        name: &'static str,
        /// What happened: the query status (`Failed`, `Cancelled`, …) or what was wrong.
        status: String,
    },

    /// The `--chart` file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The `--chart` path.
        path: String,
        /// What the file system said (no such directory, permission denied, …).
        #[source]
        source: std::io::Error,
    },

    /// The report could not be written to stdout (e.g. a closed pipe).
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl ReportError {
    /// An SDK error, with the service's own message when it sent one.
    pub fn aws<E>(operation: &'static str, err: aws_sdk_cloudwatch::error::SdkError<E>) -> Self
    where
        E: aws_sdk_cloudwatch::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        ReportError::Aws {
            operation,
            message: describe(&err),
        }
    }

    /// Whether an error means "this endpoint does not implement the operation".
    pub fn is_unsupported(&self) -> bool {
        match self {
            ReportError::Aws { message, .. } => {
                let m = message.to_ascii_lowercase();
                [
                    "not implemented",
                    "notimplemented",
                    "unknownoperation",
                    "not supported",
                ]
                .iter()
                .any(|k| m.contains(k))
            }
            _ => false,
        }
    }
}

/// The service's code and message, or the chain of causes (connection refused, timeout).
pub fn describe<E>(err: &aws_sdk_cloudwatch::error::SdkError<E>) -> String
where
    E: aws_sdk_cloudwatch::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use std::error::Error as _;
    if let Some(service) = err.as_service_error() {
        let code = service.code().unwrap_or("error");
        return match service.message() {
            Some(m) => format!("{code}: {m}"),
            None => code.to_string(),
        };
    }
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}
