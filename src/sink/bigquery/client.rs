//! The BigQuery REST API as dealsync uses it: one HTTP client holding the base URLs, the project, the dataset
//! (and its location) and the credentials; every call retried on the failures Google documents as transient
//! (error.rs says which). Jobs are run by the methods in jobs.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::OnceCell;

use super::auth::Credentials;
use super::error::{BqFailure, Kind, Result};
use crate::config::{BigQueryAuth, BigQuerySettings};
use crate::retry::{retry, RetryPolicy};

const GOOGLE: &str = "https://bigquery.googleapis.com";

pub struct Api {
    http: reqwest::Client,
    base: String,
    upload: String,
    pub project: String,
    pub dataset: String,
    /// Where the dataset lives, read once (jobs.rs): sent with each new job, so that a job whose insert answer
    /// was lost can still be found.
    pub(super) location: OnceCell<Option<String>>,
    /// Uploads are gzipped, except towards the emulator, which cannot read them.
    pub gzip: bool,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
}

struct Answer {
    status: u16,
    range: Option<String>,
    location: Option<String>,
    body: Vec<u8>,
}

impl Api {
    pub async fn new(s: &BigQuerySettings, retry: RetryPolicy, request_timeout: Duration) -> Result<Api> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dealsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(request_timeout.max(Duration::from_secs(90)))
            // A redirect would carry the access token elsewhere: BigQuery never sends one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BqFailure::new("building the HTTP client", e.to_string(), Kind::Local))?;
        let root = if let BigQueryAuth::Emulator { base_url } = &s.auth { base_url.as_str() } else { GOOGLE };
        let root = root.trim_end_matches('/').trim_end_matches("/bigquery/v2");
        Ok(Api {
            http,
            base: format!("{root}/bigquery/v2/projects/{}", s.project),
            upload: format!("{root}/upload/bigquery/v2/projects/{}/jobs", s.project),
            project: s.project.clone(),
            dataset: s.dataset.clone(),
            location: OnceCell::new(),
            gzip: !matches!(s.auth, BigQueryAuth::Emulator { .. }),
            credentials: Credentials::new(&s.auth).await?,
            retry,
        })
    }

    /// Sends `req` with the access token, once. A 308 (a resumable upload's "send more") is an answer, not a
    /// failure.
    async fn send_once(&self, what: &str, req: reqwest::RequestBuilder) -> Result<Answer> {
        let token = self.credentials.token().await?;
        let req = if let Some(token) = &token { req.bearer_auth(token) } else { req };
        let network = |e: reqwest::Error| BqFailure::new(what, crate::zoho::describe_reqwest(&e), Kind::Transient);
        let resp = req.send().await.map_err(network)?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (range, location) = (header("range"), header("location"));
        let body = resp.bytes().await.map_err(network)?.to_vec();
        if matches!(status, 200..=299 | 308) {
            return Ok(Answer { status, range, location, body });
        }
        // An error body may echo the access token it was sent.
        let text = crate::telemetry::redact(&String::from_utf8_lossy(&body), &[token.as_deref().unwrap_or("")]);
        Err(BqFailure::http(what, status, text.as_bytes()))
    }

    async fn send(&self, what: &str, build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder) -> Result<Answer> {
        let once = || self.send_once(what, build(&self.http));
        retry(self.retry, what, once, BqFailure::is_retryable, |_| None, || {}).await.map_err(gave_up)
    }

    fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body)
            .map_err(|e| BqFailure::new(what, format!("an answer dealsync cannot read: {e}"), Kind::Local))
    }

    pub async fn get<T: DeserializeOwned>(&self, what: &str, path: &str, query: &[(&str, &str)]) -> Result<T> {
        Self::parse(what, &self.send(what, |c| c.get(format!("{}/{path}", self.base)).query(query)).await?.body)
    }

    pub async fn post<T: DeserializeOwned>(&self, what: &str, path: &str, body: &impl Serialize) -> Result<T> {
        Self::parse(what, &self.send(what, |c| c.post(format!("{}/{path}", self.base)).json(body)).await?.body)
    }

    pub async fn dataset<T: DeserializeOwned>(&self) -> Result<T> {
        let what = format!("reading dataset {}.{}", self.project, self.dataset);
        self.get(&what, &format!("datasets/{}", self.dataset), &[]).await
    }

    pub async fn delete(&self, what: &str, path: &str) -> Result<()> {
        self.send(what, |c| c.delete(format!("{}/{path}", self.base))).await.map(|_| ())
    }

    /// Starts a resumable upload for the job `job` describes; returns the session URI to send the bytes to.
    pub async fn start_upload(&self, what: &str, job: &impl Serialize) -> Result<String> {
        let answer = self.send(what, |c| c.post(&self.upload).query(&[("uploadType", "resumable")]).json(job)).await?;
        let unnamed = "the upload was started but BigQuery named no session URI";
        answer.location.ok_or_else(|| BqFailure::new(what, unnamed, Kind::Local))
    }

    /// Sends `bytes` as the upload's bytes from `offset`; `total` once they are the last. After a failure, BigQuery
    /// is asked how much it holds (`bytes */*`) and the rest is sent from there, as the resumable upload protocol
    /// prescribes. `None`: BigQuery holds every byte sent and waits for more; `Some`: the upload is complete.
    pub async fn put_chunk<T: DeserializeOwned>(
        &self,
        what: &str,
        session: &str,
        offset: u64,
        bytes: Vec<u8>,
        total: Option<u64>,
    ) -> Result<Option<T>> {
        let (bytes, tries) = (bytes::Bytes::from(bytes), AtomicUsize::new(0));
        let end = offset + bytes.len() as u64;
        let total = total.map_or("*".to_string(), |t| t.to_string());
        let put = |r: String, body| self.send_once(what, self.http.put(session).header("content-range", r).body(body));
        let attempt = || async {
            let mut from = offset;
            if tries.fetch_add(1, Ordering::Relaxed) > 0 {
                let probe = put("bytes */*".into(), bytes::Bytes::new()).await?;
                if probe.status != 308 {
                    // The last bytes arrived and the job exists; only the answer was lost.
                    return Self::parse(what, &probe.body).map(Some);
                }
                from = held_bytes(probe.range.as_deref());
                if from < offset || from > end {
                    let message = format!("the upload holds {from} bytes; dealsync sent {offset}");
                    return Err(BqFailure::new(what, message, Kind::Local));
                }
            }
            let rest = bytes.slice((from - offset) as usize..);
            let range =
                if rest.is_empty() { format!("bytes */{total}") } else { format!("bytes {from}-{}/{total}", end - 1) };
            let answer = put(range, rest).await?;
            if answer.status != 308 {
                return Self::parse(what, &answer.body).map(Some);
            }
            if held_bytes(answer.range.as_deref()) < end {
                // BigQuery kept part of the chunk: ask, then send the rest.
                return Err(BqFailure::http(what, 503, b"part of the chunk was kept"));
            }
            Ok(None)
        };
        retry(self.retry, what, attempt, BqFailure::is_retryable, |_| None, || {}).await.map_err(gave_up)
    }
}

/// The last error of a call that was retried, saying so.
fn gave_up(g: crate::retry::GaveUp<BqFailure>) -> BqFailure {
    let mut e = g.error;
    if e.is_retryable() && g.attempts > 1 {
        e.message = format!("{} (gave up after {} attempts)", e.message, g.attempts);
    }
    e
}

/// Bytes an upload holds, from a 308's `Range: bytes=0-N` (none: nothing yet).
fn held_bytes(range: Option<&str>) -> u64 {
    range.and_then(|r| r.rsplit('-').next()).and_then(|n| n.trim().parse::<u64>().ok()).map_or(0, |last| last + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_range_header_says_how_many_bytes_arrived() {
        assert_eq!(super::held_bytes(None), 0);
        assert_eq!(super::held_bytes(Some("bytes=0-262143")), 262_144);
    }
}
