//! One sync, start to finish: settings → window → fetch and map (the fetcher's tasks, each mapping the page it
//! read) → write (the consumer) → completeness and repair → commit → changes → reconciliation → ledger →
//! summary. Fetching and writing overlap through a bounded channel, so memory stays flat however many deals a
//! window holds.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use super::reconcile::Completeness;
use super::summary::RunSummary;
use crate::config::cli::{SyncPlan, DEFAULT_SQLITE};
use crate::config::{Config, ConfigError, Needs, Settings, ZohoSettings};
use crate::exit::Exit;
use crate::mapping::{Columns, Mapped, Mapper, RunStamp};
use crate::schema::{DealRow, Quarantined};
use crate::shutdown::Shutdown;
use crate::sink::ndjson::NdjsonSink;
use crate::sink::seen::{Offer, Seen};
use crate::sink::{OpenError, Opening, RunRecord, Sink, SinkError, SinkKind, SinkSpec, WriteStats};
use crate::window::Window;
use crate::zoho::fetch::{FetchStats, FetchedPage, Fetcher};
use crate::zoho::{ZohoClient, ZohoError};

/// Pages buffered between fetching and writing.
const PIPELINE_DEPTH: usize = 4;
/// How long the writer waits for a page before letting the sink commit what it holds (`Sink::idle`).
const IDLE_COMMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zoho(#[from] ZohoError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Demo(crate::commands::demo::DemoError),
    #[error("stopped by {0}")]
    Interrupted(String),
    #[error("the warehouse does not hold every closed-won deal Zoho has in this window (see the incomplete and reconciliation events)")]
    Mismatch,
}

impl From<OpenError> for RunError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Config(e) => RunError::Config(e),
            OpenError::Sink(e) => RunError::Sink(e),
        }
    }
}

impl RunError {
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Config(_) => Exit::Config,
            RunError::Zoho(e) => e.exit(),
            RunError::Sink(e) => e.exit,
            RunError::Usage(_) => Exit::Usage,
            RunError::Demo(e) => e.exit(),
            RunError::Interrupted(_) => Exit::Interrupted,
            RunError::Mismatch => Exit::Partial,
        }
    }
}

/// A new run id: UTC start time plus random bits (the standard library's per-process random hash keys, mixed
/// with the time and process id), sortable and safe in table names.
pub fn new_run_id(now: chrono::DateTime<Utc>) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now.timestamp_nanos_opt().unwrap_or_default());
    h.write_u32(std::process::id());
    format!("{}_{:08x}", now.format("%Y%m%dT%H%M%SZ"), h.finish() as u32)
}

/// Counts gathered by the consumer.
#[derive(Debug, Default)]
struct Written {
    stats: WriteStats,
    records: u64,
    not_closed_won: u64,
    quarantined: u64,
    amounts: BTreeMap<String, Decimal>,
}

/// Runs `dealsync sync`. Always returns the summary it emitted and the exit it chose.
pub async fn sync(plan: SyncPlan, config: &Config) -> (RunSummary, Exit) {
    let started = Instant::now();
    let started_at = Utc::now();
    let run_id = new_run_id(started_at);
    let mut summary = RunSummary {
        run_id: run_id.clone(),
        kind: if plan.spec.is_backfill() { "backfill" } else { "scheduled" },
        ..RunSummary::default()
    };
    // Listen for SIGTERM/SIGINT from the start, so that a stop during set-up is as clean as one mid-fetch.
    let shutdown = Shutdown::new();
    let watchers = [
        tokio::spawn({
            let s = shutdown.clone();
            async move {
                crate::shutdown::signal().await;
                tracing::warn!(event = "signal", "termination signal received: stopping after the batch in progress");
                s.trigger("a termination signal (SIGTERM/SIGINT)");
            }
        }),
        tokio::spawn({
            let (s, deadline) = (shutdown.clone(), plan.deadline);
            async move {
                tokio::time::sleep(deadline).await;
                tracing::warn!(event = "deadline", seconds = deadline.as_secs(), "the run deadline passed: stopping");
                s.trigger(format!("the run deadline ({}s, --deadline)", deadline.as_secs()));
            }
        }),
    ];
    let result = sync_inner(&plan, config, &run_id, started_at, &mut summary, &shutdown).await;
    watchers.iter().for_each(|w| w.abort());
    let exit = match &result {
        Ok(()) if summary.quarantined > 0 => Exit::Partial,
        Ok(()) => Exit::Ok,
        Err(RunError::Sink(e)) if e.exit == Exit::Ok => {
            tracing::info!(event = "output_closed", run_id = %run_id, "stdout was closed by its reader: stopping quietly");
            Exit::Ok
        }
        Err(e) => {
            tracing::error!(event = "run_failed", run_id = %run_id, "{e}");
            summary.error = Some(e.to_string());
            e.exit()
        }
    };
    summary.set_exit(exit);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.peak_rss_kb = super::summary::peak_rss_kb();
    summary.emit();
    (summary, exit)
}

