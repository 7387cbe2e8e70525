//! The first phase of a run, before the first Zoho request for deals: the source (Zoho, or the simulator for
//! `--demo`), the sink (prepared, so that a warehouse that cannot take the rows stops the run before anything is
//! fetched), and the window (from the ledger, cut to this task's shard, clamped to what Zoho has settled).

use chrono::{DateTime, Utc};

use super::demo::Demo;
use super::error::RunError;
use super::summary::RunSummary;
use crate::config::cli::{SyncPlan, DEFAULT_SQLITE};
use crate::config::{Config, Needs, Settings, ZohoSettings};
use crate::sink::{Opening, Sink, TableSpec, Target};
use crate::window::{self, Window, WindowSpec};

/// Where deals come from: Zoho, or the built-in simulator for `--demo`, which runs until this value is dropped,
/// on whatever path the command ends.
pub struct Source {
    pub zoho: ZohoSettings,
    pub demo: Option<Demo>,
}

/// The settings a command needs and its source of deals: `demo` (deals, seed) starts the simulator, which
/// needs no credentials; otherwise Zoho's credentials are required.
pub async fn source(config: &Config, demo: Option<(usize, u64)>) -> Result<(Settings, Source), RunError> {
    let needs = if demo.is_some() { Needs::Nothing } else { Needs::ZohoCredentials };
    let settings = config.settings(needs)?;
    let source = match demo {
        Some((deals, seed)) => {
            let (d, zoho) = Demo::start(deals, seed, config.max_concurrency()?).await?;
            Source { zoho, demo: Some(d) }
        }
        None => Source { zoho: settings.zoho.clone().expect("credentials were required"), demo: None },
    };
    Ok((settings, source))
}

/// The sink a sync (or `verify`) uses: stdout for `--dry-run`, otherwise the one `Target::chosen` picks.
pub async fn open_sink(plan: &SyncPlan, settings: &Settings, run_id: &str) -> Result<Sink, RunError> {
    let columns = crate::schema::columns(&settings.promoted);
    if plan.dry_run {
        return Ok(Sink::Ndjson(crate::sink::ndjson::NdjsonSink::dry_run(columns)));
    }
    let target = Target::chosen(plan.sink.as_ref(), settings, plan.demo.is_some()).map_err(RunError::Usage)?;
    if plan.sink.is_none() && plan.demo.is_none() && settings.bigquery.is_none() {
        tracing::warn!(
            event = "default_sink",
            path = DEFAULT_SQLITE,
            "BIGQUERY_PROJECT is not set: writing to the embedded SQLite warehouse {DEFAULT_SQLITE}"
        );
    }
    let opening = Opening {
        table: TableSpec { columns, rewrite: plan.rewrite },
        retry: plan.retry,
        request_timeout: plan.request_timeout,
        deadline: plan.deadline,
        ..Opening::new(settings, run_id)
    };
    Ok(target.open(opening).await?)
}

pub struct Prepared {
    pub settings: Settings,
    pub source: Source,
    pub sink: Sink,
    /// `None`: this task has nothing to do (see `task_window`).
    pub window: Option<Window>,
    /// The window starts where the ledger's last good run ended.
    pub from_ledger: bool,
}

/// Settings, source and sink, the sink prepared, and the window this task syncs.
pub async fn prepare(plan: &SyncPlan, config: &Config, summary: &mut RunSummary) -> Result<Prepared, RunError> {
    if let Some(sink) = plan.sink.as_ref().filter(|_| !plan.dry_run) {
        // A sink that does not exist is a usage error, before anything else is looked at.
        Target::resolve(sink).map_err(RunError::Usage)?;
    }
    let (settings, source) = source(config, plan.demo).await?;
    if let (Some((_, count @ 2..)), WindowSpec::Backfill { to: None, .. }) = (settings.shard, &plan.spec) {
        // Each task would resolve "now" when it starts, and staggered starts would leave gaps between slices.
        return Err(RunError::Usage(format!(
            "a backfill sharded over {count} tasks needs --to, so that every task cuts the same range into slices"
        )));
    }
    let mut sink = open_sink(plan, &settings, &summary.run_id).await?;
    summary.sink = sink.describe();
    sink.prepare().await?;
    let mut last_good = if plan.spec.is_backfill() { None } else { sink.last_good_window_end(plan.field).await? };
    // A ledger end after now is a clock that was wrong: the window falls back to the last 24 hours.
    if let Some(end) = last_good.filter(|end| *end > summary.started_at) {
        tracing::warn!(event = "ledger_in_future", ledger_end = %end,
            "the last good run's window ends after now (a clock was wrong): syncing the last 24 hours");
        last_good = None;
    }
    let full = window::resolve(&plan.spec, plan.field, summary.started_at, last_good).map_err(RunError::Usage)?;
    let window = task_window(full, plan, settings.shard, summary).and_then(|w| settled(w, plan, summary.started_at));
    Ok(Prepared { settings, source, sink, window, from_ledger: last_good.is_some() })
}

/// This task's part of the window: its slice of a sharded backfill; a scheduled run is not sharded (task 0
/// syncs it). `None` when there is nothing for this task to do.
fn task_window(full: Window, plan: &SyncPlan, shard: Option<(usize, usize)>, s: &mut RunSummary) -> Option<Window> {
    let Some((index, count)) = shard.filter(|(_, count)| *count > 1) else { return Some(full) };
    let note = |text: &str| tracing::info!(event = "shard", index, count, "{text}");
    if !plan.spec.is_backfill() {
        if index > 0 {
            note("scheduled runs are not sharded: task 0 syncs the window, this one has nothing to do");
        }
        return (index == 0).then_some(full);
    }
    // Contiguous slices of the range, one per task; together they cover it exactly.
    let slices = full.split_into(count).unwrap_or_else(|| vec![full.clone()]);
    let Some(slice) = slices.get(index) else {
        note("the range has fewer slices than tasks; this task has nothing to do");
        return None;
    };
    note(&format!("task {index} of {count} syncs its slice of {full}"));
    s.shard = Some(format!("{index}-of-{count}"));
    Some(slice.clone())
}

/// A backfill (or its slice) proves only what is settled: the part of the window before now minus the index
/// lag. Past that, edits still move deals in and out while it is read.
fn settled(window: Window, plan: &SyncPlan, now: DateTime<Utc>) -> Option<Window> {
    let WindowSpec::Backfill { index_lag, .. } = plan.spec else { return Some(window) };
    let settled = window.settled(now, index_lag);
    match &settled {
        Some(w) if w.end == window.end => {}
        Some(w) => tracing::info!(event = "window_clamped", requested_end = %window.end_str(), end = %w.end_str(),
            "the window ends after now minus the index lag; it is synced up to there, the rest by later runs"),
        None => tracing::info!(event = "window_clamped", start = %window.start_str(),
            "this window starts after now minus the index lag: nothing to sync yet"),
    }
    settled
}
