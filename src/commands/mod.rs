//! The commands, each a module: what a person or a scheduler runs. They parse, call the run or a sink, and
//! print; what several of them share lives below (`run`, `sink`), and nothing below imports them.

pub mod auth;
pub mod check;
pub mod describe;
pub mod fields;
pub mod runs;
pub mod verify;

use crate::config::cli::{AuthCommand, Command, PlanError, SyncArgs, SyncPlan};
use crate::config::Config;
use crate::exit::Exit;
use crate::run::{demo, metrics, summary};

/// Runs a parsed command line and says how the process should exit.
pub async fn run(command: Command, config: &Config) -> Exit {
    match command {
        Command::Sync(args) => {
            let targets = match metrics::Targets::from_config(config, args.metrics_file.clone()) {
                Ok(t) => t,
                Err(e) => return e.report(),
            };
            let (summary, exit) = match plan(&args, config) {
                Ok(plan) => crate::run::sync(plan, config).await,
                // A run refused before it started still tells the monitoring that it failed, and how.
                Err((exit, error)) => (summary::RunSummary::refused(args.common.from.is_some(), exit, error), exit),
            };
            metrics::publish(&targets, &summary).await;
            exit
        }
        #[cfg(feature = "sim")]
        Command::Simulate(args) => demo::simulate(args).await,
        #[cfg(not(feature = "sim"))]
        Command::Simulate { .. } => demo::simulate().await,
        Command::Check(args) => check::check(args, config).await,
        // The same window and sink as a sync would read.
        Command::Verify(common) => match plan(&SyncArgs { common, ..SyncArgs::default() }, config) {
            Ok(plan) if plan.spec.is_backfill() => verify::verify(plan, config).await,
            Ok(_) => {
                eprintln!("error: verify needs --from (and usually --to)");
                Exit::Usage
            }
            Err((exit, _)) => exit,
        },
        Command::Auth(AuthCommand::Scopes) => auth::scopes(),
        Command::Auth(AuthCommand::Exchange { grant_token }) => auth::exchange(&grant_token, config).await,
        Command::Fields(args) => fields::fields(args, config).await,
        Command::Schema { format } => describe::run(format, config),
        Command::Runs(args) => runs::runs(args, config).await,
        Command::Completions { shell } => {
            let mut cli = <crate::config::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "dealsync", &mut std::io::stdout());
            Exit::Ok
        }
    }
}

/// A `sync` refused before it could be planned still tells the Pushgateway it failed, when one is configured: a
/// deployment that never gets to run must not look like one that never ran.
pub async fn refused_sync(config: &Config, backfill: bool, exit: Exit, error: String) {
    if let Ok(targets) = metrics::Targets::from_config(config, None) {
        metrics::publish(&targets, &summary::RunSummary::refused(backfill, exit, error)).await;
    }
}

/// Validates the flags against the configuration file. Errors are reported here; the exit says which kind.
fn plan(args: &SyncArgs, config: &Config) -> Result<SyncPlan, (Exit, String)> {
    args.plan(&config.file.sync, chrono::Utc::now()).map_err(|e| match e {
        PlanError::Config(e) => (e.report(), e.to_string()),
        PlanError::Usage(e) => {
            eprintln!("error: {e}");
            (Exit::Usage, e)
        }
    })
}
