//! The BigQuery sink: a run's rows go, as they are mapped, into one load job (a resumable upload) into a
//! staging table of its own; the load lands every row or none. Then one MERGE, under a job id derived from
//! the run id, makes them final in the target: newest staged copy per deal, new deals inserted, a deal
//! replaced only by a newer copy. A retried or repeated run leaves the table unchanged, and nothing is ever
//! streamed (`tabledata.insertAll`): the quarantine and the ledger are loaded too.
//!
//! One file a concern: `client` (HTTP, retries), `auth` (credentials), `jobs` (insert, poll in the job's own
//! location, result pages, reruns), `load` (the upload), `tables` (dataset, tables, expiration, schema),
//! `sql` (the statements), `error` (classification).

mod auth;
mod client;
mod error;
mod jobs;
mod load;
pub mod sql;
mod tables;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use error::BqFailure;

use super::{Ending, Finished, Opening, PastRuns, RunRecord, SinkError, TableSpec, WriteStats};
use crate::config::BigQuerySettings;
use crate::exit::Exit;
use crate::retry::RetryPolicy;
use crate::schema::{format_instant, sort_ids, write_object, Column, DealRow, PastRun, Quarantined};
use crate::schema::{LEDGER, QUARANTINE};
use crate::window::WindowField;
use client::Api;
use jobs::{Done, Jobs, Row};
use load::Upload;
use sql::Statement;
use tables::{DatasetResource, TableDef};

/// Deals a soft-delete or reopened-deal statement carries at most (one array parameter).
const CHANGES_BATCH: usize = 1000;
/// Bytes one staging load carries at most: a part is loaded once it holds this much, well under what BigQuery
/// takes in one gzipped file (4 GB) and what bqemulator takes in one upload (1 GiB). The parts land in the
/// staging table one by one; nothing reaches the target before the MERGE.
const PART_BYTES: u64 = 512 * 1024 * 1024;
/// A staging table outlives the run's deadline by this much before it expires by itself.
const STAGING_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// The sink `--sink bigquery` opens: the project and dataset come from `BIGQUERY_PROJECT` and `BIGQUERY_DATASET`.
/// Its staging table expires no sooner than the run's deadline plus a margin.
pub(super) async fn connect(o: &Opening<'_>) -> Result<BigQuerySink, SinkError> {
    let bq = o.settings.bigquery.clone().ok_or_else(|| {
        let problem = "BIGQUERY_PROJECT is not set; --sink bigquery needs the project to write to";
        SinkError::new("bigquery", problem, Exit::Config)
    })?;
    let mut sink = BigQuerySink::connect(bq, o.run_id, o.retry, o.request_timeout).await?;
    sink.spec = o.table.clone();
    sink.staging_expires = Utc::now() + o.deadline + STAGING_MARGIN;
    Ok(sink)
}

pub struct BigQuerySink {
    api: Api,
    s: BigQuerySettings,
    /// The run id, lowercased: job and table ids derive from it.
    run: String,
    staging: String,
    /// The target's columns (standard, then promoted) and its replacement rule.
    spec: TableSpec,
    /// The dataset as read (its location runs every job), once read.
    dataset: Option<DatasetResource>,
    /// The staging load in progress, once the run has a row.
    upload: Option<Upload>,
    /// Staging loads finished (a run's rows go in parts of at most `PART_BYTES`).
    staged_parts: usize,
    /// The staging table exists.
    staging_created: bool,
    /// `PART_BYTES`, or less in tests.
    part_bytes: u64,
    /// The quarantine's load, once the run quarantines a record.
    quarantine: Option<Upload>,
    /// Deals quarantined by this run: one row each.
    quarantined: HashSet<String>,
    /// Reads run so far, for their job ids.
    reads: u64,
    bytes_billed: u64,
    /// When the staging table expires by itself.
    staging_expires: DateTime<Utc>,
}

