//! A thin Extensions API / Telemetry API client over hyper (HTTP/1.1, loopback, no TLS).
//!
//! Not the `lambda-extension` crate: its run loop never returns after SHUTDOWN (the process is
//! SIGKILLed instead of flushing) and its telemetry listener rejects unknown record types.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use thiserror::Error;

const EXTENSION_API: &str = "2020-01-01/extension";
const TELEMETRY_API: &str = "2022-07-01/telemetry";
const ID_HEADER: &str = "Lambda-Extension-Identifier";

/// Why a call to the Extensions or Telemetry API failed.
#[derive(Debug, Error)]
pub enum LifecycleError {
    /// The request could not be built (a header the API would not take).
    #[error("request not built")]
    Request(#[source] hyper::http::Error),
    /// The request or its response failed in transit (connection refused, reset, ...).
    #[error("request failed")]
    Http(#[source] hyper_util::client::legacy::Error),
    /// The response body could not be read.
    #[error("response body not read")]
    ReadBody(#[source] hyper::Error),
    /// The API answered with a status other than success.
    #[error("unexpected status {0}: {1}")]
    Status(u16, String),
    /// The body is not the JSON the API documents.
    #[error("bad response")]
    Json(#[source] serde_json::Error),
    /// The body or headers lack what the API documents.
    #[error("bad response: {0}")]
    Body(String),
}

/// What `/register` told us about the function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registration {
    /// `functionName` of the response; empty when the body lacks it.
    pub function_name: String,
    /// `functionVersion` (`$LATEST` or a published number); empty when the body lacks it.
    pub function_version: String,
}

/// An event from `/event/next`.
#[derive(Debug, Clone, PartialEq)]
pub enum NextEvent {
    /// An invocation started.
    Invoke {
        /// `requestId`: the invocation's id, which records and telemetry are joined on.
        request_id: String,
        /// `deadlineMs`: when the invocation times out, ms since the Unix epoch; 0 if absent.
        deadline_ms: u64,
    },
    /// The environment is shutting down: publish and exit before the deadline.
    Shutdown {
        /// `shutdownReason` lower-cased (`spindown`, `timeout`, `failure`); empty if absent.
        reason: String,
        /// `deadlineMs`: when Lambda kills the process, ms since the Unix epoch; 0 if absent.
        deadline_ms: u64,
    },
    /// An event type this extension did not register for.
    Other(String),
}

/// Outcome of the telemetry subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Subscription {
    /// `200`: platform records will be delivered to the listener.
    Active,
    /// `202` (e.g. `Telemetry.NotSupported` under the AWS runtime interface emulator).
    NotSupported(String),
    /// Any other status, with the response body: logged once, decorator data only.
    Refused(u16, String),
}

/// Parses an `/event/next` body. Event types compare case-insensitively.
pub fn parse_next(body: &[u8]) -> Result<NextEvent, LifecycleError> {
    let v: Value = serde_json::from_slice(body).map_err(LifecycleError::Json)?;
    let ty = v
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or_else(|| LifecycleError::Body("no eventType".into()))?;
    let deadline_ms = v
        .get("deadlineMs")
        .and_then(|d| d.as_u64().or_else(|| d.as_f64().map(|f| f as u64)))
        .unwrap_or(0);
    if ty.eq_ignore_ascii_case("INVOKE") {
        let request_id = v
            .get("requestId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(NextEvent::Invoke {
            request_id,
            deadline_ms,
        })
    } else if ty.eq_ignore_ascii_case("SHUTDOWN") {
        let reason = v
            .get("shutdownReason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(NextEvent::Shutdown {
            reason,
            deadline_ms,
        })
    } else {
        Ok(NextEvent::Other(ty.to_string()))
    }
}

/// Telemetry schema of on-demand, provisioned and SnapStart environments.
pub const TELEMETRY_SCHEMA: &str = "2022-12-13";
/// Telemetry schema Lambda Managed Instances require.
pub const MANAGED_INSTANCES_TELEMETRY_SCHEMA: &str = "2025-01-29";

/// The subscribe request body: platform + function records, explicit short buffering.
pub fn subscribe_body(uri: &str, timeout_ms: u32, schema: &str) -> Value {
    json!({
        "schemaVersion": schema,
        "types": ["platform", "function"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": timeout_ms},
        "destination": {"protocol": "HTTP", "URI": uri},
    })
}

/// The lifecycle events an extension registers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// Every invocation and the end: the profiler.
    InvokeAndShutdown,
    /// The end only (`LMP_DISABLE`): Lambda never waits on the extension during invocations.
    ShutdownOnly,
}

/// The client; cheap to clone.
#[derive(Clone)]
pub struct ExtensionClient {
    api: String,
    http: Client<HttpConnector, Full<Bytes>>,
    id: String,
}

