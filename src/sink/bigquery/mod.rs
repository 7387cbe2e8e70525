//! The BigQuery sink: a run's rows go, as they are mapped, into load jobs (resumable uploads) into a staging
//! table of its own; a load lands every row or none. Then one MERGE, under a job id derived from the run id,
//! makes them final in the target: newest staged copy per deal, new deals inserted, a deal replaced only by a
//! newer copy. A retried or repeated run leaves the table unchanged, and nothing is ever streamed
//! (`tabledata.insertAll`): the quarantine and the ledger are loaded too.

mod auth;
mod client;
mod error;
mod jobs;
mod load;
pub mod sql;
mod tables;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Ending, Finished, Opening, PastRuns, RunRecord, SinkError, TableSpec, WriteStats};
use crate::config::BigQuerySettings;
use crate::exit::Exit;
use crate::retry::RetryPolicy;
use crate::schema::{format_instant, sort_ids, Column, DealRow, PastRun, Quarantined, LEDGER, QUARANTINE};
use crate::window::{Window, WindowField};
use crate::zoho::changes::{Deleted, StageChange};
use client::Api;
use error::BqFailure;
use jobs::{Done, Row};
use load::Upload;
use sql::Statement;
use tables::TableDef;

type Result<T, E = SinkError> = std::result::Result<T, E>;
type Change = fn(&str, &[Vec<String>]) -> Statement;

/// Deals a soft-delete or reopened-deal statement carries at most (one array parameter).
const CHANGES_BATCH: usize = 1000;
/// Bytes one staging load carries at most: a part is loaded once it holds this much, well under what BigQuery
/// takes in one gzipped file (4 GB) and what bqemulator takes in one upload (1 GiB). The parts land in the
/// staging table one by one; nothing reaches the target before the MERGE.
const PART_BYTES: u64 = 512 * 1024 * 1024;
/// A staging table outlives the run's deadline by this much before it expires by itself.
const STAGING_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// The sink `--sink bigquery` opens: the project and dataset come from `BIGQUERY_PROJECT` and `BIGQUERY_DATASET`.
pub(super) async fn connect(o: &Opening<'_>) -> Result<BigQuerySink> {
    let problem = "BIGQUERY_PROJECT is not set; --sink bigquery needs the project to write to";
    let bq = o.settings.bigquery.clone().ok_or_else(|| SinkError::new("bigquery", problem, Exit::Config))?;
    let sink = BigQuerySink::connect(bq, o.run_id, o.retry, o.request_timeout).await?;
    Ok(BigQuerySink { spec: o.table.clone(), staging_expires: Utc::now() + o.deadline + STAGING_MARGIN, ..sink })
}

pub struct BigQuerySink {
    api: Api,
    s: BigQuerySettings,
    /// The run id, lowercased: job and table ids derive from it.
    run: String,
    staging: String,
    spec: TableSpec,
    /// The staging part being uploaded: parts of at most `part_bytes` (`PART_BYTES`, or less in tests).
    upload: Option<Upload>,
    pub part_bytes: u64,
    staged_parts: usize,
    staging_created: bool,
    staging_expires: DateTime<Utc>,
    quarantine: Option<Upload>,
    /// Deals quarantined by this run: one row each.
    quarantined: HashSet<String>,
    /// Queries run so far, for their job ids.
    reads: u64,
    bytes_billed: u64,
}

impl BigQuerySink {
    /// Builds the client for the configured credentials. No request is sent yet.
    pub async fn connect(s: BigQuerySettings, run_id: &str, retry: RetryPolicy, timeout: Duration) -> Result<Self> {
        let api = Api::new(&s, retry, timeout).await.map_err(fail(&s))?;
        let run = run_id.to_ascii_lowercase();
        Ok(BigQuerySink {
            api,
            staging: format!("{}{run}", sql::STAGING_PREFIX),
            run,
            s,
            spec: TableSpec::default(),
            upload: None,
            part_bytes: PART_BYTES,
            staged_parts: 0,
            staging_created: false,
            staging_expires: Utc::now() + STAGING_MARGIN + Duration::from_secs(2 * 3600),
            quarantine: None,
            quarantined: HashSet::new(),
            reads: 0,
            bytes_billed: 0,
        })
    }

    fn job_id(&self, what: &str) -> String {
        format!("dealsync_{}_{what}", self.run)
    }