impl BigQuerySink {
    /// Builds the client for the configured credentials. No request is sent yet.
    pub async fn connect(
        s: BigQuerySettings,
        run_id: &str,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<BigQuerySink, SinkError> {
        let api = Api::new(&s, retry, request_timeout)
            .await
            .map_err(|e| SinkError::new(describe(&s), e.to_string(), e.exit()))?;
        let run = run_id.to_ascii_lowercase();
        Ok(BigQuerySink {
            api,
            staging: format!("{}{run}", sql::STAGING_PREFIX),
            run,
            s,
            spec: TableSpec::default(),
            dataset: None,
            upload: None,
            staged_parts: 0,
            staging_created: false,
            part_bytes: PART_BYTES,
            quarantine: None,
            quarantined: HashSet::new(),
            reads: 0,
            bytes_billed: 0,
            staging_expires: Utc::now() + STAGING_MARGIN + Duration::from_secs(2 * 3600),
        })
    }

    /// Loads the staging table in parts of at most `bytes` (`PART_BYTES` unless a test asks for less).
    pub fn with_part_bytes(mut self, bytes: u64) -> Self {
        self.part_bytes = bytes;
        self
    }

    fn fail(&self, f: BqFailure) -> SinkError {
        SinkError::new(self.describe(), f.to_string(), f.exit())
    }

    fn table(&self, t: &str) -> String {
        sql::table_ref(&self.s.project, &self.s.dataset, t)
    }

    /// A job id of this run: `dealsync_<run>_<what>`.
    fn job_id(&self, what: &str) -> String {
        format!("dealsync_{}_{what}", self.run)
    }

    /// A load of one row after another into `table`, under job id `dealsync_<run>_<what>`.
    fn new_upload(&self, what: &str, table: &str, columns: &[Column]) -> Upload {
        let (p, d) = (&self.s.project, &self.s.dataset);
        Upload::new(self.job_id(what), p, d, table, columns, self.api.gzip)
    }

    /// Finishes a load: every row of it lands, or none.
    async fn load(&mut self, upload: Upload, what: &str) -> Result<Done, SinkError> {
        self.know_location().await?;
        upload.finish(&self.jobs_in(), what).await.map_err(|e| self.fail(e))
    }

    /// Reads the dataset once, for its location, where every job runs (a dataset that does not exist is an
    /// error here; `prepare` creates it).
    async fn know_location(&mut self) -> Result<(), SinkError> {
        if self.dataset.is_none() {
            let what = format!("reading dataset {}.{}", self.s.project, self.s.dataset);
            let d =
                self.api.get(&what, &format!("datasets/{}", self.s.dataset), &[]).await.map_err(|e| self.fail(e))?;
            self.dataset = Some(d);
        }
        Ok(())
    }

    /// Jobs in the dataset's location (`know_location` first).
    fn jobs_in(&self) -> Jobs<'_> {
        let location = self.dataset.as_ref().and_then(|d| d.location.clone());
        Jobs { api: &self.api, location, labels: LABELS }
    }

    /// Every row a query returns, all pages.
    async fn select(&mut self, what: &str, statement: impl Into<Statement>) -> Result<Vec<Row>, SinkError> {
        let (statement, id) = (statement.into(), self.job_id(&format!("q{}", self.reads)));
        self.reads += 1;
        self.know_location().await?;
        let (done, rows) = self.jobs_in().select(what, &id, &statement).await.map_err(|e| self.fail(e))?;
        self.bytes_billed += done.bytes_billed;
        Ok(rows)
    }

    /// A statement run to completion under `job_id`.
    async fn execute(&mut self, what: &str, job_id: &str, statement: impl Into<Statement>) -> Result<Done, SinkError> {
        let statement = statement.into();
        self.know_location().await?;
        let done = self.jobs_in().run(what, job_id, &statement).await.map_err(|e| self.fail(e))?;
        self.bytes_billed += done.bytes_billed;
        Ok(done)
    }

