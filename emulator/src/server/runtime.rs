//! Runtime API (`/2018-06-01/runtime/...`): what the function's runtime calls.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{body, error, error_type_of, header, reply, set_header, Resp};
use crate::state::SharedRef;

/// `GET invocation/next`: the first call ends init (on Lambda Managed Instances, the first of
/// any worker); blocks until an invocation is pending, and takes the oldest.
pub(super) async fn next(shared: SharedRef) -> Resp {
    let mut rx = shared.watcher();
    let generation = {
        let mut st = shared.lock();
        st.runtime.ready = true;
        st.generation
    };
    shared.bump();
    loop {
        {
            let mut st = shared.lock();
            if st.closed || st.generation != generation {
                return error(StatusCode::GONE, "Runtime.Reset", "environment was reset");
            }
            if let Some(p) = st.runtime_pending.pop_front() {
                let mut r = Response::new(Full::new(Bytes::from(p.body)));
                let arn = shared.function_arn();
                set_header(&mut r, "content-type", "application/json");
                set_header(&mut r, "lambda-runtime-aws-request-id", &p.request_id);
                set_header(
                    &mut r,
                    "lambda-runtime-deadline-ms",
                    &p.deadline_ms.to_string(),
                );
                set_header(&mut r, "lambda-runtime-invoked-function-arn", &arn);
                set_header(&mut r, "lambda-runtime-trace-id", &p.trace);
                return r;
            }
        }
        if rx.changed().await.is_err() {
            return error(StatusCode::GONE, "Runtime.Reset", "emulator stopped");
        }
    }
}

/// `POST invocation/{id}/response` or `/error`, answered at once (202).
pub(super) async fn result(
    shared: SharedRef,
    req: Request<Incoming>,
    id: String,
    is_error: bool,
) -> Resp {
    // The headers are here: the answer started (the responseLatency span ends, the
    // responseDuration span starts). Its end is when the body has been read.
    let started = (Instant::now(), SystemTime::now());
    let ty = header(&req, "Lambda-Runtime-Function-Error-Type");
    let b = body(req).await;
    let mut st = shared.lock();
    let Some(cur) = st.in_flight.get_mut(&id) else {
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
    cur.response_started = Some(started);
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

/// `GET restore/next` (SnapStart): the runtime's init is done and its before-snapshot hooks ran:
/// the snapshot point. Answers 200 once the environment is restored from it; then the runtime
/// runs its after-restore hooks and asks for its first event.
pub(super) async fn restore_next(shared: SharedRef) -> Resp {
    if !shared.config.snapstart {
        return error(
            StatusCode::FORBIDDEN,
            "Runtime.InvalidStateTransition",
            "not a SnapStart environment",
        );
    }
    let mut rx = shared.watcher();
    let generation = {
        let mut st = shared.lock();
        st.runtime.at_snapshot = true;
        st.generation
    };
    shared.bump();
    loop {
        {
            let st = shared.lock();
            if st.closed || st.generation != generation {
                return error(StatusCode::GONE, "Runtime.Reset", "environment was reset");
            }
            if st.runtime.restoring {
                return reply(StatusCode::OK, json!({}));
            }
        }
        if rx.changed().await.is_err() {
            return error(StatusCode::GONE, "Runtime.Reset", "emulator stopped");
        }
    }
}

/// `POST restore/error`: the runtime's after-restore hooks failed (202).
pub(super) async fn restore_error(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let ty = reported_error_type(req, "Runtime.AfterRestoreError").await;
    shared.lock().runtime.restore_error = Some(ty);
    shared.bump();
    reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
}

/// `POST init/error`: 202 whatever its content type (the runtime client insists on 202).
pub(super) async fn init_error(shared: SharedRef, req: Request<Incoming>) -> Resp {
    let ty = reported_error_type(req, "Runtime.Unknown").await;
    shared.lock().runtime.init_error = Some(ty);
    shared.bump();
    reply(StatusCode::ACCEPTED, json!({"status": "OK"}))
}

/// The error type a runtime reported: its `Lambda-Runtime-Function-Error-Type` header, else the
/// body's `errorType`, else `default`.
async fn reported_error_type(req: Request<Incoming>, default: &str) -> String {
    let ty = header(&req, "Lambda-Runtime-Function-Error-Type");
    let b = body(req).await;
    ty.or_else(|| error_type_of(&b))
        .unwrap_or_else(|| default.to_string())
}
