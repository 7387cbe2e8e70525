//! BigQuery jobs, run the way the service documents them: inserted under an id derived from the run (a retried
//! insert finds the same job: 409), in the dataset's location, polled until `DONE` in the location BigQuery
//! gives in its `jobReference`, their rows read page by page (`pageToken`), their counts taken from the finished
//! job's statistics. A job that fails as a whole for a reason another run of it may not meet (a concurrent
//! update, `jobInternalError`) runs again under the next id.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::client::Api;
use super::error::{BqFailure, ErrorProto, Result};
use super::sql::Statement;
use crate::retry::{poll, retry, RetryPolicy};

const JOB_LIMIT: Duration = Duration::from_secs(1800);
/// Runs of one statement at most (the first and its re-runs after whole-job failures).
const JOB_RUNS: usize = 4;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobResource {
    pub job_reference: JobReference,
    status: JobStatus,
    /// Its counts: `query.numDmlAffectedRows`, `query.totalBytesBilled`, `load.outputRows`.
    statistics: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobReference {
    pub job_id: String,
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct JobStatus {
    state: String,
    error_result: Option<ErrorProto>,
}

/// A page of `jobs.getQueryResults`; each row is `{"f": [{"v": …}, …]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ResultsPage {
    job_complete: Option<bool>,
    rows: Vec<Value>,
    page_token: Option<String>,
    errors: Vec<ErrorProto>,
}

/// A row of a query's result: each cell as BigQuery's JSON gives it (text; instants as microseconds).
pub type Row = Vec<Option<String>>;

#[derive(Debug, Clone, Default)]
pub struct Done {
    pub job: JobReference,
    pub affected: u64,
    pub loaded: u64,
    pub bytes_billed: u64,
}

impl Api {
    /// The dataset's location, read on first use (a dataset that does not exist is an error here).
    async fn location(&self) -> Result<Option<String>> {
        let read = || async { Ok(self.dataset::<Value>().await?["location"].as_str().map(str::to_string)) };
        self.location.get_or_try_init(read).await.cloned()
    }

    pub fn table_ref(&self, table: &str) -> String {
        format!("`{}.{}.{table}`", self.project, self.dataset)
    }

    pub async fn job(&self, job_id: &str, configuration: &Value) -> Result<Value> {
        let location = self.location().await?;
        let mut job = json!({"jobReference": {"jobId": job_id, "location": location}, "configuration": configuration});
        job["configuration"]["labels"] = json!({"managed-by": "dealsync"});
        Ok(job)
    }

    /// Waits for the job BigQuery `answered`, completed with what dealsync sent (`sent` id, the dataset's location)
    /// where the answer leaves something out: a server may name the job it created, not the one asked for.
    pub async fn wait(&self, what: &str, sent: &str, answered: JobReference) -> Result<Done> {
        let job_id = if answered.job_id.is_empty() { sent.to_string() } else { answered.job_id };
        let location = answered.location.or_else(|| self.location.get().cloned().flatten());
        let job = JobReference { job_id, location };
        let query: Vec<_> = job.location.iter().map(|l| ("location", l.as_str())).collect();
        let look = || async {
            let r = self.get::<JobResource>(what, &format!("jobs/{}", job.job_id), &query).await?;
            // int64s come as text; a number is read too.
            let n = |p: &str| {
                let v = r.statistics.pointer(p);
                v.and_then(|v| v.as_str().map_or(v.as_u64(), |c| c.parse().ok())).unwrap_or(0)
            };
            match (r.status.state.as_str(), &r.status.error_result) {
                ("DONE", Some(e)) => Err(BqFailure::reported(what, e)),
                ("DONE", None) => Ok(Some(Done {
                    job: job.clone(),
                    affected: n("/query/numDmlAffectedRows"),
                    bytes_billed: n("/query/totalBytesBilled"),
                    loaded: n("/load/outputRows"),
                })),
                _ => Ok(None),
            }
        };
        let timed_out = || {
            let message = format!("job {} did not finish in 30 minutes", job.job_id);
            BqFailure::reported(what, &ErrorProto { reason: Some("timeout".into()), message: Some(message) })
        };
        poll(Duration::from_millis(200), Duration::from_secs(5), JOB_LIMIT, look, timed_out).await
    }

    /// Runs a query and reads every page of its rows.
    pub async fn select(&self, what: &str, job_id: &str, statement: &Statement) -> Result<(Done, Vec<Row>)> {
        let done = self.run(what, job_id, statement).await?;
        let (mut rows, mut token) = (Vec::new(), None::<String>);
        loop {
            let mut query = vec![("formatOptions.useInt64Timestamp", "true"), ("timeoutMs", "10000")];
            query.extend(done.job.location.as_deref().map(|l| ("location", l)));
            query.extend(token.as_deref().map(|t| ("pageToken", t)));
            let page: ResultsPage = self.get(what, &format!("queries/{}", done.job.job_id), &query).await?;
            if let Some(e) = page.errors.first() {
                return Err(BqFailure::reported(what, e));
            }
            if page.job_complete == Some(false) {
                continue; // the server waited `timeoutMs`; ask again
            }
            let cell = |c: &Value| match &c["v"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            rows.extend(page.rows.iter().map(|r| r["f"].as_array().into_iter().flatten().map(cell).collect()));
            match page.page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok((done, rows)),
            }
        }
    }

    /// Runs a statement as a job under `job_id` and waits for it, running it again under the next id
    /// (`job_id_2`, …) after a whole-job failure that another run may not meet.
    pub async fn run(&self, what: &str, job_id: &str, statement: &Statement) -> Result<Done> {
        let configuration = &json!({"query": statement.configuration()});
        let mut n = 0;
        let policy = RetryPolicy { max_attempts: JOB_RUNS, min_delay: Duration::from_secs(1), ..self.retry };
        let once = || {
            n += 1;
            let id = if n == 1 { job_id.to_string() } else { format!("{job_id}_{n}") };
            async move {
                let job = self.job(&id, configuration).await?;
                let answered = match self.post::<JobResource>(what, "jobs", &job).await {
                    Ok(j) => j.job_reference,
                    // A job that already exists under the id (a retried insert) is the one to wait for.
                    Err(e) if e.is_duplicate() => JobReference::default(),
                    Err(e) => return Err(e),
                };
                self.wait(what, &id, answered).await
            }
        };
        let rerunnable = BqFailure::is_rerunnable_job_failure;
        retry(policy, &format!("{what} as a new job"), once, rerunnable, |_| None, || {}).await.map_err(|g| g.error)
    }
}
