//! The Zoho CRM v8 client: one HTTP connection pool, one access token per run (re-minted only when Zoho
//! refuses it or it nears expiry), a cap on requests in flight, and retries with jittered exponential backoff
//! for the failures `ZohoError::is_retryable` names.

pub mod auth;
pub mod changes;
pub mod criteria;
pub mod error;
pub mod fetch;
pub mod fields;
pub mod page;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::Method;
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, Semaphore};

pub use crate::retry::RetryPolicy;
pub use auth::AccessToken;
pub(crate) use error::describe_reqwest;
pub use error::ZohoError;
pub use page::{read_id, record_id, Members, Page, Record};

use crate::config::{join_path, ZohoSettings};
use crate::window::Window;

/// The most an answer's Content-Length may reserve up front (a Zoho page is under a megabyte).
const BODY_CAPACITY_LIMIT: u64 = 16 << 20;

/// What an API request's answer becomes: from the request's name, the status and the body (`None` when empty).
type Parse<'a, T> = &'a dyn Fn(&str, u16, Option<String>) -> Result<T, ZohoError>;

/// One API request: a path under the API domain, its query, a JSON body (making it a POST), `If-Modified-Since`.
#[derive(Default)]
struct Call<'a> {
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    body: Option<&'a str>,
    since: Option<&'a str>,
}

/// Counters for the run summary.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub token_mints: AtomicU64,
    /// Mint requests that did not give a token (refused, throttled, failed in transit), counted apart.
    pub token_mint_failures: AtomicU64,
    /// Microseconds from process start to the first request (the token mint); 0 until then.
    pub first_request_us: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Zoho's default: id, newest first.
    Default,
    /// `Modified_Time` ascending, which lets a slice go on from the last modification time a page showed.
    ModifiedAsc,
}

pub struct ZohoClient {
    http: reqwest::Client,
    settings: ZohoSettings,
    token: Mutex<Option<AccessToken>>,
    permits: Semaphore,
    retry: RetryPolicy,
    pub stats: ClientStats,
    /// The run's first mint: `None` until it ends, then whether it gave a token.
    first_mint: tokio::sync::watch::Sender<Option<bool>>,
}

