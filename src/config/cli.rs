//! The command line: raw flags (clap) and the validated plan built from them once, so that the rest of the
//! program never re-checks a flag. Flag errors exit with 2, like every Unix tool.

use std::path::PathBuf;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, FixedOffset};
use clap::{Args, Parser, Subcommand, ValueEnum};

use super::spec::{parse_bound, parse_duration, SinkSpec, WindowField, WindowSpec};
use super::ConfigError;

/// The exit codes, for the help of `dealsync` and `dealsync sync`.
macro_rules! exit_codes {
    () => {
        "Exit codes:\n  0   every closed-won deal of the window is in the warehouse, proven\n  \
        1   internal error (a bug, a full disk)\n  2   usage error (a bad flag)\n  \
        3   done, but records were quarantined or deals are missing (named): look, do not retry\n  \
        75  Zoho or BigQuery unavailable, a quota, or interrupted (SIGTERM, --deadline): retry later\n  \
        78  configuration or credentials (variable, token, scope, corrupt database): fix first"
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "dealsync",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEALSYNC_GIT_REV"), ")"),
    about = "Sync Zoho CRM closed-won deals into a warehouse, exactly once.",
    long_about = "Sync Zoho CRM closed-won deals into BigQuery, SQLite or NDJSON, exactly once.\n\n\
        Credentials come from the environment (ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, ZOHO_DC);\n\
        see the README for every variable and exit code.",
    after_help = concat!("Examples:\n  dealsync sync --demo                    # built-in simulator -> ./dealsync-demo.db\n  \
        dealsync sync                           # nightly: since the last good run\n  \
        dealsync sync --from 2026-01-01 --to 2026-02-01   # backfill January\n  \
        dealsync simulate --port 8080 --deals 10000\n\n", exit_codes!())
)]
pub struct Cli {
    /// Log only warnings and errors; no progress bar and no human summary line.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch closed-won deals in a window and write them to the warehouse.
    #[command(
        after_help = concat!("Examples:\n  dealsync sync --demo\n  dealsync sync --sink sqlite:/var/lib/dealsync/deals.db\n  \
        dealsync sync --from 2026-01-01 --to 2026-02-01\n  dealsync sync --from 2026-01-01T00:00:00+05:30 --window-field Modified_Time\n  \
        dealsync sync --window-field Closing_Date --from 2026-01-01 --to 2026-04-01\n  \
        dealsync sync --from 2026-01-01 --sink ndjson:january.ndjson\n  \
        dealsync sync --dry-run | head\n\n", exit_codes!())
    )]
    Sync(SyncArgs),
    /// Run the Zoho-compatible simulator on loopback (for trials, demos and tests).
    #[command(after_help = "Example:\n  dealsync simulate --port 8080 --deals 10000 --seed 7 --latency-ms 50\n  \
        # then, in another shell, use the variables it prints and run `dealsync sync`")]
    #[cfg(feature = "sim")]
    Simulate(dealsync_sim::cli::SimArgs),
    /// Run the Zoho-compatible simulator (not in this build: it has no `sim` feature).
    #[cfg(not(feature = "sim"))]
    #[command(disable_help_flag = true)]
    Simulate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Compare the warehouse with Zoho for a window: counts, and up to 20 missing or extra deal ids.
    #[command(after_help = "Examples:\n  dealsync verify --from 2026-10-01 --to 2026-11-01\n  \
        dealsync verify --window-field Closing_Date --from 2026-01-01 --to 2026-04-01\n  \
        dealsync verify --demo --from 2026-11-01\n\n\
        Exit codes: 0 the warehouse agrees, 3 it does not (the ids are named), 75/78 as for sync.")]
    Verify(WindowArgs),
    /// Verify credentials, the Zoho search API and the warehouse without writing anything.
    #[command(after_help = "Examples:\n  dealsync check                       # the smoke test after a deploy\n  \
        BIGQUERY_PROJECT=acme dealsync check\n  dealsync check --sink sqlite:/data/deals.db")]
    Check(CheckArgs),
    /// First-time set-up: exchange a Self Client grant code for a refresh token.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// List Zoho's Deals fields (custom ones included) and the column type each would get.
    #[command(
        after_help = "Examples:\n  dealsync fields                         # every Deals field, and how it is stored\n  \
        dealsync fields --custom --format toml  # a [columns] block for config/dealsync.toml\n  \
        dealsync fields --demo                  # against the built-in simulator\n\n\
        Promote a field by adding it to [columns] in the config file; the next run adds the column."
    )]
    Fields(FieldsArgs),
    /// Print the schema of the target table (promoted columns from the config file included).
    #[command(
        after_help = "Examples:\n  dealsync schema\n  dealsync schema --format bigquery\n  dealsync schema --format sqlite"
    )]
    Schema {
        #[arg(long, value_enum, default_value = "text")]
        format: SchemaFormat,
    },
    /// Show the run ledger: the last runs, newest first, and when the last good one ended.
    #[command(
        after_help = "Examples:\n  dealsync runs\n  dealsync runs --limit 5 --sink sqlite:/var/lib/dealsync/deals.db\n  \
        BIGQUERY_PROJECT=acme dealsync runs --format json"
    )]
    Runs(RunsArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "Examples:\n  dealsync completions bash > /etc/bash_completion.d/dealsync\n  \
        dealsync completions zsh > \"${fpath[1]}/_dealsync\"")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The warehouse whose ledger to read: sqlite:PATH or bigquery. Default: as `sync` would choose.
    #[arg(long, value_parser = SinkSpec::parse)]
    pub sink: Option<SinkSpec>,
    /// How many runs to show.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub format: RunsFormat,
    /// Timeout of one HTTP request (BigQuery).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunsFormat {
    Table,
    Json,
}