async fn sync_inner(
    plan: &SyncPlan,
    config: &Config,
    run_id: &str,
    started_at: chrono::DateTime<Utc>,
    summary: &mut RunSummary,
    shutdown: &Shutdown,
) -> Result<(), RunError> {
    if let Some(sink) = plan.sink.as_ref().filter(|_| !plan.dry_run) {
        // A sink that does not exist is a usage error, before anything else is looked at.
        crate::sink::resolve(sink).map_err(RunError::Usage)?;
    }
    let needs = if plan.demo.is_some() { Needs::Nothing } else { Needs::ZohoCredentials };
    let settings = config.settings(needs)?;

    // The demo simulator lives as long as this function.
    let mut demo = None;
    let zoho_settings: ZohoSettings = match plan.demo {
        Some((deals, seed)) => {
            let (d, s) = crate::commands::demo::Demo::start(deals, seed, config.max_concurrency()?)
                .await
                .map_err(RunError::Demo)?;
            demo = Some(d);
            s
        }
        None => settings.zoho.clone().expect("credentials were required"),
    };

    if let (Some((_, count)), crate::window::WindowSpec::Backfill { to: None, .. }) = (settings.shard, &plan.spec) {
        if count > 1 {
            // Each task would resolve "now" when it starts, and staggered starts would leave gaps between slices.
            return Err(RunError::Usage(format!(
                "a backfill sharded over {count} tasks needs --to, so that every task cuts the same range into slices"
            )));
        }
    }
    let mut sink = open_sink(plan, &settings, run_id, started_at).await?;
    summary.sink = sink.describe();
    sink.prepare().await?;

    let last_good = match plan.spec {
        crate::window::WindowSpec::Default { .. } => sink.last_good_window_end(plan.field).await?,
        crate::window::WindowSpec::Backfill { .. } => None,
    };
    // A ledger end after now is a clock that was wrong: the window falls back to the last 24 hours.
    let last_good = match last_good {
        Some(end) if end > started_at => {
            tracing::warn!(event = "ledger_in_future", ledger_end = %end,
                "the last good run's window ends after now (a clock was wrong): syncing the last 24 hours");
            None
        }
        other => other,
    };
    let full = crate::window::resolve(&plan.spec, plan.field, started_at, last_good).map_err(RunError::Usage)?;
    let window = match (settings.shard, plan.spec.is_backfill()) {
        (Some((index, count)), true) if count > 1 => {
            // Contiguous slices of the range, one per task; together they cover it exactly.
            let slices = full.split_into(count).unwrap_or_else(|| vec![full.clone()]);
            match slices.get(index) {
                Some(w) => {
                    tracing::info!(event = "shard", index, count, "task {index} of {count} syncs its slice of {full}");
                    summary.shard = Some(format!("{index}-of-{count}"));
                    w.clone()
                }
                None => {
                    tracing::info!(
                        event = "shard",
                        index,
                        count,
                        "the range has fewer slices than tasks; this task has nothing to do"
                    );
                    return Ok(());
                }
            }
        }
        (Some((index, count)), false) if count > 1 && index > 0 => {
            tracing::info!(
                event = "shard",
                index,
                count,
                "scheduled runs are not sharded: task 0 syncs the window, this one has nothing to do"
            );
            return Ok(());
        }
        _ => full,
    };
    // A backfill (or its slice) proves only what is settled: the part of the window before now minus the index
    // lag. Past that, edits still move deals in and out while it is read.
    let window = match plan.spec {
        crate::window::WindowSpec::Backfill { index_lag, .. } => match window.settled(started_at, index_lag) {
            Some(w) if w.end != window.end => {
                tracing::info!(event = "window_clamped", requested_end = %window.end_str(), end = %w.end_str(),
                    "the window ends after now minus the index lag; it is synced up to there, the rest by later runs");
                w
            }
            Some(w) => w,
            None => {
                tracing::info!(event = "window_clamped", start = %window.start_str(),
                    "this window starts after now minus the index lag: nothing to sync yet");
                return Ok(());
            }
        },
        crate::window::WindowSpec::Default { .. } => window,
    };
    summary.window_field = Some(window.field.api_name().to_string());
    summary.window_start = Some(window.start_str());
    summary.window_end = Some(window.end_str());
    // The run is in the ledger from its start: one killed on the way stays listed, `running` (and exit 75, what an
    // interruption means). Its row is replaced when it ends.
    let running = ledger_row(run_id, summary, &window, started_at, "running", Exit::Interrupted.code());
    sink.record_run(&running).await?;
    tracing::info!(event = "window", run_id = %run_id, field = %window.field, start = %window.start_str(),
        end = %window.end_str(), from_ledger = last_good.is_some(), "syncing {window}");

    let client = ZohoClient::new(zoho_settings, plan.retry, plan.request_timeout)?;
    let columns = std::sync::Arc::new(Columns::new(&settings.promoted));
    let stamp = RunStamp { run_id: run_id.into(), synced_at: started_at, columns };

    // Deletions and stage changes are asked for while the pages flow (two requests that would otherwise wait
    // for the last page) and applied once every row is written, since a later upsert would undo a mark.
    // They start once the run holds a token (a refused mint is asked once) and are dropped if the pipeline fails.
    let tracks_changes = sink.tracks_changes();
    let changes = async {
        if !tracks_changes || !client.first_token().await {
            return None;
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            found = fetch_changes(&client, &window) => Some(found),
        }
    };
    let (outcome, changes) = {
        let fetch = pipeline(&client, sink.as_mut(), window.clone(), &stamp, shutdown);
        tokio::pin!(fetch, changes);
        let (mut outcome, mut found) = (None, None);
        while outcome.is_none() || found.is_none() {
            tokio::select! {
                o = &mut fetch, if outcome.is_none() => {
                    let failed = o.3.is_some();
                    outcome = Some(o);
                    if failed {
                        break;
                    }
                }
                c = &mut changes, if found.is_none() => found = Some(c),
            }
        }
        (outcome.expect("the loop ends with the pipeline's outcome"), found.flatten())
    };
    let (fetch_stats, written, completeness, error) = outcome;
    summary.pages = fetch_stats.pages;
    summary.windows_split = fetch_stats.slices_split;
    summary.coql_counts = fetch_stats.counts;
    summary.coql_pages = fetch_stats.listings;
    summary.by_id_requests = fetch_stats.by_id;
    summary.deals_fetched = written.records;
    summary.not_closed_won = written.not_closed_won;
    summary.quarantined = written.quarantined + written.stats.rejected;
    summary.rows_inserted = written.stats.inserted;
    summary.rows_updated = written.stats.updated;
    summary.rows_unchanged = written.stats.unchanged;
    summary.won_amount_by_currency = written.amounts;
    summary.bytes_billed = sink.bytes_billed();

    let mut error = error;
    if let (None, Some(found)) = (&error, changes) {
        match apply_changes(sink.as_mut(), found).await {
            Ok((deleted, reopened)) => {
                summary.rows_deleted = deleted;
                summary.rows_reopened = reopened;
            }
            Err(e) => error = Some(e),
        }
    }
    let mut mismatch = false;
    if let Some(c) = &completeness {
        summary.repaired = c.repaired;
    }
    if let (None, Some(c)) = (&error, &completeness) {
        summary.crm_closed_won = Some(c.crm);
        if !c.missing.is_empty() {
            mismatch = true;
            let named: Vec<&str> = c.missing.iter().take(super::reconcile::NAMED).map(String::as_str).collect();
            tracing::warn!(event = "incomplete", run_id = %run_id, missing = c.missing.len(), ids = %serde_json::to_string(&named).expect("strings serialize"),
                "{} closed-won deals Zoho lists in the window could not be fetched, even by id: [{}]",
                c.missing.len(), named.join(","));
        }
    }
    if error.is_none() {
        match super::reconcile::reconcile(&client, sink.as_mut(), &window, completeness.as_ref()).await {
            Ok(Some(r)) => {
                summary.crm_closed_won = Some(r.crm);
                summary.warehouse_closed_won = Some(r.warehouse);
                mismatch = !r.matches;
                log_reconciliation(run_id, &r);
            }
            Ok(None) => {
                tracing::debug!(event = "reconciliation", outcome = "skipped", "this sink keeps nothing to compare")
            }
            Err(e) => {
                tracing::warn!(event = "reconciliation", outcome = "unavailable", "could not reconcile the window: {e}")
            }
        }
    }
    // Every request of the run, changes and reconciliation included.
    let counters = &client.stats;
    summary.requests = counters.requests.load(std::sync::atomic::Ordering::Relaxed);
    summary.retries = counters.retries.load(std::sync::atomic::Ordering::Relaxed);
    summary.token_mints = counters.token_mints.load(std::sync::atomic::Ordering::Relaxed);
    summary.token_mint_failures = counters.token_mint_failures.load(std::sync::atomic::Ordering::Relaxed);
    summary.time_to_first_request_us = counters.first_request_us.load(std::sync::atomic::Ordering::Relaxed);
    let exit = match &error {
        None if summary.quarantined > 0 || mismatch => Exit::Partial,
        None => Exit::Ok,
        Some(e) => e.exit(),
    };
    if mismatch && summary.error.is_none() {
        summary.error = Some(RunError::Mismatch.to_string());
    }
    let record = RunRecord {
        error: error.as_ref().map(|e| e.to_string()),
        ..ledger_row(run_id, summary, &window, started_at, exit.outcome(), exit.code())
    };
    if let Err(e) = sink.record_run(&record).await {
        tracing::error!(event = "ledger_failed", run_id = %run_id, "could not record the run in the ledger: {e}");
        if error.is_none() {
            return Err(e.into());
        }
    }
    if let Some(demo) = demo.take() {
        let truth = demo.closed_won_in(&window);
        let closed_won = summary.deals_fetched - summary.not_closed_won;
        tracing::info!(
            event = "demo_check",
            simulator_closed_won = truth,
            fetched_closed_won = closed_won,
            "demo check: the simulator holds {truth} closed-won deals in the window; this run fetched {closed_won}"
        );
        demo.stop().await;
    }
    match error {
        Some(e) => Err(e),
        None if mismatch => Err(RunError::Mismatch),
        None => Ok(()),
    }
}

