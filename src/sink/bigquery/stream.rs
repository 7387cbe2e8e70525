//! Streaming inserts into the staging table, run as tasks so that several `insertAll` requests are in flight
//! while the next pages are fetched and mapped. Each task owns its batch: it resends the rows BigQuery
//! `stopped` (collateral of another row's error) and hands back the rows BigQuery refused, for quarantine.

use chrono::{DateTime, Utc};
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequestGzipped;
use gcp_bigquery_client::Client;

use super::error::BqFailure;
use super::{rows, STOPPED_RESENDS};
use crate::exit::Exit;
use crate::retry::{retry, Retry, RetryPolicy};
use crate::schema::{Quarantined, Text};
use crate::sink::SinkError;

/// A row waiting in a batch: its serialized form, and what quarantining it would need.
pub struct Pending {
    pub row: rows::StagedRow,
    pub deal_id: Text,
    pub raw: crate::json::Raw,
}

/// One BigQuery call with retries for transient failures.
pub async fn call_with_retries<T, F, Fut>(policy: RetryPolicy, what: &str, f: F) -> Result<T, BqFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BQError>>,
{
    call_with_retries_also(policy, what, f, |_| false).await
}

/// A failure and whether this call may try again: a transient one, or one `also` names.
struct Classified {
    inner: BqFailure,
    again: bool,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Retry for Classified {
    fn is_retryable(&self) -> bool {
        self.again
    }
}

/// One BigQuery call with retries for transient failures and for the failures `also` names.
pub async fn call_with_retries_also<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut f: F,
    also: impl Fn(&BqFailure) -> bool,
) -> Result<T, BqFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BQError>>,
{
    retry(
        policy,
        what,
        || {
            let fut = f();
            let also = &also;
            async move {
                fut.await.map_err(|e| {
                    let inner = BqFailure::new(what, e);
                    let again = inner.is_retryable() || also(&inner);
                    Classified { inner, again }
                })
            }
        },
        || {},
    )
    .await
    .map_err(|g| {
        let mut e = g.error;
        if e.again {
            e.inner.message = format!("{} (gave up after {} attempts)", e.inner.message, g.attempts);
        }
        e.inner
    })
}

/// What a streaming task needs; shared by the tasks in flight.
pub struct Streamer {
    pub client: Client,
    pub project: String,
    pub dataset: String,
    pub retry: RetryPolicy,
    pub describe: String,
    pub run_id: String,
    pub synced_at: DateTime<Utc>,
    /// Tables this run created: Google's streaming system learns of a new table eventually, so `notFound`
    /// from an insert into one of them is worth another attempt (within the retry policy), not a
    /// configuration error.
    pub fresh_tables: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Streamer {
    fn fail(&self, f: BqFailure) -> SinkError {
        SinkError::new(&self.describe, f.to_string(), f.exit())
    }

    /// Sends one gzipped `insertAll` body of `n` rows; returns the rows BigQuery reported.
    pub async fn insert_body(
        &self,
        table: &str,
        n: usize,
        body: Vec<u8>,
    ) -> Result<Vec<(usize, String, bool)>, BqFailure> {
        let (p, d) = (&self.project, &self.dataset);
        let what = format!("streaming {n} rows into {p}.{d}.{table}");
        let fresh = self.fresh_tables.lock().expect("not poisoned").contains(table);
        let resp = call_with_retries_also(
            self.retry,
            &what,
            || {
                let req = TableDataInsertAllRequestGzipped::new(body.clone());
                self.client.tabledata().insert_all_gzipped(p, d, table, req)
            },
            |e| {
                let unknown = fresh && e.is_table_not_found();
                if unknown {
                    tracing::info!(
                        event = "fresh_table_unknown",
                        table,
                        "BigQuery's streaming system does not know the table this run just created yet; sending again"
                    );
                }
                unknown
            },
        )
        .await?;
        // (row index, reason text, stopped-only)
        Ok(resp
            .insert_errors
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let idx = usize::try_from(e.index?).ok()?;
                let errors = e.errors.unwrap_or_default();
                let stopped = !errors.is_empty() && errors.iter().all(|x| x.reason.as_deref() == Some("stopped"));
                let text = errors
                    .iter()
                    .filter(|x| x.reason.as_deref() != Some("stopped"))
                    .map(|x| {
                        format!(
                            "BigQuery {}: {}{}",
                            x.reason.as_deref().unwrap_or("error"),
                            x.message.as_deref().unwrap_or(""),
                            x.location.as_deref().map(|l| format!(" (column {l})")).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Some((idx, text, stopped))
            })
            .collect())
    }

    /// Streams one batch into `table`, resending rows BigQuery stopped and quarantining rows it refused.
    /// Returns the deals of the rows staged and the refused rows.
    pub async fn stream_batch(
        &self,
        table: &str,
        mut pending: Vec<Pending>,
    ) -> Result<(Vec<Text>, Vec<Quarantined>), SinkError> {
        let mut staged = Vec::new();
        let mut refused = Vec::new();
        for attempt in 0..=STOPPED_RESENDS {
            let body = rows::insert_all_body(pending.iter().map(|p| (p.row.insert_id.as_str(), &p.row.json)));
            let errors = self.insert_body(table, pending.len(), body).await.map_err(|e| self.fail(e))?;
            if errors.is_empty() {
                staged.extend(pending.into_iter().map(|p| p.deal_id));
                return Ok((staged, refused));
            }
            let mut stopped_idx = Vec::new();
            let mut bad_idx = std::collections::HashMap::new();
            for (idx, text, stopped) in errors {
                if stopped {
                    stopped_idx.push(idx);
                } else {
                    bad_idx.insert(idx, text);
                }
            }
            // Rows without an error were inserted (only possible with skipInvalidRows, which we never set).
            let mut retry_rows = Vec::new();
            for (i, p) in pending.into_iter().enumerate() {
                if let Some(reason) = bad_idx.remove(&i) {
                    refused.push(Quarantined {
                        deal_id: Some(p.deal_id.into()),
                        reason,
                        raw: p.raw,
                        sync_run_id: self.run_id.clone(),
                        quarantined_at: self.synced_at,
                    });
                } else if stopped_idx.contains(&i) {
                    retry_rows.push(p);
                } else {
                    staged.push(p.deal_id);
                }
            }
            if retry_rows.is_empty() {
                return Ok((staged, refused));
            }
            tracing::info!(
                event = "insert_resend",
                rows = retry_rows.len(),
                attempt,
                "resending rows BigQuery stopped"
            );
            pending = retry_rows;
        }
        Err(SinkError::new(
            &self.describe,
            format!("BigQuery kept stopping {} rows after {STOPPED_RESENDS} resends", pending.len()),
            Exit::Unavailable,
        ))
    }
}