    /// The run ledger, newest first (`limit` runs), and its last good run (`dealsync runs`).
    pub async fn past_runs(&mut self, limit: u32) -> Result<PastRuns, SinkError> {
        let runs = self.table(sql::RUNS_TABLE);
        let last = self.read_runs(sql::past_runs_sql(&runs, limit, false)).await?;
        let good = self.read_runs(sql::past_runs_sql(&runs, 1, true)).await?.pop();
        Ok((last, good))
    }

    async fn read_runs(&mut self, statement: Statement) -> Result<Vec<PastRun>, SinkError> {
        let rows = self.select("reading the run ledger", statement).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
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
            })
            .collect())
    }

    /// The staging load in progress, created (and the staging table with the first) when a row needs one.
    async fn staging_upload(&mut self) -> Result<&mut Upload, SinkError> {
        if !self.staging_created {
            let expires_at = Some(self.staging_expires.timestamp_millis());
            let def =
                TableDef { id: self.staging.clone(), columns: self.spec.columns.clone(), target: false, expires_at };
            tables::ensure_table(&self.api, &self.s.dataset, &def).await.map_err(|e| self.fail(e))?;
            self.staging_created = true;
        }
        if self.upload.is_none() {
            let what = format!("stage_{}", self.staged_parts);
            self.upload = Some(self.new_upload(&what, &self.staging, &self.spec.columns));
        }
        Ok(self.upload.as_mut().expect("created above"))
    }

    /// Loads the staging part in progress.
    async fn load_part(&mut self) -> Result<(), SinkError> {
        let Some(upload) = self.upload.take() else { return Ok(()) };
        let rows = upload.rows;
        let loaded = self.load(upload, "loading the staging table").await?;
        tracing::info!(event = "staging_loaded", part = self.staged_parts, rows, output_rows = loaded.loaded,
            job = %loaded.job.job_id, "loaded rows of the run into the staging table");
        self.staged_parts += 1;
        Ok(())
    }

    /// `check`: the dataset, the table against the schema, and a dry-run query.
    async fn check_all(&mut self) -> Result<Vec<String>, SinkError> {
        let (p, d, t) = (self.s.project.clone(), self.s.dataset.clone(), self.s.table.clone());
        let mut seen = vec![format!("Google credentials: {}", self.api.credentials.source)];
        let what = format!("reading dataset {p}.{d}");
        match self.api.get::<DatasetResource>(&what, &format!("datasets/{d}"), &[]).await {
            Ok(ds) => {
                let location = ds.location.as_deref().unwrap_or("unknown");
                seen.push(format!("dataset {p}.{d} is reachable (location {location})"));
                if let Some(defaults) = ds.expiring_defaults() {
                    let removed = "dealsync removes the expiration of the tables it creates";
                    seen.push(format!("dataset {p}.{d} sets {defaults}: {removed}"));
                }
                self.dataset = Some(ds);
            }
            Err(e) if e.is_not_found() => seen.push(format!(
                "dataset {p}.{d} does not exist yet; the first run creates it (needs bigquery.datasets.create)"
            )),
            Err(e) => return Err(self.fail(e)),
        }
        let probe = match tables::get_table(&self.api, &d, &t).await.map_err(|e| self.fail(e))? {
            Some(existing) => {
                let (add, problems) = tables::compare_schema(&existing.schema.fields, &self.spec.columns);
                if !problems.is_empty() {
                    let problem = format!("the existing table is not compatible: {}", problems.join("; "));
                    return Err(SinkError::new(self.describe(), problem, Exit::Config));
                }
                seen.push(if add.is_empty() {
                    format!("table {p}.{d}.{t} has a compatible schema")
                } else {
                    format!("table {p}.{d}.{t} is compatible; the next run adds {} column(s)", add.len())
                });
                if let Some(expires) = existing.expires() {
                    seen.push(format!("table {p}.{d}.{t}: {expires}; the next run removes it"));
                }
                format!("SELECT deal_id, modified_time FROM {} LIMIT 1", self.table(&t))
            }
            None => {
                seen.push(format!("table {p}.{d}.{t} does not exist yet; the first run creates it"));
                "SELECT 1".to_string()
            }
        };
        // A dry run needs bigquery.jobs.create, as the MERGE will; it reads and bills nothing.
        let location = self.dataset.as_ref().and_then(|d| d.location.clone());
        let body = serde_json::json!({"query": probe, "useLegacySql": false, "dryRun": true, "location": location});
        self.api.post::<serde_json::Value>("a dry-run query", "queries", &body).await.map_err(|e| self.fail(e))?;
        seen.push(format!("queries can run in project {p} (dry run)"));
        Ok(seen)
    }

    /// Loads what the run quarantined (also when the run failed: the records and reasons hold all the same).
    async fn load_quarantine(&mut self) -> Result<(), SinkError> {
        let Some(upload) = self.quarantine.take() else { return Ok(()) };
        let n = upload.rows;
        let done = self.load(upload, "loading the quarantine").await?;
        tracing::info!(event = "quarantine_loaded", rows = n, job = %done.job.job_id, "loaded the quarantined records");
        Ok(())
    }

    /// Drops the staging table (best effort: it expires by itself).
    async fn drop_staging(&self) {
        let what = format!("dropping staging table {}", self.staging);
        let path = format!("datasets/{}/tables/{}", self.s.dataset, self.staging);
        match self.api.delete(&what, &path).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(event = "staging_left", table = %self.staging,
                "could not drop the staging table (it expires by itself): {e}"),
        }
    }

    /// Stops without merging: the staging upload is left to expire, its table dropped, the quarantine kept.
    async fn stop(&mut self) {
        self.upload = None;
        if std::mem::take(&mut self.staging_created) {
            self.drop_staging().await;
            tracing::info!(event = "staging_abandoned", table = %self.staging, "the run stopped: its rows are not merged");
        }
        if let Err(e) = self.load_quarantine().await {
            tracing::warn!(event = "quarantine_not_loaded", "could not load the quarantined records: {e}");
        }
    }
}