/// The run's row in the ledger, as it stands.
fn ledger_row(
    run_id: &str,
    summary: &RunSummary,
    window: &Window,
    started_at: chrono::DateTime<Utc>,
    status: &str,
    exit_code: u8,
) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        kind: summary.kind,
        window_field: window.field.api_name().to_string(),
        window_start: window.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        window_end: window.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        status: status.to_string(),
        exit_code,
        started_at,
        finished_at: Utc::now(),
        pages: summary.pages,
        deals_fetched: summary.deals_fetched,
        rows_inserted: summary.rows_inserted,
        rows_updated: summary.rows_updated,
        rows_unchanged: summary.rows_unchanged,
        not_closed_won: summary.not_closed_won,
        quarantined: summary.quarantined,
        error: None,
    }
}

/// Deletions since the window's start and deals that left "Closed Won" in it.
type Changes = (Vec<crate::zoho::changes::Deleted>, Vec<crate::zoho::changes::StageChange>);

async fn fetch_changes(client: &ZohoClient, window: &Window) -> Result<Changes, ZohoError> {
    tokio::try_join!(
        crate::zoho::changes::deleted_since(client, window.start.with_timezone(&Utc)),
        crate::zoho::changes::left_closed_won(client, window),
    )
}

/// Applies the changes to rows the sink holds.
async fn apply_changes(sink: &mut dyn Sink, found: Result<Changes, ZohoError>) -> Result<(u64, u64), RunError> {
    let (deleted, left) = found?;
    let seen_deleted = deleted.len();
    let n_deleted = if deleted.is_empty() { 0 } else { sink.mark_deleted(deleted).await? };
    let seen_left = left.len();
    let n_reopened = if left.is_empty() { 0 } else { sink.mark_not_won(left).await? };
    tracing::info!(
        event = "changes",
        deleted_in_zoho = seen_deleted,
        rows_deleted = n_deleted,
        not_won_in_zoho = seen_left,
        rows_reopened = n_reopened,
        "applied deletions and stage changes to deals the warehouse holds"
    );
    Ok((n_deleted, n_reopened))
}

