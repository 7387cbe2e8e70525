//! The `dealsync` binary: parse flags, read the configuration once, set up logging, run, map the result to an
//! exit code.

use std::process::ExitCode;

use clap::Parser;
use dealsync::config::cli::Cli;
use dealsync::config::Config;
use dealsync::exit::Exit;

fn main() -> ExitCode {
    let _ = dealsync::telemetry::PROCESS_START.set(std::time::Instant::now());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return Exit::Ok.into();
            }
            return refused_sync(Exit::Usage, e.kind().to_string());
        }
    };
    // Logging is not set up yet: a configuration that cannot be read is reported on stderr as it is.
    let (config, log_format) = match Config::load().and_then(|c| c.log_format().map(|f| (c, f))) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return refused_sync(Exit::Config, e.to_string());
        }
    };
    dealsync::telemetry::init(log_format, config.var("NO_COLOR").is_none(), cli.quiet);
    if let Some(path) = &config.file_path {
        tracing::info!(event = "config_file", config_file = %path.display(), "configuration file in use");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return Exit::Internal.into();
        }
    };
    let exit = runtime.block_on(async {
        tokio::select! {
            exit = dealsync::commands::run(cli.command, &config) => exit,
            // `dealsync sync --dry-run | head`: the reader has what it wanted. Like any Unix filter, stop quietly.
            () = dealsync::sink::ndjson::stdout_closed() => {
                tracing::info!(event = "output_closed", "stdout was closed by its reader: stopping quietly");
                Exit::Ok
            }
        }
    });
    exit.into()
}

/// A `sync` refused before its run starts still publishes its metrics (where the environment names a
/// Pushgateway), so that a deployment that cannot start is seen failing.
fn refused_sync(exit: Exit, error: String) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sync") {
        let config = Config::load().unwrap_or_else(|_| Config::environment_only());
        let backfill = args.iter().any(|a| a == "--from" || a.starts_with("--from="));
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(dealsync::commands::refused_sync(&config, backfill, exit, error));
        }
    }
    exit.into()
}
