//! The report's errors: each says what is wrong and what to do about it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error(
        "no AWS credentials found ({0}). The report uses the default credential chain: \
         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws (including SSO after \
         `aws sso login`), web identity, container or instance credentials"
    )]
    NoCredentials(String),

    #[error("no AWS region: pass --region or set AWS_REGION (or a region in the AWS profile)")]
    NoRegion,

    #[error(
        "namespace {namespace:?} has no metrics in {region} (CloudWatch keeps metric names for two \
         weeks after the last datum): is the layer attached and publishing there (LMP_NAMESPACE), \
         or is it another region (--region) or namespace (--namespace)?"
    )]
    NoData { namespace: String, region: String },

    #[error(
        "unknown function {function:?}: namespace {namespace:?} has no metrics with \
         FunctionName={function:?}{known}"
    )]
    UnknownFunction {
        function: String,
        namespace: String,
        /// ", functions seen: a, b" or empty.
        known: String,
    },

    #[error(
        "the metrics of {function:?} carry a FunctionVersion dimension \
         (LMP_DIMENSIONS=FunctionName,FunctionVersion): pass --function-version (seen: {versions})"
    )]
    VersionedMetrics { function: String, versions: String },

    #[error(
        "function {function:?} published no invocation in the last {since} (namespace \
         {namespace:?}): widen the window (--since 7d)"
    )]
    NoDataInWindow {
        function: String,
        namespace: String,
        since: String,
    },

    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
    },

    #[error("Logs Insights query {name} did not complete: {status}")]
    QueryFailed { name: &'static str, status: String },

    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },

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
