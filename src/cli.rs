//! The command line: raw flags (clap) and the validated plan built from them once, so that the rest of the
//! program never re-checks a flag. Flag errors exit with 2, like every Unix tool.

use std::path::PathBuf;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, FixedOffset};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::sink::SinkSpec;
use crate::window::{parse_bound, parse_duration, WindowField, WindowSpec};

#[derive(Debug, Parser)]
#[command(
    name = "dealsync",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEALSYNC_GIT_REV"), ")"),
    about = "Sync Zoho CRM closed-won deals into a warehouse, exactly once.",
    long_about = "Sync Zoho CRM closed-won deals into BigQuery, SQLite or NDJSON, exactly once.\n\n\
        Credentials come from the environment (ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN, ZOHO_DC);\n\
        see the README for every variable and exit code.",
    after_help = "Examples:\n  dealsync sync --demo                    # built-in simulator -> ./dealsync.db\n  \
        dealsync sync                           # nightly: since the last good run\n  \
        dealsync sync --from 2026-01-01 --to 2026-02-01   # backfill January\n  \
        dealsync simulate --port 8080 --deals 10000"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch closed-won deals in a window and write them to the warehouse.
    #[command(after_help = "Examples:\n  dealsync sync --demo\n  dealsync sync --sink sqlite:/var/lib/dealsync/deals.db\n  \
        dealsync sync --from 2026-01-01 --to 2026-02-01\n  dealsync sync --from 2026-01-01T00:00:00+05:30 --window-field Modified_Time\n  \
        dealsync sync --window-field Closing_Date --from 2026-01-01 --to 2026-04-01 --sink ndjson:q1.ndjson\n  \
        dealsync sync --dry-run | head")]
    Sync(SyncArgs),
    /// Run the Zoho-compatible simulator on loopback (for trials, demos and tests).
    #[command(after_help = "Example:\n  dealsync simulate --port 8080 --deals 10000 --seed 7 --latency-ms 50\n  \
        # then, in another shell, use the variables it prints and run `dealsync sync`")]
    Simulate(SimulateArgs),
    /// Verify credentials, the Zoho search API and the warehouse without writing anything.
    #[command(after_help = "Examples:\n  dealsync check                       # the smoke test after a deploy\n  \
        BIGQUERY_PROJECT=acme dealsync check\n  dealsync check --sink sqlite:/data/deals.db")]
    Check(CheckArgs),
    /// Print the schema of the target table.
    #[command(after_help = "Examples:\n  dealsync schema\n  dealsync schema --format bigquery\n  dealsync schema --format sqlite")]
    Schema(SchemaArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Start the built-in simulator on 127.0.0.1 and sync from it (no credentials needed).
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
    /// The deal field that defines the window.
    #[arg(long, default_value = "Modified_Time", value_parser = parse_window_field)]
    pub window_field: WindowField,
    /// How far the default window reaches back before the last good run's end (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    pub overlap: Duration,
    /// How far before now the window ends, so that Zoho's search index has caught up (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg)]
    pub index_lag: Duration,
    /// Where to write: sqlite:PATH, ndjson:PATH, ndjson:- (stdout). Default: sqlite:./dealsync.db.
    #[arg(long, value_parser = SinkSpec::parse)]
    pub sink: Option<SinkSpec>,
    /// Fetch and map, write nothing; print rows to stdout as NDJSON.
    #[arg(long, conflicts_with = "sink")]
    pub dry_run: bool,
    /// Attempts per Zoho request before giving up (first included).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    /// Longest total wait between retries of one request (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg)]
    pub retry_deadline: Duration,
    /// Longest wait between two retries of one request (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub retry_max_delay: Duration,
    /// Timeout of one HTTP request (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = parse_duration_arg)]
    pub request_timeout: Duration,
    /// Stop (exit 75, nothing committed) if the run takes longer than this (e.g. 2h).
    #[arg(long, default_value = "2h", value_parser = parse_duration_arg)]
    pub deadline: Duration,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_loopback)]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Number of deals to generate.
    #[arg(long, default_value_t = 1000)]
    pub deals: usize,
    /// Seed of the generated deals.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Closed-won deals rendered so that they cannot be mapped (to see the quarantine at work).
    #[arg(long, default_value_t = 0)]
    pub broken: usize,
    /// Deals are modified within the span before this instant. Default: the start of the current hour.
    #[arg(long, value_parser = parse_bound)]
    pub anchor: Option<DateTime<FixedOffset>>,
    /// Days over which modified times are spread.
    #[arg(long, default_value_t = 30)]
    pub span_days: i64,
    /// Time zone offset of the API user; every datetime is rendered with it.
    #[arg(long, default_value = "+05:30", allow_hyphen_values = true, value_parser = parse_offset)]
    pub tz_offset: FixedOffset,
    /// Mints allowed per 10 minutes before Zoho's "Access Denied" throttle.
    #[arg(long, default_value_t = 10)]
    pub mint_limit: usize,
    /// Seconds an access token lives (expires_in).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Faults for given API requests, e.g. 429@3,500@5,reset@7,slow@9:3000,expire@11,badjson@13,trunc@15.
    #[arg(long, value_parser = crate::sim::faults::FaultPlan::parse)]
    pub faults: Option<crate::sim::faults::FaultPlan>,
    /// Probability of a random fault on any API request (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Seed of the random faults.
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
    /// Delay of a random `slow` fault, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub fault_slow_ms: u64,
    /// Share of deals that are exactly "Closed Won" (0 to 1).
    #[arg(long, default_value_t = 0.3)]
    pub won_share: f64,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The sink to check: sqlite:PATH, ndjson:PATH, bigquery. Default: as `sync` would choose.
    #[arg(long, value_parser = SinkSpec::parse)]
    pub sink: Option<SinkSpec>,
    /// Timeout of one HTTP request (e.g. 60s).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
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
    /// BigQuery's JSON schema followed by the equivalent DDL.
    Bigquery,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: SchemaFormat,
}

