//! The one HTTP server: Runtime API, Extensions API, Telemetry API and Logs API.
//!
//! Header names go out in Lambda's casing (`Lambda-Extension-Identifier`,
//! `Lambda-Runtime-Aws-Request-Id`, ...): HTTP says names are case-insensitive, but clients that
//! compare them exactly work on Lambda and must work here.

mod extension;
mod runtime;
mod subscribe;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::state::SharedRef;
use crate::telemetry::Api;

type Resp = Response<Full<Bytes>>;

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: SharedRef) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(shared, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
}

fn reply(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Resp {
    reply(
        status,
        json!({"errorMessage": message.into(), "errorType": error_type}),
    )
}

/// Adds a header whose value may not be a valid header value (then it is left out).
fn set_header(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn body(req: Request<Incoming>) -> Vec<u8> {
    match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

async fn route(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["2018-06-01", "runtime", "invocation", "next"]) => {
            runtime::next(shared).await
        }
        (
            Method::POST,
            ["2018-06-01", "runtime", "invocation", id, kind @ ("response" | "error")],
        ) => {
            let (id, is_error) = (id.to_string(), *kind == "error");
            runtime::result(shared, req, id, is_error).await
        }
        (Method::GET, ["2018-06-01", "runtime", "restore", "next"]) => {
            runtime::restore_next(shared).await
        }
        (Method::POST, ["2018-06-01", "runtime", "restore", "error"]) => {
            runtime::restore_error(shared, req).await
        }
        (Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            runtime::init_error(shared, req).await
        }
        (Method::POST, ["2020-01-01", "extension", "register"]) => {
            extension::register(shared, req).await
        }
        (Method::GET, ["2020-01-01", "extension", "event", "next"]) => {
            extension::next(shared, req).await
        }
        (Method::POST, ["2020-01-01", "extension", kind @ ("init" | "exit"), "error"]) => {
            let kind = kind.to_string();
            extension::report_error(shared, req, &kind).await
        }
        (Method::PUT, ["2022-07-01", "telemetry"]) => {
            subscribe::subscribe(shared, req, Api::Telemetry).await
        }
        (Method::PUT, ["2020-08-15", "logs"]) => subscribe::subscribe(shared, req, Api::Logs).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no route for {path}"),
        ),
    }
}

fn error_type_of(b: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(b)
        .ok()?
        .get("errorType")?
        .as_str()
        .map(str::to_string)
}
