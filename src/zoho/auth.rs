//! OAuth against the Zoho accounts server: mint an access token from the refresh token (form body, once per
//! run, again only when Zoho refuses it or it is about to expire) and learn the `api_domain` to call.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::error::ZohoError;
use crate::config::{check_scheme, ZohoSettings};

/// A minted access token and where to use it (its `Debug` shows no secret: `SecretString` hides it).
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub api_domain: Url,
    /// When to mint the next one: a fifth of the lifetime (at most 5 minutes) before expiry.
    pub refresh_at: Instant,
}

/// The refresh point for a token living `lifetime`: early enough that no request carries a lapsing token, late
/// enough that a short-lived token is not re-minted for every request.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(300))
}

/// Every key the token endpoint may answer with; which ones are present tells success from failure.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<SecretString>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
    api_domain: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Posts one grant (`key` = `secret`, of `grant_type`) with the client's credentials to the token endpoint.
async fn post_grant(
    http: &reqwest::Client,
    settings: &ZohoSettings,
    (key, secret): (&str, &str),
    grant_type: &str,
) -> Result<TokenResponse, ZohoError> {
    let form = [
        (key, secret),
        ("client_id", settings.client_id.as_str()),
        ("client_secret", settings.client_secret.expose_secret()),
        ("grant_type", grant_type),
    ];
    let accounts = settings.accounts_url.as_str().trim_end_matches('/').to_string();
    let what = format!("the token request to {accounts}");
    let resp = http.post(settings.token_url()).form(&form).send().await.map_err(|e| ZohoError::transport(&what, &e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| ZohoError::transport(&what, &e))?;
    let unavailable = || ZohoError::api(&what, status, "", "the accounts server is unavailable");
    let parsed = match serde_json::from_str::<TokenResponse>(&body) {
        Ok(p) => p,
        Err(_) if status >= 500 || status == 429 => return Err(unavailable()),
        Err(e) => return Err(ZohoError::invalid(&what, status, format!("not a token response ({e})"))),
    };
    // The endpoint's `error` (and `error_description`): the grant code's refusal, a mint's, or a throttle.
    if let Some(error) = parsed.error.as_deref() {
        let description = parsed.error_description.as_deref();
        let throttled =
            error.eq_ignore_ascii_case("Access Denied") || description.is_some_and(|d| d.contains("too many requests"));
        // The server's words may echo the form (the client secret, the refresh token or grant code).
        let secrets: Vec<&str> = form.iter().map(|(_, v)| *v).collect();
        let clean = |text: &str| crate::telemetry::one_line(&crate::telemetry::redact(text, &secrets));
        return Err(match error {
            _ if throttled => ZohoError::MintThrottled { accounts },
            "invalid_code" if key == "code" => ZohoError::GrantCodeRefused { accounts },
            "invalid_code" => ZohoError::InvalidCode { accounts },
            "invalid_client" => ZohoError::InvalidClient { accounts },
            "invalid_client_secret" => ZohoError::InvalidClientSecret { accounts },
            other => ZohoError::TokenEndpoint { accounts, error: clean(other), description: description.map(clean) },
        });
    }
    match parsed.access_token {
        Some(_) => Ok(parsed),
        None if status >= 500 => Err(unavailable()),
        None => Err(ZohoError::invalid(&what, status, "no access_token and no error in the answer")),
    }
}

fn access_token(settings: &ZohoSettings, parsed: TokenResponse) -> Result<AccessToken, ZohoError> {
    let bad = |api_domain: &str, problem: String| ZohoError::BadApiDomain {
        accounts: settings.accounts_url.as_str().trim_end_matches('/').to_string(),
        api_domain: api_domain.to_string(),
        problem,
    };
    let api_domain = match (&settings.api_domain, parsed.api_domain.as_deref()) {
        (Some(forced), _) => forced.clone(),
        (None, Some(d)) => trusted_api_domain(settings, d).map_err(|problem| bad(d, problem))?,
        (None, None) => return Err(bad("", "the answer has no api_domain".into())),
    };
    // `expires_in` is in seconds (3600). A missing or absurd value falls back to a conservative 55 minutes.
    let lifetime = Duration::from_secs(parsed.expires_in.filter(|s| (1..=86_400).contains(s)).unwrap_or(3300));
    let token = parsed.access_token.expect("checked by post_grant");
    Ok(AccessToken { token, api_domain, refresh_at: Instant::now() + lifetime - refresh_margin(lifetime) })
}

/// The access token goes to the host the token answer names: it must be an API host of the configured data
/// centre (`*.zohoapis.eu` for `ZOHO_DC=eu`), or a loopback host when the accounts server is one (a simulator),
/// with nothing but a scheme and a host.
fn trusted_api_domain(settings: &ZohoSettings, api_domain: &str) -> Result<Url, String> {
    let url = Url::parse(api_domain).map_err(|e| e.to_string())?;
    check_scheme(&url)?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err("an API domain is a scheme and a host, without user-info, query or fragment".into());
    }
    if !matches!(url.path(), "" | "/") {
        return Err("an API domain has no path".into());
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let zoho = settings.data_centre.api_domain;
    let simulator = crate::config::is_loopback(&url) && crate::config::is_loopback(&settings.accounts_url);
    if host == zoho || host.ends_with(&format!(".{zoho}")) || simulator {
        return Ok(url);
    }
    Err(format!("it is not a Zoho API host of data centre {} (*.{zoho})", settings.data_centre.code))
}

pub async fn mint(http: &reqwest::Client, settings: &ZohoSettings) -> Result<AccessToken, ZohoError> {
    let refresh = ("refresh_token", settings.refresh_token.expose_secret());
    access_token(settings, post_grant(http, settings, refresh, "refresh_token").await?)
}

/// The OAuth scopes dealsync needs, comma-separated as the Zoho API console takes them.
pub const SCOPES: &[&str] = &[
    "ZohoCRM.modules.deals.READ",
    "ZohoSearch.securesearch.READ",
    "ZohoCRM.coql.READ",
    "ZohoCRM.settings.fields.READ",
];

/// What a grant-code exchange yields.
pub struct Exchanged {
    pub refresh_token: SecretString,
    pub scope: Option<String>,
    pub api_domain: Url,
}

/// Exchanges a Self Client grant code for a refresh token (one-time set-up).
pub async fn exchange_grant(
    http: &reqwest::Client,
    settings: &ZohoSettings,
    grant_code: &SecretString,
) -> Result<Exchanged, ZohoError> {
    let code = ("code", grant_code.expose_secret());
    let mut parsed = post_grant(http, settings, code, "authorization_code").await?;
    let reason = "the answer has no refresh_token (a Self Client grant code should always yield one)";
    let missing = || ZohoError::invalid("the grant-code exchange", 200, reason);
    let refresh_token = parsed.refresh_token.take().ok_or_else(missing)?;
    Ok(Exchanged { refresh_token, scope: parsed.scope.take(), api_domain: access_token(settings, parsed)?.api_domain })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_api_host_of_the_data_centre_may_receive_the_token() {
        let settings = |dc: &str, accounts: &str| {
            let vars = [
                ("ZOHO_CLIENT_ID", "1000.A"),
                ("ZOHO_CLIENT_SECRET", "s"),
                ("ZOHO_REFRESH_TOKEN", "r"),
                ("ZOHO_DC", dc),
                ("ZOHO_ACCOUNTS_URL", accounts),
            ];
            let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            crate::config::Settings::from_vars(vars, crate::config::Needs::ZohoCredentials).unwrap().zoho.unwrap()
        };
        let eu = settings("eu", "https://accounts.zoho.eu");
        let ok = |s: &ZohoSettings, u: &str| trusted_api_domain(s, u);
        assert!(ok(&eu, "https://www.zohoapis.eu").is_ok());
        assert!(ok(&eu, "https://sandbox.zohoapis.eu/").is_ok());
        for bad in [
            "https://www.zohoapis.com",
            "https://evil.example",
            "https://www.zohoapis.eu.evil.example",
            "https://user:pw@www.zohoapis.eu",
            "https://www.zohoapis.eu/?x=1",
            "https://www.zohoapis.eu/crm",
            "http://127.0.0.1:9",
        ] {
            assert!(ok(&eu, bad).is_err(), "{bad}");
        }
        let sim = settings("us", "http://127.0.0.1:8080");
        assert!(ok(&sim, "http://127.0.0.1:8080").is_ok(), "a simulator on loopback");
    }

    #[test]
    fn tokens_are_refreshed_before_expiry_but_not_per_request() {
        assert_eq!(refresh_margin(Duration::from_secs(3600)), Duration::from_secs(300));
        assert_eq!(refresh_margin(Duration::from_secs(60)), Duration::from_secs(12));
        assert!(refresh_margin(Duration::from_secs(2)) < Duration::from_secs(2));
    }
}
