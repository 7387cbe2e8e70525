//! Where rows go: the BigQuery or the local SQLite warehouse, or an NDJSON export. `Target` is what `--sink`
//! names, `Sink` an opened one, so that the run sees one set of calls. A warehouse also keeps a run ledger,
//! applies CRM changes and answers the reconciliation; the export keeps nothing across runs.

pub mod bigquery;
pub mod ndjson;
pub mod seen;
pub mod sqlite;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::config::spec::SinkSpec;
use crate::config::Settings;
use crate::exit::Exit;
use crate::retry::RetryPolicy;
pub use crate::schema::RunRecord;
use crate::schema::{Column, DealRow, PastRun, Quarantined};
use crate::window::{Window, WindowField};
use crate::zoho::changes::{Deleted, StageChange};
use bigquery::BigQuerySink;
use ndjson::NdjsonSink;
use sqlite::SqliteSink;

/// Every form `--sink` takes, for help and errors.
pub const FORMS: [&str; 4] = ["sqlite:PATH", "ndjson:PATH", "ndjson:-", "bigquery"];

/// A sink as `--sink` or the config file names it, checked, its default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    /// `None`: stdout.
    Ndjson(Option<PathBuf>),
    /// The project and dataset come from `BIGQUERY_PROJECT` and `BIGQUERY_DATASET`.
    BigQuery,
}

/// The newest runs of a ledger, newest first, and the last good run.
pub type PastRuns = (Vec<PastRun>, Option<PastRun>);

impl Target {
    /// The sink `spec` names, or what is wrong with it (a usage error's message).
    pub fn resolve(spec: &SinkSpec) -> Result<Target, String> {
        let target = spec.target.as_deref().filter(|t| !t.is_empty());
        let bad = |e: &str| format!("`{spec}`: {e}");
        match (spec.name.as_str(), target) {
            ("sqlite", t) => Ok(Target::Sqlite(PathBuf::from(t.unwrap_or(crate::config::cli::DEFAULT_SQLITE)))),
            ("ndjson", Some("-")) => Ok(Target::Ndjson(None)),
            ("ndjson", Some(t)) => Ok(Target::Ndjson(Some(PathBuf::from(t)))),
            ("ndjson", None) => Err(bad("an NDJSON export needs a path, or `-` for stdout, e.g. ndjson:deals.ndjson")),
            ("bigquery", None) => Ok(Target::BigQuery),
            ("bigquery", Some(t)) => Err(bad(&format!(
                "BigQuery takes no target (`{t}`): the project and dataset come from BIGQUERY_PROJECT and BIGQUERY_DATASET"
            ))),
            _ => Err(format!("`{spec}` is not a sink; use {}", forms())),
        }
    }

    /// The sink a command uses: `--sink`, else the demo's, else BigQuery when configured, else local SQLite.
    pub fn chosen(flag: Option<&SinkSpec>, settings: &Settings, demo: bool) -> Result<Target, String> {
        match (flag, &settings.bigquery) {
            (Some(s), _) => Target::resolve(s),
            // The demo writes a warehouse of its own, never the real one or its run ledger.
            (None, _) if demo => Ok(Target::Sqlite(crate::config::cli::DEMO_SQLITE.into())),
            (None, Some(_)) => Ok(Target::BigQuery),
            (None, None) => Ok(Target::Sqlite(crate::config::cli::DEFAULT_SQLITE.into())),
        }
    }

    pub async fn open(self, o: Opening<'_>) -> Result<Sink, SinkError> {
        Ok(match self {
            Target::Sqlite(path) => Sink::Sqlite(SqliteSink::new(path, o.table)),
            Target::Ndjson(path) => Sink::Ndjson(NdjsonSink::new(path, o.table.columns)),
            Target::BigQuery => Sink::BigQuery(Box::new(bigquery::connect(&o).await?)),
        })
    }

