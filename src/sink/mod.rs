//! Where rows go. Every warehouse implements `Sink`; the run only ever talks to the trait, so that the
//! BigQuery sink, the local SQLite warehouse and the NDJSON export behave the same from the run's side:
//! prepare, read the ledger, write batches, quarantine, commit, record the run.

pub mod bigquery;
pub mod ndjson;
pub mod seen;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::config::spec::SinkSpec;
use crate::exit::Exit;
pub use crate::schema::RunRecord;
use crate::schema::{Column, DealRow, Quarantined};
use crate::window::WindowField;

/// The target table's columns (the standard ones, then the promoted ones), and when a stored row is replaced.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub columns: Vec<Column>,
    /// Replace rows whose stored copy is as new as the fetched one (not only older ones), so that a backfill
    /// fills columns promoted since those rows were written.
    pub rewrite: bool,
}

impl Default for TableSpec {
    fn default() -> Self {
        TableSpec { columns: crate::schema::columns(&[]), rewrite: false }
    }
}

/// A sink failure, with the exit code it deserves (a full disk is not a configuration error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: String,
    pub message: String,
    pub exit: Exit,
}

impl SinkError {
    pub fn new(sink: impl Into<String>, message: impl Into<String>, exit: Exit) -> Self {
        SinkError { sink: sink.into(), message: message.into(), exit }
    }
}

/// Row counts of one write or of a whole run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows the warehouse refused; the sink quarantined them with the warehouse's reason.
    pub rejected: u64,
}

impl WriteStats {
    pub fn add(&mut self, other: WriteStats) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.rejected += other.rejected;
    }

    pub fn written(&self) -> u64 {
        self.inserted + self.updated
    }
}

#[async_trait]
pub trait Sink: Send {
    /// A short name for logs, such as `sqlite:./dealsync.db`.
    fn describe(&self) -> String;

    /// Verifies, without writing anything, that the sink is reachable and usable. Returns what it verified.
    async fn check(&mut self) -> Result<Vec<String>, SinkError>;

    /// Creates or checks tables. Called once before anything else.
    async fn prepare(&mut self) -> Result<(), SinkError>;

    /// The end of the last good scheduled run over `field`, which starts the next default window.
    async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>, SinkError>;

    /// Writes a batch of rows (upsert by `deal_id`, newer `modified_time` wins).
    async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError>;

    /// Keeps records that could not be mapped, with their reasons.
    async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError>;

    /// Before the commit makes the run's writes final: the ids of rows written that the warehouse does not hold
    /// (a staged sink's rows that did not all reach the staging table), to be written again. Empty for a sink
    /// that writes directly.
    async fn shortfall(&mut self) -> Result<Vec<String>, SinkError> {
        Ok(Vec::new())
    }

    /// Makes the run's writes final (a MERGE for staged sinks). Returns what only the commit knows.
    async fn commit(&mut self) -> Result<WriteStats, SinkError>;

    /// Whether the sink keeps rows that later CRM changes (deletions, reopened deals) should update.
    fn tracks_changes(&self) -> bool {
        false
    }

    /// Marks deals deleted in Zoho (a soft delete). Returns how many rows changed.
    async fn mark_deleted(&mut self, _deleted: Vec<crate::zoho::changes::Deleted>) -> Result<u64, SinkError> {
        Ok(0)
    }

    /// Records deals that left "Closed Won", where the copy is newer than the row. Returns how many changed.
    async fn mark_not_won(&mut self, _changes: Vec<crate::zoho::changes::StageChange>) -> Result<u64, SinkError> {
        Ok(0)
    }

    /// How many deals the warehouse holds in the window, for reconciliation; `None` for sinks that keep nothing.
    async fn count_in_window(&mut self, _window: &crate::window::Window) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }

    /// The deal ids the warehouse holds in the window, sorted by `reconcile::sort_ids`.
    async fn ids_in_window(&mut self, _window: &crate::window::Window) -> Result<Vec<String>, SinkError> {
        Ok(Vec::new())
    }

    /// Stops after an interruption (best effort) and says what the run leaves committed, with the rows that
    /// became durable just now (a sink that reports rows only once committed).
    async fn abandon(&mut self) -> (String, WriteStats) {
        ("nothing was committed".into(), WriteStats::default())
    }

    /// After a failure elsewhere (Zoho, a write): makes durable what can be, and reports those rows. The run is
    /// not committed; only rows that are final on their own (upserts) may be kept.
    async fn settle(&mut self) -> WriteStats {
        WriteStats::default()
    }

    /// No page has arrived for a while (a slow or retrying source): a sink that holds a transaction open may
    /// commit it now, so that readers and other writers do not wait on it. Not the run's commit.
    async fn idle(&mut self) -> Result<WriteStats, SinkError> {
        Ok(WriteStats::default())
    }

    /// Appends the run to the ledger.
    async fn record_run(&mut self, run: &RunRecord) -> Result<(), SinkError>;
}
