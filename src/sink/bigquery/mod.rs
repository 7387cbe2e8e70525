//! The BigQuery sink: every run streams its rows into a staging table of its own (created with an
//! expiration, named after the run), then one MERGE with a job id derived from the run id makes them final in
//! the target: newest staged copy per deal, new deals inserted, a deal replaced only by a newer copy. The
//! target is never streamed into, so BigQuery's streaming-buffer restriction on DML never applies, and a
//! retried or repeated run leaves the table unchanged.

mod error;
pub mod rows;
pub mod sql;
mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::data_format_options::DataFormatOptions;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::job::Job;
use gcp_bigquery_client::model::job_configuration::JobConfiguration;
use gcp_bigquery_client::model::job_configuration_query::JobConfigurationQuery;
use gcp_bigquery_client::model::job_reference::JobReference;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::{QueryResponse, ResultSet};
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;
use gcp_bigquery_client::Client;

pub use error::BqFailure;

use super::{OpenError, Opening, PastRuns, RunRecord, Sink, SinkError, SinkKind, TableSpec, WriteStats};
use crate::config::{BigQueryAuth, BigQuerySettings, ConfigError};
use crate::exit::Exit;
use crate::json::Raw;
use crate::retry::{retry, Poll, PollError, Retry, RetryPolicy};
use crate::schema::{
    columns_of, format_instant, sort_ids, write_object, Column, DealRow, PastRun, Quarantined, Text, Value, LEDGER,
    QUARANTINE,
};
use crate::window::WindowField;
use sql::Statement;
use stream::{call_with_retries, Pending, Streamer};

/// insertAll batches stay under both bounds (Google recommends 500 rows and about 5 MB per request).
pub const BATCH_ROWS: usize = 500;
pub const BATCH_BYTES: usize = 5_000_000;
/// MERGE jobs per run at most (the first and its re-runs after whole-job failures).
const MERGE_ATTEMPTS: usize = 4;
/// How long a query or MERGE job may run before the run gives up on it.
const JOB_LIMIT: Duration = Duration::from_secs(1800);

/// A finished MERGE job's failure, classified for re-running the whole job (not for resending a request).
struct MergeJobFailure(BqFailure);

impl std::fmt::Display for MergeJobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Retry for MergeJobFailure {
    fn is_retryable(&self) -> bool {
        self.0.is_rerunnable_job_failure()
    }
}

/// `insertAll` requests in flight at once: batches stream while the next pages are fetched and mapped.
pub const INSERT_CONCURRENCY: usize = 4;
/// Staging tables expire by themselves if a run dies before dropping its own.
const STAGING_TTL: Duration = Duration::from_secs(24 * 3600);
/// Resends of rows BigQuery marked `stopped` (because another row in the request was invalid).
const STOPPED_RESENDS: usize = 3;

/// The emulator needs no credentials; the client still asks for a token.
#[derive(Clone)]
struct NoAuth;

#[async_trait]
impl gcp_bigquery_client::auth::Authenticator for NoAuth {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".into())
    }
}

/// What one streaming task reports: the deals BigQuery acknowledged, and the rows it refused.
type Streamed = (Vec<Text>, Vec<Quarantined>);

/// `--sink bigquery`: the project and dataset come from `BIGQUERY_PROJECT` and `BIGQUERY_DATASET`.
pub const KIND: SinkKind = SinkKind {
    name: "bigquery",
    forms: &["bigquery"],
    default_target: None,
    check_target: |target| match target {
        None => Ok(()),
        Some(t) => Err(format!(
            "BigQuery takes no target (`{t}`): the project and dataset come from BIGQUERY_PROJECT and BIGQUERY_DATASET"
        )),
    },
    open: open_kind,
    past_runs: Some(past_runs_kind),
};

async fn connect_kind(o: &Opening<'_>) -> Result<BigQuerySink, OpenError> {
    let bq = o.settings.bigquery.clone().ok_or_else(|| {
        ConfigError::new("BIGQUERY_PROJECT", "is not set; --sink bigquery needs the project to write to")
    })?;
    Ok(BigQuerySink::connect(bq, o.run_id, o.started_at, o.retry, o.request_timeout).await?)
}

fn open_kind(o: Opening<'_>) -> BoxFuture<'_, Result<Box<dyn Sink>, OpenError>> {
    Box::pin(async move {
        let sink = connect_kind(&o).await?;
        Ok(Box::new(sink.with_spec(o.table)) as Box<dyn Sink>)
    })
}

fn past_runs_kind(o: Opening<'_>, limit: u32) -> BoxFuture<'_, Result<PastRuns, OpenError>> {
    Box::pin(async move { Ok(connect_kind(&o).await?.past_runs(limit).await?) })
}

pub struct BigQuerySink {
    client: Client,
    s: BigQuerySettings,
    run_id: String,
    staging: String,
    staging_ready: bool,
    staged: u64,
    batch: Vec<Pending>,
    batch_bytes: usize,
    retry: RetryPolicy,
    spec: TableSpec,
    /// The target's columns (standard, then promoted), derived from `spec` once.
    columns: Vec<Column>,
    streamer: Arc<Streamer>,
    /// Streaming tasks in flight (at most `INSERT_CONCURRENCY`), each with its staged rows and refused rows.
    in_flight: tokio::task::JoinSet<Result<Streamed, SinkError>>,
    /// The deals staged (BigQuery acknowledged their rows), which the staging table must hold before the MERGE.
    staged_ids: crate::sink::seen::Seen,
    /// The staging table was proven to hold every staged deal, and nothing was staged since.
    proven: bool,
    /// Rows BigQuery refused (quarantined) since the last commit's count.
    rejected: u64,
    /// Rows BigQuery acknowledged that the staging table was found to lack (their deals were written again).
    lost: u64,
}

/// Why the staging table is not proven whole yet.
enum Unproven {
    Query(BqFailure),
    /// It holds fewer deals than were staged (rows, distinct deals).
    Short {
        rows: u64,
        deals: u64,
    },
}

impl std::fmt::Display for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unproven::Query(e) => e.fmt(f),
            Unproven::Short { rows, deals } => write!(f, "the staging table shows {deals} deals ({rows} rows) so far"),
        }
    }
}

