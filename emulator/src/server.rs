//! The one HTTP server: Runtime API, Extensions API and Telemetry API.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::state::{duration_since, trace_id, Phase, SharedRef};
use crate::telemetry;

type Resp = Response<Full<Bytes>>;

/// Accepts connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: SharedRef) {
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
            runtime_next(shared).await
        }
        (
            Method::POST,
            ["2018-06-01", "runtime", "invocation", id, kind @ ("response" | "error")],
        ) => {
            let (id, is_error) = (id.to_string(), *kind == "error");
            runtime_result(shared, req, id, is_error).await
        }
        (Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            let ty = header(&req, "Lambda-Runtime-Function-Error-Type");
            let b = body(req).await;
            let ty = ty
                .or_else(|| error_type_of(&b))
                .unwrap_or_else(|| "Runtime.Unknown".to_string());
            shared.lock().runtime.init_error = Some(ty);
            shared.bump();
            reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
        }
        (Method::POST, ["2020-01-01", "extension", "register"]) => register(shared, req).await,
        (Method::GET, ["2020-01-01", "extension", "event", "next"]) => ext_next(shared, req).await,
        (Method::POST, ["2020-01-01", "extension", kind @ ("init" | "exit"), "error"]) => {
            let kind = kind.to_string();
            ext_error(shared, req, &kind).await
        }
        (Method::PUT, ["2022-07-01", "telemetry"]) => subscribe(shared, req).await,
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

async fn runtime_next(shared: SharedRef) -> Resp {
    let mut rx = shared.watcher();
    let generation = {
        let mut st = shared.lock();
        if !st.runtime.ready {
            st.runtime.ready = true;
        }
        st.generation
    };
    shared.bump();
    loop {
        {
            let mut st = shared.lock();
            if st.closed || st.generation != generation {
                return error(StatusCode::GONE, "Runtime.Reset", "environment was reset");
            }
            if let Some((id, deadline, body)) = st.runtime_pending.take() {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                let h = r.headers_mut();
                let arn = shared.function_arn();
                for (k, v) in [
                    ("content-type", "application/json".to_string()),
                    ("lambda-runtime-aws-request-id", id.clone()),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    ("lambda-runtime-invoked-function-arn", arn),
                    ("lambda-runtime-trace-id", trace_id(&id)),
                ] {
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
                        h.insert(k, v);
                    }
                }
                return r;
            }
        }
        if rx.changed().await.is_err() {
            return error(StatusCode::GONE, "Runtime.Reset", "emulator stopped");
        }
    }
}

async fn runtime_result(
    shared: SharedRef,
    req: Request<Incoming>,
    id: String,
    is_error: bool,
) -> Resp {
    let ty = header(&req, "Lambda-Runtime-Function-Error-Type");
    let b = body(req).await;
    let mut st = shared.lock();
    let Some(cur) = st.current.as_mut().filter(|c| c.request_id == id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            format!("unknown request id {id}"),
        );
    };
    if cur.responded_at.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidStateTransition",
            "already responded",
        );
    }
    cur.responded_at = Some(Instant::now());
    if is_error {
        let ty = ty
            .or_else(|| error_type_of(&b))
            .unwrap_or_else(|| "Unhandled".to_string());
        cur.error = Some((ty, b));
    } else {
        cur.response = Some(b);
    }
    drop(st);
    shared.bump();
    reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
}

async fn register(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let Some(name) = header(&req, "Lambda-Extension-Name") else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Lambda-Extension-Name is required",
        );
    };
    let account = header(&req, "Lambda-Extension-Accept-Feature")
        .is_some_and(|f| f.split(',').any(|x| x.trim() == "accountId"));
    let b = body(req).await;
    let events: Vec<String> = match serde_json::from_slice::<Value>(&b)
        .ok()
        .and_then(|v| v.get("events").cloned())
    {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "body must be {\"events\": [...]}",
            )
        }
    };
    if let Some(bad) = events
        .iter()
        .find(|e| !matches!(e.as_str(), "INVOKE" | "SHUTDOWN"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidEventType",
            format!("unknown event {bad}"),
        );
    }
    let mut st = shared.lock();
    if st.phase != Phase::Init {
        return error(
            StatusCode::FORBIDDEN,
            "Extension.RegistrationClosed",
            "register is only allowed during init",
        );
    }
    let Some(ext) = st
        .extensions
        .iter_mut()
        .find(|e| e.stats.name == name && !e.registered)
    else {
        return error(
            StatusCode::FORBIDDEN,
            "Extension.UnknownExtension",
            format!("no extension executable named {name} (the name must equal the file name)"),
        );
    };
    ext.registered = true;
    ext.stats.events = events;
    ext.stats.spawn_to_register = Some(duration_since(ext.spawned_at));
    let id = ext.id.clone();
    drop(st);
    shared.bump();
    let cfg = &shared.config;
    let mut body = json!({
        "functionName": cfg.function_name,
        "functionVersion": "$LATEST",
        "handler": cfg.handler,
    });
    if account {
        body["accountId"] = json!("000000000000");
    }
    let mut r = reply(StatusCode::OK, body);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
        r.headers_mut().insert("lambda-extension-identifier", v);
    }
    r
}

