//! BigQuery failures, classified: which ones a retry can cure (`rateLimitExceeded`, `backendError`, 5xx,
//! resets and timeouts), which ones a job can be run again for (a concurrent update, `jobInternalError`), and
//! for the others, what the operator has to fix and which exit code that means.

use serde::Deserialize;
use serde_json::Value;

use crate::exit::Exit;
use crate::telemetry::one_line;

pub type Result<T, E = BqFailure> = std::result::Result<T, E>;

#[derive(Debug)]
pub struct BqFailure {
    /// What dealsync was doing, e.g. "creating table p.crm.closed_won_deals".
    pub what: String,
    pub status: Option<u16>,
    pub reasons: Vec<String>,
    pub message: String,
    kind: Kind,
    /// Reported by a job that ran and failed (its `errorResult`), not by a request.
    job_failed: bool,
}

/// Transient: worth another attempt (no answer, or one Google documents as transient). Config: a table or
/// dataset the operator has to change. Local: an answer dealsync did not expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Transient,
    Credentials,
    Refused,
    Config,
    Local,
}

/// One error as BigQuery reports it, in an error body or in a job's `status.errorResult`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorProto {
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// Reasons Google documents as worth retrying the same request or job.
fn transient_reason(r: &str) -> bool {
    matches!(r, "rateLimitExceeded" | "backendError" | "internalError" | "jobInternalError" | "jobBackendError")
}

impl BqFailure {
    pub fn new(what: impl Into<String>, message: impl Into<String>, kind: Kind) -> BqFailure {
        let (what, message) = (what.into(), message.into());
        BqFailure { what, status: None, reasons: Vec::new(), message, kind, job_failed: false }
    }

    /// An HTTP answer that was not a success, with Google's error body (`{"error": {"code", "message",
    /// "errors": [{"reason", "message"}]}}`). A body that is not one (an HTML 502 from a proxy) keeps its status.
    pub fn http(what: impl Into<String>, status: u16, body: &[u8]) -> BqFailure {
        let parsed: Value = serde_json::from_slice(body).unwrap_or_default();
        let (message, reasons) = match parsed.get("error").filter(|e| e.is_object()) {
            Some(e) => {
                let reasons = e["errors"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str());
                (one_line(e["message"].as_str().unwrap_or_default()), reasons.map(one_line).collect())
            }
            None => (format!("HTTP {status} without a BigQuery error body"), Vec::new()),
        };
        let transient = matches!(status, 429 | 500 | 502 | 503 | 504) || reasons.iter().any(|r| transient_reason(r));
        let kind = match status {
            _ if transient => Kind::Transient,
            401 => Kind::Credentials,
            _ => Kind::Refused,
        };
        BqFailure { status: Some(status), reasons, ..BqFailure::new(what, message, kind) }
    }

    /// A failure reported inside a 200 answer (a job's `errorResult`, a query's `errors`).
    pub fn reported(what: impl Into<String>, e: &ErrorProto) -> BqFailure {
        let kind = if e.reason.as_deref().is_some_and(transient_reason) { Kind::Transient } else { Kind::Refused };
        let message = one_line(e.message.as_deref().unwrap_or_default());
        BqFailure { reasons: Vec::from_iter(e.reason.clone()), job_failed: true, ..BqFailure::new(what, message, kind) }
    }

    fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r == reason)
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) || self.has_reason("notFound")
    }

    pub fn is_duplicate(&self) -> bool {
        self.status == Some(409) || self.has_reason("duplicate")
    }

    fn is_concurrent_update(&self) -> bool {
        self.message.to_ascii_lowercase().contains("concurrent update")
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == Kind::Transient
    }

    /// A job that ran and failed as a whole (so changed nothing) for a reason another run of it may not meet:
    /// a conflict with a concurrent writer ("Could not serialize access to table … due to concurrent update"),
    /// `jobInternalError` or another transient backend error. It runs again under the next job id. A request
    /// that failed is not one: the client retried it already, and a statement whose insert went unanswered may
    /// be running, never to be started twice.
    pub fn is_rerunnable_job_failure(&self) -> bool {
        self.job_failed && (self.is_retryable() || self.is_concurrent_update())
    }

    pub fn exit(&self) -> Exit {
        match self.kind {
            Kind::Transient => Exit::Unavailable,
            Kind::Credentials | Kind::Config => Exit::Config,
            Kind::Refused if self.has_reason("quotaExceeded") || self.is_concurrent_update() => Exit::Unavailable,
            Kind::Refused if self.status == Some(403) || self.has_reason("accessDenied") || self.is_not_found() => {
                Exit::Config
            }
            Kind::Refused | Kind::Local => Exit::Internal,
        }
    }

    fn hint(&self) -> &'static str {
        if self.kind == Kind::Credentials {
            return " (set GOOGLE_APPLICATION_CREDENTIALS to a key or credentials file, run `gcloud auth \
                     application-default login`, or give the job a service account)";
        }
        if self.has_reason("quotaExceeded") {
            return " (a long-term BigQuery quota is exhausted; wait at least 10 minutes or raise the quota)";
        }
        // The project has no billing account (BigQuery sandbox).
        if self.message.to_ascii_lowercase().contains("free tier") {
            return " (the project has no billing account, and BigQuery's free tier, the sandbox, refuses DML such as \
                     the MERGE dealsync runs: link a billing account to the project, or try dealsync without \
                     BigQuery: --sink sqlite:deals.db)";
        }
        if self.has_reason("accessDenied") || self.status == Some(403) {
            return " (grant the job's service account BigQuery Data Editor on the dataset and BigQuery Job User on \
                     the project; creating the dataset needs bigquery.datasets.create)";
        }
        if self.is_not_found() {
            return " (check BIGQUERY_PROJECT and BIGQUERY_DATASET)";
        }
        ""
    }
}

impl std::fmt::Display for BqFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
        let reasons = if self.reasons.is_empty() { String::new() } else { format!("{} ", self.reasons.join(",")) };
        write!(f, "{}: {status}{reasons}{}{}", self.what, self.message, self.hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_and_reason() {
        let body = |reason: &str, message: &str| {
            serde_json::to_vec(&serde_json::json!({"error": {"code": 400, "message": message,
                "errors": [{"reason": reason, "message": message}]}}))
            .unwrap()
        };
        let f = BqFailure::http("x", 503, b"<html>Service Unavailable</html>");
        assert!(f.is_retryable() && f.exit() == Exit::Unavailable, "{f}");
        assert!(!f.is_rerunnable_job_failure(), "a failed request is retried by the client, not run again as a job");
        let f = BqFailure::http("x", 403, &body("accessDenied", "Access Denied"));
        assert_eq!(f.exit(), Exit::Config);
        assert!(!f.is_retryable());
        let concurrent = BqFailure::reported(
            "UPDATE",
            &ErrorProto {
                reason: Some("invalidQuery".into()),
                message: Some("Could not serialize access to table p:d.t due to concurrent update".into()),
            },
        );
        assert!(concurrent.is_rerunnable_job_failure() && !concurrent.is_retryable());
        let internal =
            BqFailure::reported("MERGE", &ErrorProto { reason: Some("jobInternalError".into()), message: None });
        assert!(internal.is_rerunnable_job_failure());
        let invalid = BqFailure::reported("MERGE", &ErrorProto { reason: Some("invalid".into()), message: None });
        assert!(!invalid.is_rerunnable_job_failure() && invalid.exit() == Exit::Internal);
    }
}