impl ExtensionClient {
    /// `api` is `$AWS_LAMBDA_RUNTIME_API` (host:port).
    pub fn new(api: &str) -> Self {
        ExtensionClient {
            api: api.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            id: String::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), LifecycleError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}/{}", self.api, path));
        if !self.id.is_empty() {
            req = req.header(ID_HEADER, &self.id);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(LifecycleError::Request)?;
        let resp = self.http.request(req).await.map_err(LifecycleError::Http)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(LifecycleError::ReadBody)?
            .to_bytes();
        Ok((status, headers, body))
    }

    /// `POST /register` for `events` under `name` (the executable's file name).
    pub async fn register(
        &mut self,
        name: &str,
        events: Events,
    ) -> Result<Registration, LifecycleError> {
        let body = Bytes::from_static(match events {
            Events::InvokeAndShutdown => br#"{"events":["INVOKE","SHUTDOWN"]}"#,
            Events::ShutdownOnly => br#"{"events":["SHUTDOWN"]}"#,
        });
        let (status, headers, body) = self
            .call(
                Method::POST,
                &format!("{EXTENSION_API}/register"),
                &[("Lambda-Extension-Name", name)],
                body,
            )
            .await?;
        if !status.is_success() {
            return Err(LifecycleError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        self.id = headers
            .get(ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| LifecycleError::Body(format!("no {ID_HEADER} header")))?
            .to_string();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(Registration {
            function_name: field("functionName"),
            function_version: field("functionVersion"),
        })
    }

    /// `GET /event/next`: blocks until the next event.
    pub async fn next(&self) -> Result<NextEvent, LifecycleError> {
        let (status, _, body) = self
            .call(
                Method::GET,
                &format!("{EXTENSION_API}/event/next"),
                &[],
                Bytes::new(),
            )
            .await?;
        if !status.is_success() {
            return Err(LifecycleError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        parse_next(&body)
    }

    /// `PUT /telemetry`.
    pub async fn subscribe(
        &self,
        uri: &str,
        timeout_ms: u32,
        schema: &str,
    ) -> Result<Subscription, LifecycleError> {
        let body = Bytes::from(subscribe_body(uri, timeout_ms, schema).to_string());
        let (status, _, body) = self
            .call(
                Method::PUT,
                TELEMETRY_API,
                &[("Content-Type", "application/json")],
                body,
            )
            .await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(match status.as_u16() {
            200 => Subscription::Active,
            202 => Subscription::NotSupported(text),
            s => Subscription::Refused(s, text),
        })
    }

    /// `POST /init/error`: tells Lambda this extension cannot start.
    pub async fn init_error(&self, error_type: &str) -> Result<(), LifecycleError> {
        self.call(
            Method::POST,
            &format!("{EXTENSION_API}/init/error"),
            &[("Lambda-Extension-Function-Error-Type", error_type)],
            Bytes::new(),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invoke_and_shutdown_case_insensitively() {
        let e = parse_next(br#"{"eventType":"INVOKE","deadlineMs":1764000003000,"requestId":"r1","invokedFunctionArn":"arn","tracing":{"type":"X-Amzn-Trace-Id","value":"v"}}"#).unwrap();
        assert_eq!(
            e,
            NextEvent::Invoke {
                request_id: "r1".into(),
                deadline_ms: 1_764_000_003_000
            }
        );
        let s =
            parse_next(br#"{"eventType":"shutdown","shutdownReason":"SPINDOWN","deadlineMs":5}"#)
                .unwrap();
        assert_eq!(
            s,
            NextEvent::Shutdown {
                reason: "spindown".into(),
                deadline_ms: 5
            }
        );
        assert_eq!(
            parse_next(br#"{"eventType":"RESTORE"}"#).unwrap(),
            NextEvent::Other("RESTORE".into())
        );
        assert!(parse_next(b"nope").is_err());
        assert!(parse_next(b"{}").is_err());
    }

    #[test]
    fn subscribe_body_is_explicit() {
        let b = subscribe_body(
            "http://sandbox.localdomain:1234/telemetry",
            50,
            TELEMETRY_SCHEMA,
        );
        assert_eq!(b["schemaVersion"], "2022-12-13");
        let m = subscribe_body("x", 50, MANAGED_INSTANCES_TELEMETRY_SCHEMA);
        assert_eq!(m["schemaVersion"], "2025-01-29");
        assert_eq!(b["types"], json!(["platform", "function"]));
        assert_eq!(b["buffering"]["timeoutMs"], 50);
        assert_eq!(b["buffering"]["maxItems"], 1000);
        assert_eq!(b["buffering"]["maxBytes"], 262144);
        assert_eq!(b["destination"]["protocol"], "HTTP");
    }
}
