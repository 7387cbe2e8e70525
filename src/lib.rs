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
pub mod exit;
pub mod json;
pub mod mapping;
pub mod reconcile;
pub mod retry;
pub mod run;
pub mod shutdown;
pub mod sim;
pub mod sink;
pub mod summary;
pub mod telemetry;
pub mod window;
pub mod zoho;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use chrono::{Duration, Utc};

use crate::cli::{Command, SchemaArgs, SchemaFormat, SimulateArgs};
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
        Command::Simulate(args) => simulate(args).await,
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

async fn simulate(args: SimulateArgs) -> Exit {
    let mut cfg = sim::SimConfig::demo(args.deals, args.seed);
    if let Some(anchor) = args.anchor {
        cfg.anchor = anchor.with_timezone(&Utc);
    }
    cfg.span = Duration::days(args.span_days.max(1));
    cfg.latency = std::time::Duration::from_millis(args.latency_ms);
    cfg.broken = args.broken;
    cfg.tz = args.tz_offset;
    cfg.mint_limit = args.mint_limit;
    cfg.token_ttl = std::time::Duration::from_secs(args.token_ttl_secs.max(1));
    if !(0.0..=1.0).contains(&args.fault_rate) {
        eprintln!("error: --fault-rate must be between 0 and 1");
        return Exit::Usage;
    }
    let mut faults = args.faults.clone().unwrap_or_default();
    faults.rate = args.fault_rate;
    faults.seed = args.fault_seed;
    faults.slow = std::time::Duration::from_millis(args.fault_slow_ms);
    cfg.faults = faults;
    cfg.won_share = args.won_share.clamp(0.0, 1.0);
    cfg.not_modified = !args.no_304;
    cfg.ignores_sort = args.ignore_sort;
    cfg.shuffled_ties = args.shuffle_ties;
    cfg.search_lag = std::time::Duration::from_secs(args.index_lag_secs);
    cfg.awaiting_approval = args.awaiting_approval;
    cfg.edits_per_second = args.edits_per_second;
    let handle = match sim::start(cfg.clone(), SocketAddr::new(args.host, args.port)).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(event = "simulator_failed", "could not listen on {}:{}: {e}", args.host, args.port);
            return Exit::Config;
        }
    };
    let closed_won = handle.closed_won_in(
        &window::Window::new(
            window::WindowField::ModifiedTime,
            (cfg.anchor - cfg.span).fixed_offset(),
            cfg.anchor.fixed_offset(),
        )
        .expect("span is positive"),
    );
    // The announcements go to whoever reads stdout; a reader that stopped reading (a script that took the
    // export line, `| head`) must not take the simulator down, so a failed write is ignored.
    macro_rules! say {
        ($($arg:tt)*) => {{
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), $($arg)*);
        }};
    }
    say!(
        "dealsync simulator on {} with {} deals ({} closed won, seed {}), modified between {} and {}",
        handle.base_url(),
        cfg.deals,
        closed_won.len(),
        cfg.seed,
        (cfg.anchor - cfg.span).to_rfc3339(),
        cfg.anchor.to_rfc3339()
    );
    say!("Point dealsync at it with:");
    say!(
        "  export ZOHO_ACCOUNTS_URL={} ZOHO_CLIENT_ID={} ZOHO_CLIENT_SECRET={} ZOHO_REFRESH_TOKEN={}",
        handle.base_url(),
        cfg.client_id,
        cfg.client_secret,
        cfg.refresh_token
    );
    if !cfg.faults.is_empty() {
        say!("Injecting faults: {} planned, random rate {} (seed {}).", cfg.faults.at.len(), cfg.faults.rate, cfg.faults.seed);
    }
    say!("Stop with Ctrl-C.");
    shutdown_signal().await;
    let stats = handle.stats();
    handle.stop().await;
    say!("served {} API requests, {} token requests, {} faults injected {:?}", stats.api_requests, stats.token_requests, stats.faults_injected, stats.faults_by_kind);
    Exit::Ok
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
