//! One invocation: INVOKE to the runtime and the extensions, wait for the runtime's answer and
//! every extension's next `/next`, emit `platform.runtimeDone` and `platform.report`.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::init::init;
use super::shutdown::shutdown_env;
use super::{tokio_deadline, wait_for, MIB};
use crate::clock;
use crate::process;
use crate::records::{self, RuntimeDone};
use crate::state::{invoke_event, span_id, trace_id, Current, Pending, Phase, SharedRef};
use crate::types::duration_ms;
use crate::{EmulatorError, InvokeOutcome, InvokeStatus, ShutdownReason};

enum RuntimeEnd {
    Response(Vec<u8>),
    Error(String, Vec<u8>),
    OutOfMemory,
    ExitError,
    ExtensionCrash,
    Timeout,
}

/// An init (or SnapStart restore) that failed: its error type, and how long the init took
/// (`None` for a restore, whose duration the report carries as `restoreDurationMs`).
pub(crate) type InitFailure = Option<(String, Option<std::time::Duration>)>;

/// Makes the environment ready for an invocation: resets a broken one and initialises an
/// empty one. Returns the init's failure, which the invocation then reports.
pub(crate) async fn prepare(shared: &SharedRef, addr: &str) -> Result<InitFailure, EmulatorError> {
    let needs_init = {
        let st = shared.lock();
        if st.closed {
            return Err(EmulatorError::ShutDown);
        }
        // A process that died while idle makes the environment unusable: reset it first.
        st.phase != Phase::Ready || st.runtime.exit.is_some() || st.crashed_extension().is_some()
    };
    let mut init_error = None;
    if needs_init {
        if shared.lock().phase != Phase::Empty {
            shutdown_env(shared, ShutdownReason::Failure).await;
        }
        let info = init(shared, addr).await?;
        init_error = info.error_type.map(|t| (t, Some(info.duration)));
    }
    let snapshotted = shared.lock().snapshotted;
    if init_error.is_none() && snapshotted {
        if let Some(t) = super::restore::restore(shared).await {
            init_error = Some((t, None));
        }
    }
    Ok(init_error)
}