    /// Reads the run ledger as history (`dealsync runs`); `None` for a sink that keeps none.
    pub async fn past_runs(&self, o: Opening<'_>, limit: u32) -> Result<Option<PastRuns>, SinkError> {
        Ok(Some(match self {
            Target::Sqlite(path) => sqlite::past_runs(path, limit)?,
            Target::Ndjson(_) => return Ok(None),
            Target::BigQuery => bigquery::connect(&o).await?.past_runs(limit).await?,
        }))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Target::Ndjson(None) => f.write_str("ndjson:-"),
            Target::Ndjson(Some(p)) => write!(f, "ndjson:{}", p.display()),
            Target::BigQuery => f.write_str("bigquery"),
        }
    }
}

/// Every form `--sink` takes, for help and errors: "sqlite:PATH, ndjson:PATH, ndjson:- or bigquery".
pub fn forms() -> String {
    let (last, rest) = FORMS.split_last().expect("FORMS is not empty");
    format!("{} or {last}", rest.join(", "))
}

/// The forms whose sink keeps a run ledger (`dealsync runs`): every one but the export's.
pub fn ledger_forms() -> Vec<&'static str> {
    let keeps_ledger = |form: &str| {
        SinkSpec::parse(form).and_then(|s| Target::resolve(&s)).is_ok_and(|t| !matches!(t, Target::Ndjson(_)))
    };
    FORMS.into_iter().filter(|f| keeps_ledger(f)).collect()
}

/// What opening a sink takes besides its target.
pub struct Opening<'a> {
    pub table: TableSpec,
    pub settings: &'a Settings,
    pub run_id: &'a str,
    pub retry: RetryPolicy,
    pub request_timeout: std::time::Duration,
    /// The run's `--deadline`: what a sink's leftovers (a staging table) must outlive.
    pub deadline: std::time::Duration,
}

impl<'a> Opening<'a> {
    /// The standard table, the default retries, a 30-second request timeout and an hour's deadline.
    pub fn new(settings: &'a Settings, run_id: &'a str) -> Opening<'a> {
        Opening {
            table: TableSpec::default(),
            settings,
            run_id,
            retry: RetryPolicy::default(),
            request_timeout: std::time::Duration::from_secs(30),
            deadline: std::time::Duration::from_secs(3600),
        }
    }
}

/// The target table's columns (the standard ones, then the promoted ones), and when a stored row is replaced.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub columns: Vec<Column>,
    /// Also replace rows as new as the fetched copy, so that a backfill fills columns promoted since.
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
}

impl WriteStats {
    pub fn add(&mut self, other: WriteStats) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }

    pub fn written(&self) -> u64 {
        self.inserted + self.updated
    }
}

/// How a run's writes end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Everything was fetched: make the writes final (BigQuery's MERGE).
    Complete,
    /// Interrupted, or failed elsewhere: keep what is final on its own (SQLite's upserts, NDJSON's lines).
    Stopped,
}

/// What finishing made durable, and what a stopped run leaves, for its message.
#[derive(Debug, Default)]
pub struct Finished {
    pub stats: WriteStats,
    pub kept: String,
}

/// An opened sink.
pub enum Sink {
    Sqlite(SqliteSink),
    Ndjson(NdjsonSink),
    BigQuery(Box<BigQuerySink>),
}

/// The same call on whichever sink this is; after `export`, what the NDJSON export answers instead (for what only
/// a warehouse does).
macro_rules! each {
    ($sink:expr, $s:ident => $call:expr) => {
        each!($sink, $s => $call, export $s => $call)
    };
    ($sink:expr, $s:ident => $call:expr, export $e:pat => $export:expr) => {
        match $sink {
            Sink::Sqlite($s) => $call,
            Sink::Ndjson($e) => $export,
            Sink::BigQuery($s) => $call,
        }
    };
}

impl Sink {
    /// A short name for logs, such as `sqlite:./dealsync.db`.
    pub fn describe(&self) -> String {
        each!(self, s => s.describe())
    }

    /// Verifies, without writing anything, that the sink is usable; says what it verified.
    pub async fn check(&mut self) -> Result<Vec<String>, SinkError> {
        each!(self, s => s.check().await)
    }

    /// Creates or checks tables. Called once before anything else.
    pub async fn prepare(&mut self) -> Result<(), SinkError> {
        each!(self, s => s.prepare().await)
    }

    /// Writes a batch of rows (upsert by `deal_id`, newer `modified_time` wins).
    pub async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError> {
        each!(self, s => s.write_rows(rows).await)
    }