/// The labels every job carries.
const LABELS: &[(&str, &str)] = &[("managed-by", "dealsync")];

fn describe(s: &BigQuerySettings) -> String {
    format!("bigquery:{}.{}.{}", s.project, s.dataset, s.table)
}

/// A cell of a query's first row.
fn first_row_cell(rows: &[Row], i: usize) -> Option<&str> {
    rows.first()?.get(i)?.as_deref()
}

/// Keeps, per deal, the item `newer` prefers (the batch becomes one source row per target row, as MERGE needs).
fn latest<T>(items: Vec<T>, id: impl Fn(&T) -> &str, newer: impl Fn(&T, &T) -> bool) -> Vec<T> {
    let mut by_id: HashMap<String, T> = HashMap::new();
    for item in items {
        match by_id.get(id(&item)) {
            Some(kept) if !newer(&item, kept) => {}
            _ => {
                by_id.insert(id(&item).to_string(), item);
            }
        }
    }
    by_id.into_values().collect()
}

/// What the run calls (through `sink::Sink`).
impl BigQuerySink {
    pub fn describe(&self) -> String {
        describe(&self.s)
    }

    pub async fn check(&mut self) -> Result<Vec<String>, SinkError> {
        // Which credentials were used, said also when a check fails.
        let source = self.api.credentials.source.clone();
        self.check_all().await.map_err(|mut e| {
            e.message = format!("{} (Google credentials: {source})", e.message);
            e
        })
    }

