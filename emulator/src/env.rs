//! The lifecycle driver: init, invoke and shutdown of one execution environment.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;

use crate::clock;
use crate::process;
use crate::state::{
    invoke_event, trace_id, Current, ExtState, Phase, RuntimeState, SharedRef, State,
};
use crate::types::duration_ms;
use crate::{
    EmulatorError, ExitInfo, ExtensionStats, InitInfo, InvokeOutcome, InvokeStatus, OutputSource,
    ShutdownReason,
};

const MIB: u64 = 1024 * 1024;
/// Share of the shutdown budget the runtime gets after SIGTERM before SIGKILL (Lambda: 300 ms).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(300);

/// Waits until `check` returns `Some`, re-checking on every state change; `None` at `deadline`.
pub async fn wait_for<T>(
    shared: &SharedRef,
    deadline: Option<tokio::time::Instant>,
    mut check: impl FnMut(&State) -> Option<T>,
) -> Option<T> {
    let mut rx = shared.watcher();
    loop {
        if let Some(v) = check(&shared.lock()) {
            return Some(v);
        }
        let changed = rx.changed();
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, changed).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => return check(&shared.lock()),
            },
            None => {
                if changed.await.is_err() {
                    return None;
                }
            }
        }
    }
}

fn tokio_deadline(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}

/// Environment variables every process of the environment gets.
fn common_env(shared: &SharedRef, addr: &str) -> Vec<(String, String)> {
    let c = &shared.config;
    let now = clock::iso8601(SystemTime::now());
    let stream = format!(
        "{}/{}/{}/[$LATEST]{}",
        &now[0..4],
        &now[5..7],
        &now[8..10],
        uuid::Uuid::new_v4().simple()
    );
    let mut env: Vec<(String, String)> = c
        .env
        .iter()
        .filter(|(k, _)| !is_reserved(k))
        .cloned()
        .collect();
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", c.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", c.memory_mb.to_string()),
            ("AWS_REGION", c.region.clone()),
            ("AWS_DEFAULT_REGION", c.region.clone()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", c.function_name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// Variables Lambda sets itself; the function's configuration cannot override them.
fn is_reserved(key: &str) -> bool {
    matches!(
        key,
        "AWS_LAMBDA_RUNTIME_API"
            | "AWS_LAMBDA_FUNCTION_NAME"
            | "AWS_LAMBDA_FUNCTION_VERSION"
            | "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
            | "AWS_REGION"
            | "AWS_DEFAULT_REGION"
            | "AWS_LAMBDA_LOG_GROUP_NAME"
            | "AWS_LAMBDA_LOG_STREAM_NAME"
            | "LAMBDA_TASK_ROOT"
            | "_HANDLER"
    )
}

fn exit_fields(status: std::io::Result<std::process::ExitStatus>) -> (Option<i32>, Option<i32>) {
    match status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (None, None),
    }
}

/// Reads lines of one output stream: keeps them and emits `function` / `extension` records.
fn pump_output<R: AsyncRead + Unpin + Send + 'static>(
    shared: &SharedRef,
    reader: R,
    source: OutputSource,
) {
    let shared = shared.clone();
    shared.lock().open_pipes += 1;
    tokio::spawn(async move {
        pump_lines(&shared, reader, &source).await;
        shared.lock().open_pipes -= 1;
        shared.bump();
    });
}

async fn pump_lines<R: AsyncRead + Unpin>(shared: &SharedRef, reader: R, source: &OutputSource) {
    let (event_type, prefix) = match source {
        OutputSource::Runtime => ("function", "runtime".to_string()),
        OutputSource::Extension(n) => ("extension", n.clone()),
    };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if shared.config.echo_output {
            eprintln!("[{prefix}] {line}");
        }
        // JSON-object lines are delivered as objects, like Lambda does for JSON logs.
        let record = match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::String(line.clone()),
        };
        let mut st = shared.lock();
        st.output.entry(source.clone()).or_default().push(line);
        st.emit(event_type, record);
    }
}