    /// Keeps records that could not be mapped, with their reasons.
    pub async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError> {
        each!(self, s => s.write_quarantine(items).await)
    }

    /// No page has arrived for a while: makes what is held visible to readers and other writers (SQLite commits,
    /// NDJSON flushes). Not the run's commit. Returns the rows that became durable.
    pub async fn flush(&mut self) -> Result<WriteStats, SinkError> {
        match self {
            Sink::Sqlite(s) => s.commit_open().await,
            Sink::Ndjson(s) => s.flush().await.map(|()| WriteStats::default()),
            Sink::BigQuery(_) => Ok(WriteStats::default()),
        }
    }

    /// Ends the run's writes (see `Ending`).
    pub async fn finish(&mut self, ending: Ending) -> Result<Finished, SinkError> {
        each!(self, s => s.finish(ending).await)
    }

    /// Appends the run to the ledger (nothing for an export).
    pub async fn record_run(&mut self, run: &RunRecord) -> Result<(), SinkError> {
        each!(self, s => s.record_run(run).await, export _ => Ok(()))
    }

    /// Whether rows stay across runs: a run ledger, CRM changes and the reconciliation apply.
    pub fn is_warehouse(&self) -> bool {
        !matches!(self, Sink::Ndjson(_))
    }

    /// The end of the last good scheduled run over `field`, which starts the next default window.
    pub async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>, SinkError> {
        each!(self, s => s.last_good_window_end(field).await, export _ => Ok(None))
    }

    /// Marks deals deleted in Zoho and those that left "Closed Won" (if newer); returns the rows each changed.
    pub async fn apply_changes(
        &mut self,
        deleted: Vec<Deleted>,
        left: Vec<StageChange>,
    ) -> Result<(u64, u64), SinkError> {
        each!(self, s => Ok((s.mark_deleted(deleted).await?, s.mark_not_won(left).await?)), export _ => Ok((0, 0)))
    }

    /// How many deals the warehouse holds in the window, for reconciliation; `None` for an export.
    pub async fn count_in_window(&mut self, window: &Window) -> Result<Option<u64>, SinkError> {
        each!(self, s => s.count_in_window(window).await, export _ => Ok(None))
    }

    /// The deal ids the warehouse holds in the window, sorted by `schema::sort_ids`.
    pub async fn ids_in_window(&mut self, window: &Window) -> Result<Vec<String>, SinkError> {
        each!(self, s => s.ids_in_window(window).await, export _ => Ok(Vec::new()))
    }

    /// Bytes the warehouse billed for the run's jobs so far, where it bills by the byte.
    pub fn bytes_billed(&self) -> Option<u64> {
        match self {
            Sink::BigQuery(s) => s.bytes_billed(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_resolves_to_a_sink_that_keeps_a_ledger_as_said() {
        for form in FORMS {
            let target = Target::resolve(&SinkSpec::parse(&form.replace("PATH", "x")).unwrap()).unwrap();
            assert_eq!(target.to_string().split(':').next(), form.split(':').next(), "{form}");
        }
        assert_eq!(ledger_forms(), ["sqlite:PATH", "bigquery"]);
    }

    #[test]
    fn a_spec_resolves_to_its_sink_with_the_default_target_filled_in() {
        let spec = |s: &str| Target::resolve(&SinkSpec::parse(s).unwrap()).map(|t| t.to_string());
        assert_eq!(spec("sqlite").unwrap(), "sqlite:./dealsync.db");
        assert_eq!(spec("sqlite:").unwrap(), "sqlite:./dealsync.db");
        assert_eq!(spec("sqlite:/data/d.db").unwrap(), "sqlite:/data/d.db");
        assert_eq!(spec("ndjson:-").unwrap(), "ndjson:-");
        assert_eq!(spec("bigquery").unwrap(), "bigquery");
        assert!(spec("ndjson").unwrap_err().contains("needs a path"));
        assert!(spec("bigquery:acme").unwrap_err().contains("BIGQUERY_PROJECT"));
        let unknown = spec("postgres:x").unwrap_err();
        assert_eq!(unknown, "`postgres:x` is not a sink; use sqlite:PATH, ndjson:PATH, ndjson:- or bigquery");
    }
}