pub(crate) fn log_reconciliation(run_id: &str, r: &super::reconcile::Reconciliation) {
    // JSON arrays: a JSON log line carries them as arrays (telemetry::JSON_FIELDS), a person reads them as such.
    let missing = serde_json::to_string(&r.missing).expect("strings serialize");
    let extra = serde_json::to_string(&r.extra).expect("strings serialize");
    if r.matches && r.extra_total == 0 {
        tracing::info!(event = "reconciliation", run_id = %run_id, outcome = "match", crm = r.crm, warehouse = r.warehouse,
            "the warehouse holds the {} closed-won deals Zoho has in the window", r.crm);
    } else if r.matches {
        tracing::warn!(event = "reconciliation", run_id = %run_id, outcome = "extra", crm = r.crm, warehouse = r.warehouse,
            extra = %extra, extra_total = r.extra_total,
            "the warehouse holds every closed-won deal Zoho has in the window, and {} rows Zoho no longer lists there \
             (edited, lost or deleted since they were written; the run covering their new modification time updates them): {extra}",
            r.extra_total);
    } else {
        tracing::warn!(event = "reconciliation", run_id = %run_id, outcome = "mismatch", crm = r.crm, warehouse = r.warehouse,
            missing = %missing, extra = %extra, missing_total = r.missing_total, extra_total = r.extra_total,
            "Zoho has {} closed-won deals in the window, the warehouse holds {}; missing {}: {missing}, extra {}: {extra}",
            r.crm, r.warehouse, r.missing_total, r.extra_total);
    }
}