impl Retry for Unproven {
    fn is_retryable(&self) -> bool {
        match self {
            Unproven::Query(e) => e.is_retryable(),
            // Rows in BigQuery's streaming buffer may be late to show in queries: look again.
            Unproven::Short { .. } => true,
        }
    }
}

impl BigQuerySink {
    /// Builds the client for the configured credentials. No request is sent yet.
    pub async fn connect(
        s: BigQuerySettings,
        run_id: &str,
        synced_at: DateTime<Utc>,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<BigQuerySink, SinkError> {
        let describe = describe(&s);
        let http = reqwest::Client::builder()
            .user_agent(concat!("dealsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Queries wait up to 60 s on the server (`timeoutMs`): the HTTP timeout must outlast that.
            .timeout(request_timeout.max(Duration::from_secs(90)))
            .build()
            .map_err(|e| SinkError::new(&describe, format!("building the HTTP client: {e}"), Exit::Internal))?;
        let mut b = ClientBuilder::new();
        b.with_client(http);
        let built = match &s.auth {
            BigQueryAuth::Emulator { base_url } => {
                b.with_v2_base_url(base_url.as_str().trim_end_matches('/').to_string());
                b.build_from_authenticator(Arc::new(NoAuth)).await
            }
            BigQueryAuth::ServiceAccountKey { path } => {
                b.build_from_service_account_key_file(&path.to_string_lossy()).await
            }
            BigQueryAuth::AuthorizedUser { path } => b.build_from_authorized_user_authenticator(path).await,
            BigQueryAuth::ApplicationDefault => b.build_from_application_default_credentials().await,
        };
        let client = built.map_err(|e| {
            let f = BqFailure::new("loading Google credentials", e);
            SinkError::new(&describe, f.to_string(), Exit::Config)
        })?;
        let staging = format!("{}{}", sql::STAGING_PREFIX, run_id.to_ascii_lowercase());
        let streamer = Arc::new(Streamer {
            client: client.clone(),
            project: s.project.clone(),
            dataset: s.dataset.clone(),
            retry,
            describe,
            run_id: run_id.to_string(),
            synced_at,
            fresh_tables: Default::default(),
        });
        Ok(BigQuerySink {
            client,
            s,
            run_id: run_id.to_string(),
            staging,
            staging_ready: false,
            staged: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            retry,
            spec: TableSpec::default(),
            columns: TableSpec::default().columns,
            streamer,
            in_flight: tokio::task::JoinSet::new(),
            staged_ids: Default::default(),
            proven: false,
            rejected: 0,
            lost: 0,
        })
    }

    /// Promoted columns and the replacement rule of the target table.
    pub fn with_spec(mut self, spec: TableSpec) -> Self {
        self.columns = spec.columns.clone();
        self.spec = spec;
        self
    }

    fn target_fields(&self) -> Vec<TableFieldSchema> {
        sql::target_fields(&self.columns)
    }

    fn fail(&self, f: BqFailure) -> SinkError {
        SinkError::new(self.describe(), f.to_string(), f.exit())
    }

    fn table(&self, t: &str) -> String {
        sql::table_ref(&self.s.project, &self.s.dataset, t)
    }

    /// The run ledger, newest first (`limit` runs), and its last good run (`dealsync runs`).
    pub async fn past_runs(&self, limit: u32) -> Result<(Vec<PastRun>, Option<PastRun>), SinkError> {
        let runs = self.table(sql::RUNS_TABLE);
        let last = self.read_runs(sql::past_runs_sql(&runs, limit, false)).await?;
        let good = self.read_runs(sql::past_runs_sql(&runs, 1, true)).await?.pop();
        Ok((last, good))
    }

    async fn read_runs(&self, statement: Statement) -> Result<Vec<PastRun>, SinkError> {
        let mut rs = self.query("reading the run ledger", statement).await.map_err(|e| self.fail(e))?;
        let mut found = Vec::new();
        while rs.next_row() {
            let text = |i: usize| rs.get_string(i).ok().flatten().unwrap_or_default();
            let int = |i: usize| rs.get_i64(i).ok().flatten().unwrap_or(0);
            let at = |i: usize| DateTime::<Utc>::from_timestamp_micros(int(i)).unwrap_or_default();
            found.push(PastRun {
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
                error: rs.get_string(11).ok().flatten(),
            });
        }
        Ok(found)
    }

    /// One BigQuery call with retries for transient failures.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, BqFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, BQError>>,
    {
        call_with_retries(self.retry, what, f).await
    }

    /// A DML statement on the target (never streamed into, so no streaming-buffer restriction); rows affected.
    fn request(&self, statement: impl Into<Statement>) -> QueryRequest {
        let statement = statement.into();
        let mut req = QueryRequest::new(statement.sql);
        req.location = self.s.location.clone();
        if !statement.params.is_empty() {
            req.parameter_mode = Some("NAMED".into());
            req.query_parameters = Some(statement.params);
        }
        req
    }

    async fn dml(&self, what: &str, statement: impl Into<Statement>) -> Result<u64, SinkError> {
        let req = self.request(statement);
        let project = self.s.project.clone();
        let resp =
            self.call(what, || self.client.job().query(&project, req.clone())).await.map_err(|e| self.fail(e))?;
        if let Some(e) = resp.errors.as_ref().and_then(|e| e.first()) {
            return Err(self.fail(BqFailure::reported(what, e.reason.clone(), e.message.clone())));
        }
        Ok(resp.num_dml_affected_rows.and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    /// A query, its in-band errors (the emulator answers 200 with `errors`) and completion polling.
    async fn query(&self, what: &str, statement: impl Into<Statement>) -> Result<ResultSet, BqFailure> {
        let mut req = self.request(statement);
        req.format_options = Some(DataFormatOptions { use_int64_timestamp: Some(true) });
        req.timeout_ms = Some(60_000);
        let project = self.s.project.clone();
        let mut resp: QueryResponse = self.call(what, || self.client.job().query(&project, req.clone())).await?;
        if let Some(e) = resp.errors.as_ref().and_then(|e| e.first()) {
            return Err(BqFailure::reported(what, e.reason.clone(), e.message.clone()));
        }
        if resp.job_complete == Some(false) {
            // getQueryResults long-polls on the server (`timeoutMs`), so the looks need no wait between them.
            let job_id = resp.job_reference.as_ref().and_then(|r| r.job_id.clone()).unwrap_or_default();
            let params = GetQueryResultsParameters {
                location: self.s.location.clone(),
                timeout_ms: Some(10_000),
                format_options: Some(DataFormatOptions { use_int64_timestamp: Some(true) }),
                ..Default::default()
            };
            let look = || async {
                match self.call(what, || self.client.job().get_query_results(&project, &job_id, params.clone())).await {
                    Ok(r) if r.job_complete == Some(false) => Poll::Pending,
                    Ok(r) => Poll::Done(QueryResponse::from(r)),
                    Err(e) => Poll::Failed(e),
                }
            };
            resp = match crate::retry::poll(Duration::ZERO, Duration::ZERO, JOB_LIMIT, look).await {
                Ok(r) => r,
                Err(PollError::Failed(e)) => return Err(e),
                Err(PollError::TimedOut) => {
                    return Err(BqFailure::reported(
                        what,
                        Some("timeout".into()),
                        Some(format!("job {job_id} did not finish in 30 minutes")),
                    ))
                }
            };
        }
        Ok(ResultSet::new_from_query_response(resp))
    }

    async fn ensure_dataset(&self) -> Result<(), BqFailure> {
        let (p, d) = (self.s.project.as_str(), self.s.dataset.as_str());
        let what = format!("reading dataset {p}.{d}");
        match self.call(&what, || self.client.dataset().get(p, d)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut ds = Dataset::new(p, d).label("managed-by", "dealsync");
        if let Some(loc) = &self.s.location {
            ds = ds.location(loc);
        }
        let what = format!("creating dataset {p}.{d}");
        match self.call(&what, || self.client.dataset().create(ds.clone())).await {
            Ok(_) => {
                tracing::info!(event = "dataset_created", dataset = %format!("{p}.{d}"), "created the BigQuery dataset");
                Ok(())
            }
            Err(e) if e.is_duplicate() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a table if missing; returns the existing table otherwise.
    async fn ensure_table(&self, table: Table) -> Result<Option<Table>, BqFailure> {
        let (p, d, t) = (self.s.project.clone(), self.s.dataset.clone(), table.table_reference.table_id.clone());
        let what = format!("reading table {p}.{d}.{t}");
        match self.call(&what, || self.client.table().get(&p, &d, &t, None)).await {
            Ok(existing) => return Ok(Some(existing)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let what = format!("creating table {p}.{d}.{t}");
        match self.call(&what, || self.client.table().create(table.clone())).await {
            Ok(_) => {
                tracing::info!(event = "table_created", table = %format!("{p}.{d}.{t}"), "created a BigQuery table");
                self.streamer.fresh_tables.lock().expect("not poisoned").insert(t);
                Ok(None)
            }
            Err(e) if e.is_duplicate() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks an existing target against the schema: missing columns are added, incompatible ones stop the run.
    async fn evolve(&self, existing: Table) -> Result<(), SinkError> {
        let have = existing.schema.fields().clone().unwrap_or_default();
        let (to_add, problems) = compare_schema(&have, &self.target_fields());
        if !problems.is_empty() {
            return Err(SinkError::new(
                self.describe(),
                format!(
                    "the existing table is not compatible and nothing was written: {}; migrate or rename the table, \
                     or point BIGQUERY_TABLE elsewhere",
                    problems.join("; ")
                ),
                Exit::Config,
            ));
        }
        if to_add.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = to_add.iter().map(|f| f.name.clone()).collect();
        // DDL rather than tables.patch: the same in BigQuery, and the emulator only applies DDL to its storage.
        let adds: Vec<String> = to_add
            .iter()
            .map(|f| {
                let ty = sql::canonical_type(&f.r#type);
                let ty = if f.mode.as_deref() == Some("REPEATED") { format!("ARRAY<{ty}>") } else { ty.to_string() };
                format!("ADD COLUMN IF NOT EXISTS {} {ty}", f.name)
            })
            .collect();
        let table = self.table(&self.s.table);
        let what = format!("adding columns {} to {}", names.join(", "), self.describe());
        // One statement (table metadata updates are rate-limited per table); a server that takes one ALTER
        // command per statement (the emulator) gets them one by one.
        match self.query(&what, format!("ALTER TABLE {table} {}", adds.join(", "))).await {
            Ok(_) => {}
            Err(e) if adds.len() > 1 && e.to_string().contains("Only one ALTER command") => {
                for (add, name) in adds.iter().zip(&names) {
                    let what = format!("adding column {name} to {}", self.describe());
                    self.query(&what, format!("ALTER TABLE {table} {add}")).await.map_err(|e| self.fail(e))?;
                }
            }
            Err(e) => return Err(self.fail(e)),
        }
        tracing::info!(event = "columns_added", columns = %names.join(","), "added columns to the target table");
        Ok(())
    }

    /// Streams generic rows (ledger, quarantine: a few per run) into `table`.
    /// Streams rows of `columns` (insert id, values in column order) into `table`.
    async fn insert_rows(
        &self,
        table: &str,
        columns: &[Column],
        rows: Vec<(String, Vec<Value>)>,
    ) -> Result<Vec<(usize, String, bool)>, BqFailure> {
        let json: Vec<(String, Raw)> = rows
            .into_iter()
            .map(|(id, values)| {
                let mut buf = Vec::new();
                write_object(columns, &values, &mut buf, true);
                (id, Raw::checked(String::from_utf8(buf).expect("JSON is UTF-8")))
            })
            .collect();
        let body = rows::insert_all_body(json.iter().map(|(id, j)| (id.as_str(), j)));
        self.insert_body(table, json.len(), body).await
    }

    /// Sends one gzipped `insertAll` body of `n` rows; returns the rows BigQuery reported.
    async fn insert_body(&self, table: &str, n: usize, body: Vec<u8>) -> Result<Vec<(usize, String, bool)>, BqFailure> {
        self.streamer.insert_body(table, n, body).await
    }

    async fn ensure_staging(&mut self) -> Result<(), SinkError> {
        if self.staging_ready {
            return Ok(());
        }
        let table = Table::new(&self.s.project, &self.s.dataset, &self.staging, TableSchema::new(self.target_fields()))
            .expiration_time(SystemTime::now() + STAGING_TTL)
            .label("managed-by", "dealsync")
            .label("dealsync-run", &self.run_id.to_ascii_lowercase());
        self.ensure_table(table).await.map_err(|e| self.fail(e))?;
        self.staging_ready = true;
        Ok(())
    }

    /// Hands the batch to a streaming task; when `INSERT_CONCURRENCY` tasks are in flight, waits for one first.
    /// Returns the rows refused by the tasks that finished.
    async fn flush(&mut self) -> Result<Vec<Quarantined>, SinkError> {
        let mut refused = Vec::new();
        if !self.batch.is_empty() {
            self.ensure_staging().await?;
            while self.in_flight.len() >= INSERT_CONCURRENCY {
                refused.extend(self.join_one().await?);
            }
            let pending = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            self.proven = false;
            let (streamer, table) = (self.streamer.clone(), self.staging.clone());
            self.in_flight.spawn(async move { streamer.stream_batch(&table, pending).await });
        }
        Ok(refused)
    }

    /// Waits for one streaming task; `None` when none is in flight.
    async fn join_one(&mut self) -> Result<Vec<Quarantined>, SinkError> {
        match self.in_flight.join_next().await {
            None => Ok(Vec::new()),
            Some(Ok(Ok((staged, refused)))) => {
                self.staged += staged.len() as u64;
                for id in staged {
                    self.staged_ids.offer(&id, 0);
                }
                Ok(refused)
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => {
                Err(SinkError::new(self.describe(), format!("a streaming task failed: {e}"), Exit::Internal))
            }
        }
    }

    /// Flushes the batch and waits for every streaming task.
    async fn drain(&mut self) -> Result<Vec<Quarantined>, SinkError> {
        let mut refused = self.flush().await?;
        while !self.in_flight.is_empty() {
            refused.extend(self.join_one().await?);
        }
        Ok(refused)
    }

    /// Runs the MERGE as a job with an id derived from the run, so that a retried request cannot run it twice.
    /// A job that fails as a whole on a conflict with another writer (sharded tasks merging into one table) or
    /// a transient backend error changed nothing, so it runs again under the next id (`…_2`, `…_3`), with the
    /// shared backoff.
    async fn run_merge(&self) -> Result<u64, BqFailure> {
        let base = format!("dealsync_merge_{}", self.run_id.to_ascii_lowercase());
        let attempt = std::sync::atomic::AtomicU32::new(0);
        let policy = RetryPolicy { max_attempts: MERGE_ATTEMPTS, min_delay: Duration::from_secs(1), ..self.retry };
        retry(
            policy,
            "the MERGE job under the next job id",
            || {
                let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let job_id = if n == 1 { base.clone() } else { format!("{base}_{n}") };
                async move { self.run_merge_job(&job_id).await.map_err(MergeJobFailure) }
            },
            || {},
        )
        .await
        .map_err(|g| g.error.0)
    }

    /// One MERGE job under `job_id`: inserted (an insert retried after it went through finds the job), then
    /// polled until done.
    async fn run_merge_job(&self, job_id: &str) -> Result<u64, BqFailure> {
        let job_id = job_id.to_string();
        let project = self.s.project.clone();
        let job = Job {
            job_reference: Some(JobReference {
                project_id: Some(project.clone()),
                job_id: Some(job_id.clone()),
                location: self.s.location.clone(),
            }),
            configuration: Some(JobConfiguration {
                query: Some(JobConfigurationQuery {
                    query: sql::merge_sql(
                        &self.table(&self.s.table),
                        &self.table(&self.staging),
                        &self.columns,
                        self.spec.rewrite,
                    ),
                    use_legacy_sql: Some(false),
                    ..Default::default()
                }),
                labels: Some([("managed-by".to_string(), "dealsync".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let what = format!("starting MERGE job {job_id}");
        match self.call(&what, || self.client.job().insert(&project, job.clone())).await {
            Ok(_) => {}
            // A retry of an insert that went through: the job exists; wait for it like any other.
            Err(e) if e.is_duplicate() => {}
            Err(e) => return Err(e),
        }
        let what = format!("waiting for MERGE job {job_id}");
        let look = || async {
            let j = match self
                .call(&what, || self.client.job().get_job(&project, &job_id, self.s.location.as_deref()))
                .await
            {
                Ok(j) => j,
                Err(e) => return Poll::Failed(e),
            };
            let status = j.status.unwrap_or_default();
            if status.state.as_deref() != Some("DONE") {
                return Poll::Pending;
            }
            if let Some(e) = status.error_result {
                return Poll::Failed(BqFailure::reported(format!("MERGE job {job_id}"), e.reason, e.message));
            }
            let affected = j
                .statistics
                .and_then(|s| s.query)
                .and_then(|q| q.num_dml_affected_rows)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Poll::Done(affected)
        };
        match crate::retry::poll(Duration::from_millis(200), Duration::from_secs(5), JOB_LIMIT, look).await {
            Ok(affected) => Ok(affected),
            Err(PollError::Failed(e)) => Err(e),
            Err(PollError::TimedOut) => Err(BqFailure::reported(
                what,
                Some("timeout".into()),
                Some("the job did not finish in 30 minutes".into()),
            )),
        }
    }
}

fn describe(s: &BigQuerySettings) -> String {
    format!("bigquery:{}.{}.{}", s.project, s.dataset, s.table)
}

/// Columns to add, and the incompatibilities that forbid writing.
pub fn compare_schema(have: &[TableFieldSchema], want: &[TableFieldSchema]) -> (Vec<TableFieldSchema>, Vec<String>) {
    let mode = |f: &TableFieldSchema| f.mode.clone().unwrap_or_else(|| "NULLABLE".into()).to_ascii_uppercase();
    let mut add = Vec::new();
    let mut problems = Vec::new();
    for w in want {
        match have.iter().find(|h| h.name.eq_ignore_ascii_case(&w.name)) {
            None => {
                let mut f = w.clone();
                if mode(&f) == "REQUIRED" {
                    // BigQuery can only add NULLABLE or REPEATED columns to a table.
                    f.mode = Some("NULLABLE".into());
                }
                add.push(f);
            }
            Some(h) => {
                let (ht, wt) = (sql::canonical_type(&h.r#type), sql::canonical_type(&w.r#type));
                if ht != wt {
                    problems.push(format!("column {} is {ht}, dealsync writes {wt}", w.name));
                    continue;
                }
                let (hm, wm) = (mode(h), mode(w));
                let repeated_mismatch = (hm == "REPEATED") != (wm == "REPEATED");
                let required_but_nullable = hm == "REQUIRED" && wm != "REQUIRED";
                if repeated_mismatch || required_but_nullable {
                    problems.push(format!("column {} is {hm}, dealsync writes {wm}", w.name));
                }
            }
        }
    }
    (add, problems)
}

#[async_trait]
impl Sink for BigQuerySink {
    fn describe(&self) -> String {
        describe(&self.s)
    }

    async fn check(&mut self) -> Result<Vec<String>, SinkError> {
        let (p, d, t) = (self.s.project.clone(), self.s.dataset.clone(), self.s.table.clone());
        let mut seen = Vec::new();
        let what = format!("reading dataset {p}.{d}");
        match self.call(&what, || self.client.dataset().get(&p, &d)).await {
            Ok(_) => seen.push(format!("dataset {p}.{d} is reachable")),
            Err(e) if e.is_not_found() => seen.push(format!(
                "dataset {p}.{d} does not exist yet; the first run creates it (needs bigquery.datasets.create)"
            )),
            Err(e) => return Err(self.fail(e)),
        }
        let what = format!("reading table {p}.{d}.{t}");
        let probe = match self.call(&what, || self.client.table().get(&p, &d, &t, None)).await {
            Ok(existing) => {
                let (add, problems) =
                    compare_schema(&existing.schema.fields().clone().unwrap_or_default(), &self.target_fields());
                if !problems.is_empty() {
                    return Err(SinkError::new(
                        self.describe(),
                        format!("the existing table is not compatible: {}", problems.join("; ")),
                        Exit::Config,
                    ));
                }
                seen.push(if add.is_empty() {
                    format!("table {p}.{d}.{t} has a compatible schema")
                } else {
                    format!("table {p}.{d}.{t} is compatible; the next run adds {} column(s)", add.len())
                });
                format!("SELECT deal_id, modified_time FROM {} LIMIT 1", self.table(&t))
            }
            Err(e) if e.is_not_found() => {
                seen.push(format!("table {p}.{d}.{t} does not exist yet; the first run creates it"));
                "SELECT 1".to_string()
            }
            Err(e) => return Err(self.fail(e)),
        };
        // A dry run needs bigquery.jobs.create, as the MERGE will; it reads and bills nothing.
        let mut req = QueryRequest::new(probe);
        req.dry_run = Some(true);
        req.location = self.s.location.clone();
        self.call("a dry-run query", || self.client.job().query(&p, req.clone())).await.map_err(|e| self.fail(e))?;
        seen.push(format!("queries can run in project {p} (dry run)"));
        Ok(seen)
    }

    async fn prepare(&mut self) -> Result<(), SinkError> {
        self.ensure_dataset().await.map_err(|e| self.fail(e))?;
        let target =
            Table::new(&self.s.project, &self.s.dataset, &self.s.table, TableSchema::new(self.target_fields()))
                .time_partitioning(TimePartitioning::per_day().field("closing_date"))
                .clustering(Clustering { fields: Some(vec!["deal_id".into()]) })
                .label("managed-by", "dealsync");
        if let Some(existing) = self.ensure_table(target).await.map_err(|e| self.fail(e))? {
            self.evolve(existing).await?;
        }
        for (name, fields) in
            [(sql::RUNS_TABLE, sql::ledger_fields()), (sql::QUARANTINE_TABLE, sql::quarantine_fields())]
        {
            let t = Table::new(&self.s.project, &self.s.dataset, name, TableSchema::new(fields))
                .label("managed-by", "dealsync");
            self.ensure_table(t).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    async fn last_good_window_end(&mut self, field: WindowField) -> Result<Option<DateTime<Utc>>, SinkError> {
        let sql = sql::last_good_sql(&self.table(sql::RUNS_TABLE), field.api_name());
        let mut rs = self.query("reading the run ledger", sql).await.map_err(|e| self.fail(e))?;
        if !rs.next_row() {
            return Ok(None);
        }
        let micros = rs.get_i64(0).map_err(|e| self.fail(BqFailure::new("reading the run ledger", e)))?;
        Ok(micros.and_then(DateTime::<Utc>::from_timestamp_micros))
    }

    async fn write_rows(&mut self, rows: Vec<DealRow>) -> Result<WriteStats, SinkError> {
        let mut refused = Vec::new();
        for row in rows {
            let staged = rows::StagedRow::new(&row, &self.columns);
            let bytes = staged.size();
            if !self.batch.is_empty() && (self.batch.len() >= BATCH_ROWS || self.batch_bytes + bytes > BATCH_BYTES) {
                refused.extend(self.flush().await?);
            }
            let deal_id = Text::from(row.deal_id());
            let raw = row.raw().clone();
            self.batch.push(Pending { row: staged, deal_id, raw });
            self.batch_bytes += bytes;
        }
        let rejected = refused.len() as u64;
        if !refused.is_empty() {
            self.write_quarantine(refused).await?;
        }
        Ok(WriteStats { rejected, ..WriteStats::default() })
    }

    async fn write_quarantine(&mut self, items: Vec<Quarantined>) -> Result<(), SinkError> {
        let columns = columns_of(&QUARANTINE);
        for chunk in items.chunks(BATCH_ROWS) {
            let rows = chunk
                .iter()
                .map(|q| {
                    (
                        format!("{}:{}:{}", q.sync_run_id, q.deal_id.as_deref().unwrap_or("-"), q.reason.len()),
                        q.values(),
                    )
                })
                .collect();
            let errors = self.insert_rows(sql::QUARANTINE_TABLE, &columns, rows).await.map_err(|e| self.fail(e))?;
            if !errors.is_empty() {
                return Err(SinkError::new(
                    self.describe(),
                    format!("BigQuery refused quarantine rows: {errors:?}"),
                    Exit::Internal,
                ));
            }
        }
        Ok(())
    }

    /// Proves the staging table holds every deal staged (count and distinct deals), looking again within the
    /// retry policy while it does not (BigQuery documents that rows in the streaming buffer may be unavailable to
    /// queries for a while, and a MERGE is a query: it would skip them and succeed). Then names the deals still
    /// missing from it, for the run to write again.
    async fn shortfall(&mut self) -> Result<Vec<String>, SinkError> {
        let refused = self.drain().await?;
        self.rejected += refused.len() as u64;
        if !refused.is_empty() {
            self.write_quarantine(refused).await?;
        }
        if self.staged == 0 || self.proven {
            return Ok(Vec::new());
        }
        let staging = self.table(&self.staging);
        let (want_rows, want_deals) = (self.staged - self.lost, self.staged_ids.len() as u64);
        let count = format!("SELECT COUNT(*) AS n, COUNT(DISTINCT deal_id) AS deals FROM {staging}");
        let checked = retry(
            self.retry,
            "checking that the staging table holds every staged deal",
            || async {
                let mut rs = self.query("counting the staging table", count.clone()).await.map_err(Unproven::Query)?;
                let get =
                    |rs: &ResultSet, name: &str| rs.get_i64_by_name(name).ok().flatten().unwrap_or(0).max(0) as u64;
                let (rows, deals) = if rs.next_row() { (get(&rs, "n"), get(&rs, "deals")) } else { (0, 0) };
                // More rows than staged is a resent request BigQuery kept twice: the MERGE keeps one per deal.
                if deals >= want_deals && rows >= want_rows {
                    Ok((rows, deals))
                } else {
                    Err(Unproven::Short { rows, deals })
                }
            },
            || {},
        )
        .await;
        match checked {
            Ok((rows, deals)) => {
                tracing::info!(
                    event = "staging_proven",
                    rows,
                    deals,
                    staged_rows = want_rows,
                    staged_deals = want_deals,
                    "the staging table holds every staged deal"
                );
                self.proven = true;
                Ok(Vec::new())
            }
            Err(g) => match g.error {
                Unproven::Query(e) => Err(self.fail(e)),
                Unproven::Short { rows, deals } => {
                    let listing = format!("SELECT DISTINCT deal_id FROM {staging}");
                    let mut rs =
                        self.query("listing the staging table's deals", listing).await.map_err(|e| self.fail(e))?;
                    let mut there = std::collections::HashSet::new();
                    while rs.next_row() {
                        if let Ok(Some(id)) = rs.get_string(0) {
                            there.insert(id);
                        }
                    }
                    let missing: Vec<String> = self.staged_ids.all_ids().filter(|id| !there.contains(id)).collect();
                    if missing.is_empty() {
                        // Caught up between the count and the listing.
                        tracing::info!(
                            event = "staging_proven",
                            rows,
                            deals = there.len(),
                            staged_rows = want_rows,
                            staged_deals = want_deals,
                            "the staging table holds every staged deal"
                        );
                        self.proven = true;
                        return Ok(missing);
                    }
                    self.lost += missing.len() as u64;
                    tracing::warn!(event = "staging_short", rows, deals, staged_rows = want_rows, staged_deals = want_deals,
                        missing = missing.len(), checks = g.attempts, waited_ms = g.elapsed.as_millis() as u64,
                        "the staging table lacks {} of the {want_deals} deals BigQuery acknowledged; they are written again before the MERGE",
                        missing.len());
                    Ok(missing)
                }
            },
        }
    }

    async fn commit(&mut self) -> Result<WriteStats, SinkError> {
        // Never MERGE a staging table not proven whole: a MERGE that skips rows succeeds all the same.
        let missing = self.shortfall().await?;
        if !missing.is_empty() {
            return Err(SinkError::new(
                self.describe(),
                format!(
                    "the staging table {} still lacks {} of the {} deals BigQuery acknowledged (e.g. {}); nothing was \
                     merged, and the next run writes the window again",
                    self.staging,
                    missing.len(),
                    self.staged_ids.len(),
                    missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ),
                Exit::Unavailable,
            ));
        }
        let rejected = std::mem::take(&mut self.rejected);
        if self.staged == 0 {
            if self.staging_ready {
                let _ = self.client.table().delete_if_exists(&self.s.project, &self.s.dataset, &self.staging).await;
            }
            return Ok(WriteStats { rejected, ..WriteStats::default() });
        }
        let (target, staging) = (self.table(&self.s.table), self.table(&self.staging));
        let mut rs = self
            .query("counting what the MERGE will change", sql::merge_preview_sql(&target, &staging, self.spec.rewrite))
            .await
            .map_err(|e| self.fail(e))?;
        let (mut staged, mut deals, mut inserted, mut updated) = (0, 0, 0, 0);
        if rs.next_row() {
            let get = |rs: &ResultSet, name: &str| rs.get_i64_by_name(name).ok().flatten().unwrap_or(0).max(0) as u64;
            staged = get(&rs, "staged");
            deals = get(&rs, "deals");
            inserted = get(&rs, "inserted");
            updated = get(&rs, "updated");
        }
        let affected = self.run_merge().await.map_err(|e| self.fail(e))?;
        tracing::info!(
            event = "merge",
            staged,
            deals,
            inserted,
            updated,
            affected,
            "merged the run's rows into the target"
        );
        if affected != inserted + updated {
            tracing::warn!(
                event = "merge_count_mismatch",
                affected,
                expected = inserted + updated,
                "the MERGE changed a different number of rows than counted just before (a concurrent writer?)"
            );
        }
        let what = format!("dropping staging table {}", self.staging);
        if let Err(e) =
            self.call(&what, || self.client.table().delete(&self.s.project, &self.s.dataset, &self.staging)).await
        {
            tracing::warn!(event = "staging_left", table = %self.staging, "could not drop the staging table (it expires by itself): {e}");
        }
        Ok(WriteStats { inserted, updated, unchanged: staged - inserted - updated, rejected })
    }

    fn tracks_changes(&self) -> bool {
        true
    }

    async fn mark_deleted(&mut self, deleted: Vec<crate::zoho::changes::Deleted>) -> Result<u64, SinkError> {
        let target = self.table(&self.s.table);
        let mut n = 0;
        for chunk in deleted.chunks(200) {
            let rows: Vec<(String, String)> =
                chunk.iter().map(|d| (d.deal_id.clone(), format_instant(&d.deleted_time))).collect();
            n += self.dml("marking deleted deals", sql::mark_deleted_sql(&target, &rows)).await?;
        }
        Ok(n)
    }

    async fn mark_not_won(&mut self, changes: Vec<crate::zoho::changes::StageChange>) -> Result<u64, SinkError> {
        let target = self.table(&self.s.table);
        // Most deals that are not won were never in the warehouse: find the few it holds with a cheap id lookup
        // before building the UPDATE.
        let mut held = std::collections::HashSet::new();
        for chunk in changes.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(|c| c.deal_id.as_str()).collect();
            let q = sql::held_ids_sql(&target, &ids);
            let mut rs = self.query("looking up reopened deals", q).await.map_err(|e| self.fail(e))?;
            while rs.next_row() {
                if let Ok(Some(id)) = rs.get_string(0) {
                    held.insert(id);
                }
            }
        }
        let changes: Vec<_> = changes.into_iter().filter(|c| held.contains(&c.deal_id)).collect();
        let mut n = 0;
        for chunk in changes.chunks(200) {
            let rows: Vec<(String, String, String)> =
                chunk.iter().map(|c| (c.deal_id.clone(), c.stage.clone(), format_instant(&c.modified_time))).collect();
            n += self.dml("recording reopened deals", sql::mark_not_won_sql(&target, &rows)).await?;
        }
        Ok(n)
    }

    async fn count_in_window(&mut self, w: &crate::window::Window) -> Result<Option<u64>, SinkError> {
        let sql = sql::in_window_sql("COUNT(*)", &self.table(&self.s.table), w);
        let mut rs = self.query("counting the window's rows", sql).await.map_err(|e| self.fail(e))?;
        let n = if rs.next_row() { rs.get_i64(0).ok().flatten().unwrap_or(0) } else { 0 };
        Ok(Some(n.max(0) as u64))
    }

    async fn ids_in_window(&mut self, w: &crate::window::Window) -> Result<Vec<String>, SinkError> {
        let sql = sql::in_window_sql("deal_id", &self.table(&self.s.table), w);
        let mut rs = self.query("listing the window's rows", sql).await.map_err(|e| self.fail(e))?;
        let mut ids = Vec::new();
        while rs.next_row() {
            if let Ok(Some(id)) = rs.get_string(0) {
                ids.push(id);
            }
        }
        sort_ids(&mut ids);
        Ok(ids)
    }

    async fn abandon(&mut self) -> (String, WriteStats) {
        self.batch.clear();
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if self.staging_ready {
            let dropped = self.client.table().delete_if_exists(&self.s.project, &self.s.dataset, &self.staging).await;
            tracing::info!(event = "staging_abandoned", table = %self.staging, dropped, "the run was interrupted: its staging table is not merged");
        }
        (format!("nothing was merged into {}", self.s.table), WriteStats::default())
    }

    async fn record_run(&mut self, run: &RunRecord) -> Result<(), SinkError> {
        let rows = vec![(run.run_id.clone(), run.values())];
        let errors = self.insert_rows(sql::RUNS_TABLE, &columns_of(&LEDGER), rows).await.map_err(|e| self.fail(e))?;
        if !errors.is_empty() {
            return Err(SinkError::new(
                self.describe(),
                format!("BigQuery refused the ledger row: {errors:?}"),
                Exit::Internal,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gcp_bigquery_client::model::field_type::FieldType;

    fn f(name: &str, t: FieldType, mode: &str) -> TableFieldSchema {
        let mut x = TableFieldSchema::new(name, t);
        x.mode = Some(mode.into());
        x
    }

    #[test]
    fn a_missing_column_is_added_as_nullable_and_a_changed_type_is_refused() {
        let want = sql::target_fields(&crate::schema::columns(&[]));
        let mut have: Vec<_> = want.iter().filter(|c| c.name != "pipeline" && c.name != "deal_id").cloned().collect();
        have.push(f("DEAL_ID", FieldType::String, "REQUIRED"));
        let (add, problems) = compare_schema(&have, &want);
        assert_eq!(add.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["pipeline"]);
        assert!(problems.is_empty(), "{problems:?}");

        let mut have = want.clone();
        have[3] = f("amount", FieldType::Float64, "NULLABLE");
        have[19] = f("tags", FieldType::String, "NULLABLE");
        let (_, problems) = compare_schema(&have, &want);
        assert_eq!(
            problems,
            vec![
                "column amount is FLOAT64, dealsync writes NUMERIC",
                "column tags is NULLABLE, dealsync writes REPEATED"
            ]
        );
    }

    #[test]
    fn integer_and_int64_are_the_same_type() {
        let want = vec![f("probability", FieldType::Int64, "NULLABLE")];
        let have = vec![f("probability", FieldType::Integer, "NULLABLE")];
        let (add, problems) = compare_schema(&have, &want);
        assert!(add.is_empty() && problems.is_empty());
    }
}
