//! The environment variables of the emulated processes.
//!
//! Every process gets Lambda's variables and the function's own; the Extensions API reference
//! lists the variables "specific to the runtime process" that extensions do not receive, and the
//! runtime alone gets those (plus `PYTHONPATH` for the layers and the function).

use std::time::SystemTime;

use crate::clock;
use crate::state::SharedRef;
use crate::LogFormat;

/// Function variables extensions do not receive (Extensions API reference, "Environment
/// variables"), whether Lambda or the function's configuration sets them.
pub(super) const RUNTIME_ONLY: &[&str] = &[
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
    "_AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_PORT",
    "_HANDLER",
];

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
            | "AWS_LAMBDA_LOG_FORMAT"
            | "AWS_LAMBDA_INITIALIZATION_TYPE"
            | "AWS_LAMBDA_MAX_CONCURRENCY"
            | "LAMBDA_TASK_ROOT"
            | "_HANDLER"
    )
}

/// The environment of one execution environment: Lambda's variables and the function's own,
/// runtime-only ones included (see [`for_extensions`]).
pub(super) fn environment(shared: &SharedRef, addr: &str) -> Vec<(String, String)> {
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
    let mut lambda = vec![
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
        (
            "AWS_LAMBDA_INITIALIZATION_TYPE",
            c.initialization_type.clone(),
        ),
    ];
    if let Some(workers) = c.managed_instances {
        // The runtime starts this many workers (awslambdaric: one forked process each).
        lambda.push(("AWS_LAMBDA_MAX_CONCURRENCY", workers.to_string()));
    }
    if c.log_format == LogFormat::Json {
        // What Lambda sets for a function whose LoggingConfig is JSON; the Python runtime then
        // writes its `logging` records as JSON lines.
        lambda.push(("AWS_LAMBDA_LOG_FORMAT", "JSON".to_string()));
        if !c.env.iter().any(|(k, _)| k == "AWS_LAMBDA_LOG_LEVEL") {
            lambda.push(("AWS_LAMBDA_LOG_LEVEL", "INFO".to_string()));
        }
    }
    env.extend(lambda.into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

/// What an extension receives: everything but [`RUNTIME_ONLY`].
pub(super) fn for_extensions(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !RUNTIME_ONLY.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// What the runtime receives: everything, plus `PYTHONPATH` (layers' `python/`, the function,
/// the function's own `PYTHONPATH`), `LAMBDA_TASK_ROOT` and `_HANDLER`.
pub(super) fn for_runtime(shared: &SharedRef, env: &[(String, String)]) -> Vec<(String, String)> {
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
    renv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_lose_exactly_the_runtime_only_variables() {
        let env: Vec<(String, String)> = RUNTIME_ONLY
            .iter()
            .chain(["MY_VAR", "AWS_REGION"].iter())
            .map(|k| (k.to_string(), "v".to_string()))
            .collect();
        let kept: Vec<String> = for_extensions(&env).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kept, vec!["MY_VAR", "AWS_REGION"]);
    }
}

/// The runtime command as Lambda starts it: `$AWS_LAMBDA_EXEC_WRAPPER <runtime command...>` when
/// the function sets `AWS_LAMBDA_EXEC_WRAPPER` (a wrapper script, e.g. from a layer under `/opt`),
/// else the runtime command itself.
pub(super) fn with_exec_wrapper(env: &[(String, String)], argv: Vec<String>) -> Vec<String> {
    match env
        .iter()
        .rev()
        .find(|(k, _)| k == "AWS_LAMBDA_EXEC_WRAPPER")
    {
        Some((_, wrapper)) if !wrapper.is_empty() => {
            std::iter::once(wrapper.clone()).chain(argv).collect()
        }
        _ => argv,
    }
}

#[cfg(test)]
mod exec_wrapper_tests {
    use super::with_exec_wrapper;

    #[test]
    fn wrapper_goes_first() {
        let argv = vec!["python".to_string(), "-m".into(), "awslambdaric".into()];
        let env = vec![("AWS_LAMBDA_EXEC_WRAPPER".to_string(), "/opt/w".to_string())];
        assert_eq!(
            with_exec_wrapper(&env, argv.clone()),
            ["/opt/w", "python", "-m", "awslambdaric"]
        );
        assert_eq!(with_exec_wrapper(&[], argv.clone()), argv);
        let empty = vec![("AWS_LAMBDA_EXEC_WRAPPER".to_string(), String::new())];
        assert_eq!(with_exec_wrapper(&empty, argv.clone()), argv);
    }
}