/// The sink a command uses, checked: `--sink`, else the demo's own warehouse, else BigQuery when
/// `BIGQUERY_PROJECT` is set, else the local SQLite warehouse. The error is a usage error's message.
pub(crate) fn chosen_sink(
    flag: Option<&SinkSpec>,
    settings: &Settings,
    demo: bool,
) -> Result<(&'static SinkKind, SinkSpec), String> {
    let spec = match (flag, &settings.bigquery) {
        (Some(s), _) => s.clone(),
        // The demo writes a warehouse of its own, never the real one or its run ledger.
        (None, _) if demo => SinkSpec::new("sqlite", Some(crate::config::cli::DEMO_SQLITE)),
        (None, Some(_)) => SinkSpec::new("bigquery", None),
        (None, None) => SinkSpec::new("sqlite", Some(crate::config::cli::DEFAULT_SQLITE)),
    };
    crate::sink::resolve(&spec)
}

pub(crate) async fn open_sink(
    plan: &SyncPlan,
    settings: &Settings,
    run_id: &str,
    started_at: chrono::DateTime<Utc>,
) -> Result<Box<dyn Sink>, RunError> {
    if plan.dry_run {
        return Ok(Box::new(NdjsonSink::dry_run()));
    }
    let (kind, spec) = chosen_sink(plan.sink.as_ref(), settings, plan.demo.is_some()).map_err(RunError::Usage)?;
    if plan.sink.is_none() && plan.demo.is_none() && settings.bigquery.is_none() {
        tracing::warn!(
            event = "default_sink",
            path = DEFAULT_SQLITE,
            "BIGQUERY_PROJECT is not set: writing to the embedded SQLite warehouse {DEFAULT_SQLITE}"
        );
    }
    let table = crate::sink::TableSpec { columns: crate::schema::columns(&settings.promoted), rewrite: plan.rewrite };
    let opening = Opening {
        target: spec.target.as_deref(),
        table,
        settings,
        run_id,
        started_at,
        retry: plan.retry,
        request_timeout: plan.request_timeout,
        deadline: plan.deadline,
    };
    Ok((kind.open)(opening).await?)
}