/// Takes the child's pipes, then waits for it and records how it ended.
fn watch_child(shared: &SharedRef, mut child: Child, source: OutputSource, ext_id: Option<String>) {
    if let Some(out) = child.stdout.take() {
        pump_output(shared, out, source.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump_output(shared, err, source);
    }
    let pid = child.id().unwrap_or(0);
    let shared = shared.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let (code, signal) = exit_fields(status);
        let now = Instant::now();
        {
            let mut st = shared.lock();
            let started = st.shutdown_started;
            let fill = |exit: &mut ExitInfo| {
                exit.exited = true;
                exit.code = code;
                exit.signal = signal;
                exit.exited_before_shutdown = started.is_none();
                exit.exit_after_shutdown = started.map(|s| now.saturating_duration_since(s));
            };
            match &ext_id {
                Some(id) => {
                    if let Some(ext) = st.ext_by_id(id) {
                        fill(&mut ext.stats.exit);
                        ext.exited_at = Some(now);
                        ext.subscriber = None;
                        if ext.stats.exit.exited_before_shutdown {
                            tracing::warn!(extension = %ext.stats.name, ?code, ?signal, "extension exited before SHUTDOWN");
                        }
                    }
                }
                None => {
                    if st.runtime.pid == Some(pid) {
                        let mut exit = ExitInfo::default();
                        fill(&mut exit);
                        st.runtime.exit = Some(exit);
                    }
                }
            }
        }
        shared.bump();
    });
}

/// Executables to start as extensions: the extensions dir, then each layer's `extensions/`.
fn extension_paths(shared: &SharedRef) -> Result<Vec<PathBuf>, EmulatorError> {
    let c = &shared.config;
    let mut paths = Vec::new();
    if let Some(dir) = &c.extensions_dir {
        paths.extend(process::executables_in(dir)?);
    }
    for layer in &c.layer_dirs {
        let dir = layer.join("extensions");
        if dir.is_dir() {
            paths.extend(process::executables_in(&dir)?);
        }
    }
    Ok(paths)
}

/// Runs one init phase. On failure the environment is reset before returning.
pub async fn init(shared: &SharedRef, addr: &str) -> Result<InitInfo, EmulatorError> {
    let t0 = Instant::now();
    let c = &shared.config;
    let deadline = tokio_deadline(t0 + c.init_timeout);
    let generation = {
        let mut st = shared.lock();
        st.generation += 1;
        st.phase = Phase::Init;
        st.hwm_bytes = 0;
        st.runtime = RuntimeState::default();
        st.shutdown_started = None;
        st.current = None;
        st.runtime_pending = None;
        st.init_telemetry_start = st.telemetry.len();
        st.emit(
            "platform.initStart",
            json!({
                "initializationType": "on-demand",
                "phase": "init",
                "functionName": c.function_name,
                "functionVersion": "$LATEST",
            }),
        );
        st.generation
    };
    let env = common_env(shared, addr);
    let spawned = spawn_extensions(shared, &env, generation);
    let result = match spawned {
        Err(e) => Err(e),
        Ok(()) => Ok(init_wait(shared, &env, deadline).await),
    };
    let error_type = match result {
        Ok(r) => r,
        Err(e) => {
            shutdown_env(shared, ShutdownReason::Failure).await;
            return Err(e);
        }
    };
    let duration = t0.elapsed();
    // Function errors (import failure, raised in init) are "error"; platform problems "failure".
    let status = match &error_type {
        None => "success",
        Some(t)
            if t.starts_with("Runtime.")
                && t != "Runtime.ExitError"
                && t != "Runtime.OutOfMemory" =>
        {
            "error"
        }
        Some(_) => "failure",
    };
    let info = InitInfo {
        generation,
        status: status.to_string(),
        error_type: error_type.clone(),
        duration,
    };
    {
        let mut st = shared.lock();
        let mut done =
            json!({"initializationType": "on-demand", "phase": "init", "status": status});
        let mut report = json!({
            "initializationType": "on-demand",
            "phase": "init",
            "status": status,
            "metrics": {"durationMs": duration_ms(duration)},
        });
        if let Some(t) = &error_type {
            done["errorType"] = json!(t);
            report["errorType"] = json!(t);
        }
        st.emit("platform.initRuntimeDone", done);
        st.emit("platform.initReport", report);
        st.last_init = Some(info.clone());
        if error_type.is_none() {
            st.phase = Phase::Ready;
            st.pending_init = Some(duration);
        }
    }
    shared.bump();
    if error_type.is_some() {
        shutdown_env(shared, ShutdownReason::Failure).await;
    }
    Ok(info)
}

