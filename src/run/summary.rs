//! The end of every run: one `run_summary` event with everything an operator or an alert needs (window,
//! pages, deals, rows, quarantine, duration, outcome, exit code), plus one human line when a person watches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::error::RunError;
use crate::exit::Exit;
use crate::sink::WriteStats;
use crate::window::Window;
use crate::zoho::fetch::FetchStats;

/// The facts of one run, filled in as it goes: what the log's summary, the metrics and the ledger report.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub kind: &'static str,
    /// `i-of-n` for a task of a sharded backfill.
    pub shard: Option<String>,
    pub exit: Exit,
    pub sink: String,
    pub window: Option<Window>,
    pub fetched: FetchStats,
    pub requests: u64,
    pub retries: u64,
    pub token_mints: u64,
    pub token_mint_failures: u64,
    /// Closed-won deals search did not return that were read by id.
    pub repaired: u64,
    pub deals_fetched: u64,
    pub not_closed_won: u64,
    /// Records that could not be mapped, kept in the quarantine with their reasons.
    pub quarantined: u64,
    pub rows: WriteStats,
    /// Rows soft-deleted because Zoho deleted the deal.
    pub rows_deleted: u64,
    /// Rows flipped to `is_closed_won = false` because the deal was reopened or lost.
    pub rows_reopened: u64,
    /// Sum of `amount` per currency over the closed-won deals fetched; currencies are never added together.
    pub won_amount_by_currency: BTreeMap<String, Decimal>,
    pub duration_ms: u64,
    /// Reconciliation: Zoho's count of closed-won deals in the window, and the warehouse's.
    pub crm_closed_won: Option<u64>,
    pub warehouse_closed_won: Option<u64>,
    /// From process start to the first request sent (the token mint), in microseconds.
    pub time_to_first_request_us: u64,
    /// The process's peak resident memory so far (KiB; Linux's VmHWM, 0 where the system does not say).
    pub peak_rss_kb: u64,
    /// Bytes BigQuery billed for the run's jobs (BigQuery runs only).
    pub bytes_billed: Option<u64>,
    pub error: Option<String>,
}

impl RunSummary {
    /// A run refused before it started (a usage or configuration error), as monitoring should see it.
    pub fn refused(backfill: bool, exit: Exit, error: String) -> RunSummary {
        let kind = if backfill { "backfill" } else { "scheduled" };
        RunSummary { kind, exit, error: Some(error), ..Default::default() }
    }

    /// The one rule for how a run that got this far exits: its error's exit, else 3 when records were
    /// quarantined, else 0.
    pub fn exit_for(&self, error: Option<&RunError>) -> Exit {
        match error {
            Some(e) => e.exit(),
            None if self.quarantined > 0 => Exit::Partial,
            None => Exit::Ok,
        }
    }

