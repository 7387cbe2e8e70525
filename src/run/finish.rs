//! The third phase of a run: the sink's writes end (committed, or kept as far as they are final), deletions and
//! stage changes are applied (after every row, since a later upsert would undo a mark), the warehouse is
//! reconciled with Zoho and the run's row reaches the ledger.

use std::sync::atomic::Ordering;

use chrono::Utc;

use super::error::RunError;
use super::reconcile::Completeness;
use super::summary::RunSummary;
use crate::exit::Exit;
use crate::sink::{Ending, RunRecord, Sink};
use crate::window::Window;
use crate::zoho::changes::{self, Deleted, StageChange};
use crate::zoho::{ZohoClient, ZohoError};

/// Deletions since the window's start and deals that left "Closed Won" in it.
pub type Changes = (Vec<Deleted>, Vec<StageChange>);

pub async fn fetch_changes(client: &ZohoClient, window: &Window) -> Result<Changes, ZohoError> {
    tokio::try_join!(
        changes::deleted_since(client, window.start.with_timezone(&Utc)),
        changes::left_closed_won(client, window)
    )
}

/// Ends the run: the writes, the changes (`None` when the sink keeps no rows, the run never got a token, or it
/// stopped first), the proof, the reconciliation, the client's counts and the ledger.
pub async fn finish(
    client: &ZohoClient,
    sink: &mut Sink,
    window: &Window,
    collected: Result<Completeness, RunError>,
    changes: Option<Result<Changes, ZohoError>>,
    summary: &mut RunSummary,
) -> Result<(), RunError> {
    let (completeness, error) = collected.map_or_else(|e| (None, Some(e)), |c| (Some(c), None));
    let mut error = end_writes(sink, error, summary).await;
    summary.bytes_billed = sink.bytes_billed();
    if let (None, Some(found)) = (&error, changes) {
        error = apply_changes(sink, found, summary).await.err();
    }
    let mismatch = match (&error, &completeness) {
        (None, Some(c)) => compare(client, sink, window, c, summary).await,
        _ => false,
    };
    let stats = &client.stats;
    summary.requests = stats.requests.load(Ordering::Relaxed);
    summary.retries = stats.retries.load(Ordering::Relaxed);
    summary.token_mints = stats.token_mints.load(Ordering::Relaxed);
    summary.token_mint_failures = stats.token_mint_failures.load(Ordering::Relaxed);
    summary.time_to_first_request_us = stats.first_request_us.load(Ordering::Relaxed);
    let exit = summary.exit_for(error.as_ref().or(mismatch.then_some(&RunError::Mismatch)));
    let record = ledger_row(summary, window, exit.outcome(), exit, error.as_ref().map(|e| e.to_string()));
    if let Err(e) = sink.record_run(&record).await {
        tracing::error!(event = "ledger_failed", run_id = %summary.run_id, "could not record the run in the ledger: {e}");
        error = error.or(Some(e.into()));
    }
    error.or(mismatch.then_some(RunError::Mismatch)).map_or(Ok(()), Err)
}

/// Commits the sink's writes when the run fetched everything; otherwise keeps what is final on its own. An
/// interruption says what it leaves.
async fn end_writes(sink: &mut Sink, error: Option<RunError>, summary: &mut RunSummary) -> Option<RunError> {
    let ending = if error.is_none() { Ending::Complete } else { Ending::Stopped };
    let done = match sink.finish(ending).await {
        Ok(done) => done,
        Err(e) if error.is_none() => return Some(e.into()),
        Err(e) => {
            tracing::warn!(event = "flush_failed", "could not keep the last rows: {e}");
            return error;
        }
    };
    summary.rows.add(done.stats);
    match error {
        Some(RunError::Interrupted(reason)) => Some(RunError::Interrupted(format!(
            "{reason} before the window was complete; {}; the next run covers the window again",
            done.kept
        ))),
        error => error,
    }
}

async fn apply_changes(sink: &mut Sink, found: Result<Changes, ZohoError>, s: &mut RunSummary) -> Result<(), RunError> {
    let (deleted, left) = found?;
    let (deleted_in_zoho, not_won_in_zoho) = (deleted.len(), left.len());
    (s.rows_deleted, s.rows_reopened) = sink.apply_changes(deleted, left).await?;
    tracing::info!(
        event = "changes",
        deleted_in_zoho,
        rows_deleted = s.rows_deleted,
        not_won_in_zoho,
        rows_reopened = s.rows_reopened,
        "applied deletions and stage changes to deals the warehouse holds"
    );
    Ok(())
}

/// Reports the completeness proof and reconciles the window; true when the warehouse lacks deals Zoho has. The
/// reconciliation, when the sink can answer it, has the last word (a deal the run missed may be held already).
async fn compare(client: &ZohoClient, sink: &mut Sink, window: &Window, c: &Completeness, s: &mut RunSummary) -> bool {
    s.crm_closed_won = Some(c.crm);
    if !c.missing.is_empty() {
        let named: Vec<&str> = c.missing.iter().take(super::reconcile::NAMED).map(String::as_str).collect();
        tracing::warn!(event = "incomplete", run_id = %s.run_id, missing = c.missing.len(), ids = %serde_json::to_string(&named).expect("strings serialize"),
            "{} closed-won deals Zoho lists in the window could not be fetched, even by id: [{}]",
            c.missing.len(), named.join(","));
    }
    match super::reconcile::reconcile(client, sink, window, Some(c), false).await {
        Ok(Some(r)) => {
            s.crm_closed_won = Some(r.crm);
            s.warehouse_closed_won = Some(r.warehouse);
            r.log(&s.run_id);
            return !r.matches;
        }
        Ok(None) => {
            tracing::debug!(event = "reconciliation", outcome = "skipped", "this sink keeps nothing to compare")
        }
        Err(e) => {
            tracing::warn!(event = "reconciliation", outcome = "unavailable", "could not reconcile the window: {e}")
        }
    }
    !c.missing.is_empty()
}

/// The run's row in the ledger, as it stands.
pub fn ledger_row(summary: &RunSummary, window: &Window, status: &str, exit: Exit, error: Option<String>) -> RunRecord {
    RunRecord {
        run_id: summary.run_id.clone(),
        kind: summary.kind,
        window_field: window.field.api_name().to_string(),
        window_start: window.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        window_end: window.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        status: status.to_string(),
        exit_code: exit.code(),
        started_at: summary.started_at,
        finished_at: Utc::now(),
        pages: summary.fetched.pages,
        deals_fetched: summary.deals_fetched,
        rows_inserted: summary.rows.inserted,
        rows_updated: summary.rows.updated,
        rows_unchanged: summary.rows.unchanged,
        not_closed_won: summary.not_closed_won,
        quarantined: summary.quarantined,
        error,
    }
}