    fn target(&self) -> String {
        self.api.table_ref(&self.s.table)
    }

    fn new_upload(&self, what: &str, table: &str, columns: &[Column]) -> Upload {
        Upload::new(self.job_id(what), &self.s.project, &self.s.dataset, table, columns, self.api.gzip)
    }

    async fn select(&mut self, what: &str, statement: impl Into<Statement>) -> Result<Vec<Row>> {
        let id = self.job_id(&format!("q{}", self.reads));
        self.reads += 1;
        let (done, rows) = self.api.select(what, &id, &statement.into()).await.map_err(fail(&self.s))?;
        self.bytes_billed += done.bytes_billed;
        Ok(rows)
    }

    async fn execute(&mut self, what: &str, job_id: &str, statement: impl Into<Statement>) -> Result<Done> {
        let done = self.api.run(what, job_id, &statement.into()).await.map_err(fail(&self.s))?;
        self.bytes_billed += done.bytes_billed;
        Ok(done)
    }

    /// The run ledger, newest first (`limit` runs), and its last good run (`dealsync runs`).
    pub async fn past_runs(&mut self, limit: u32) -> Result<PastRuns> {
        let runs = self.api.table_ref(sql::RUNS_TABLE);
        let last = self.read_runs(sql::past_runs_sql(&runs, limit, false)).await?;
        let good = self.read_runs(sql::past_runs_sql(&runs, 1, true)).await?.pop();
        Ok((last, good))
    }

    async fn read_runs(&mut self, statement: Statement) -> Result<Vec<PastRun>> {
        let rows = self.select("reading the run ledger", statement).await?;
        let run = |r: Row| {
            let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let int = |i: usize| text(i).parse::<i64>().unwrap_or(0);
            let at = |i: usize| DateTime::<Utc>::from_timestamp_micros(int(i)).unwrap_or_default();
            PastRun {
                run_id: text(0),
                kind: text(1),
                window_field: text(2),
                window_start: at(3),
                window_end: at(4),
                status: text(5),
                exit_code: int(6),
                started_at: at(7),
                finished_at: at(8),
                rows_written: int(9),
                quarantined: int(10),
                error: r.get(11).cloned().flatten(),
            }
        };
        Ok(rows.into_iter().map(run).collect())
    }

    async fn load_part(&mut self) -> Result<()> {
        let Some(upload) = self.upload.take() else { return Ok(()) };
        let rows = upload.rows;
        let loaded = upload.finish(&self.api, "loading the staging table").await.map_err(fail(&self.s))?;
        tracing::info!(event = "staging_loaded", part = self.staged_parts, rows, output_rows = loaded.loaded,
            job = %loaded.job.job_id, "loaded rows of the run into the staging table");
        self.staged_parts += 1;
        Ok(())
    }

    /// Loads what the run quarantined (also when the run failed: the records and reasons hold all the same).
    async fn load_quarantine(&mut self) -> Result<()> {
        let Some(upload) = self.quarantine.take() else { return Ok(()) };
        let n = upload.rows;
        let done = upload.finish(&self.api, "loading the quarantine").await.map_err(fail(&self.s))?;
        tracing::info!(event = "quarantine_loaded", rows = n, job = %done.job.job_id, "loaded the quarantined records");
        Ok(())
    }

    async fn drop_staging(&self) {
        let what = format!("dropping staging table {}", self.staging);
        match self.api.delete(&what, &format!("datasets/{}/tables/{}", self.s.dataset, self.staging)).await {
            Err(e) if !e.is_not_found() => tracing::warn!(event = "staging_left", table = %self.staging,
                "could not drop the staging table (it expires by itself): {e}"),
            _ => {}
        }
    }

    /// Runs `statement` over `rows` in batches of `CHANGES_BATCH` (job ids `<prefix>_<i>`); the rows it changed.
    async fn in_batches(&mut self, what: &str, prefix: &str, rows: &[Vec<String>], statement: Change) -> Result<u64> {
        let target = self.target();
        let mut n = 0;
        for (i, chunk) in rows.chunks(CHANGES_BATCH).enumerate() {
            let id = self.job_id(&format!("{prefix}_{i}"));
            n += self.execute(what, &id, statement(&target, chunk)).await?.affected;
        }
        Ok(n)
    }