impl ZohoClient {
    pub fn new(settings: ZohoSettings, retry: RetryPolicy, request_timeout: Duration) -> Result<ZohoClient, ZohoError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dealsync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ZohoError::transport("building the HTTP client", &e))?;
        Ok(ZohoClient {
            http,
            permits: Semaphore::new(settings.max_concurrency),
            settings,
            token: Mutex::new(None),
            retry,
            stats: ClientStats::default(),
            first_mint: tokio::sync::watch::Sender::new(None),
        })
    }

    pub fn settings(&self) -> &ZohoSettings {
        &self.settings
    }

    /// Mints the run's access token now, so that credential problems surface before any other work.
    pub async fn authenticate(&self) -> Result<url::Url, ZohoError> {
        Ok(self.token().await?.api_domain)
    }

    /// The first page of `GET /crm/v8/Deals/search`. `None` when Zoho answers 204 (nothing matches).
    pub async fn search_page(
        &self,
        criteria: &str,
        order: SearchOrder,
        per_page: u32,
    ) -> Result<Option<Page>, ZohoError> {
        let per_page = per_page.to_string();
        // Deals awaiting approval are closed won in the CRM too: search leaves them out unless asked (`approved`
        // defaults to true), while COQL counts them and records by id return them. One rule for all three.
        let mut query = vec![("criteria", criteria), ("page", "1"), ("per_page", &per_page), ("approved", "both")];
        if order == SearchOrder::ModifiedAsc {
            query.extend([("sort_by", "Modified_Time"), ("sort_order", "asc")]);
        }
        self.execute(Call { path: "crm/v8/Deals/search", query: &query, ..Default::default() }, &page_or_none).await
    }

    /// `GET /crm/v8/Deals?ids=…&fields=…`: the deals with these ids (at most 100) and these fields (at most 50;
    /// `id` always comes back). `None` when Zoho has none of them (204).
    pub async fn records_by_id(&self, ids: &[String], fields: &[String]) -> Result<Option<Page>, ZohoError> {
        let query = [("ids", &*ids.join(",")), ("fields", &*fields.join(",")), ("approved", "both")];
        self.execute(Call { path: "crm/v8/Deals", query: &query, ..Default::default() }, &page_or_none).await
    }

    /// One page of `GET /crm/v8/Deals/deleted?type=all` for records deleted since `since`. `None` on 204.
    pub async fn deleted_page(&self, since: &str, page: u32) -> Result<Option<Page>, ZohoError> {
        let query = [("type", "all"), ("page", &*page.to_string()), ("per_page", "200")];
        let call = Call { path: "crm/v8/Deals/deleted", query: &query, since: Some(since), ..Default::default() };
        self.execute(call, &page_or_none).await
    }

    /// One page of `POST /crm/v8/coql`. `None` when nothing matches.
    pub async fn coql(&self, select_query: &str) -> Result<Option<Page>, ZohoError> {
        let body = serde_json::json!({ "select_query": select_query }).to_string();
        self.execute(Call { path: "crm/v8/coql", body: Some(&body), ..Default::default() }, &page_or_none).await
    }

    /// Pages through a COQL query in id order: `query_for(after)` builds each query with `id > after` (keyset
    /// paging, so there is no 10,000-record offset limit), `each` sees every record.
    pub async fn coql_keyset(
        &self,
        query_for: impl Fn(Option<&str>) -> String,
        mut each: impl FnMut(Record<'_>),
    ) -> Result<(), ZohoError> {
        let mut after: Option<String> = None;
        loop {
            let Some(page) = self.coql(&query_for(after.as_deref())).await? else { return Ok(()) };
            page.records().for_each(&mut each);
            if !page.more_records || (page.len() as u32) < criteria::COQL_LIMIT {
                return Ok(());
            }
            // Go on from the last id that reads as one: a record without one must not end the listing early.
            let reason = "a full page with more records, none of them with a readable id";
            let last = page.records().rev().find_map(record_id);
            after = Some(last.ok_or_else(|| ZohoError::invalid("COQL keyset page", 200, reason))?);
        }
    }

    /// Every closed-won deal id in `w`, from COQL, `id > last` at a time; `counted` hears of each request.
    pub async fn closed_won_ids(&self, w: &Window, counted: impl Fn()) -> Result<Vec<String>, ZohoError> {
        let mut ids = Vec::new();
        let query = |after: Option<&str>| {
            counted();
            criteria::coql_keyset_page("id", "=", w, after)
        };
        self.coql_keyset(query, |r| ids.extend(record_id(r))).await?;
        Ok(ids)
    }

    /// Waits for the run's first access token: true once one was minted, false if that first mint failed.
    /// Work that starts beside the first request waits for it, so that a refused mint is asked once.
    pub async fn first_token(&self) -> bool {
        self.first_mint.subscribe().wait_for(Option::is_some).await.is_ok_and(|m| *m == Some(true))
    }

    /// Runs a `select COUNT(id) …` COQL query and returns the count (0 when Zoho answers 204).
    pub async fn coql_count(&self, select_query: &str) -> Result<u64, ZohoError> {
        let Some(page) = self.coql(select_query).await? else { return Ok(0) };
        let row = page.get(0).and_then(|r| serde_json::from_str::<serde_json::Value>(r.get()).ok());
        let count = row.and_then(|r| r["COUNT(id)"].as_u64());
        count.ok_or_else(|| ZohoError::invalid(format!("COQL {select_query}"), 200, "the answer has no COUNT(id)"))
    }

    /// The current access token, minted when there is none or it is close to expiry. The lock makes minting
    /// single-flight: concurrent requests wait for one mint instead of each minting their own.
    async fn token(&self) -> Result<AccessToken, ZohoError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.clone());
            }
            tracing::info!(event = "token_refresh", "access token is close to expiry; minting a new one");
        }
        // A first mint that is throttled ends the run (say so, exit 78). A re-mint in the middle of a run waits
        // out the throttle instead of hammering the endpoint, within the retry deadline.
        let remint = self.stats.token_mints.load(Ordering::Relaxed) > 0;
        let (min_delay, max_delay) = (self.retry.max_delay, Duration::from_secs(300));
        let throttle = RetryPolicy { max_attempts: usize::MAX, min_delay, max_delay, ..self.retry };
        let mint = || {
            self.with_retries("minting an access token", || async {
                let now = crate::telemetry::micros_since_start().max(1);
                let _ = self.stats.first_request_us.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                let minted = auth::mint(&self.http, &self.settings).await;
                let counter = if minted.is_ok() { &self.stats.token_mints } else { &self.stats.token_mint_failures };
                counter.fetch_add(1, Ordering::Relaxed);
                minted
            })
        };
        let throttled = |e: &ZohoError| remint && matches!(e, ZohoError::MintThrottled { .. });
        let told = |_: &ZohoError, wait: Duration| {
            tracing::warn!(
                event = "token_throttled",
                wait_ms = wait.as_millis() as u64,
                "Zoho is throttling access-token mints for this refresh token; waiting before asking again"
            );
        };
        let minted = crate::retry::again(throttle, mint, throttled, told).await;
        // Only the first mint's failure is told (a failed re-mint leaves it); the lock held makes this race-free.
        if minted.is_ok() || self.first_mint.borrow().is_none() {
            self.first_mint.send_replace(Some(minted.is_ok()));
        }
        let minted = guard.insert(minted?);
        tracing::debug!(event = "token_minted", api_domain = %minted.api_domain, "minted an access token");
        Ok(minted.clone())
    }

    /// Sends one API request with retries; `parse` turns a 2xx answer into the result (or an error worth a retry).
    async fn execute<T>(&self, call: Call<'_>, parse: Parse<'_, T>) -> Result<T, ZohoError> {
        // Tokens revoked while a request is in flight (another request's re-mint, an expiry) get a fresh mint, a
        // few times at most: a token that is refused every time (wrong data centre) fails after three.
        let remint =
            RetryPolicy { max_attempts: 4, min_delay: Duration::ZERO, max_delay: Duration::ZERO, ..self.retry };
        let once =
            || crate::retry::again(remint, || self.attempt(&call, parse), ZohoError::is_token_refused, |_, _| {});
        self.with_retries("a Zoho API request", once).await
    }

    /// One request with the current token. A refused token is forgotten before the error is returned.
    async fn attempt<T>(&self, call: &Call<'_>, parse: Parse<'_, T>) -> Result<T, ZohoError> {
        let permit = self.permits.acquire().await.expect("the semaphore is never closed");
        let token = self.token().await?;
        let mut url = join_path(&token.api_domain, call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query);
        }
        let method = if call.body.is_some() { Method::POST } else { Method::GET };
        let what = format!("{method} {url}");
        let reason = "the access token contains characters that cannot travel in a header";
        let auth = HeaderValue::from_str(&format!("Zoho-oauthtoken {}", token.token.expose_secret()));
        let mut auth = auth.map_err(|_| ZohoError::invalid("the token response", 200, reason))?;
        auth.set_sensitive(true);
        let mut req = self.http.request(method, url).header(AUTHORIZATION, auth);
        if let Some(body) = call.body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        if let Some(since) = call.since {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, since);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(event = "zoho_request", request = %what);
        let mut resp = req.send().await.map_err(|e| ZohoError::transport(&what, &e))?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        let retry_after = retry_after.and_then(|v| v.trim().parse().ok()).map(Duration::from_secs);
        // Chunks go straight into the one buffer the page keeps, sized from Content-Length (capped: it may lie).
        let mut bytes = Vec::with_capacity(resp.content_length().map_or(0, |n| n.min(BODY_CAPACITY_LIMIT) as usize));
        while let Some(chunk) = resp.chunk().await.map_err(|e| ZohoError::transport(&what, &e))? {
            bytes.extend_from_slice(&chunk);
        }
        drop(permit);
        // One bad byte in a deal name must not fail a page: invalid UTF-8 is repaired with U+FFFD.
        let text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // Empty answers mean "no records": 204 (HTTP gives it no body) to anything, and 304 Not Modified to a
        // conditional request (`If-Modified-Since`), which HTTP allows whenever nothing changed since then.
        if (200..300).contains(&status) || (status == 304 && call.since.is_some()) {
            return parse(&what, status, Some(text).filter(|t| !t.trim().is_empty()));
        }
        // An error body may echo what the request carried: the token, or the client's own secrets.
        let secrets = [
            token.token.expose_secret(),
            self.settings.client_secret.expose_secret(),
            self.settings.refresh_token.expose_secret(),
        ];
        let err = api_error(&what, status, &crate::telemetry::redact(&text, &secrets), retry_after);
        if let (true, ZohoError::Api { code, .. }) = (err.is_token_refused(), &err) {
            tracing::info!(event = "token_refused", code = %code, "Zoho refused the access token; minting a new one");
            // Forgotten only while still current (another request may have minted anew): the next request mints.
            self.token.lock().await.take_if(|t| t.token.expose_secret() == token.token.expose_secret());
        }
        Err(err)
    }

    /// Runs `op` with the client's retry policy; a retryable error that outlives it becomes `Exhausted`.
    async fn with_retries<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ZohoError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ZohoError>>,
    {
        let counted = || {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
        };
        let tried = crate::retry::retry(self.retry, what, op, ZohoError::is_retryable, ZohoError::retry_after, counted);
        tried.await.map_err(|g| match g.error {
            e if e.is_retryable() => {
                ZohoError::Exhausted { attempts: g.attempts, elapsed: g.elapsed, last: Box::new(e) }
            }
            e => e,
        })
    }
}

/// Reads one page of records (search, COQL, deleted records), keeping each record's exact text.
pub fn parse_page(what: &str, status: u16, body: &str) -> Result<Page, ZohoError> {
    Page::parse(body).map_err(|reason| ZohoError::invalid(what, status, reason))
}

/// A page of records, or `None` for an empty answer (nothing matches).
fn page_or_none(what: &str, status: u16, body: Option<String>) -> Result<Option<Page>, ZohoError> {
    body.map(|body| parse_page(what, status, &body)).transpose()
}

/// An error answer; Zoho's body is `{"code","details","message","status":"error"}` when it is readable.
fn api_error(what: &str, status: u16, body: &str, retry_after: Option<Duration>) -> ZohoError {
    let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let text = |key: &str| parsed.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let message = match text("message") {
        "" if body.is_empty() => "(empty body)".to_string(),
        "" => body.chars().take(120).collect(),
        m => m.to_string(),
    };
    let (code, message) = (crate::telemetry::one_line(text("code")), crate::telemetry::one_line(&message));
    let details = parsed.get("details").cloned().unwrap_or_default();
    ZohoError::Api { what: what.to_string(), status, code, message, details, retry_after }
}