fn spawn_extensions(
    shared: &SharedRef,
    env: &[(String, String)],
    generation: u32,
) -> Result<(), EmulatorError> {
    for path in extension_paths(shared)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let argv = vec![path.to_string_lossy().into_owned()];
        let spawned_at = Instant::now();
        let child = process::spawn(&format!("extension {name}"), &argv, None, env)?;
        let pid = child.id().unwrap_or(0);
        let id = uuid::Uuid::new_v4().to_string();
        shared.lock().extensions.push(ExtState {
            stats: ExtensionStats {
                name: name.clone(),
                pid,
                generation,
                ..ExtensionStats::default()
            },
            id: id.clone(),
            spawned_at,
            registered: false,
            first_next_done: false,
            queue: Default::default(),
            last_invoke: None,
            done_invoke: None,
            subscriber: None,
            exited_at: None,
        });
        watch_child(shared, child, OutputSource::Extension(name), Some(id));
    }
    Ok(())
}

/// Waits for extensions, starts the runtime, waits for it. Returns the init error type, if any.
async fn init_wait(
    shared: &SharedRef,
    env: &[(String, String)],
    deadline: tokio::time::Instant,
) -> Option<String> {
    let ext_error = |st: &State| -> Option<String> {
        if let Some(e) = st
            .extensions
            .iter()
            .find(|e| e.stats.reported_error.is_some())
        {
            return e.stats.reported_error.clone();
        }
        st.crashed_extension()
            .map(|_| "Extension.Crash".to_string())
    };
    let exts_ready = wait_for(shared, Some(deadline), |st| {
        if let Some(e) = ext_error(st) {
            return Some(Some(e));
        }
        st.extensions
            .iter()
            .all(|e| e.registered && e.first_next_done)
            .then_some(None)
    })
    .await;
    match exts_ready {
        None => return Some("Sandbox.Timedout".to_string()),
        Some(Some(e)) => return Some(e),
        Some(None) => {}
    }
    let c = &shared.config;
    let mut renv = env.to_vec();
    let mut pythonpath: Vec<String> = c
        .layer_dirs
        .iter()
        .map(|l| l.join("python").to_string_lossy().into_owned())
        .collect();
    pythonpath.push(c.function_dir.to_string_lossy().into_owned());
    if let Some((_, user)) = c.env.iter().find(|(k, _)| k == "PYTHONPATH") {
        pythonpath.push(user.clone());
        renv.retain(|(k, _)| k != "PYTHONPATH");
    }
    renv.push(("PYTHONPATH".into(), pythonpath.join(":")));
    renv.push((
        "LAMBDA_TASK_ROOT".into(),
        c.function_dir.to_string_lossy().into_owned(),
    ));
    renv.push(("_HANDLER".into(), c.handler.clone()));
    let child = match process::spawn("runtime", &c.runtime_argv(), Some(&c.function_dir), &renv) {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return Some("Runtime.InvalidEntrypoint".to_string());
        }
    };
    {
        let mut st = shared.lock();
        st.runtime.pid = child.id();
        st.runtime.spawned_at = Some(Instant::now());
    }
    watch_child(shared, child, OutputSource::Runtime, None);
    let outcome = wait_for(shared, Some(deadline), |st| {
        if let Some(e) = &st.runtime.init_error {
            return Some(Some(e.clone()));
        }
        if st.runtime.oom_killed {
            return Some(Some("Runtime.OutOfMemory".to_string()));
        }
        if st.runtime.exit.is_some() {
            return Some(Some("Runtime.ExitError".to_string()));
        }
        if let Some(e) = ext_error(st) {
            return Some(Some(e));
        }
        st.runtime.ready.then_some(None)
    })
    .await;
    outcome.unwrap_or_else(|| Some("Sandbox.Timedout".to_string()))
}

enum RuntimeEnd {
    Response(Vec<u8>),
    Error(String, Vec<u8>),
    OutOfMemory,
    ExitError,
    ExtensionCrash,
    Timeout,
}