    pub fn describe(&self) -> String {
        describe(&self.s)
    }

    /// The dataset, the table against the schema, and a dry-run query; an error names the credentials used.
    pub async fn check(&mut self) -> Result<Vec<String>> {
        let checked = tables::check(&self.api, &self.s.table, &self.spec.columns).await;
        let source = &self.api.credentials.source;
        checked.map_err(|e| SinkError::new(self.describe(), format!("{e} (Google credentials: {source})"), e.exit()))
    }

    pub async fn prepare(&mut self) -> Result<()> {
        let dataset = tables::ensure_dataset(&self.api, self.s.location.as_deref()).await.map_err(fail(&self.s))?;
        let def = |id: &str, columns, target| TableDef { id: id.into(), columns, target, expires_at: None };
        let defs = [
            def(&self.s.table, self.spec.columns.clone(), true),
            def(sql::RUNS_TABLE, LEDGER.to_vec(), false),
            def(sql::QUARANTINE_TABLE, QUARANTINE.to_vec(), false),
        ];
        for (i, def) in defs.iter().enumerate() {
            if let (true, Some(t)) = (def.target, tables::ensure_table(&self.api, def).await.map_err(fail(&self.s))?) {
                tables::evolve(&self.api, &t, def, &self.job_id("add_columns")).await.map_err(fail(&self.s))?;
            }
            let id = self.job_id(&format!("never_expire_{i}"));
            tables::never_expire(&self.api, &dataset, def, &id).await.map_err(fail(&self.s))?;
        }
        Ok(())
    }

    pub async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>> {
        let sql = sql::last_good_sql(&self.api.table_ref(sql::RUNS_TABLE), field.api_name());
        let rows = self.select("reading the run ledger", sql).await?;
        let micros = rows.first().and_then(|r| r.first()?.as_deref()?.parse::<i64>().ok());
        Ok(micros.and_then(DateTime::<Utc>::from_timestamp_micros))
    }

    pub async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats> {
        if rows.is_empty() {
            return Ok(WriteStats::default());
        }
        if self.upload.is_none() {
            if !self.staging_created {
                let (columns, expires_at) = (self.spec.columns.clone(), Some(self.staging_expires.timestamp_millis()));
                let def = TableDef { id: self.staging.clone(), columns, target: false, expires_at };
                tables::ensure_table(&self.api, &def).await.map_err(fail(&self.s))?;
                self.staging_created = true;
            }
            let what = format!("stage_{}", self.staged_parts);
            self.upload = Some(self.new_upload(&what, &self.staging, &self.spec.columns));
        }
        let upload = self.upload.as_mut().expect("created above");
        for row in &rows {
            upload.push(&self.api, "loading the staging table", &row.values).await.map_err(fail(&self.s))?;
        }
        if upload.size() >= self.part_bytes {
            self.load_part().await?;
        }
        Ok(WriteStats::default())
    }

    pub async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<()> {
        for q in items {
            // One row per deal and run: a record read again in the same run (a repair) is quarantined once.
            if q.deal_id.as_ref().is_some_and(|id| !self.quarantined.insert(id.clone())) {
                continue;
            }
            if self.quarantine.is_none() {
                self.quarantine = Some(self.new_upload("quarantine", sql::QUARANTINE_TABLE, &QUARANTINE));
            }
            let upload = self.quarantine.as_mut().expect("created above");
            upload.push(&self.api, "loading the quarantine", &q.values()).await.map_err(fail(&self.s))?;
        }
        Ok(())
    }