/// The deals a run has fetched: each once (a deal that comes back on another page is passed on only when that
/// copy is newer), the ones quarantined, and the ones whose copy lies outside the window (read by id after an
/// edit moved them on). What the completeness check compares with Zoho.
#[derive(Default)]
pub struct RunIds {
    rows: Seen,
    quarantined: std::collections::HashSet<String>,
    moved_on: std::collections::HashSet<String>,
}

impl RunIds {
    fn has(&self, id: &str) -> bool {
        self.rows.contains(id) || self.quarantined.contains(id)
    }

    /// Distinct deals fetched: rows and quarantined records with an id.
    fn len(&self) -> u64 {
        (self.rows.len() + self.quarantined.iter().filter(|id| !self.rows.contains(id)).count()) as u64
    }
}

/// What the writer receives: a mapped page, or a request to say once everything sent before was handled.
enum Msg {
    Page(MappedPage),
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Waits until the writer has handled everything sent before; false if it has stopped.
async fn barrier(tx: &mpsc::Sender<Msg>) -> bool {
    let (ack, done) = tokio::sync::oneshot::channel();
    tx.send(Msg::Barrier(ack)).await.is_ok() && done.await.is_ok()
}

/// Fetches `window` and writes what it finds, overlapping both, then proves the run complete: the distinct deals
/// fetched against Zoho's count taken before the first search (a `Modified_Time` window only loses deals as
/// they are edited, so equal numbers mean the same deals), and otherwise against Zoho's id listing, reading
/// what is missing by id. Returns whatever was counted even on failure. A shutdown stops fetching at once and
/// writing after the batch in progress.
async fn pipeline(
    client: &ZohoClient,
    sink: &mut dyn Sink,
    window: Window,
    stamp: &RunStamp,
    shutdown: &Shutdown,
) -> (FetchStats, Written, Option<Completeness>, Option<RunError>) {
    let (tx, mut rx) = mpsc::channel::<Msg>(PIPELINE_DEPTH);
    let expected = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut progress = super::summary::Progress::new(expected.clone());
    let ids = std::sync::Mutex::new(RunIds::default());
    let map = move |page| Msg::Page(map_page(page, stamp));
    // The producer owns the channel's sender: when it is done (and its fetcher dropped), the writer sees the end.
    let (ids_ref, window_ref) = (&ids, &window);
    let producer = async move {
        let reading = crate::schema::zoho_fields(stamp.columns.columns());
        let fetcher = Fetcher::new(client, tx.clone(), map, shutdown.clone()).expected(expected).reading(reading);
        // Whether it stopped early, and the proof; the counters are the fetcher's whatever happened.
        let produced = async {
            let fetched = fetcher.fetch_window(window_ref.clone()).await?;
            if fetched.stopped_early || !barrier(&tx).await {
                return Ok((true, None));
            }
            let completeness =
                complete(&fetcher, window_ref, fetched.stats.root_count.unwrap_or(0), ids_ref, &tx).await?;
            Ok::<_, RunError>((completeness.stopped, Some(completeness)))
        }
        .await;
        (fetcher.stats(), produced)
    };
    let consumer = async {
        let mut written = Written::default();
        let mut stopped = false;
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.wait() => { stopped = true; break; }
                msg = rx.recv() => match msg { Some(m) => m, None => break },
                () = tokio::time::sleep(IDLE_COMMIT) => {
                    match sink.idle().await {
                        Ok(committed) => written.stats.add(committed),
                        Err(e) => {
                            drop(rx);
                            return (written, Some(e), false);
                        }
                    }
                    continue;
                }
            };
            let page = match msg {
                Msg::Page(p) => p,
                Msg::Barrier(ack) => {
                    let _ = ack.send(());
                    continue;
                }
            };
            if let Err(e) = write_page(sink, page, &mut written, &ids, &window).await {
                drop(rx);
                return (written, Some(e), false);
            }
            progress.set(ids.lock().expect("not poisoned").len());
        }
        (written, None, stopped)
    };
    let (produced, (mut written, write_err, consumer_stopped)) = tokio::join!(producer, consumer);
    progress.finish();
    let (fetch_stats, produced) = produced;
    let (fetch_err, fetch_stopped, completeness) = match produced {
        Ok((stopped, completeness)) => (None, stopped, completeness),
        Err(e) => (Some(e), false, None),
    };
    // The sink's error explains a closed channel; otherwise the fetch error stands.
    let mut error = write_err.map(RunError::from).or(fetch_err);
    if error.is_none() && (fetch_stopped || consumer_stopped) {
        if let Some(reason) = shutdown.reason() {
            error = Some(RunError::Interrupted(reason));
        }
    }
    match &error {
        None => match sink.commit().await {
            Ok(extra) => written.stats.add(extra),
            Err(e) => error = Some(e.into()),
        },
        Some(RunError::Interrupted(reason)) => {
            let (kept, committed) = sink.abandon().await;
            written.stats.add(committed);
            error = Some(RunError::Interrupted(format!(
                "{reason} before the window was complete; {kept}; the next run covers the window again"
            )));
        }
        Some(_) => written.stats.add(sink.settle().await),
    }
    let completeness = completeness.map(|mut c| {
        c.moved_on = std::mem::take(&mut ids.lock().expect("not poisoned").moved_on);
        c
    });
    (fetch_stats, written, completeness, error)
}

