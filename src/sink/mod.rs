//! Where rows go. Every warehouse implements `Sink`; the run only ever talks to the trait, so that the
//! BigQuery sink, the local SQLite warehouse and the NDJSON export behave the same from the run's side:
//! prepare, read the ledger, write batches, quarantine, commit, record the run. `SINKS` lists them: how
//! `--sink` names each, how it opens and how its run ledger is read, so that a new sink is its module and one
//! entry there.

pub mod bigquery;
pub mod ndjson;
pub mod seen;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;

pub use crate::config::spec::SinkSpec;
use crate::config::{ConfigError, Settings};
use crate::exit::Exit;
use crate::retry::RetryPolicy;
pub use crate::schema::RunRecord;
use crate::schema::{Column, DealRow, PastRun, Quarantined};
use crate::window::WindowField;

/// Every sink `--sink` can name. A new sink is a module implementing `Sink` and its entry here.
pub const SINKS: &[&SinkKind] = &[&sqlite::KIND, &ndjson::KIND, &bigquery::KIND];

/// One kind of sink: how `--sink` names it and how it is opened.
pub struct SinkKind {
    /// `NAME` in `--sink NAME[:TARGET]`.
    pub name: &'static str,
    /// How it is written on the command line, for help and errors (`sqlite:PATH`).
    pub forms: &'static [&'static str],
    /// The target when `--sink` gives none.
    pub default_target: Option<&'static str>,
    /// Checks the target before anything runs; the error says what is wrong with it.
    pub check_target: fn(Option<&str>) -> Result<(), String>,
    pub open: OpenFn,
    /// Reads the run ledger as history (`dealsync runs`); `None` for a sink that keeps no ledger.
    pub past_runs: Option<PastRunsFn>,
}

pub type OpenFn = for<'a> fn(Opening<'a>) -> BoxFuture<'a, Result<Box<dyn Sink>, OpenError>>;
pub type PastRunsFn = for<'a> fn(Opening<'a>, u32) -> BoxFuture<'a, Result<PastRuns, OpenError>>;

/// The newest runs of a ledger, newest first, and the last good run.
pub type PastRuns = (Vec<PastRun>, Option<PastRun>);

/// What opening a sink takes besides its kind.
pub struct Opening<'a> {
    /// The checked target (`SinkKind::check_target`), the default filled in.
    pub target: Option<&'a str>,
    pub table: TableSpec,
    pub settings: &'a Settings,
    pub run_id: &'a str,
    pub started_at: DateTime<Utc>,
    pub retry: RetryPolicy,
    pub request_timeout: std::time::Duration,
    /// The run's `--deadline`: what a sink's leftovers (a staging table) must outlive.
    pub deadline: std::time::Duration,
}

/// Why a sink could not be opened: a setting it needs is missing or wrong, or the warehouse said no.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The sink `spec` names, with the spec as it is used (its default target filled in), or what is wrong with it.
pub fn resolve(spec: &SinkSpec) -> Result<(&'static SinkKind, SinkSpec), String> {
    let kind =
        SINKS.iter().find(|k| k.name == spec.name).ok_or_else(|| format!("`{spec}` is not a sink; use {}", forms()))?;
    let target = spec.target.as_deref().filter(|t| !t.is_empty()).or(kind.default_target);
    (kind.check_target)(target).map_err(|e| format!("`{spec}`: {e}"))?;
    Ok((kind, SinkSpec::new(kind.name, target)))
}

/// Every form `--sink` takes, for help and errors: "sqlite:PATH, …, or bigquery".
pub fn forms() -> String {
    let all: Vec<&str> = SINKS.iter().flat_map(|k| k.forms.iter().copied()).collect();
    match all.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

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

    /// Bytes the warehouse billed for the run's jobs so far, where it bills by the byte.
    fn bytes_billed(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sink_has_its_own_name_and_is_named_in_its_forms() {
        for (i, kind) in SINKS.iter().enumerate() {
            assert!(SINKS[..i].iter().all(|k| k.name != kind.name), "{} is listed twice", kind.name);
            assert!(kind.forms.iter().all(|f| f.split(':').next() == Some(kind.name)), "{}", kind.name);
        }
    }

    #[test]
    fn a_spec_resolves_to_its_sink_with_the_default_target_filled_in() {
        let spec = |s: &str| resolve(&SinkSpec::parse(s).unwrap()).map(|(k, spec)| (k.name, spec.to_string()));
        assert_eq!(spec("sqlite").unwrap(), ("sqlite", "sqlite:./dealsync.db".to_string()));
        assert_eq!(spec("sqlite:").unwrap(), ("sqlite", "sqlite:./dealsync.db".to_string()));
        assert_eq!(spec("sqlite:/data/d.db").unwrap(), ("sqlite", "sqlite:/data/d.db".to_string()));
        assert_eq!(spec("ndjson:-").unwrap(), ("ndjson", "ndjson:-".to_string()));
        assert_eq!(spec("bigquery").unwrap(), ("bigquery", "bigquery".to_string()));
        assert!(spec("ndjson").unwrap_err().contains("needs a path"));
        assert!(spec("bigquery:acme").unwrap_err().contains("BIGQUERY_PROJECT"));
        let unknown = spec("postgres:x").unwrap_err();
        assert_eq!(unknown, "`postgres:x` is not a sink; use sqlite:PATH, ndjson:PATH, ndjson:- or bigquery");
    }
}
