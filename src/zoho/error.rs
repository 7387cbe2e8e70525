//! Everything that can go wrong talking to Zoho, and the one place that decides which failures are worth a
//! retry (`is_retryable`, `is_token_refused`) and which exit code each one ends a run with.

use std::time::Duration;

use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum ZohoError {
    // The OAuth token endpoint's refusals; Zoho reports most of them as HTTP 200 with an `error` key.
    #[error(
        "ZOHO_REFRESH_TOKEN was rejected by {accounts} (invalid_code): the refresh token is wrong, revoked, or was \
         minted in another data centre; check ZOHO_DC, or mint a new one with `dealsync auth exchange`"
    )]
    InvalidCode { accounts: String },
    #[error(
        "ZOHO_CLIENT_ID is not known to {accounts} (invalid_client): this is usually the wrong data centre; set \
         ZOHO_DC (us, eu, in, au, jp, ca, sa, cn, uk, ae) to where the Zoho account lives, or check the client id"
    )]
    InvalidClient { accounts: String },
    #[error("ZOHO_CLIENT_SECRET was rejected by {accounts} (invalid_client_secret): copy the client secret again")]
    InvalidClientSecret { accounts: String },
    #[error(
        "{accounts} refuses to mint more access tokens for ZOHO_REFRESH_TOKEN (Access Denied: too many requests): \
         Zoho allows 10 mints per 10 minutes; wait 15-30 minutes without running dealsync, and do not restart it \
         in a loop"
    )]
    MintThrottled { accounts: String },
    #[error(
        "the token endpoint {accounts} answered `invalid_code`: the grant code is wrong, already used or expired \
         (they live a few minutes): generate a new one in the API console and exchange it at once; check ZOHO_DC too"
    )]
    GrantCodeRefused { accounts: String },
    #[error("the token endpoint {accounts} answered `{error}`{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint { accounts: String, error: String, description: Option<String> },
    #[error("the token response from {accounts} names api_domain `{api_domain}`, which is not usable: {problem}; set ZOHO_API_DOMAIN")]
    BadApiDomain { accounts: String, api_domain: String, problem: String },

    #[error("Zoho answered HTTP {status} {code} to {what}: {message}{}", hint(code, details))]
    Api {
        what: String,
        status: u16,
        code: String,
        message: String,
        details: serde_json::Value,
        retry_after: Option<Duration>,
    },

    #[error("could not complete {what}: {reason}")]
    Transport { what: String, reason: String },

    #[error("Zoho sent an unreadable response (HTTP {status}) to {what}: {reason}")]
    InvalidBody { what: String, status: u16, reason: String },

    #[error("{last} (gave up after {attempts} attempts in {:.1}s)", elapsed.as_secs_f64())]
    Exhausted { attempts: usize, elapsed: Duration, last: Box<ZohoError> },
}

impl ZohoError {
    pub(crate) fn invalid(what: impl Into<String>, status: u16, reason: impl Into<String>) -> ZohoError {
        ZohoError::InvalidBody { what: what.into(), status, reason: reason.into() }
    }

    /// An error answer told by its status and code alone.
    pub(crate) fn api(what: impl Into<String>, status: u16, code: &str, message: impl Into<String>) -> ZohoError {
        let (what, code, message) = (what.into(), code.to_string(), message.into());
        ZohoError::Api { what, status, code, message, details: serde_json::Value::Null, retry_after: None }
    }

    pub(crate) fn transport(what: impl Into<String>, e: &reqwest::Error) -> ZohoError {
        ZohoError::Transport { what: what.into(), reason: describe_reqwest(e) }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ZohoError::Api { status, code, .. } => {
                matches!(status, 429 | 500 | 502 | 503 | 504)
                    || matches!(code.as_str(), "TOO_MANY_REQUESTS" | "INTERNAL_ERROR")
            }
            ZohoError::Transport { .. } | ZohoError::InvalidBody { .. } => true,
            _ => false,
        }
    }

    /// Zoho refused the access token: any 401 but a scope error, even with a body a proxy cut short. The same
    /// request may succeed with a freshly minted token.
    pub fn is_token_refused(&self) -> bool {
        matches!(self, ZohoError::Api { status: 401, code, .. } if code != "OAUTH_SCOPE_MISMATCH")
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ZohoError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Exhausted { .. } | Self::Transport { .. } | Self::InvalidBody { .. } => Exit::Unavailable,
            Self::Api { status, code, details, .. } => match code.as_str() {
                "NOT_SUPPORTED" | "NO_FIELDS_METADATA" => Exit::Config,
                // A code with a hint is one the operator fixes.
                _ if !hint(code, details).is_empty() => Exit::Config,
                _ if self.is_retryable() => Exit::Unavailable,
                _ if *status == 401 || *status == 403 => Exit::Config,
                _ => Exit::Internal,
            },
            // The token endpoint's refusals: credentials or data centre to fix.
            _ => Exit::Config,
        }
    }
}

