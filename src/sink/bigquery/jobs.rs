//! BigQuery jobs, run the way the service documents them: inserted under an id derived from the run (a retried
//! insert finds the same job: 409), polled until `DONE` in the location BigQuery gives in its `jobReference`,
//! their rows read page by page (`pageToken`), their counts taken from the finished job's statistics. A job
//! that fails as a whole for a reason another run of it may not meet (a concurrent update, `jobInternalError`)
//! runs again under the next id.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Api;
use super::error::{BqFailure, ErrorProto};
use super::sql::Statement;
use crate::retry::{poll, retry, RetryPolicy};

const JOB_LIMIT: Duration = Duration::from_secs(1800);
/// Runs of one statement at most (the first and its re-runs after whole-job failures).
const JOB_RUNS: usize = 4;

/// A job as `jobs.insert` and `jobs.get` return it: only what dealsync reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobResource {
    pub job_reference: JobReference,
    pub status: JobStatus,
    statistics: Statistics,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobReference {
    pub job_id: String,
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobStatus {
    pub state: String,
    pub error_result: Option<ErrorProto>,
}

/// A query's or a load's statistics; BigQuery sends its int64 counts as text.
#[derive(Debug, Default, Deserialize)]
struct Statistics {
    query: Option<Counts>,
    load: Option<Counts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Counts {
    num_dml_affected_rows: Option<String>,
    total_bytes_billed: Option<String>,
    output_rows: Option<String>,
}

/// A page of `jobs.getQueryResults`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ResultsPage {
    job_complete: Option<bool>,
    rows: Vec<ResultRow>,
    page_token: Option<String>,
    errors: Vec<ErrorProto>,
}

#[derive(Debug, Default, Deserialize)]
struct ResultRow {
    #[serde(default)]
    f: Vec<Cell>,
}

#[derive(Debug, Default, Deserialize)]
struct Cell {
    #[serde(default)]
    v: Value,
}

/// A row of a query's result: each cell as BigQuery's JSON gives it (text; instants as microseconds).
pub type Row = Vec<Option<String>>;

#[derive(Debug, Clone, Default)]
pub struct Done {
    pub job: JobReference,
    /// `numDmlAffectedRows` of a DML statement.
    pub affected: u64,
    /// `outputRows` of a load.
    pub loaded: u64,
    pub bytes_billed: u64,
}

impl Done {
    fn of(job: JobReference, r: &JobResource) -> Done {
        let (query, load) = (r.statistics.query.as_ref(), r.statistics.load.as_ref());
        let n = |count: Option<&Option<String>>| count.and_then(|c| c.as_deref()?.parse().ok()).unwrap_or(0);
        Done {
            job,
            affected: n(query.map(|q| &q.num_dml_affected_rows)),
            bytes_billed: n(query.map(|q| &q.total_bytes_billed)),
            loaded: n(load.map(|l| &l.output_rows)),
        }
    }
}

/// Runs jobs in one project; `location` is where the dataset lives (read from it), sent with each new job so
/// that a job whose insert answer was lost can still be found.
pub struct Jobs<'a> {
    pub api: &'a Api,
    pub location: Option<String>,
    pub labels: &'a [(&'a str, &'a str)],
}

impl Jobs<'_> {
    pub fn job(&self, job_id: &str, mut configuration: Value) -> Value {
        let labels: serde_json::Map<String, Value> =
            self.labels.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        configuration["labels"] = Value::Object(labels);
        json!({
            "jobReference": {"jobId": job_id, "location": self.location},
            "configuration": configuration,
        })
    }

    /// Inserts a job; a job that already exists under the id (a retried insert) is the one to wait for.
    async fn insert(&self, what: &str, job_id: &str, configuration: Value) -> Result<JobReference, BqFailure> {
        match self.api.post::<JobResource>(what, "jobs", &self.job(job_id, configuration)).await {
            Ok(j) => Ok(self.reference(job_id, j.job_reference)),
            Err(e) if e.is_duplicate() => Ok(self.reference(job_id, JobReference::default())),
            Err(e) => Err(e),
        }
    }

    /// The reference BigQuery answered, completed with what dealsync sent where it left something out.
    pub fn reference(&self, job_id: &str, r: JobReference) -> JobReference {
        JobReference {
            job_id: if r.job_id.is_empty() { job_id.to_string() } else { r.job_id },
            location: r.location.or_else(|| self.location.clone()),
        }
    }

    fn location_query(job: &JobReference) -> Vec<(&'static str, String)> {
        job.location.iter().map(|l| ("location", l.clone())).collect()
    }

    pub async fn wait(&self, what: &str, job: JobReference) -> Result<Done, BqFailure> {
        let path = format!("jobs/{}", job.job_id);
        let query = Self::location_query(&job);
        let look = || async {
            let r = self.api.get::<JobResource>(what, &path, &query).await?;
            if r.status.state != "DONE" {
                return Ok(None);
            }
            match &r.status.error_result {
                Some(e) => Err(BqFailure::reported(what, e)),
                None => Ok(Some(Done::of(job.clone(), &r))),
            }
        };
        let timed_out = || {
            let message = format!("job {} did not finish in 30 minutes", job.job_id);
            BqFailure::reported(what, &ErrorProto { reason: Some("timeout".into()), message: Some(message) })
        };
        poll(Duration::from_millis(200), Duration::from_secs(5), JOB_LIMIT, look, timed_out).await
    }

    async fn rows(&self, what: &str, job: &JobReference) -> Result<Vec<Row>, BqFailure> {
        let path = format!("queries/{}", job.job_id);
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = Self::location_query(job);
            query.push(("formatOptions.useInt64Timestamp", "true".into()));
            query.push(("timeoutMs", "10000".into()));
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let page: ResultsPage = self.api.get(what, &path, &query).await?;
            if let Some(e) = page.errors.first() {
                return Err(BqFailure::reported(what, e));
            }
            if page.job_complete == Some(false) {
                continue; // the server waited `timeoutMs`; ask again
            }
            rows.extend(page.rows.into_iter().map(|r| {
                r.f.into_iter()
                    .map(|c| match c.v {
                        Value::Null => None,
                        Value::String(s) => Some(s),
                        other => Some(other.to_string()),
                    })
                    .collect()
            }));
            match page.page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(rows),
            }
        }
    }

    pub async fn select(&self, what: &str, job_id: &str, statement: &Statement) -> Result<(Done, Vec<Row>), BqFailure> {
        let done = self.run(what, job_id, statement).await?;
        let rows = self.rows(what, &done.job).await?;
        Ok((done, rows))
    }

    /// Runs a statement as a job under `job_id` and waits for it, running it again under the next id
    /// (`job_id_2`, …) after a whole-job failure that another run may not meet.
    pub async fn run(&self, what: &str, job_id: &str, statement: &Statement) -> Result<Done, BqFailure> {
        let configuration = json!({"query": statement.configuration()});
        let attempt = std::sync::atomic::AtomicUsize::new(0);
        let policy = RetryPolicy { max_attempts: JOB_RUNS, min_delay: Duration::from_secs(1), ..self.api.retry };
        let once = || {
            let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let id = if n == 1 { job_id.to_string() } else { format!("{job_id}_{n}") };
            let configuration = configuration.clone();
            async move {
                let job = self.insert(what, &id, configuration).await?;
                self.wait(what, job).await
            }
        };
        let rerunnable = BqFailure::is_rerunnable_job_failure;
        retry(policy, &format!("{what} as a new job"), once, rerunnable, |_| None, || {}).await.map_err(|g| g.error)
    }
}
