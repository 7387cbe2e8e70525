//! The simulator as a command (`dealsync simulate`): its flags, the configuration they describe, and the loop that
//! serves until stopped. It lives here, beside `SimConfig`, so that a new behaviour of the simulator is one field
//! and one flag in one crate; dealsync's binary only mounts it as a subcommand (feature `cli`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};

use crate::faults::FaultPlan;
use crate::{Range, SimConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_loopback)]
    pub host: IpAddr,
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
    #[arg(long, value_parser = parse_anchor)]
    pub anchor: Option<DateTime<Utc>>,
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
    #[arg(long)]
    pub faults: Option<String>,
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
    /// Answer 204 instead of 304 Not Modified to a conditional request with nothing newer (304 is the default,
    /// as HTTP allows it).
    #[arg(long)]
    pub no_304: bool,
    /// Search ignores sort_by and sort_order and answers in id order, newest first.
    #[arg(long)]
    pub ignore_sort: bool,
    /// Search returns deals sharing a sort key in another order on each request.
    #[arg(long)]
    pub shuffle_ties: bool,
    /// Search does not see a deal until this many seconds after its last modification (a lagging index).
    #[arg(long, default_value_t = 0)]
    pub index_lag_secs: u64,
    /// Closed-won deals awaiting approval, which search leaves out unless asked for approved=both.
    #[arg(long, default_value_t = 0)]
    pub awaiting_approval: usize,
    /// Random deals re-modified (now) every second, as users editing the CRM while a sync runs.
    #[arg(long, default_value_t = 0)]
    pub edits_per_second: u32,
}

/// Why `serve` did not serve: a flag clap could not check alone, or the address.
#[derive(Debug)]
pub enum Failed {
    Flags(String),
    Listen(String),
}

impl SimArgs {
    /// The simulator these flags describe, or what is wrong with them.
    pub fn config(&self) -> Result<SimConfig, String> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err("--fault-rate must be between 0 and 1".into());
        }
        let faults = self.faults.as_deref().map(FaultPlan::parse).transpose();
        let faults = faults.map_err(|e| format!("--faults: {e}"))?.unwrap_or_default();
        let demo = SimConfig::demo(self.deals, self.seed);
        Ok(SimConfig {
            anchor: self.anchor.unwrap_or(demo.anchor),
            span: Duration::days(self.span_days.max(1)),
            latency: std::time::Duration::from_millis(self.latency_ms),
            broken: self.broken,
            tz: self.tz_offset,
            mint_limit: self.mint_limit,
            token_ttl: std::time::Duration::from_secs(self.token_ttl_secs.max(1)),
            faults: FaultPlan {
                rate: self.fault_rate,
                seed: self.fault_seed,
                slow: std::time::Duration::from_millis(self.fault_slow_ms),
                ..faults
            },
            won_share: self.won_share.clamp(0.0, 1.0),
            not_modified: !self.no_304,
            ignores_sort: self.ignore_sort,
            shuffled_ties: self.shuffle_ties,
            search_lag: std::time::Duration::from_secs(self.index_lag_secs),
            awaiting_approval: self.awaiting_approval,
            edits_per_second: self.edits_per_second,
            ..demo
        })
    }
}

/// Serves until `stop` completes, telling stdout how to point dealsync at the simulator and, at the end, what it
/// served.
pub async fn serve(args: &SimArgs, stop: impl Future<Output = ()>) -> Result<(), Failed> {
    let cfg = args.config().map_err(Failed::Flags)?;
    let addr = SocketAddr::new(args.host, args.port);
    let handle = crate::start(cfg.clone(), addr).await.map_err(|e| Failed::Listen(format!("{addr}: {e}")))?;
    let (from, to) = ((cfg.anchor - cfg.span).fixed_offset(), cfg.anchor.fixed_offset());
    let closed_won = handle.closed_won_in(&Range::modified(from, to)).len();
    let url = handle.base_url();
    let mut text = format!(
        "dealsync simulator on {url} with {} deals ({closed_won} closed won, seed {}), modified between {} and {}\n\
         Point dealsync at it with:\n  export ZOHO_ACCOUNTS_URL={url} ZOHO_CLIENT_ID={} ZOHO_CLIENT_SECRET={} \
         ZOHO_REFRESH_TOKEN={}\n",
        cfg.deals,
        cfg.seed,
        from.to_rfc3339(),
        to.to_rfc3339(),
        cfg.client_id,
        cfg.client_secret,
        cfg.refresh_token
    );
    let f = &cfg.faults;
    if !f.is_empty() {
        text += &format!("Injecting faults: {} planned, random rate {} (seed {}).\n", f.at.len(), f.rate, f.seed);
    }
    say(&(text + "Stop with Ctrl-C."));
    stop.await;
    let s = handle.stats();
    handle.stop().await;
    let (api, token, injected) = (s.api_requests, s.token_requests, s.faults_injected);
    say(&format!(
        "served {api} API requests, {token} token requests, {injected} faults injected {:?}",
        s.faults_by_kind
    ));
    Ok(())
}

/// A reader that stopped reading (a script that took the export line, `| head`) must not take the simulator
/// down, so a failed write is ignored.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn parse_loopback(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| format!("`{s}` is not an IP address"))?;
    if !ip.is_loopback() {
        return Err("the simulator only listens on loopback addresses (127.0.0.1 or ::1)".into());
    }
    Ok(ip)
}

/// A date (midnight UTC) or an RFC 3339 instant.
fn parse_anchor(s: &str) -> Result<DateTime<Utc>, String> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map(|d| d.and_time(Default::default()).and_utc());
    date.or_else(|_| DateTime::parse_from_rfc3339(s.trim()).map(|t| t.to_utc())).map_err(|_| {
        format!("`{s}` is neither a date (2026-01-31) nor an RFC 3339 instant (2026-01-31T00:00:00+05:30)")
    })
}

fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let probe = format!("2026-01-01T00:00:00{s}");
    DateTime::parse_from_rfc3339(&probe)
        .map(|t| *t.offset())
        .map_err(|_| format!("`{s}` is not an offset like +05:30 or -03:00"))
}