    pub async fn prepare(&mut self) -> Result<(), SinkError> {
        let ds = tables::ensure_dataset(&self.api, &self.s.dataset, self.s.location.as_deref())
            .await
            .map_err(|e| self.fail(e))?;
        self.dataset = Some(ds);
        let def = |id: &str, columns, target| TableDef { id: id.into(), columns, target, expires_at: None };
        let defs = [
            def(&self.s.table, self.spec.columns.clone(), true),
            def(sql::RUNS_TABLE, LEDGER.to_vec(), false),
            def(sql::QUARANTINE_TABLE, QUARANTINE.to_vec(), false),
        ];
        for (i, def) in defs.iter().enumerate() {
            let existing = tables::ensure_table(&self.api, &self.s.dataset, def).await.map_err(|e| self.fail(e))?;
            if let (0, Some(t)) = (i, &existing) {
                let (table_ref, id) = (self.table(&def.id), self.job_id("add_columns"));
                tables::evolve(&self.jobs_in(), t, &table_ref, &self.spec.columns, &id, &self.describe()).await?;
            }
            let dataset = self.dataset.as_ref().expect("read above");
            let id = self.job_id(&format!("never_expire_{i}"));
            tables::never_expire(&self.jobs_in(), dataset, &self.s.dataset, def, &id, &self.describe()).await?;
        }
        Ok(())
    }

    pub async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>, SinkError> {
        let sql = sql::last_good_sql(&self.table(sql::RUNS_TABLE), field.api_name());
        let rows = self.select("reading the run ledger", sql).await?;
        let micros = first_row_cell(&rows, 0).and_then(|m| m.parse::<i64>().ok());
        Ok(micros.and_then(DateTime::<Utc>::from_timestamp_micros))
    }

    pub async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError> {
        if rows.is_empty() {
            return Ok(WriteStats::default());
        }
        self.know_location().await?;
        self.staging_upload().await?;
        let mut upload = self.upload.take().expect("created above");
        let mut written = Ok(WriteStats::default());
        for row in &rows {
            write_object(&self.spec.columns, &row.values, upload.line());
            if let Err(e) = upload.push_row(&self.jobs_in(), "loading the staging table").await {
                written = Err(self.fail(e));
                break;
            }
        }
        let full = upload.size() >= self.part_bytes;
        self.upload = Some(upload);
        if written.is_ok() && full {
            self.load_part().await?;
        }
        written
    }