/// Runs one invocation on an environment [`prepare`] made ready. On Lambda Managed Instances
/// several run at once: each is its own entry of `in_flight`.
pub(crate) async fn invoke(
    shared: &SharedRef,
    event: Value,
    init_error: InitFailure,
) -> Result<InvokeOutcome, EmulatorError> {
    let body = serde_json::to_vec(&event)?;
    let c = &shared.config;
    if shared.lock().closed {
        return Err(EmulatorError::ShutDown);
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    // One trace header and span per invocation, the same in every event, header and record.
    let trace = trace_id(&request_id);
    let tracing = records::tracing(&trace, &span_id());
    let t0 = Instant::now();
    let started_at = SystemTime::now();
    let deadline = t0 + c.timeout;
    let deadline_ms = clock::epoch_ms(started_at) + c.timeout.as_millis() as u64;
    let cold_start;
    // The environment this invocation runs in: on Managed Instances another invocation may
    // reset it (and a third start a new one) meanwhile.
    let generation;
    {
        let mut st = shared.lock();
        generation = st.generation;
        cold_start =
            st.pending_init.is_some() || st.pending_restore.is_some() || init_error.is_some();
        st.emit("platform.start", records::start(&request_id, &tracing));
        if init_error.is_none() {
            let ev = invoke_event(&request_id, deadline_ms, &shared.function_arn(), &trace);
            for ext in st
                .extensions
                .iter_mut()
                .filter(|e| e.alive() && e.wants("INVOKE"))
            {
                ext.queue.push_back(ev.clone());
            }
            st.in_flight.insert(
                request_id.clone(),
                Current {
                    request_id: request_id.clone(),
                    response: None,
                    error: None,
                    response_started: None,
                    responded_at: None,
                },
            );
            st.runtime_pending.push_back(Pending {
                request_id: request_id.clone(),
                deadline_ms,
                body,
                trace: trace.clone(),
            });
        }
    }
    shared.bump();

    let end = match &init_error {
        Some((t, _)) if t == "Runtime.OutOfMemory" => RuntimeEnd::OutOfMemory,
        Some((t, _)) if t == "Extension.Crash" => RuntimeEnd::ExtensionCrash,
        Some(_) => RuntimeEnd::ExitError,
        None => wait_for(shared, Some(tokio_deadline(deadline)), |st| {
            // Gone: the environment was reset under it (another invocation failed).
            let Some(cur) = st.in_flight.get(&request_id) else {
                return Some(RuntimeEnd::ExitError);
            };
            // Killed at the limit while answering: the answer does not count (the kernel would
            // have killed the process before it was sent).
            if st.runtime.oom_killed {
                return Some(RuntimeEnd::OutOfMemory);
            }
            if let Some(r) = &cur.response {
                return Some(RuntimeEnd::Response(r.clone()));
            }
            if let Some((t, b)) = &cur.error {
                return Some(RuntimeEnd::Error(t.clone(), b.clone()));
            }
            if st.runtime.exit.is_some() {
                return Some(RuntimeEnd::ExitError);
            }
            st.crashed_extension().map(|_| RuntimeEnd::ExtensionCrash)
        })
        .await
        .unwrap_or(RuntimeEnd::Timeout),
    };
    let runtime_duration = t0.elapsed();
    let end = over_limit_at_answer(shared, end);
    if matches!(end, RuntimeEnd::Timeout) {
        let st = shared.lock();
        if let Some(pid) = st.runtime.pid.filter(|_| st.generation == generation) {
            process::signal(pid, libc::SIGKILL);
        }
    }
    let (mut status, mut error_type, response, error_body) = match end {
        RuntimeEnd::Response(b) => (InvokeStatus::Success, None, Some(b), None),
        RuntimeEnd::Error(t, b) => (InvokeStatus::Error, Some(t), None, Some(b)),
        RuntimeEnd::OutOfMemory => (
            InvokeStatus::Error,
            Some("Runtime.OutOfMemory".to_string()),
            None,
            None,
        ),
        RuntimeEnd::ExitError => (
            InvokeStatus::Failure,
            Some(
                init_error
                    .as_ref()
                    .map(|(t, _)| t.clone())
                    .unwrap_or_else(|| "Runtime.ExitError".to_string()),
            ),
            None,
            None,
        ),
        RuntimeEnd::ExtensionCrash => (
            InvokeStatus::Failure,
            Some("Extension.Crash".to_string()),
            None,
            None,
        ),
        RuntimeEnd::Timeout => (InvokeStatus::Timeout, None, None, None),
    };
    let answer_times = {
        let st = shared.lock();
        st.in_flight.get(&request_id).and_then(|cur| {
            let (first_byte, first_byte_wall) = cur.response_started?;
            let done = cur.responded_at?;
            Some((
                first_byte.saturating_duration_since(t0),
                first_byte_wall,
                done.saturating_duration_since(first_byte),
            ))
        })
    };
    let runtime_done = records::runtime_done(&RuntimeDone {
        request_id: &request_id,
        status: status.as_str(),
        error_type: error_type.as_deref(),
        started: started_at,
        duration: runtime_duration,
        response: answer_times,
        produced_bytes: response.as_ref().map(|b| b.len()).unwrap_or(0),
        tracing: &tracing,
    });
    // Lambda Managed Instances have no `platform.runtimeDone`: the report carries the spans.
    if !c.is_managed_instances() {
        shared.emit("platform.runtimeDone", runtime_done.clone());
    }

    // The invocation completes only when every INVOKE extension called /next again.
    if matches!(status, InvokeStatus::Success | InvokeStatus::Error)
        && error_type.as_deref() != Some("Runtime.OutOfMemory")
    {
        let waited = wait_for(shared, Some(tokio_deadline(deadline)), |st| {
            if st.crashed_extension().is_some() {
                return Some(false);
            }
            st.extensions
                .iter()
                .filter(|e| e.wants("INVOKE"))
                .all(|e| e.done_invoke.as_deref() == Some(request_id.as_str()))
                .then_some(true)
        })
        .await;
        match waited {
            Some(true) => {}
            Some(false) => {
                status = InvokeStatus::Failure;
                error_type = Some("Extension.Crash".to_string());
            }
            None => {
                status = InvokeStatus::Timeout;
                error_type = None;
            }
        }
    }
    let duration = t0.elapsed();
    shared.sample_memory();
    let report;
    let max_mb;
    {
        let mut st = shared.lock();
        st.in_flight.remove(&request_id);
        st.runtime_pending.retain(|p| p.request_id != request_id);
        max_mb = st.hwm_bytes.div_ceil(MIB).min(u64::from(c.memory_mb));
        let init_ms = match &init_error {
            Some((_, d)) => *d,
            None => st.pending_init.take(),
        };
        let mut r = if c.is_managed_instances() {
            // Schema 2025-01-29 on Managed Instances: the duration and the spans, and no
            // memory figure (the environment serves many invocations at once).
            json!({
                "requestId": request_id,
                "status": status.as_str(),
                "metrics": {"durationMs": duration_ms(duration)},
                "spans": runtime_done["spans"],
                "tracing": tracing,
            })
        } else {
            let mut metrics = json!({
                "durationMs": duration_ms(duration),
                "billedDurationMs": (duration.as_micros() as u64).div_ceil(1000),
                "memorySizeMB": c.memory_mb,
                "maxMemoryUsedMB": max_mb,
            });
            if let Some(d) = init_ms {
                metrics["initDurationMs"] = json!(duration_ms(d));
            }
            if let Some(d) = st.pending_restore.take() {
                metrics["restoreDurationMs"] = json!(duration_ms(d));
            }
            json!({
                "requestId": request_id,
                "status": status.as_str(),
                "metrics": metrics,
                "tracing": tracing,
            })
        };
        if let Some(t) = &error_type {
            r["errorType"] = json!(t);
        }
        st.emit("platform.report", r.clone());
        report = r;
    }
    // A function error keeps the environment; anything else resets it, like Lambda.
    let reset = init_error.is_some()
        || matches!(status, InvokeStatus::Timeout | InvokeStatus::Failure)
        || error_type.as_deref() == Some("Runtime.OutOfMemory");
    // Only its own environment: one a concurrent invocation already replaced is not reset again.
    if reset && shared.lock().generation == generation {
        let reason = if status == InvokeStatus::Timeout {
            ShutdownReason::Timeout
        } else {
            ShutdownReason::Failure
        };
        shutdown_env(shared, reason).await;
    }
    Ok(InvokeOutcome {
        request_id,
        status,
        response: response.map(|b| parse_body(&b)),
        error_type,
        error_body: error_body.map(|b| parse_body(&b)),
        cold_start,
        report,
        runtime_done,
        max_memory_used_mb: max_mb,
        duration,
        runtime_duration: Some(runtime_duration),
        reset,
    })
}

/// The memory as the runtime answers: a process over the limit then was over it during the
/// invocation, which a cgroup ends with an OOM kill. Between two 10 ms samples a short
/// invocation can grow past the limit and answer; without this check the kill would land while
/// idle, and the next invocation would silently start a new environment instead of failing.
fn over_limit_at_answer(shared: &SharedRef, end: RuntimeEnd) -> RuntimeEnd {
    if !matches!(end, RuntimeEnd::Response(_) | RuntimeEnd::Error(..)) {
        return end;
    }
    let limit = u64::from(shared.config.memory_mb) * MIB;
    let total = shared.sample_memory();
    if total <= limit {
        return end;
    }
    super::sampler::kill_at_limit(shared, total, limit);
    RuntimeEnd::OutOfMemory
}

fn parse_body(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
}