/// What to do about a non-retryable Zoho error code, in words an operator can act on.
fn hint(code: &str, details: &serde_json::Value) -> String {
    let hint = match code {
        "OAUTH_SCOPE_MISMATCH" => {
            " (the refresh token lacks a scope: mint it with ZohoCRM.modules.deals.READ, \
            ZohoSearch.securesearch.READ, ZohoCRM.coql.READ and ZohoCRM.settings.fields.READ)"
        }
        "NO_PERMISSION" => {
            " (the Zoho user behind the refresh token may not read Deals; give its profile read permission on Deals)"
        }
        "INVALID_TOKEN" | "INVALID_OAUTHTOKEN" | "AUTHENTICATION_FAILURE" => {
            " (the access token was refused even after minting a new one: the token's data centre and the API \
            domain disagree; check ZOHO_DC and ZOHO_API_DOMAIN)"
        }
        "INVALID_QUERY" => match details.get("api_name").and_then(|v| v.as_str()) {
            Some(f) => return format!(" (field `{f}` cannot be searched this way; check --window-field)"),
            None => " (the search criteria were refused)",
        },
        "INVALID_MODULE" => " (the Deals module is not available to this user or API domain)",
        "INVALID_URL_PATTERN" => " (the API domain does not serve CRM v8; check ZOHO_API_DOMAIN)",
        _ => "",
    };
    hint.to_string()
}

/// A reqwest error in words, without its URL (the caller names the request) and with its causes.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = match e {
        e if e.is_timeout() => "timed out",
        e if e.is_connect() => "could not connect",
        e if e.is_body() || e.is_decode() => "the response body broke off",
        _ => "the request failed",
    };
    let causes = std::iter::successors(std::error::Error::source(e), |s| s.source());
    causes.fold(kind.to_string(), |msg, cause| format!("{msg}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ZohoError {
        ZohoError::api("test", status, code, "m")
    }

    #[test]
    fn throttling_and_server_errors_are_retried_scope_errors_are_not() {
        assert!(api(429, "TOO_MANY_REQUESTS").is_retryable());
        assert!(api(500, "INTERNAL_ERROR").is_retryable());
        assert!(api(503, "").is_retryable());
        assert!(!api(401, "OAUTH_SCOPE_MISMATCH").is_retryable());
        assert!(!api(400, "INVALID_QUERY").is_retryable());
        assert_eq!(api(401, "OAUTH_SCOPE_MISMATCH").exit(), Exit::Config);
        assert_eq!(api(403, "NO_PERMISSION").exit(), Exit::Config);
        assert_eq!(api(400, "EXPECTED_PARAM_MISSING").exit(), Exit::Internal);
        assert!(api(401, "INVALID_TOKEN").is_token_refused() && api(401, "").is_token_refused());
        assert!(!api(401, "OAUTH_SCOPE_MISMATCH").is_token_refused() && !api(403, "NO_PERMISSION").is_token_refused());
    }

    #[test]
    fn query_errors_name_the_field() {
        let e = ZohoError::Api {
            what: "GET /crm/v8/Deals/search".into(),
            status: 400,
            code: "INVALID_QUERY".into(),
            message: "invalid query formed".into(),
            details: serde_json::json!({"api_name": "Closing_Date", "reason": "invalid operator"}),
            retry_after: None,
        };
        assert!(e.to_string().contains("field `Closing_Date`"), "{e}");
        assert_eq!(e.exit(), Exit::Config);
        assert!(!e.is_retryable());
        assert!(api(403, "NO_PERMISSION").to_string().contains("read permission on Deals"));
    }

    #[test]
    fn scope_errors_say_which_scopes_to_grant() {
        let msg = api(401, "OAUTH_SCOPE_MISMATCH").to_string();
        assert!(msg.contains("ZohoSearch.securesearch.READ"), "{msg}");
    }
}