fn parse_window_field(s: &str) -> Result<WindowField, String> {
    WindowField::parse(s).ok_or_else(|| format!("`{s}` is not a window field; use Modified_Time or Closing_Date"))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::zero() {
        return Err("durations cannot be negative".into());
    }
    Ok(d)
}

fn parse_loopback(s: &str) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = s.parse().map_err(|_| format!("`{s}` is not an IP address"))?;
    if !ip.is_loopback() {
        return Err("the simulator only listens on loopback addresses (127.0.0.1 or ::1)".into());
    }
    Ok(ip)
}

fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let probe = format!("2026-01-01T00:00:00{s}");
    DateTime::parse_from_rfc3339(&probe)
        .map(|t| *t.offset())
        .map_err(|_| format!("`{s}` is not an offset like +05:30 or -03:00"))
}

/// A sync, validated once.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    pub demo: Option<(usize, u64)>,
    pub spec: WindowSpec,
    pub field: WindowField,
    pub sink: Option<SinkSpec>,
    pub dry_run: bool,
    pub retry: crate::zoho::RetryPolicy,
    pub request_timeout: StdDuration,
    pub deadline: StdDuration,
}

impl SyncArgs {
    pub fn plan(&self) -> Result<SyncPlan, String> {
        let spec = match self.from {
            Some(from) => {
                if let Some(to) = self.to {
                    if to <= from {
                        return Err(format!("--to ({to}) must be after --from ({from})"));
                    }
                }
                WindowSpec::Backfill { from, to: self.to, index_lag: self.index_lag }
            }
            None => WindowSpec::Default { overlap: self.overlap, index_lag: self.index_lag },
        };
        let std = |d: Duration| d.to_std().unwrap_or(StdDuration::ZERO);
        if self.request_timeout.is_zero() || self.deadline.is_zero() || self.retry_max_delay.is_zero() {
            return Err("--request-timeout, --deadline and --retry-max-delay must be more than 0".into());
        }
        Ok(SyncPlan {
            demo: self.demo.then_some((self.demo_deals, self.demo_seed)),
            spec,
            field: self.window_field,
            sink: self.sink.clone(),
            dry_run: self.dry_run,
            retry: crate::zoho::RetryPolicy {
                max_attempts: self.max_attempts as usize,
                deadline: std(self.retry_deadline),
                max_delay: std(self.retry_max_delay),
                min_delay: std(self.retry_max_delay).min(crate::zoho::RetryPolicy::default().min_delay),
            },
            request_timeout: std(self.request_timeout),
            deadline: std(self.deadline),
        })
    }
}

/// The default local warehouse file.
pub fn default_sqlite_path() -> PathBuf {
    PathBuf::from("./dealsync.db")
}