/// Runs one invocation on a ready environment (initialising it first if needed).
pub async fn invoke(
    shared: &SharedRef,
    addr: &str,
    event: Value,
) -> Result<InvokeOutcome, EmulatorError> {
    let body = serde_json::to_vec(&event)?;
    let c = &shared.config;
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
        init_error = info.error_type.map(|t| (t, info.duration));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let t0 = Instant::now();
    let deadline = t0 + c.timeout;
    let deadline_ms = clock::epoch_ms(SystemTime::now()) + c.timeout.as_millis() as u64;
    let started_iso = clock::iso8601(SystemTime::now());
    let cold_start;
    {
        let mut st = shared.lock();
        cold_start = st.pending_init.is_some() || init_error.is_some();
        st.emit(
            "platform.start",
            json!({"requestId": request_id, "version": "$LATEST"}),
        );
        if init_error.is_none() {
            let ev = invoke_event(&request_id, deadline_ms, &shared.function_arn());
            for ext in st
                .extensions
                .iter_mut()
                .filter(|e| e.alive() && e.wants("INVOKE"))
            {
                ext.queue.push_back(ev.clone());
            }
            st.current = Some(Current {
                request_id: request_id.clone(),
                response: None,
                error: None,
                responded_at: None,
            });
            st.runtime_pending = Some((request_id.clone(), deadline_ms, body));
        }
    }
    shared.bump();

    let end = match &init_error {
        Some((t, _)) if t == "Runtime.OutOfMemory" => RuntimeEnd::OutOfMemory,
        Some((t, _)) if t == "Extension.Crash" => RuntimeEnd::ExtensionCrash,
        Some(_) => RuntimeEnd::ExitError,
        None => wait_for(shared, Some(tokio_deadline(deadline)), |st| {
            let cur = st.current.as_ref()?;
            if let Some(r) = &cur.response {
                return Some(RuntimeEnd::Response(r.clone()));
            }
            if let Some((t, b)) = &cur.error {
                return Some(RuntimeEnd::Error(t.clone(), b.clone()));
            }
            if st.runtime.oom_killed {
                return Some(RuntimeEnd::OutOfMemory);
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
    if matches!(end, RuntimeEnd::Timeout) {
        if let Some(pid) = shared.lock().runtime.pid {
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
    let produced = response.as_ref().map(|b| b.len()).unwrap_or(0);
    let mut runtime_done = json!({
        "requestId": request_id,
        "status": status.as_str(),
        "metrics": {"durationMs": duration_ms(runtime_duration), "producedBytes": produced},
        "spans": [{"name": "responseLatency", "start": started_iso, "durationMs": duration_ms(runtime_duration)}],
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id(&request_id)},
    });
    if let Some(t) = &error_type {
        runtime_done["errorType"] = json!(t);
    }
    shared.emit("platform.runtimeDone", runtime_done.clone());

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
        st.current = None;
        st.runtime_pending = None;
        max_mb = st.hwm_bytes.div_ceil(MIB).min(u64::from(c.memory_mb));
        let init_ms = match &init_error {
            Some((_, d)) => Some(*d),
            None => st.pending_init.take(),
        };
        let mut metrics = json!({
            "durationMs": duration_ms(duration),
            "billedDurationMs": (duration.as_micros() as u64).div_ceil(1000),
            "memorySizeMB": c.memory_mb,
            "maxMemoryUsedMB": max_mb,
        });
        if let Some(d) = init_ms {
            metrics["initDurationMs"] = json!(duration_ms(d));
        }
        let mut r = json!({
            "requestId": request_id,
            "status": status.as_str(),
            "metrics": metrics,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace_id(&request_id)},
        });
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
    if reset {
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

fn parse_body(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
}

/// SHUTDOWN protocol; ends with no process left and the phase `Empty`.
/// Returns the extensions' stats, the runtime's exit, and how long it took.
pub async fn shutdown_env(
    shared: &SharedRef,
    reason: ShutdownReason,
) -> (Vec<ExtensionStats>, Option<ExitInfo>, Duration) {
    let t0 = Instant::now();
    let budget = shared.config.shutdown_timeout;
    let deadline = t0 + budget;
    let deadline_ms = clock::epoch_ms(SystemTime::now()) + budget.as_millis() as u64;
    let flushes: Vec<_> = {
        let mut st = shared.lock();
        if st.phase == Phase::Empty {
            return (Vec::new(), None, Duration::ZERO);
        }
        st.phase = Phase::ShuttingDown;
        st.shutdown_started = Some(t0);
        st.runtime_pending = None;
        st.extensions
            .iter()
            .filter_map(|e| e.subscriber.as_ref())
            .filter_map(|tx| {
                let (o, r) = tokio::sync::oneshot::channel();
                tx.send(crate::telemetry::Msg::Flush(o)).ok().map(|_| r)
            })
            .collect()
    };
    // Deliver buffered telemetry (the last platform.report) before extensions are told to stop.
    let flush_deadline = tokio_deadline(t0 + budget / 2);
    for f in flushes {
        let _ = tokio::time::timeout_at(flush_deadline, f).await;
    }
    let runtime_pid = {
        let mut st = shared.lock();
        let ev = json!({"eventType": "SHUTDOWN", "shutdownReason": reason.as_str(), "deadlineMs": deadline_ms});
        for ext in st
            .extensions
            .iter_mut()
            .filter(|e| e.alive() && e.wants("SHUTDOWN"))
        {
            ext.queue.push_back(ev.clone());
        }
        st.runtime.pid.filter(|_| st.runtime.exit.is_none())
    };
    shared.bump();
    if let Some(pid) = runtime_pid {
        process::signal(pid, libc::SIGTERM);
        let gone = wait_for(
            shared,
            Some(tokio_deadline(Instant::now() + RUNTIME_SHUTDOWN)),
            |st| st.runtime.exit.is_some().then_some(()),
        )
        .await;
        if gone.is_none() {
            process::signal(pid, libc::SIGKILL);
        }
    }
    // Extensions that did not register for SHUTDOWN are never told: stop them now.
    for pid in alive_pids(shared, |e| !e.wants("SHUTDOWN")) {
        process::signal(pid, libc::SIGKILL);
    }
    wait_for(shared, Some(tokio_deadline(deadline)), |st| {
        st.extensions.iter().all(|e| !e.alive()).then_some(())
    })
    .await;
    {
        let mut st = shared.lock();
        for ext in st.extensions.iter_mut().filter(|e| e.alive()) {
            ext.stats.exit.killed_at_deadline = true;
            tracing::warn!(extension = %ext.stats.name, "extension still running at the shutdown deadline: SIGKILL");
            process::signal(ext.stats.pid, libc::SIGKILL);
        }
        if let (Some(pid), None) = (st.runtime.pid, &st.runtime.exit) {
            process::signal(pid, libc::SIGKILL);
        }
    }
    // Reap: the exit watchers record the final status.
    wait_for(
        shared,
        Some(tokio_deadline(Instant::now() + Duration::from_secs(5))),
        |st| {
            (st.extensions.iter().all(|e| !e.alive())
                && (st.runtime.pid.is_none() || st.runtime.exit.is_some()))
            .then_some(())
        },
    )
    .await;
    // What a process printed just before exiting (e.g. a final flush) is still in its pipe.
    wait_for(
        shared,
        Some(tokio_deadline(Instant::now() + Duration::from_secs(1))),
        |st| (st.open_pipes == 0).then_some(()),
    )
    .await;
    let duration = t0.elapsed();
    let mut st = shared.lock();
    let exts: Vec<ExtState> = std::mem::take(&mut st.extensions);
    let stats: Vec<ExtensionStats> = exts.into_iter().map(|e| e.stats).collect();
    st.archived.extend(stats.iter().cloned());
    let runtime_exit = st.runtime.exit.clone();
    st.phase = Phase::Empty;
    st.current = None;
    st.pending_init = None;
    drop(st);
    shared.bump();
    (stats, runtime_exit, duration)
}

fn alive_pids(shared: &SharedRef, filter: impl Fn(&ExtState) -> bool) -> Vec<u32> {
    shared
        .lock()
        .extensions
        .iter()
        .filter(|e| e.alive() && filter(e))
        .map(|e| e.stats.pid)
        .collect()
}

/// Samples memory every interval; kills the runtime when the sum exceeds the memory size.
pub async fn sampler(shared: SharedRef) {
    let limit = u64::from(shared.config.memory_mb) * MIB;
    let mut tick = tokio::time::interval(shared.config.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let phase = {
            let st = shared.lock();
            if st.closed {
                return;
            }
            st.phase
        };
        if phase == Phase::Empty {
            continue;
        }
        let total = shared.sample_memory();
        if total > limit && matches!(phase, Phase::Init | Phase::Ready) {
            let pid = {
                let mut st = shared.lock();
                match (st.runtime.pid, &st.runtime.exit, st.runtime.oom_killed) {
                    (Some(pid), None, false) => {
                        st.runtime.oom_killed = true;
                        Some(pid)
                    }
                    _ => None,
                }
            };
            if let Some(pid) = pid {
                tracing::warn!(
                    total_mb = total / MIB,
                    limit_mb = limit / MIB,
                    "memory limit exceeded: killing the runtime"
                );
                process::signal(pid, libc::SIGKILL);
                shared.bump();
            }
        }
    }
}