    pub async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError> {
        let columns = QUARANTINE.to_vec();
        for q in items {
            // One row per deal and run: a record read again in the same run (a repair) is quarantined once.
            if let Some(id) = &q.deal_id {
                if !self.quarantined.insert(id.clone()) {
                    continue;
                }
            }
            let mut upload = match self.quarantine.take() {
                Some(upload) => upload,
                None => self.new_upload("quarantine", sql::QUARANTINE_TABLE, &columns),
            };
            write_object(&columns, &q.values(), upload.line());
            self.know_location().await?;
            let pushed = upload.push_row(&self.jobs_in(), "loading the quarantine").await;
            self.quarantine = Some(upload);
            pushed.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Complete: loads the quarantine and the last staging part, then merges them. Stopped: nothing is merged.
    pub async fn finish(&mut self, ending: Ending) -> Result<Finished, SinkError> {
        if ending == Ending::Stopped {
            self.stop().await;
            let kept = format!("nothing was merged into {}", self.s.table);
            return Ok(Finished { stats: WriteStats::default(), kept });
        }
        Ok(Finished { stats: self.commit().await?, kept: String::new() })
    }

    async fn commit(&mut self) -> Result<WriteStats, SinkError> {
        self.load_quarantine().await?;
        self.load_part().await?;
        if self.staged_parts == 0 {
            if self.staging_created {
                self.drop_staging().await;
            }
            return Ok(WriteStats::default());
        }
        let (target, staging) = (self.table(&self.s.table), self.table(&self.staging));
        let preview = sql::merge_preview_sql(&target, &staging, self.spec.rewrite);
        let rows = self.select("counting what the MERGE will change", preview).await?;
        let get = |i: usize| -> u64 { first_row_cell(&rows, i).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let (staged, deals, inserted, updated) = (get(0), get(1), get(2), get(3));
        let merge = sql::merge_sql(&target, &staging, &self.spec.columns, self.spec.rewrite);
        let merged = self.execute("the MERGE", &self.job_id("merge"), merge).await?;
        let affected = merged.affected;
        tracing::info!(event = "merge", staged, deals, inserted, updated, affected, job = %merged.job.job_id,
            "merged the run's rows into the target");
        if affected != inserted + updated {
            tracing::warn!(
                event = "merge_count_mismatch",
                affected,
                expected = inserted + updated,
                "the MERGE changed a different number of rows than counted just before (a concurrent writer?)"
            );
        }
        self.drop_staging().await;
        Ok(WriteStats { inserted, updated, unchanged: staged.saturating_sub(inserted + updated), rejected: 0 })
    }

    pub async fn mark_deleted(&mut self, deleted: Vec<crate::zoho::changes::Deleted>) -> Result<u64, SinkError> {
        let deleted = latest(deleted, |d| &d.deal_id, |a, b| a.deleted_time > b.deleted_time);
        let rows: Vec<_> = deleted.iter().map(|d| (d.deal_id.clone(), format_instant(&d.deleted_time))).collect();
        self.in_batches("marking deleted deals", "deleted", &rows, sql::mark_deleted_sql).await
    }

    pub async fn mark_not_won(&mut self, changes: Vec<crate::zoho::changes::StageChange>) -> Result<u64, SinkError> {
        let changes = latest(changes, |c| &c.deal_id, |a, b| a.modified_time > b.modified_time);
        let rows: Vec<_> =
            changes.iter().map(|c| (c.deal_id.clone(), c.stage.clone(), format_instant(&c.modified_time))).collect();
        self.in_batches("recording reopened deals", "reopened", &rows, sql::mark_not_won_sql).await
    }

    /// Runs `statement` over `rows` in batches of `CHANGES_BATCH` (job ids `<prefix>_<i>`); the rows it changed.
    async fn in_batches<T>(
        &mut self,
        what: &str,
        prefix: &str,
        rows: &[T],
        statement: fn(&str, &[T]) -> Statement,
    ) -> Result<u64, SinkError> {
        let target = self.table(&self.s.table);
        let mut n = 0;
        for (i, chunk) in rows.chunks(CHANGES_BATCH).enumerate() {
            let id = self.job_id(&format!("{prefix}_{i}"));
            n += self.execute(what, &id, statement(&target, chunk)).await?.affected;
        }
        Ok(n)
    }

    pub async fn count_in_window(&mut self, w: &crate::window::Window) -> Result<Option<u64>, SinkError> {
        let sql = sql::in_window_sql("COUNT(*)", &self.table(&self.s.table), w);
        let rows = self.select("counting the window's rows", sql).await?;
        Ok(Some(first_row_cell(&rows, 0).and_then(|v| v.parse().ok()).unwrap_or(0)))
    }

    pub async fn ids_in_window(&mut self, w: &crate::window::Window) -> Result<Vec<String>, SinkError> {
        let sql = sql::in_window_sql("deal_id", &self.table(&self.s.table), w);
        let rows = self.select("listing the window's rows", sql).await?;
        let mut ids: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
        sort_ids(&mut ids);
        Ok(ids)
    }

    pub async fn record_run(&mut self, run: &RunRecord) -> Result<(), SinkError> {
        let columns = LEDGER.to_vec();
        // One load a row: the run's `running` row at its start, its final row at its end (reads keep the latter).
        let mut upload = self.new_upload(&format!("ledger_{}", run.status), sql::RUNS_TABLE, &columns);
        write_object(&columns, &run.values(), upload.line());
        self.know_location().await?;
        upload.push_row(&self.jobs_in(), "recording the run").await.map_err(|e| self.fail(e))?;
        self.load(upload, "recording the run").await.map(|_| ())
    }

    pub fn bytes_billed(&self) -> Option<u64> {
        Some(self.bytes_billed)
    }
}
