//! Extensions API (`/2020-01-01/extension/...`): register, the `/next` long-poll, errors.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::{body, error, header, reply, set_header, Resp};
use crate::records;
use crate::state::{duration_since, Phase, SharedRef};

/// The `events` of a register body. The reference marks `events` optional: an empty body or an
/// object without `events` registers for no event.
fn registered_events(b: &[u8]) -> Result<Vec<String>, String> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(b).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("the body must be a JSON object".to_string());
    };
    let events: Vec<String> = match obj.get("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "events must be strings".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("events must be an array".to_string()),
    };
    Ok(events)
}

pub(super) async fn register(shared: SharedRef, req: Request<Incoming>) -> Resp {
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
    let events = match registered_events(&b) {
        Ok(e) => e,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "InvalidRequest", msg),
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
    if shared.config.is_managed_instances() && events.iter().any(|e| e == "INVOKE") {
        // Invocations run concurrently there, with no per-invocation freeze: extensions get
        // SHUTDOWN only.
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidEventType",
            "INVOKE is not available on Lambda Managed Instances: register for SHUTDOWN only",
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
    set_header(&mut r, "lambda-extension-identifier", &id);
    r
}

pub(super) async fn next(shared: SharedRef, req: Request<Incoming>) -> Resp {
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
        let last_invoke = st
            .extensions
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| e.last_invoke.clone());
        let current = last_invoke.as_ref().and_then(|r| st.in_flight.get(r));
        let responded_at = current.and_then(|c| c.responded_at);
        let current_id = current.map(|c| c.request_id.clone());
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
        let ready = !ext.first_next_done;
        if ready {
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
        // Lambda reports each extension once it is ready (its first /next).
        let ready_record = ready.then(|| records::extension(&ext.stats.name, &ext.stats.events));
        if let Some(record) = ready_record {
            st.emit("platform.extension", record);
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
                set_header(&mut r, "lambda-extension-identifier", &id);
                let event_id = uuid::Uuid::new_v4().to_string();
                set_header(&mut r, "lambda-extension-event-identifier", &event_id);
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

pub(super) async fn report_error(shared: SharedRef, req: Request<Incoming>, kind: &str) -> Resp {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_optional_but_must_be_strings_when_given() {
        assert_eq!(registered_events(b""), Ok(vec![]));
        assert_eq!(registered_events(b"  \n"), Ok(vec![]));
        assert_eq!(registered_events(b"{}"), Ok(vec![]));
        assert_eq!(registered_events(br#"{"events": null}"#), Ok(vec![]));
        assert_eq!(
            registered_events(br#"{"events": ["INVOKE"]}"#),
            Ok(vec!["INVOKE".to_string()])
        );
        assert!(registered_events(br#"{"events": "INVOKE"}"#).is_err());
        assert!(registered_events(br#"{"events": [1]}"#).is_err());
        assert!(registered_events(b"[]").is_err());
        assert!(registered_events(b"nope").is_err());
    }
}
