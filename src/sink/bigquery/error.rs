//! BigQuery failures, classified: which ones a retry can cure (`rateLimitExceeded`, `backendError`, 5xx,
//! resets and timeouts), and for the others, what the operator has to fix and which exit code that means.

use std::collections::HashMap;

use gcp_bigquery_client::error::BQError;

use crate::exit::Exit;

/// One failed BigQuery call, with enough context to act on.
#[derive(Debug)]
pub struct BqFailure {
    /// What dealsync was doing, e.g. "creating table p.crm.closed_won_deals".
    pub what: String,
    pub status: Option<i64>,
    pub reasons: Vec<String>,
    pub message: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Worth another attempt.
    Transient,
    /// Credentials could not be obtained or were refused.
    Credentials,
    /// The HTTP call worked and BigQuery said no.
    Refused,
    /// Something on our side.
    Local,
}

impl BqFailure {
    pub fn new(what: impl Into<String>, e: BQError) -> BqFailure {
        let what = what.into();
        match e {
            BQError::ResponseError { error } => {
                let nested = error.error;
                let reasons: Vec<String> =
                    nested.errors.iter().filter_map(|m: &HashMap<String, String>| m.get("reason").cloned()).collect();
                let transient = matches!(nested.code, 429 | 500 | 502 | 503 | 504)
                    || reasons
                        .iter()
                        .any(|r| matches!(r.as_str(), "rateLimitExceeded" | "backendError" | "internalError"));
                let kind = if transient {
                    Kind::Transient
                } else if nested.code == 401 {
                    Kind::Credentials
                } else {
                    Kind::Refused
                };
                BqFailure { what, status: Some(nested.code), reasons, message: nested.message, kind }
            }
            // Connection resets, timeouts, and error bodies that were not JSON (an HTML 502 from a proxy).
            BQError::RequestError(e) => BqFailure {
                what,
                status: e.status().map(|s| s.as_u16() as i64),
                reasons: Vec::new(),
                message: crate::zoho::describe_reqwest(&e),
                kind: Kind::Transient,
            },
            BQError::InvalidServiceAccountKey(_)
            | BQError::InvalidServiceAccountAuthenticator(_)
            | BQError::InvalidApplicationDefaultCredentialsAuthenticator(_)
            | BQError::InvalidAuthorizedUserAuthenticator(_)
            | BQError::AuthError(_)
            | BQError::YupAuthError(_)
            | BQError::NoToken => BqFailure {
                what,
                status: None,
                reasons: Vec::new(),
                // The auth errors' texts describe the failure, never the key material.
                message: e.to_string(),
                kind: Kind::Credentials,
            },
            other => {
                BqFailure { what, status: None, reasons: Vec::new(), message: other.to_string(), kind: Kind::Local }
            }
        }
    }

    /// A failure reported inside a 200 answer (a job's `errorResult`, a query's `errors`).
    pub fn reported(what: impl Into<String>, reason: Option<String>, message: Option<String>) -> BqFailure {
        let reasons: Vec<String> = reason.into_iter().collect();
        let transient =
            reasons.iter().any(|r| matches!(r.as_str(), "rateLimitExceeded" | "backendError" | "internalError"));
        BqFailure {
            what: what.into(),
            status: None,
            reasons,
            message: message.unwrap_or_default(),
            kind: if transient { Kind::Transient } else { Kind::Refused },
        }
    }

    pub fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r == reason)
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) || self.has_reason("notFound")
    }

    /// BigQuery does not know a table (not the dataset: "Not found: Table p:d.t").
    pub fn is_table_not_found(&self) -> bool {
        self.is_not_found() && self.message.contains("Table")
    }

    /// The project has no billing account (BigQuery sandbox), where streaming inserts are refused.
    pub fn is_free_tier(&self) -> bool {
        self.message.to_ascii_lowercase().contains("free tier")
    }

    /// A finished job that failed as a whole (so changed nothing) for a reason another run of it may not meet:
    /// a conflict with a concurrent writer ("Could not serialize access to table … due to concurrent update")
    /// or a transient backend error.
    pub fn is_rerunnable_job_failure(&self) -> bool {
        self.status.is_none()
            && (self.kind == Kind::Transient || self.message.to_ascii_lowercase().contains("concurrent update"))
    }

    pub fn is_duplicate(&self) -> bool {
        self.status == Some(409) || self.has_reason("duplicate")
    }

    pub fn exit(&self) -> Exit {
        match self.kind {
            Kind::Transient => Exit::Unavailable,
            Kind::Credentials => Exit::Config,
            Kind::Local => Exit::Internal,
            Kind::Refused if self.has_reason("quotaExceeded") => Exit::Unavailable,
            Kind::Refused if self.status == Some(403) || self.has_reason("accessDenied") || self.is_not_found() => {
                Exit::Config
            }
            Kind::Refused => Exit::Internal,
        }
    }

    /// What to do about it.
    fn hint(&self) -> &'static str {
        if self.kind == Kind::Credentials {
            return " (check GOOGLE_APPLICATION_CREDENTIALS, or the service account attached to the job)";
        }
        if self.has_reason("quotaExceeded") {
            return " (a long-term BigQuery quota is exhausted; wait at least 10 minutes or raise the quota)";
        }
        if self.is_free_tier() {
            return " (the project has no billing account, and BigQuery's free tier, the sandbox, refuses the streaming \
                     inserts dealsync writes with: link a billing account to the project (streaming costs about $0.15 \
                     per million deals), or try dealsync without BigQuery: --sink sqlite:deals.db)";
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

impl crate::retry::Retry for BqFailure {
    fn is_retryable(&self) -> bool {
        self.kind == Kind::Transient
    }
}

impl std::fmt::Display for BqFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.what)?;
        if let Some(s) = self.status {
            write!(f, "HTTP {s} ")?;
        }
        if !self.reasons.is_empty() {
            write!(f, "{} ", self.reasons.join(","))?;
        }
        write!(f, "{}{}", self.message, self.hint())
    }
}
