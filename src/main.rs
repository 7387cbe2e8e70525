//! The `dealsync` binary: parse flags, set up logging, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use dealsync::config::cli::Cli;
use dealsync::config::{ConfigError, LogFormat};
use dealsync::exit::Exit;

fn main() -> ExitCode {
    let _ = dealsync::telemetry::PROCESS_START.set(std::time::Instant::now());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage.into() } else { Exit::Ok.into() };
        }
    };
    // LOG_FORMAT, else the configuration file's log.format (its other errors are reported by the command).
    let from_file = dealsync::config::FileConfig::discover().ok().and_then(|f| f.log.format);
    let log_format = match std::env::var("LOG_FORMAT").ok().filter(|v| !v.trim().is_empty()).or(from_file) {
        None => None,
        Some(v) => match LogFormat::parse(&v) {
            Some(f) => Some(f),
            None => {
                let e = ConfigError::new("LOG_FORMAT", format!("`{v}` is not a log format; expected text, json or gcp"));
                eprintln!("error: {e}");
                return Exit::Config.into();
            }
        },
    };
    dealsync::telemetry::init(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return Exit::Internal.into();
        }
    };
    runtime.block_on(dealsync::commands::run(cli.command)).into()
}