/// Checks that the run fetched every closed-won deal Zoho has in the window, and reads the missing ones by id.
/// `stopped` when it was stopped on the way (what it repaired until then is counted, nothing is proven).
async fn complete(
    fetcher: &Fetcher<'_, Msg>,
    window: &Window,
    counted: u64,
    ids: &std::sync::Mutex<RunIds>,
    tx: &mpsc::Sender<Msg>,
) -> Result<Completeness, ZohoError> {
    let (fetched, quarantined) = {
        let ids = ids.lock().expect("not poisoned");
        (ids.len(), ids.quarantined.len())
    };
    // Only a Modified_Time window is proven by its count: an edit moves a deal out of it, never into it (its end
    // is settled), so the deals fetched after the count are among the deals counted. An edit can move a closing
    // date anywhere, and a quarantined record's stage is unknown, so it may not be one of the deals counted.
    if fetched == counted && quarantined == 0 && !window.field.is_date() {
        return Ok(Completeness { crm: counted, ..Completeness::default() });
    }
    let held = |listed: &[String]| -> Vec<String> {
        let ids = ids.lock().expect("not poisoned");
        listed.iter().filter(|id| !ids.has(id)).cloned().collect()
    };
    let mut listed = fetcher.list_ids(window).await?;
    super::reconcile::sort_ids(&mut listed);
    let mut missing = held(&listed);
    tracing::info!(event = "completeness", counted, fetched, listed = listed.len(), missing = missing.len(),
        "Zoho counted {counted} closed-won deals in the window and lists {}; the run fetched {fetched}; {} to read by id",
        listed.len(), missing.len());
    let mut repaired = 0;
    for round in 1..=REPAIR_ROUNDS {
        if missing.is_empty() {
            break;
        }
        let f = fetcher.fetch_ids(missing.clone()).await?;
        let stopped = f.stopped_early || !barrier(tx).await;
        let still = held(&missing);
        repaired += (missing.len() - still.len()) as u64;
        if stopped {
            // What the repair wrote so far is counted; the proof is not made.
            return Ok(Completeness { repaired, stopped, ..Completeness::default() });
        }
        if still.is_empty() || round == REPAIR_ROUNDS {
            missing = still;
            break;
        }
        // Read by id, they were lost, deleted or moved out of the window since the listing (or Zoho could not
        // give them yet): what counts is what Zoho lists now.
        listed = fetcher.list_ids(window).await?;
        super::reconcile::sort_ids(&mut listed);
        missing = held(&listed);
        tracing::info!(event = "completeness", round, listed = listed.len(), missing = missing.len(),
            "{} deals could not be read by id; Zoho lists {} closed-won deals in the window now, {} of them not fetched",
            still.len(), listed.len(), missing.len());
    }
    if repaired > 0 {
        tracing::info!(
            event = "repaired",
            repaired,
            "read {repaired} closed-won deals by id that search did not return"
        );
    }
    Ok(Completeness { crm: listed.len() as u64, listed: Some(listed), repaired, missing, ..Completeness::default() })
}

