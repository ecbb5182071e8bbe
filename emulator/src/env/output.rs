//! The processes' output and exits: every line becomes a `function` / `extension` record, every
//! exit is recorded (an extension that exits before SHUTDOWN is a crash).

use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;

use crate::state::SharedRef;
use crate::{ExitInfo, LogFormat, OutputSource};

/// The record Lambda delivers for one log line. In the text format (Lambda's default) a record
/// is the line as a string, whatever it holds; in the JSON format a line holding a JSON object
/// (what the runtime's `logging` writes there) is that object, any other line a string.
pub(super) fn log_record(format: LogFormat, line: &str) -> Value {
    if format == LogFormat::Json {
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line) {
            return v;
        }
    }
    Value::String(line.to_string())
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
        let record = log_record(shared.config.log_format, &line);
        let mut st = shared.lock();
        st.output.entry(source.clone()).or_default().push(line);
        st.emit(event_type, record);
    }
}

/// Takes the child's pipes, then waits for it and records how it ended.
pub(super) fn watch_child(
    shared: &SharedRef,
    mut child: Child,
    source: OutputSource,
    ext_id: Option<String>,
) {
    if let Some(out) = child.stdout.take() {
        pump_output(shared, out, source.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump_output(shared, err, source);
    }
    let pid = child.id().unwrap_or(0);
    let shared = shared.clone();
    tokio::spawn(async move {
        let (code, signal) = match child.wait().await {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_format_keeps_json_lines_as_strings() {
        let line = r#"{"level": "INFO", "message": "hi"}"#;
        assert_eq!(log_record(LogFormat::Text, line), json!(line));
        assert_eq!(
            log_record(LogFormat::Json, line),
            json!({"level": "INFO", "message": "hi"})
        );
        assert_eq!(log_record(LogFormat::Json, "plain"), json!("plain"));
        assert_eq!(log_record(LogFormat::Json, "[1, 2]"), json!("[1, 2]"));
    }
}