    /// Complete: loads the quarantine and the last staging part, then merges them. Stopped: nothing is merged,
    /// the staging upload is left to expire and its table dropped, the quarantine kept.
    pub async fn finish(&mut self, ending: Ending) -> Result<Finished> {
        if ending == Ending::Stopped {
            // Dropped even when no part loaded: a failed load may still have landed rows in it.
            self.upload = None;
            if std::mem::take(&mut self.staging_created) {
                self.drop_staging().await;
                tracing::info!(event = "staging_abandoned", table = %self.staging,
                    "the run stopped: its rows are not merged");
            }
            if let Err(e) = self.load_quarantine().await {
                tracing::warn!(event = "quarantine_not_loaded", "could not load the quarantined records: {e}");
            }
            return Ok(Finished { kept: format!("nothing was merged into {}", self.s.table), ..Finished::default() });
        }
        self.load_quarantine().await?;
        self.load_part().await?;
        if self.staged_parts == 0 {
            return Ok(Finished::default());
        }
        let (target, staging) = (self.target(), self.api.table_ref(&self.staging));
        let preview = sql::merge_preview_sql(&target, &staging, self.spec.rewrite);
        let rows = self.select("counting what the MERGE will change", preview).await?;
        let [staged, deals, inserted, updated] = [0, 1, 2, 3].map(|i| number(&rows, i));
        let merge = sql::merge_sql(&target, &staging, &self.spec.columns, self.spec.rewrite);
        let merged = self.execute("the MERGE", &self.job_id("merge"), merge).await?;
        tracing::info!(event = "merge", staged, deals, inserted, updated, affected = merged.affected,
            job = %merged.job.job_id, "merged the run's rows into the target");
        if merged.affected != inserted + updated {
            tracing::warn!(
                event = "merge_count_mismatch",
                affected = merged.affected,
                expected = inserted + updated,
                "the MERGE changed a different number of rows than counted just before (a concurrent writer?)"
            );
        }
        self.drop_staging().await;
        let unchanged = staged.saturating_sub(inserted + updated);
        Ok(Finished { stats: WriteStats { inserted, updated, unchanged }, kept: String::new() })
    }

    pub async fn mark_deleted(&mut self, mut deleted: Vec<Deleted>) -> Result<u64> {
        // One row a deal, its newest (a MERGE matches a target row once).
        deleted.sort_by(|a, b| a.deal_id.cmp(&b.deal_id).then(b.deleted_time.cmp(&a.deleted_time)));
        deleted.dedup_by(|a, b| a.deal_id == b.deal_id);
        let rows: Vec<_> = deleted.into_iter().map(|d| vec![d.deal_id, format_instant(&d.deleted_time)]).collect();
        self.in_batches("marking deleted deals", "deleted", &rows, sql::mark_deleted_sql).await
    }

    pub async fn mark_not_won(&mut self, mut changes: Vec<StageChange>) -> Result<u64> {
        changes.sort_by(|a, b| a.deal_id.cmp(&b.deal_id).then(b.modified_time.cmp(&a.modified_time)));
        changes.dedup_by(|a, b| a.deal_id == b.deal_id);
        let rows: Vec<_> =
            changes.into_iter().map(|c| vec![c.deal_id, c.stage, format_instant(&c.modified_time)]).collect();
        self.in_batches("recording reopened deals", "reopened", &rows, sql::mark_not_won_sql).await
    }

    pub async fn count_in_window(&mut self, w: &Window) -> Result<Option<u64>> {
        let sql = sql::in_window_sql("COUNT(*)", &self.target(), w);
        Ok(Some(number(&self.select("counting the window's rows", sql).await?, 0)))
    }

    pub async fn ids_in_window(&mut self, w: &Window) -> Result<Vec<String>> {
        let sql = sql::in_window_sql("deal_id", &self.target(), w);
        let rows = self.select("listing the window's rows", sql).await?;
        let mut ids: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
        sort_ids(&mut ids);
        Ok(ids)
    }

    pub async fn record_run(&mut self, run: &RunRecord) -> Result<()> {
        // One load a row: the run's `running` row at its start, its final row at its end (reads keep the latter).
        let mut upload = self.new_upload(&format!("ledger_{}", run.status), sql::RUNS_TABLE, &LEDGER);
        upload.push(&self.api, "recording the run", &run.values()).await.map_err(fail(&self.s))?;
        upload.finish(&self.api, "recording the run").await.map_err(fail(&self.s))?;
        Ok(())
    }

    pub fn bytes_billed(&self) -> Option<u64> {
        Some(self.bytes_billed)
    }
}

fn fail(s: &BigQuerySettings) -> impl Fn(BqFailure) -> SinkError + '_ {
    |f| SinkError::new(describe(s), f.to_string(), f.exit())
}

/// Cell `i` of a query's first row, as a number (0 when there is none).
fn number(rows: &[Row], i: usize) -> u64 {
    rows.first().and_then(|r| r.get(i)?.as_deref()?.parse().ok()).unwrap_or(0)
}

fn describe(s: &BigQuerySettings) -> String {
    format!("bigquery:{}.{}.{}", s.project, s.dataset, s.table)
}
