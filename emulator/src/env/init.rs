//! The init phase: start the extensions, wait until each registered and called `/next`, start
//! the runtime, wait until it asks for its first event.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::environ::{self, environment, for_extensions, for_runtime};
use super::output::watch_child;
use super::shutdown::shutdown_env;
use super::{tokio_deadline, wait_for};
use crate::process;
use crate::records;
use crate::state::{ExtState, Phase, RuntimeState, SharedRef, State};
use crate::types::duration_ms;
use crate::{EmulatorError, ExtensionStats, InitInfo, OutputSource, ShutdownReason};

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
pub(crate) async fn init(shared: &SharedRef, addr: &str) -> Result<InitInfo, EmulatorError> {
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
        st.in_flight.clear();
        st.runtime_pending.clear();
        st.init_telemetry_start = st.telemetry.len();
        st.emit("platform.initStart", records::init_start(c));
        st.generation
    };
    let env = environment(shared, addr);
    let spawned = spawn_extensions(shared, &for_extensions(&env), generation);
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
        let mut done = json!({"initializationType": shared.config.initialization_type, "phase": "init", "status": status});
        let mut report = json!({
            "initializationType": shared.config.initialization_type,
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
            if shared.config.snapstart {
                // The init ran when the snapshot was taken: a restored copy reports its
                // restore, not the init.
                st.snapshotted = true;
            } else {
                st.pending_init = Some(duration);
            }
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
        let what = format!("extension {name}");
        let child = process::spawn(&what, &argv, None, env, &shared.hosts)?;
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
    let renv = for_runtime(shared, env);
    let argv = environ::with_exec_wrapper(&renv, c.runtime_argv());
    let child = match process::spawn(
        "runtime",
        &argv,
        Some(&c.function_dir),
        &renv,
        &shared.hosts,
    ) {
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
        if let Some(e) = st.runtime.gone() {
            return Some(Some(e));
        }
        if let Some(e) = ext_error(st) {
            return Some(Some(e));
        }
        // SnapStart: init ends at the snapshot point.
        (st.runtime.ready || st.runtime.at_snapshot).then_some(None)
    })
    .await;
    outcome.unwrap_or_else(|| Some("Sandbox.Timedout".to_string()))
}
