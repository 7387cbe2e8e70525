//! One sync, in three phases: `setup` (nothing is fetched before the sink is ready), `pipeline` (fetch, write,
//! prove the window complete) and `finish` (commit, changes, reconciliation, ledger); then its `summary` and
//! `metrics`. `verify` and `fields` share its set-up, `verify` its reconciliation.

pub mod demo;
pub mod error;
pub mod finish;
pub mod metrics;
pub mod pipeline;
pub mod reconcile;
pub mod setup;
pub mod summary;

use std::time::Instant;

use chrono::Utc;

use crate::config::cli::SyncPlan;
use crate::config::Config;
use crate::exit::Exit;
use crate::mapping::{Columns, RunStamp};
use crate::shutdown::Shutdown;
use crate::zoho::ZohoClient;
use error::RunError;
use pipeline::{Job, Pipeline};
use setup::Prepared;
use summary::RunSummary;

/// A new run id: UTC start time plus random bits, sortable and safe in table names.
pub fn new_run_id(now: chrono::DateTime<Utc>) -> String {
    format!("{}_{:08x}", now.format("%Y%m%dT%H%M%SZ"), crate::files::random())
}

/// Runs `dealsync sync`. Always returns the summary it emitted and the exit it chose.
pub async fn sync(plan: SyncPlan, config: &Config) -> (RunSummary, Exit) {
    let started = Instant::now();
    let started_at = Utc::now();
    let kind = if plan.spec.is_backfill() { "backfill" } else { "scheduled" };
    let mut summary = RunSummary { run_id: new_run_id(started_at), started_at, kind, ..RunSummary::default() };
    // From the start, so that a stop during set-up is as clean as one mid-fetch.
    let shutdown = Shutdown::default();
    let watchers = watch(&shutdown, plan.deadline);
    let result = phases(&plan, config, &mut summary, &shutdown).await;
    watchers.iter().for_each(|w| w.abort());
    let exit = summary.exit_for(result.as_ref().err());
    if let Err(e) = result {
        tracing::error!(event = "run_failed", run_id = %summary.run_id, "{e}");
        summary.error = Some(e.to_string());
    }
    summary.exit = exit;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.peak_rss_kb = summary::peak_rss_kb();
    summary.emit();
    (summary, exit)
}

/// Stops the run on SIGTERM/SIGINT or at its deadline.
fn watch(shutdown: &Shutdown, deadline: std::time::Duration) -> [tokio::task::JoinHandle<()>; 2] {
    let s = shutdown.clone();
    let signal = tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::warn!(event = "signal", "termination signal received: stopping after the batch in progress");
        s.trigger("a termination signal (SIGTERM/SIGINT)");
    });
    let s = shutdown.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(deadline).await;
        tracing::warn!(event = "deadline", seconds = deadline.as_secs(), "the run deadline passed: stopping");
        s.trigger(format!("the run deadline ({}s, --deadline)", deadline.as_secs()));
    });
    [signal, timer]
}

/// The three phases, each to the end or to its first error: set-up, the window's pass with its completeness
/// proof, and the finish. The demo's simulator, if any, stops when `source` is dropped, however this returns.
async fn phases(
    plan: &SyncPlan,
    config: &Config,
    summary: &mut RunSummary,
    shutdown: &Shutdown,
) -> Result<(), RunError> {
    let Prepared { settings, source, mut sink, window, from_ledger } = setup::prepare(plan, config, summary).await?;
    let Some(window) = window else { return Ok(()) };
    summary.window = Some(window.clone());
    // Built before the ledger's `running` row, so that a client that cannot be built leaves no row to explain.
    let client = ZohoClient::new(source.zoho.clone(), plan.retry, plan.request_timeout)?;
    // The run is in the ledger from its start: one killed on the way stays listed, `running` (and exit 75, what an
    // interruption means). Its row is replaced when it ends.
    sink.record_run(&finish::ledger_row(summary, &window, "running", Exit::Interrupted, None)).await?;
    tracing::info!(event = "window", run_id = %summary.run_id, field = %window.field, start = %window.start_str(),
        end = %window.end_str(), from_ledger, "syncing {window}");

    let columns = std::sync::Arc::new(Columns::new(&settings.promoted));
    let stamp = RunStamp { run_id: summary.run_id.as_str().into(), synced_at: summary.started_at, columns };
    // Beside the pass, Zoho's deletions and stage changes are asked for (two requests that would otherwise wait for
    // the last page), once the run holds a token (a refused mint is asked once).
    let keeps_rows = sink.is_warehouse();
    let changes = async {
        if !keeps_rows || !client.first_token().await {
            return None;
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => None,
            found = finish::fetch_changes(&client, &window) => Some(found),
        }
    };
    let mut p = Pipeline::new(&client, &mut sink, &window, &stamp, shutdown, summary);
    let fetch = async {
        p.pass(Job::Window(window.clone())).await?;
        p.complete().await
    };
    // The changes are of no use when the pass fails: `try_join!` drops them then.
    let joined = tokio::try_join!(fetch, async { Ok(changes.await) });
    let (collected, changes) = joined.map_or_else(|e| (Err(e), None), |(c, changes)| (Ok(c), changes));
    drop(p); // clears the progress bar and gives the sink and the summary back
    let result = finish::finish(&client, &mut sink, &window, collected, changes, summary).await;
    if let Some(demo) = &source.demo {
        let (truth, closed_won) = (demo.closed_won_in(&window), summary.deals_fetched - summary.not_closed_won);
        tracing::info!(
            event = "demo_check",
            simulator_closed_won = truth,
            fetched_closed_won = closed_won,
            "demo check: the simulator holds {truth} closed-won deals in the window; this run fetched {closed_won}"
        );
    }
    result
}
