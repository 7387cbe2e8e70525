//! The commands, each a module: what a person or a scheduler runs. They sit on top of everything else and call
//! down the data flow (configuration, window, Zoho, mapping, sinks); nothing below imports them.

pub mod auth;
pub mod check;
pub mod demo;
pub mod describe;
pub mod fields;
pub mod reconcile;
pub mod summary;
pub mod sync;
pub mod verify;

use crate::config::cli::{AuthCommand, Command, SyncArgs, SyncPlan};
use crate::config;
use crate::exit::Exit;

/// Runs a parsed command line and says how the process should exit.
pub async fn run(command: Command) -> Exit {
    match command {
        Command::Sync(args) => match plan(&args) {
            Ok(plan) => sync::sync(plan).await.1,
            Err(exit) => exit,
        },
        Command::Simulate(args) => demo::simulate(args).await,
        Command::Check(args) => check::check(args).await,
        Command::Verify(args) => match plan(&args) {
            Ok(plan) if plan.spec.is_backfill() => verify::verify(plan).await,
            Ok(_) => {
                eprintln!("error: verify needs --from (and usually --to)");
                Exit::Usage
            }
            Err(exit) => exit,
        },
        Command::Auth(AuthCommand::Scopes) => auth::scopes(),
        Command::Auth(AuthCommand::Exchange { grant_token }) => auth::exchange(&grant_token).await,
        Command::Fields(args) => fields::fields(args).await,
        Command::Schema(args) => describe::run(&args),
    }
}

/// Validates the flags against the configuration file. Errors are reported here; the exit says which kind.
fn plan(args: &SyncArgs) -> Result<SyncPlan, Exit> {
    let file = config::FileConfig::discover().map_err(|e| {
        tracing::error!(event = "config_error", variable = %e.variable, "{e}");
        Exit::Config
    })?;
    args.plan(&file.sync).map_err(|e| {
        if e.starts_with("config file") {
            tracing::error!(event = "config_error", "{e}");
            Exit::Config
        } else {
            eprintln!("error: {e}");
            Exit::Usage
        }
    })
}