/// What `sync` and `verify` share: the window, the source (Zoho or the demo simulator), the sink, and retries.
#[derive(Debug, Clone, Default, Args)]
pub struct WindowArgs {
    /// Start the built-in simulator on 127.0.0.1 and use it instead of Zoho (no credentials needed).
    #[arg(long)]
    pub demo: bool,
    /// Deals in the demo simulator.
    #[arg(long, default_value_t = 20_000, requires = "demo")]
    pub demo_deals: usize,
    /// Seed of the demo simulator's deals.
    #[arg(long, default_value_t = 42, requires = "demo")]
    pub demo_seed: u64,
    /// Backfill from this date (2026-01-01, midnight UTC) or RFC 3339 instant (inclusive).
    #[arg(long, value_parser = parse_bound)]
    pub from: Option<DateTime<FixedOffset>>,
    /// Backfill up to this date or instant (exclusive). Default: now minus the index lag.
    #[arg(long, value_parser = parse_bound, requires = "from")]
    pub to: Option<DateTime<FixedOffset>>,
    /// The deal field that defines the window: Modified_Time (default) or Closing_Date.
    #[arg(long, value_parser = WindowField::parse)]
    pub window_field: Option<WindowField>,
    /// How far before now the window ends, so that Zoho's search index has caught up [default: 5m].
    #[arg(long, value_parser = parse_duration)]
    pub index_lag: Option<Duration>,
    /// The warehouse: sqlite:PATH, ndjson:PATH, ndjson:- (stdout) or bigquery. Default: bigquery when
    /// BIGQUERY_PROJECT is set, else sqlite:./dealsync.db (with --demo: sqlite:./dealsync-demo.db).
    #[arg(long, value_parser = SinkSpec::parse)]
    pub sink: Option<SinkSpec>,
    /// Attempts per request before giving up, the first included [default: 6].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: Option<u32>,
    /// Longest total wait between retries of one request [default: 5m].
    #[arg(long, value_parser = parse_duration)]
    pub retry_deadline: Option<Duration>,
    /// Longest wait between two retries of one request [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub retry_max_delay: Option<Duration>,
    /// Timeout of one HTTP request [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub common: WindowArgs,
    /// How far the default window reaches back before the last good run's end [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    pub overlap: Option<Duration>,
    /// Fetch and map, write nothing; print rows to stdout as NDJSON.
    #[arg(long, conflicts_with = "sink")]
    pub dry_run: bool,
    /// Stop when the run takes longer than this (exit 75): SQLite keeps the pages committed so far, BigQuery
    /// merges nothing [default: 2h].
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Backfill only: also rewrite rows whose stored copy is as new as Zoho's, e.g. to fill a column promoted
    /// in the config file since those rows were written.
    #[arg(long, requires = "from")]
    pub rewrite: bool,
    /// Also write the run's metrics to this file in the Prometheus text format (node_exporter's textfile
    /// collector), replacing it atomically.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Exchange a grant code (Zoho API console > Self Client > Generate Code) for a refresh token, printed once
    /// to stdout. Needs ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET and ZOHO_DC.
    #[command(after_help = "Scopes to request when generating the code:\n  \
        ZohoCRM.modules.deals.READ,ZohoSearch.securesearch.READ,ZohoCRM.coql.READ,ZohoCRM.settings.fields.READ\n\n\
        Examples:\n  dealsync auth exchange --grant-token 1000.abc...\n  \
        # read the code without leaving it in the shell history:\n  \
        read -rs CODE && echo \"$CODE\" | dealsync auth exchange --grant-token -")]
    Exchange {
        /// The grant code, or `-` to read it from stdin.
        #[arg(long)]
        grant_token: String,
    },
    /// Print the OAuth scopes to request for dealsync.
    Scopes,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The sink to check: sqlite:PATH, ndjson:PATH, ndjson:- or bigquery. Default: as `sync` would choose.
    #[arg(long, value_parser = SinkSpec::parse)]
    pub sink: Option<SinkSpec>,
    /// Timeout of one HTTP request (e.g. 60s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaFormat {
    /// A table for people.
    Text,
    /// BigQuery's JSON schema.
    Json,
    /// SQLite DDL.
    Sqlite,
    /// BigQuery's JSON schema, a file for `bq mk --table --schema` (the same as json).
    Bigquery,
    /// BigQuery's `CREATE TABLE` DDL, partitioned and clustered as dealsync creates the table.
    BigqueryDdl,
}