async fn ext_next(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let Some(id) = header(&req, "Lambda-Extension-Identifier") else {
        return error(
            StatusCode::FORBIDDEN,
            "Extension.MissingExtensionIdentifier",
            "missing Lambda-Extension-Identifier",
        );
    };
    let mut rx = shared.watcher();
    {
        let mut st = shared.lock();
        let responded_at = st.current.as_ref().and_then(|c| c.responded_at);
        let current_id = st.current.as_ref().map(|c| c.request_id.clone());
        let Some(ext) = st.ext_by_id(&id) else {
            return error(
                StatusCode::FORBIDDEN,
                "Extension.UnknownExtensionIdentifier",
                "unknown extension identifier",
            );
        };
        if !ext.registered {
            return error(
                StatusCode::FORBIDDEN,
                "Extension.NotRegistered",
                "register first",
            );
        }
        if !ext.first_next_done {
            ext.first_next_done = true;
            ext.stats.spawn_to_first_next = Some(duration_since(ext.spawned_at));
        }
        if ext.last_invoke.is_some()
            && ext.last_invoke == current_id
            && ext.done_invoke != ext.last_invoke
        {
            ext.done_invoke = ext.last_invoke.clone();
            let post = responded_at.map(duration_since).unwrap_or_default();
            ext.stats.post_runtime.push(post);
        }
    }
    shared.bump();
    loop {
        {
            let mut st = shared.lock();
            let closed = st.closed;
            let Some(ext) = st.ext_by_id(&id) else {
                return error(StatusCode::GONE, "Extension.Reset", "environment was reset");
            };
            if let Some(ev) = ext.queue.pop_front() {
                if ev.get("eventType").and_then(Value::as_str) == Some("INVOKE") {
                    ext.last_invoke = ev
                        .get("requestId")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                let mut r = reply(StatusCode::OK, ev);
                if let Ok(v) =
                    hyper::header::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                {
                    r.headers_mut()
                        .insert("lambda-extension-event-identifier", v);
                }
                return r;
            }
            if closed {
                return error(StatusCode::GONE, "Extension.Reset", "emulator stopped");
            }
        }
        if rx.changed().await.is_err() {
            return error(StatusCode::GONE, "Extension.Reset", "emulator stopped");
        }
    }
}

async fn ext_error(shared: SharedRef, req: Request<Incoming>, kind: &str) -> Resp {
    let id = header(&req, "Lambda-Extension-Identifier").unwrap_or_default();
    let ty = header(&req, "Lambda-Extension-Function-Error-Type");
    let _ = body(req).await;
    let Some(ty) = ty else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "Lambda-Extension-Function-Error-Type is required",
        );
    };
    let mut st = shared.lock();
    let Some(ext) = st.ext_by_id(&id) else {
        return error(
            StatusCode::FORBIDDEN,
            "Extension.UnknownExtensionIdentifier",
            "unknown extension identifier",
        );
    };
    tracing::info!(extension = %ext.stats.name, kind, error_type = %ty, "extension reported an error");
    ext.stats.reported_error = Some(ty);
    drop(st);
    shared.bump();
    reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
}

async fn subscribe(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let id = header(&req, "Lambda-Extension-Identifier").unwrap_or_default();
    let b = body(req).await;
    let sub = match telemetry::parse_subscription(&b) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "ValidationError", e.0),
    };
    let mut st = shared.lock();
    let Some(ext) = st.ext_by_id(&id) else {
        return error(
            StatusCode::FORBIDDEN,
            "Extension.UnknownExtensionIdentifier",
            "unknown extension identifier",
        );
    };
    if ext.first_next_done {
        // Lambda accepts subscriptions during init only: between register and the first /next.
        return error(
            StatusCode::FORBIDDEN,
            "Telemetry.SubscriptionClosed",
            "subscribe between register and the first /next",
        );
    }
    st.subscribe(&id, sub);
    drop(st);
    Response::new(Full::new(Bytes::from_static(b"OK")))
}
