//! dealsync: keeps a warehouse in step with the deals a sales team wins in Zoho CRM.
//!
//! Data flows one way: `config` + `cli` → `window` (what to fetch) → `zoho` (auth, search pages, retries) →
//! `mapping` (deal → row, or quarantine; promoted custom fields) → `sink` (BigQuery | SQLite | NDJSON) →
//! `summary` (one final event and the exit code). `json` is the scanner that checks each answer once and says
//! where its records and their fields lie. `sim` is a Zoho-compatible simulator used by `--demo`,
//! `dealsync simulate` and the tests; `catalog` is `dealsync fields`.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exit;
pub mod json;
pub mod mapping;
pub mod reconcile;
pub mod retry;
pub mod run;
pub mod shutdown;
pub mod sink;
pub mod summary;
pub mod telemetry;
pub mod window;
pub mod zoho;

use std::sync::OnceLock;
use std::time::Instant;


use crate::cli::{Command, SchemaArgs, SchemaFormat};
use crate::exit::Exit;
use crate::mapping::Column;

/// When the process started (set first thing in `main`), for the time-to-first-request figure.
pub static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process started (or since first asked, in tests).
pub fn micros_since_start() -> u64 {
    PROCESS_START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Runs a parsed command line and says how the process should exit.
pub async fn run(command: Command) -> Exit {
    match command {
        Command::Sync(args) => match plan(&args) {
            Ok(plan) => run::sync(plan).await.1,
            Err(exit) => exit,
        },
        Command::Simulate(args) => demo::simulate(args).await,
        Command::Check(args) => run::check(args).await,
        Command::Verify(args) => match plan(&args) {
            Ok(plan) if plan.spec.is_backfill() => run::verify(plan).await,
            Ok(_) => {
                eprintln!("error: verify needs --from (and usually --to)");
                Exit::Usage
            }
            Err(exit) => exit,
        },
        Command::Auth(cli::AuthCommand::Scopes) => {
            println!("{}", zoho::auth::SCOPES.join(","));
            Exit::Ok
        }
        Command::Auth(cli::AuthCommand::Exchange { grant_token }) => auth_exchange(&grant_token).await,
        Command::Fields(args) => catalog::fields(args).await,
        Command::Schema(args) => {
            // The table as the config file shapes it: promoted columns included.
            let promoted = config::FileConfig::discover().and_then(|f| mapping::promoted::from_config(&f.columns));
            match promoted {
                Ok(p) => {
                    print!("{}", schema(&args, &mapping::promoted::table_columns(p)));
                    Exit::Ok
                }
                Err(e) => {
                    tracing::error!(event = "config_error", variable = %e.variable, "{e}");
                    Exit::Config
                }
            }
        }
    }
}

/// Validates the flags against the configuration file. Errors are reported here; the exit says which kind.
fn plan(args: &cli::SyncArgs) -> Result<cli::SyncPlan, Exit> {
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

/// `dealsync schema`.
pub fn schema(args: &SchemaArgs, columns: &[Column]) -> String {
    match args.format {
        SchemaFormat::Text => {
            let mut out = format!("{:<18} {:<10} {:<9} {}\n", "column", "type", "mode", "description");
            for c in columns {
                out.push_str(&format!("{:<18} {:<10} {:<9} {}\n", c.name, c.bq_type, c.mode, c.description));
            }
            out
        }
        SchemaFormat::Json => serde_json::to_string_pretty(columns).expect("columns serialize") + "\n",
        SchemaFormat::Sqlite => sink::sqlite::create_table_sql(columns) + ";\n",
        SchemaFormat::Bigquery => {
            let fields = serde_json::to_string_pretty(&sink::bigquery::sql::target_fields(columns)).expect("fields serialize");
            format!(
                "-- JSON schema (bq mk --table --time_partitioning_field closing_date --clustering_fields deal_id DATASET.closed_won_deals schema.json)\n{fields}\n\n-- DDL\n{}",
                sink::bigquery::sql::target_ddl("`PROJECT.DATASET.closed_won_deals`", columns)
            )
        }
    }
}

async fn auth_exchange(grant_token: &str) -> Exit {
    let code = if grant_token == "-" {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("error: could not read the grant code from stdin");
            return Exit::Usage;
        }
        line.trim().to_string()
    } else {
        grant_token.trim().to_string()
    };
    if code.is_empty() {
        eprintln!("error: --grant-token is empty");
        return Exit::Usage;
    }
    let settings = match config::Settings::from_env(config::Needs::ZohoClient) {
        Ok(s) => s.zoho.expect("client settings requested"),
        Err(e) => {
            tracing::error!(event = "config_error", variable = %e.variable, "{e}");
            return Exit::Config;
        }
    };
    let http = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Internal;
        }
    };
    match zoho::auth::exchange_grant(&http, &settings, &secrecy::SecretString::from(code)).await {
        Ok(ex) => {
            use secrecy::ExposeSecret;
            // The only place a secret is ever printed: stdout, once, for the operator to store.
            println!("ZOHO_REFRESH_TOKEN={}", ex.refresh_token.expose_secret());
            let granted = ex.scope.unwrap_or_default();
            let missing: Vec<&str> =
                zoho::auth::SCOPES.iter().copied().filter(|s| !granted.split([' ', ',']).any(|g| g == *s)).collect();
            eprintln!("Store it in your secret manager as ZOHO_REFRESH_TOKEN; it is not shown again.");
            eprintln!("API domain: {}", ex.api_domain);
            if !missing.is_empty() {
                eprintln!("warning: the grant lacks scopes dealsync needs: {} (generate a new code with them)", missing.join(","));
            }
            Exit::Ok
        }
        Err(e) => {
            tracing::error!(event = "auth_exchange_failed", "{e}");
            e.exit()
        }
    }
}
