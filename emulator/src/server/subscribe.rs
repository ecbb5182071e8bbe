//! Subscriptions: `PUT /2022-07-01/telemetry` (Telemetry API) and `PUT /2020-08-15/logs`
//! (Logs API). Accepted between an extension's register and its first `/next`, as on Lambda;
//! an extension subscribed through one API cannot subscribe through the other.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::{body, error, header, Resp};
use crate::records;
use crate::state::SharedRef;
use crate::telemetry::{self, Api, MANAGED_INSTANCES_SCHEMA};

pub(super) async fn subscribe(shared: SharedRef, req: Request<Incoming>, api: Api) -> Resp {
    let id = header(&req, "Lambda-Extension-Identifier").unwrap_or_default();
    let b = body(req).await;
    if shared.config.telemetry_not_supported {
        // What `sam local` answers: accepted (202), and nothing will ever be delivered.
        let mut resp = Response::new(Full::new(Bytes::from_static(
            br#"{"errorType":"Telemetry.NotSupported","errorMessage":"Telemetry API is not supported"}"#,
        )));
        *resp.status_mut() = StatusCode::ACCEPTED;
        return resp;
    }
    let parsed = match api {
        Api::Telemetry => telemetry::parse_subscription(&b),
        Api::Logs => telemetry::parse_logs_subscription(&b),
    };
    let sub = match parsed {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, api.validation_error(), e.0),
    };
    if shared.config.is_managed_instances()
        && api == Api::Telemetry
        && sub.schema != MANAGED_INSTANCES_SCHEMA
    {
        return error(
            StatusCode::BAD_REQUEST,
            api.validation_error(),
            format!(
                "Lambda Managed Instances need schemaVersion {MANAGED_INSTANCES_SCHEMA}, got {}",
                sub.schema
            ),
        );
    }
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
    if let Some(other) = ext
        .subscriber
        .as_ref()
        .map(|s| s.sub.api)
        .filter(|a| *a != api)
    {
        return error(
            StatusCode::BAD_REQUEST,
            api.validation_error(),
            format!(
                "already subscribed through the {}: an extension uses one of the two APIs",
                other.name()
            ),
        );
    }
    let (name, types) = (ext.stats.name.clone(), sub.types.clone());
    st.subscribe(&id, sub);
    let (record_type, body) = match api {
        Api::Telemetry => ("platform.telemetrySubscription", &b"OK"[..]),
        Api::Logs => ("platform.logsSubscription", &b"\"OK\""[..]),
    };
    st.emit(record_type, records::subscription(&name, &types));
    drop(st);
    Response::new(Full::new(Bytes::from_static(body)))
}