/// Times the deals missing from a run are read by id, each after a fresh listing (deals change while a run reads).
const REPAIR_ROUNDS: usize = 3;

/// One page's records, mapped by the task that fetched it (its text is freed then, not after the sink's turn).
struct MappedPage {
    records: u64,
    rows: Vec<DealRow>,
    quarantined: Vec<Quarantined>,
    not_closed_won: u64,
}

fn map_page(page: FetchedPage, stamp: &RunStamp) -> MappedPage {
    let n = page.page.len();
    let mut mapped = MappedPage { records: 0, rows: Vec::with_capacity(n), quarantined: Vec::new(), not_closed_won: 0 };
    let mut mapper = Mapper::new(stamp);
    // An ordered page's last second is read again with the rest of its slice.
    for rec in page.page.records().take(page.keep.unwrap_or(usize::MAX)) {
        mapped.records += 1;
        match mapper.map(&rec) {
            Mapped::Row(row) => mapped.rows.push(*row),
            Mapped::NotClosedWon { deal_id, stage } => {
                mapped.not_closed_won += 1;
                tracing::debug!(
                    event = "not_closed_won",
                    deal_id = deal_id.as_deref().unwrap_or(""),
                    stage = stage.as_deref().unwrap_or(""),
                    "skipped a deal whose stage only contains \"Closed Won\""
                );
            }
            Mapped::Quarantined(q) => {
                tracing::warn!(event = "quarantined", deal_id = q.deal_id.as_deref().unwrap_or(""),
                    reason = %q.reason, "a record could not be mapped; it was quarantined");
                mapped.quarantined.push(*q);
            }
        }
    }
    mapped
}

async fn write_page(
    sink: &mut dyn Sink,
    page: MappedPage,
    written: &mut Written,
    ids: &std::sync::Mutex<RunIds>,
    window: &Window,
) -> Result<(), SinkError> {
    let MappedPage { records, rows, quarantined, not_closed_won } = page;
    written.records += records;
    written.not_closed_won += not_closed_won;
    written.quarantined += quarantined.len() as u64;
    let mut fresh = Vec::with_capacity(rows.len());
    {
        let mut ids = ids.lock().expect("not poisoned");
        for row in rows {
            // A deal already written in this run is written again only as a newer copy.
            if ids.rows.offer(row.deal_id(), row.modified_time().timestamp()) == Offer::Stale {
                written.stats.unchanged += 1;
                continue;
            }
            if !window.holds(row.modified_time(), row.closing_date()) {
                ids.moved_on.insert(row.deal_id().to_string());
            }
            fresh.push(row);
        }
        for q in &quarantined {
            if let Some(id) = &q.deal_id {
                ids.quarantined.insert(id.clone());
            }
        }
    }
    for row in &fresh {
        if let Some(a) = row.amount() {
            let currency = row.currency().unwrap_or("(none)");
            match written.amounts.get_mut(currency) {
                Some(total) => *total += a,
                None => {
                    written.amounts.insert(currency.to_string(), a);
                }
            }
        }
    }
    if !fresh.is_empty() {
        let stats = sink.write_rows(fresh).await?;
        if stats.rejected > 0 {
            tracing::warn!(
                event = "quarantined",
                rows = stats.rejected,
                "the warehouse refused rows; they were quarantined"
            );
        }
        written.stats.add(stats);
    }
    if !quarantined.is_empty() {
        sink.write_quarantine(quarantined).await?;
    }
    Ok(())
}
