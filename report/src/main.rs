//! `lambda-memory-profiler-report`: parses the command line, runs the report, prints a progress
//! line on stderr while it queries, and exits 1 with the error's explanation when it fails.

use clap::Parser;
use lambda_memory_profiler_report::cli::Args;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// One line rewritten in place on a terminal; elsewhere one line per step (counters dropped).
struct Progress {
    tty: bool,
    quiet: bool,
    last_step: String,
}

impl Progress {
    fn update(&mut self, msg: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{msg}");
            let _ = err.flush();
            return;
        }
        let step: String = msg
            .split(|c: char| c.is_ascii_digit() || c == '(')
            .next()
            .unwrap_or(msg)
            .to_string();
        if !msg.is_empty() && step != self.last_step {
            let _ = writeln!(err, "{msg}");
        }
        self.last_step = step;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        quiet: args.quiet,
        last_step: String::new(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = rt.block_on(lambda_memory_profiler_report::run(
        &args,
        &mut stdout,
        &mut |m| progress.update(m),
    ));
    progress.update("");
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