    /// Emits the `run_summary` event, and the human line on a terminal.
    pub fn emit(&self) {
        let amounts = serde_json::to_string(&self.won_amount_by_currency).unwrap_or_default();
        let (start, end) = self.window.as_ref().map(|w| (w.start_str(), w.end_str())).unwrap_or_default();
        macro_rules! summary_event {
            ($level:ident) => {
                tracing::$level!(
                    event = "run_summary",
                    run_id = %self.run_id,
                    kind = self.kind,
                    outcome = self.exit.outcome(),
                    exit_code = self.exit.code(),
                    sink = %self.sink,
                    window_field = self.window.as_ref().map_or("", |w| w.field.api_name()),
                    window_start = start.as_str(),
                    window_end = end.as_str(),
                    pages = self.fetched.pages,
                    requests = self.requests,
                    retries = self.retries,
                    token_mints = self.token_mints,
                    token_mint_failures = self.token_mint_failures,
                    windows_split = self.fetched.slices_split,
                    coql_counts = self.fetched.counts,
                    coql_pages = self.fetched.listings,
                    by_id_requests = self.fetched.by_id,
                    repaired = self.repaired,
                    deals_fetched = self.deals_fetched,
                    not_closed_won = self.not_closed_won,
                    rows_inserted = self.rows.inserted,
                    rows_updated = self.rows.updated,
                    rows_unchanged = self.rows.unchanged,
                    rows_written = self.rows.written(),
                    quarantined = self.quarantined,
                    rows_deleted = self.rows_deleted,
                    rows_reopened = self.rows_reopened,
                    won_amount_by_currency = %amounts,
                    duration_ms = self.duration_ms,
                    time_to_first_request_us = self.time_to_first_request_us,
                    peak_rss_kb = self.peak_rss_kb,
                    bytes_billed = self.bytes_billed,
                    crm_closed_won = self.crm_closed_won,
                    warehouse_closed_won = self.warehouse_closed_won,
                    error = self.error.as_deref().unwrap_or(""),
                    "run finished: {}", self.exit.outcome()
                )
            };
        }
        match self.exit {
            Exit::Ok => summary_event!(info),
            Exit::Partial => summary_event!(warn),
            _ => summary_event!(error),
        }
        if !crate::telemetry::human_output() {
            return;
        }
        // One line for a person: what happened, to where, and what to do next if it failed.
        let window = self.window.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
        let error = self.error.as_ref().map(|e| format!("; error: {e}")).unwrap_or_default();
        let secs = self.duration_ms as f64 / 1000.0;
        let mark = match self.exit {
            Exit::Ok => "ok",
            Exit::Partial => "partial",
            _ => "FAILED",
        };
        eprintln!(
            "dealsync {mark}: {} closed-won deals{window} from {} pages in {secs:.1}s -> {}: {} new, {} updated, {} unchanged or read twice, {} quarantined{error} [exit {}]",
            // Zoho's own count of the window when the run got that far; what was fetched (copies included) else.
            self.crm_closed_won.unwrap_or(self.deals_fetched.saturating_sub(self.not_closed_won)),
            self.fetched.pages,
            self.sink,
            self.rows.inserted,
            self.rows.updated,
            self.rows.unchanged,
            self.quarantined,
            self.exit.code(),
        );
    }
}

/// A progress bar with ETA for long interactive runs (text logs on a terminal only, never mixed into JSON), cleared
/// when dropped.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// Filled in by the fetcher once it knows how many deals the window holds.
    pub expected: Arc<AtomicU64>,
}

impl Progress {
    /// Starts the spinner when a person watches.
    pub fn start() -> Progress {
        let bar = crate::telemetry::human_output().then(|| {
            let bar = indicatif::ProgressBar::new_spinner()
                .with_style(style("{spinner} {pos} closed-won deals written ({rate}, {elapsed})"))
                .with_finish(indicatif::ProgressFinish::AndClear);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress { bar, expected: Arc::default() }
    }

    /// `done`: distinct closed-won deals written (or quarantined) so far, against the window's closed-won count.
    pub fn set(&self, done: u64) {
        let Some(bar) = &self.bar else { return };
        let n = self.expected.load(Ordering::Relaxed);
        // A spinner until the count is known.
        if bar.length().is_none() && n > 0 {
            bar.set_length(n);
            bar.set_style(style("{bar:30} {pos}/{len} closed-won deals ({rate}, ETA {eta})"));
        }
        // Deals won while the run pages (and read by the completeness check) may pass Zoho's first count.
        if bar.length().is_some_and(|len| done > len) {
            bar.set_length(done);
        }
        bar.set_position(done);
    }
}

/// A bar's template, with deals per second whole: "17522/s", not "17,521.9932/s".
fn style(template: &str) -> indicatif::ProgressStyle {
    let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.0}/s", state.per_sec());
    };
    indicatif::ProgressStyle::with_template(template).expect("valid template").with_key("rate", rate)
}

/// `VmHWM` from `/proc/self/status`: what the run costs in memory, for operators sizing a job and the benchmark.
pub fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    peak.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}