#[derive(Debug, Args)]
pub struct FieldsArgs {
    /// Ask the built-in simulator instead of Zoho (no credentials needed).
    #[arg(long)]
    pub demo: bool,
    /// Only custom fields.
    #[arg(long)]
    pub custom: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: FieldsFormat,
    /// Timeout of one HTTP request (e.g. 60s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FieldsFormat {
    /// A table for people.
    Text,
    /// One JSON array.
    Json,
    /// A `[columns]` block promoting every field not stored in a column yet, to paste into the config file.
    Toml,
}

/// A sync, validated once.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub demo: Option<(usize, u64)>,
    pub spec: WindowSpec,
    pub field: WindowField,
    pub sink: Option<SinkSpec>,
    pub dry_run: bool,
    pub retry: crate::retry::RetryPolicy,
    pub request_timeout: StdDuration,
    pub deadline: StdDuration,
    pub rewrite: bool,
    pub metrics_file: Option<PathBuf>,
}

/// Why a command line cannot become a plan: a bad flag (exit 2) or a bad value in the configuration file (78).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl SyncArgs {
    /// Validates the flags, filling in what they leave out from the configuration file, then the defaults.
    /// `now` decides whether a window lies wholly in the future (a usage error, found before anything is opened).
    pub fn plan(&self, file: &crate::config::SyncFile, now: DateTime<chrono::Utc>) -> Result<SyncPlan, PlanError> {
        let c = &self.common;
        let dur =
            |flag, key, v: &Option<String>, default| layer(flag, key, v, parse_duration).map(|d| d.unwrap_or(default));
        let overlap = dur(self.overlap, "overlap", &file.overlap, Duration::hours(1))?;
        let index_lag = dur(c.index_lag, "index_lag", &file.index_lag, Duration::minutes(5))?;
        let retry_deadline = dur(c.retry_deadline, "retry_deadline", &file.retry_deadline, Duration::minutes(5))?;
        let retry_max_delay = dur(c.retry_max_delay, "retry_max_delay", &file.retry_max_delay, Duration::seconds(30))?;
        let request_timeout = dur(c.request_timeout, "request_timeout", &file.request_timeout, Duration::seconds(60))?;
        let deadline = dur(self.deadline, "deadline", &file.deadline, Duration::hours(2))?;
        let field = layer(c.window_field, "window_field", &file.window_field, WindowField::parse)?;
        // A dry run writes nowhere: the file's sink does not apply (the flag conflicts with it).
        let sink = layer(c.sink.clone(), "sink", if self.dry_run { &None } else { &file.sink }, SinkSpec::parse)?;
        let max_attempts = c.max_attempts.or(file.max_attempts).unwrap_or(6);
        if !(1..=20).contains(&max_attempts) {
            let problem = format!("{max_attempts} is not from 1 to 20");
            return Err(PlanError::Config(ConfigError::new("sync.max_attempts (config file)", problem)));
        }
        let spec = match (c.from, c.to) {
            (Some(from), Some(to)) if to <= from => {
                return Err(PlanError::Usage(format!("--to ({to}) must be after --from ({from})")));
            }
            (Some(from), _) if from > now => {
                let problem = format!("--from ({from}) is in the future: the window would hold no deal yet");
                return Err(PlanError::Usage(problem));
            }
            (Some(from), to) => WindowSpec::Backfill { from, to, index_lag },
            (None, _) => WindowSpec::Default { overlap, index_lag },
        };
        if request_timeout.is_zero() || deadline.is_zero() || retry_max_delay.is_zero() {
            let problem = "--request-timeout, --deadline and --retry-max-delay must be more than 0";
            return Err(PlanError::Usage(problem.into()));
        }
        let std = |d: Duration| d.to_std().unwrap_or(StdDuration::ZERO);
        Ok(SyncPlan {
            demo: c.demo.then_some((c.demo_deals, c.demo_seed)),
            spec,
            field: field.unwrap_or(WindowField::ModifiedTime),
            sink,
            dry_run: self.dry_run,
            retry: crate::retry::RetryPolicy {
                max_attempts: max_attempts as usize,
                deadline: std(retry_deadline),
                max_delay: std(retry_max_delay),
                min_delay: std(retry_max_delay).min(crate::retry::RetryPolicy::default().min_delay),
            },
            request_timeout: std(request_timeout),
            deadline: std(deadline),
            rewrite: self.rewrite,
            metrics_file: self.metrics_file.clone(),
        })
    }
}

/// A flag's value, else the file's `sync.KEY` parsed (an error names the key), else `None`.
fn layer<T>(
    flag: Option<T>,
    key: &str,
    file: &Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, PlanError> {
    if flag.is_some() {
        return Ok(flag);
    }
    let at_key = |e| ConfigError::new(format!("sync.{key} (config file)"), e);
    Ok(file.as_deref().map(parse).transpose().map_err(at_key)?)
}

/// The local warehouse when no sink is named and BigQuery is not configured.
pub const DEFAULT_SQLITE: &str = "./dealsync.db";

/// The demo's own warehouse file, so that a demo never touches the real one (or its run ledger).
pub const DEMO_SQLITE: &str = "./dealsync-demo.db";
