//! HTTP routes of the simulator, answering with Zoho's status codes and body shapes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::coql::{self, Select};
use super::criteria::{self, QueryError};
use super::data::{self, GenSpec, SimDeal};
use super::faults::Fault;
use super::{DealField, Range};
use super::{SimConfig, SimCounters};

pub const SEARCH_SCOPE: &str = "ZohoSearch.securesearch.READ";
pub const DEALS_SCOPE: &str = "ZohoCRM.modules.deals.READ";
pub const COQL_SCOPE: &str = "ZohoCRM.coql.READ";
pub const FIELDS_SCOPE: &str = "ZohoCRM.settings.fields.READ";

pub struct SimState {
    pub config: SimConfig,
    pub base_url: String,
    /// Sorted by modified time (and id). Tests change deals through `SimHandle::mutate`.
    pub deals: std::sync::RwLock<Vec<SimDeal>>,
    tokens: Mutex<HashMap<String, Instant>>,
    mints: Mutex<VecDeque<Instant>>,
    pub counters: SimCounters,
    token_seq: std::sync::atomic::AtomicU64,
    /// Deals re-modified by `edit_every_second`.
    pub edited: Mutex<Vec<u64>>,
    /// Numbers each search, to seed how it orders ties.
    search_seq: std::sync::atomic::AtomicU64,
    /// Deals changed just before a by-id read so far (`changed_before_by_id`).
    changed_by_id: std::sync::atomic::AtomicUsize,
}

impl SimState {
    pub fn new(config: SimConfig, base_url: String) -> SimState {
        let deals = data::generate(&GenSpec {
            deals: config.deals,
            seed: config.seed,
            anchor: config.anchor,
            span: config.span,
            broken: config.broken,
            won_share: config.won_share,
            awaiting_approval: config.awaiting_approval,
        });
        SimState {
            config,
            base_url,
            deals: std::sync::RwLock::new(deals),
            tokens: Mutex::new(HashMap::new()),
            mints: Mutex::new(VecDeque::new()),
            counters: SimCounters::default(),
            token_seq: std::sync::atomic::AtomicU64::new(1),
            edited: Mutex::new(Vec::new()),
            search_seq: std::sync::atomic::AtomicU64::new(1),
            changed_by_id: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn closed_won_in(&self, w: &Range) -> Vec<SimDeal> {
        let (start, end) = (w.start.timestamp(), w.end.timestamp());
        self.deals
            .read()
            .expect("not poisoned")
            .iter()
            .filter(|d| d.is_closed_won() && !d.deleted)
            .filter(|d| {
                if w.field == DealField::ClosingDate {
                    let (s, e) = (data::utc_date(w.start), data::utc_date(w.end));
                    d.closing >= s && d.closing < e
                } else {
                    d.modified >= start && d.modified < end
                }
            })
            .cloned()
            .collect()
    }

    /// Deals matching a compiled filter, scanning only the slice of modified times it allows.
    fn matching<'a>(deals: &'a [SimDeal], filter: &'a criteria::Compiled) -> Vec<&'a SimDeal> {
        Self::matching_iter(deals, filter).collect()
    }

    /// The same, lazily and in the order the deals are kept: (Modified_Time, id).
    fn matching_iter<'a>(
        deals: &'a [SimDeal],
        filter: &'a criteria::Compiled,
    ) -> impl DoubleEndedIterator<Item = &'a SimDeal> + 'a {
        let (lo, hi) = filter.modified_range();
        let from = deals.partition_point(|d| d.modified < lo);
        let to = deals.partition_point(|d| d.modified <= hi).max(from);
        deals[from..to].iter().filter(move |d| !d.deleted && filter.matches(d))
    }
}

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/crm/v8/Deals/search", get(search))
        .route("/crm/v8/Deals", get(records))
        .route("/crm/v8/coql", post(coql_query))
        .route("/crm/v8/settings/fields", get(fields))
        .route("/crm/v8/Deals/deleted", get(deleted))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), inject))
        .route("/oauth/v2/token", post(token))
        // Operator controls for trying dealsync by hand (not Zoho's API): list, delete, move a deal.
        .route("/_sim/deals", get(admin_list))
        .route("/_sim/deals/{id}/delete", post(admin_delete))
        .route("/_sim/deals/{id}/stage", post(admin_stage))
        .fallback(not_found)
        .with_state(state)
}

/// Counts every API request and applies the fault planned for it, if any.
async fn inject(
    State(state): State<Arc<SimState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let n = state.counters.api_requests.fetch_add(1, Ordering::Relaxed) + 1;
    let now = state.counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    state.counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let response = serve(&state, n, req, next).await;
    state.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    response
}

async fn serve(state: &Arc<SimState>, n: u64, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(fault) = state.config.faults.fault_for(n) else {
        return next.run(req).await;
    };
    state.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
    *state.counters.faults_by_kind.lock().expect("not poisoned").entry(fault.name()).or_default() += 1;
    match fault {
        Fault::TooManyRequests => {
            let mut r = zoho_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "Rate limit exceeded. Please retry after the specified time.",
                json!({"retry_after": 1}),
            );
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Fault::Internal => {
            zoho_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Internal Server Error", json!({}))
        }
        Fault::Reset => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"data\":[{\"id\":")),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by the simulator")),
            ];
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from_stream(futures_util::stream::iter(chunks)))
                .expect("valid response")
        }
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Fault::Expire => {
            if let Some(t) = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
            {
                state.tokens.lock().expect("not poisoned").remove(t);
            }
            next.run(req).await
        }
        Fault::BadJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Fault::Truncated => {
            let (mut parts, body) = next.run(req).await.into_parts();
            let mut bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            if bytes.is_empty() {
                // A 204 has nothing to cut: send the start of a page instead.
                parts.status = StatusCode::OK;
                parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                bytes = Bytes::from_static(b"{\"data\":[{\"id\":\"1\",\"Stage\":\"Clo");
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(bytes.slice(0..bytes.len() / 2)))
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json;charset=UTF-8")], body).into_response()
}

fn zoho_error(status: StatusCode, code: &str, message: &str, details: serde_json::Value) -> Response {
    json_response(status, json!({"code": code, "details": details, "message": message, "status": "error"}).to_string())
}

fn query_error(e: QueryError) -> Response {
    zoho_error(StatusCode::BAD_REQUEST, e.code, &e.message, e.details)
}

fn admin_view(d: &SimDeal) -> serde_json::Value {
    json!({"id": d.id.to_string(), "deal_name": d.deal_name(), "stage": d.stage,
        "modified_time": chrono::DateTime::from_timestamp(d.modified, 0).map(|t| t.to_rfc3339()),
        "amount": d.amount.map(|a| a.to_string()), "deleted": d.deleted})
}

/// `GET /_sim/deals?stage=Closed%20Won&limit=5`: deals (newest first), to pick one to change.
async fn admin_list(State(state): State<Arc<SimState>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(10);
    let deals = state.deals.read().expect("not poisoned");
    let list: Vec<serde_json::Value> = deals
        .iter()
        .rev()
        .filter(|d| !d.deleted && q.get("stage").is_none_or(|s| s == d.stage))
        .take(limit)
        .map(admin_view)
        .collect();
    json_response(StatusCode::OK, serde_json::Value::Array(list).to_string())
}

fn admin_change(state: &SimState, id: &str, change: impl FnOnce(&mut SimDeal)) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "the id is not a number", json!({"id": id}));
    };
    let mut deals = state.deals.write().expect("not poisoned");
    let Some(d) = deals.iter_mut().find(|d| d.id == id && !d.deleted) else {
        return zoho_error(StatusCode::NOT_FOUND, "INVALID_DATA", "no such deal", json!({"id": id.to_string()}));
    };
    change(d);
    d.rendered = Default::default();
    let view = admin_view(d);
    deals.sort_by_key(|d| (d.modified, d.id));
    json_response(StatusCode::OK, view.to_string())
}

/// `POST /_sim/deals/{id}/delete`: moves the deal to the recycle bin now (it then shows in `/Deals/deleted`).
async fn admin_delete(
    State(state): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let now = chrono::Utc::now().timestamp();
    admin_change(&state, &id, |d| {
        d.deleted = true;
        d.deleted_at = Some(now);
    })
}

/// `POST /_sim/deals/{id}/stage?to=Closed%20Lost`: moves the deal to another stage, modified now.
async fn admin_stage(
    State(state): State<Arc<SimState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let to = q.get("to").map(String::as_str).unwrap_or("");
    let stages: Vec<&'static str> = data::STAGES.iter().copied().chain([data::CLOSED_WON]).collect();
    let Some(stage) = stages.iter().find(|s| **s == to).copied() else {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "unknown stage",
            json!({"to": to, "stages": stages}),
        );
    };
    let now = chrono::Utc::now().timestamp();
    admin_change(&state, &id, |d| {
        d.stage = stage;
        d.modified = now;
    })
}

async fn not_found() -> Response {
    zoho_error(
        StatusCode::NOT_FOUND,
        "INVALID_URL_PATTERN",
        "Please check if the URL trying to access is a correct one",
        json!({}),
    )
}

async fn pause(state: &SimState) {
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
}

/// `POST /oauth/v2/token`: fields from the form body or the query string, as Zoho accepts both.
async fn token(
    State(state): State<Arc<SimState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    state.counters.token_requests.fetch_add(1, Ordering::Relaxed);
    pause(&state).await;
    let mut form: HashMap<String, String> = query;
    form.extend(url::form_urlencoded::parse(&body).into_owned());
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let cfg = &state.config;
    let error = |e: &str| json_response(StatusCode::OK, json!({"error": e}).to_string());
    if get("client_id") != cfg.client_id {
        return error("invalid_client");
    }
    if get("client_secret") != cfg.client_secret {
        return error("invalid_client_secret");
    }
    let exchange = match get("grant_type") {
        "refresh_token" if get("refresh_token") == cfg.refresh_token => false,
        "authorization_code" if get("code") == cfg.grant_code => true,
        "refresh_token" | "authorization_code" => return error("invalid_code"),
        _ => return error("unsupported_grant_type"),
    };
    {
        let mut mints = state.mints.lock().expect("not poisoned");
        let now = Instant::now();
        while mints.front().is_some_and(|t| now.duration_since(*t) >= cfg.mint_window) {
            mints.pop_front();
        }
        if mints.len() >= cfg.mint_limit {
            let status = StatusCode::from_u16(cfg.throttle_status).unwrap_or(StatusCode::OK);
            return json_response(
                status,
                json!({"error_description": "You have made too many requests continuously. Please try again after some time.",
                       "error": "Access Denied", "status": "failure"})
                .to_string(),
            );
        }
        mints.push_back(now);
    }
    let seq = state.token_seq.fetch_add(1, Ordering::Relaxed);
    let access = format!("1000.simaccess{seq:08}.{:016x}", data::Rng::new(seq ^ cfg.seed).next_u64());
    state.tokens.lock().expect("not poisoned").insert(access.clone(), Instant::now() + cfg.token_ttl);
    let scopes: Vec<&str> = [DEALS_SCOPE, SEARCH_SCOPE, COQL_SCOPE, FIELDS_SCOPE]
        .into_iter()
        .filter(|s| !cfg.missing_scopes.iter().any(|m| m == s))
        .collect();
    let mut body = json!({"access_token": access, "scope": scopes.join(" "), "api_domain": state.base_url,
                          "token_type": "Bearer", "expires_in": cfg.token_ttl.as_secs()});
    if exchange {
        body["refresh_token"] = json!(cfg.refresh_token);
    }
    json_response(StatusCode::OK, body.to_string())
}

/// Checks `Authorization: Zoho-oauthtoken <t>` and the scope the call needs: Zoho's refusal, if any.
fn refusal(state: &SimState, headers: &HeaderMap, scope: &str) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Zoho-oauthtoken "));
    let Some(token) = token else {
        return Some(zoho_error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "Authentication failed",
            json!({}),
        ));
    };
    let valid = state.tokens.lock().expect("not poisoned").get(token).is_some_and(|exp| *exp > Instant::now());
    if !valid {
        return Some(zoho_error(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", "invalid oauth token", json!({})));
    }
    if state.config.missing_scopes.iter().any(|m| m == scope) {
        return Some(zoho_error(
            StatusCode::UNAUTHORIZED,
            "OAUTH_SCOPE_MISMATCH",
            "invalid oauth scope to access this URL",
            json!({}),
        ));
    }
    None
}

/// Up to this many deals, rendered records are kept (about 2.2 KB each); beyond, each answer renders afresh.
const CACHE_RENDERED_UP_TO: usize = 250_000;

fn page_body(state: &SimState, records: &[&SimDeal], fields: Option<&[&str]>, info: serde_json::Value) -> String {
    page_body_view(state, records, data::View { fields, ..data::View::default() }, info)
}

fn page_body_view(state: &SimState, records: &[&SimDeal], view: data::View<'_>, info: serde_json::Value) -> String {
    let mut out = String::with_capacity(records.len() * 2500 + 200);
    out.push_str("{\"data\":[");
    let cache = view.fields.is_none() && !view.coql && state.config.deals <= CACHE_RENDERED_UP_TO;
    for (i, d) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if cache {
            out.push_str(d.rendered.get_or_init(|| {
                let mut one = String::with_capacity(2500);
                d.render(state.config.tz, None, &mut one);
                one.into_boxed_str()
            }));
        } else {
            d.render_view(state.config.tz, view, &mut out);
        }
    }
    out.push_str("],\"info\":");
    out.push_str(&info.to_string());
    out.push('}');
    out
}

async fn search(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.counters.search_requests.fetch_add(1, Ordering::Relaxed);
    pause(&state).await;
    if let Some(r) = refusal(&state, &headers, SEARCH_SCOPE) {
        return r;
    }
    let Some(criteria) = q.get("criteria") else {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "EXPECTED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_names": ["criteria", "email", "phone", "word"]}),
        );
    };
    let page: usize = match q.get("page").map(|p| p.parse()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        _ => return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "page"})),
    };
    let per_page: usize = match q.get("per_page").map(|p| p.parse()) {
        None => 200,
        Some(Ok(p)) if (1..=200).contains(&p) => p,
        _ => {
            return zoho_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "invalid data",
                json!({"param_name": "per_page"}),
            )
        }
    };
    let Some(approval) = approval(&q) else {
        return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "approved"}));
    };
    let filter = match criteria::parse(criteria).and_then(|e| criteria::compile(&e, false)) {
        Ok(f) => f,
        Err(e) => return query_error(e),
    };
    if page * per_page > state.config.search_cap {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "LIMIT_REACHED",
            "maximum response iteration limit reached",
            json!({"limit": state.config.search_cap.to_string()}),
        );
    }
    let Some((sort_by, descending)) = search_order(&q) else {
        return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "sort_by"}));
    };
    let (sort_by, descending) = if state.config.ignores_sort { ("id", true) } else { (sort_by, descending) };
    // What the search index holds: deals modified at least `search_lag` ago.
    let indexed_before = chrono::Utc::now().timestamp() - state.config.search_lag.as_secs() as i64;
    let lagging = !state.config.search_lag.is_zero();
    let deals = state.deals.read().expect("not poisoned");
    let mut matches: Vec<&SimDeal> = SimState::matching_iter(&deals, &filter)
        .filter(|d| approval.admits(d) && (!lagging || d.modified < indexed_before))
        .collect();
    let key = |d: &SimDeal| match sort_by {
        "Modified_Time" => d.modified,
        "Created_Time" => d.created,
        _ => d.id as i64,
    };
    matches.sort_by_key(|d| (key(d), d.id));
    if state.config.shuffled_ties {
        // Equal keys in another order on each request: what paging with offsets and no tie-breaker gets.
        let mut rng = data::Rng::new(state.search_seq.fetch_add(1, Ordering::Relaxed) ^ state.config.seed);
        for run in matches.chunk_by_mut(|a, b| key(a) == key(b)) {
            for i in (1..run.len()).rev() {
                run.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
    }
    if descending {
        matches.reverse();
    }
    let start = (page - 1) * per_page;
    let end = (start + per_page).min(matches.len());
    let slice = matches.get(start..end).unwrap_or_default();
    if slice.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let fields: Option<Vec<&str>> = q.get("fields").map(|f| f.split(',').collect());
    let info = json!({"per_page": per_page, "count": slice.len(), "page": page, "sort_by": sort_by,
                      "sort_order": if descending { "desc" } else { "asc" }, "more_records": end < matches.len()});
    json_response(StatusCode::OK, page_body(&state, slice, fields.as_deref(), info))
}

/// Which deals an `approved` parameter admits (Zoho's default: approved ones only).
#[derive(Clone, Copy)]
enum Approval {
    Approved,
    Awaiting,
    Both,
}

impl Approval {
    fn admits(self, d: &SimDeal) -> bool {
        match self {
            Approval::Approved => !d.awaiting_approval,
            Approval::Awaiting => d.awaiting_approval,
            Approval::Both => true,
        }
    }
}

fn approval(q: &HashMap<String, String>) -> Option<Approval> {
    match q.get("approved").map(String::as_str) {
        None | Some("true") => Some(Approval::Approved),
        Some("false") => Some(Approval::Awaiting),
        Some("both") => Some(Approval::Both),
        Some(_) => None,
    }
}

/// `GET /crm/v8/Deals`: records by id (`ids`, at most 100), or the module's records page by page (`page` up to
/// 2,000 records, then `page_token`), with the `fields` asked for (mandatory, at most 50) and Zoho's `$` keys.
/// `If-Modified-Since` lists only records modified after it, and answers 304 when there are none.
async fn records(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    pause(&state).await;
    if let Some(r) = refusal(&state, &headers, DEALS_SCOPE) {
        return r;
    }
    let Some(fields) = q.get("fields").filter(|f| !f.is_empty()) else {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "required param is missing",
            json!({"param_name": "fields"}),
        );
    };
    let fields: Vec<&str> = fields.split(',').collect();
    if fields.len() > 50 {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "limit exceeded",
            json!({"limit": 50, "param_name": "fields"}),
        );
    }
    let Some(approval) = approval(&q) else {
        return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "approved"}));
    };
    let view = data::View { fields: Some(&fields), system_keys: true, coql: false };
    if let Some(ids) = q.get("ids") {
        change_before_by_id(&state, ids);
    }
    let deals = state.deals.read().expect("not poisoned");
    if let Some(ids) = q.get("ids") {
        let ids: Vec<&str> = ids.split(',').collect();
        if ids.len() > 100 {
            return zoho_error(
                StatusCode::BAD_REQUEST,
                "LIMIT_EXCEEDED",
                "limit exceeded",
                json!({"limit": 100, "param_name": "ids"}),
            );
        }
        let Ok(ids): Result<Vec<u64>, _> = ids.iter().map(|i| i.parse::<u64>()).collect() else {
            return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "ids"}));
        };
        let mut found: Vec<&SimDeal> =
            deals.iter().filter(|d| !d.deleted && ids.contains(&d.id) && approval.admits(d)).collect();
        found.sort_by_key(|d| d.id);
        if found.is_empty() {
            return StatusCode::NO_CONTENT.into_response();
        }
        let info = json!({"per_page": 200, "count": found.len(), "page": 1, "more_records": false});
        return json_response(StatusCode::OK, page_body_view(&state, &found, view, info));
    }
    let per_page: usize =
        q.get("per_page").and_then(|p| p.parse().ok()).filter(|p| (1..=200).contains(p)).unwrap_or(200);
    let Some((sort_by, descending)) = search_order(&q) else {
        return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "sort_by"}));
    };
    let start = match (q.get("page_token"), q.get("page").map(|p| p.parse::<usize>())) {
        (Some(t), _) => match t.strip_prefix("sim-").and_then(|o| o.parse::<usize>().ok()) {
            Some(offset) => offset,
            None => {
                return zoho_error(
                    StatusCode::BAD_REQUEST,
                    "TOKEN_BOUND_DATA_MISMATCH",
                    "The page_token given seems to be invalid or input param is added or altered or deleted",
                    json!({"param_name": "page_token"}),
                )
            }
        },
        (None, None) => 0,
        (None, Some(Ok(p))) if p >= 1 => (p - 1) * per_page,
        (None, Some(_)) => {
            return zoho_error(StatusCode::BAD_REQUEST, "INVALID_DATA", "invalid data", json!({"param_name": "page"}))
        }
    };
    if !q.contains_key("page_token") && start + per_page > 2000 {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            "You can only get the first 2000 records without using page_token param",
            json!({"limit": 2000}),
        );
    }
    if start + per_page > 100_000 {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "PAGINATION_LIMIT_EXCEEDED",
            "You can only get upto 100000 records using page_token param",
            json!({"param_name": "page_token"}),
        );
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.timestamp());
    let mut all: Vec<&SimDeal> =
        deals.iter().filter(|d| !d.deleted && approval.admits(d) && since.is_none_or(|s| d.modified > s)).collect();
    if all.is_empty() && since.is_some() {
        state.counters.not_modified.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    match sort_by {
        "Modified_Time" => all.sort_by_key(|d| (d.modified, d.id)),
        "Created_Time" => all.sort_by_key(|d| (d.created, d.id)),
        _ => all.sort_by_key(|d| d.id),
    }
    if descending {
        all.reverse();
    }
    let end = (start + per_page).min(all.len());
    let Some(slice) = all.get(start..end).filter(|s| !s.is_empty()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let more = end < all.len();
    let expiry = (chrono::Utc::now() + chrono::Duration::days(1))
        .with_timezone(&state.config.tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    let info = json!({"per_page": per_page, "count": slice.len(), "page": start / per_page + 1, "sort_by": sort_by,
        "sort_order": if descending { "desc" } else { "asc" }, "more_records": more,
        "next_page_token": if more { json!(format!("sim-{end}")) } else { json!(null) }, "page_token_expiry": expiry});
    json_response(StatusCode::OK, page_body_view(&state, slice, view, info))
}

/// Changes the closed-won deals of a by-id request, until `changed_before_by_id` have been: alternately lost
/// and deleted (see `SimConfig::changed_before_by_id`).
fn change_before_by_id(state: &SimState, ids: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let limit = state.config.changed_before_by_id;
    if state.changed_by_id.load(Relaxed) >= limit {
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let mut deals = state.deals.write().expect("not poisoned");
    for id in ids.split(',').filter_map(|i| i.parse::<u64>().ok()) {
        let Some(d) = deals.iter_mut().find(|d| d.id == id && d.is_closed_won() && !d.deleted) else { continue };
        let n = state.changed_by_id.fetch_add(1, Relaxed);
        if n >= limit {
            break;
        }
        if n.is_multiple_of(2) {
            d.stage = "Closed Lost";
            d.modified = now;
        } else {
            d.deleted = true;
            d.deleted_at = Some(now);
        }
        d.rendered = Default::default();
    }
    deals.sort_by_key(|d| (d.modified, d.id));
}

/// Re-modifies `edits_per_second` random deals every second, as users editing the CRM while a sync runs.
pub async fn edit_every_second(state: Arc<SimState>) {
    let mut rng = data::Rng::new(state.config.seed ^ 0xED17);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp();
        let mut deals = state.deals.write().expect("not poisoned");
        if deals.is_empty() {
            continue;
        }
        let mut edited = Vec::new();
        for _ in 0..state.config.edits_per_second {
            let i = rng.below(deals.len() as u64) as usize;
            let d = &mut deals[i];
            if d.deleted || d.modified >= now {
                continue;
            }
            d.modified = now;
            d.rendered = Default::default();
            edited.push(d.id);
        }
        deals.sort_by_key(|d| (d.modified, d.id));
        drop(deals);
        state.edited.lock().expect("not poisoned").extend(edited);
    }
}

/// The search order asked for: `sort_by` (`id`, `Created_Time` or `Modified_Time`; id by default) and whether
/// `sort_order` is descending (the default). `None` when either is not one Zoho knows.
fn search_order(q: &HashMap<String, String>) -> Option<(&'static str, bool)> {
    let by = match q.get("sort_by").map(String::as_str) {
        None | Some("id") => "id",
        Some("Modified_Time") => "Modified_Time",
        Some("Created_Time") => "Created_Time",
        Some(_) => return None,
    };
    let descending = match q.get("sort_order").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return None,
    };
    Some((by, descending))
}

async fn coql_query(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.counters.coql_requests.fetch_add(1, Ordering::Relaxed);
    pause(&state).await;
    if let Some(r) = refusal(&state, &headers, COQL_SCOPE) {
        return r;
    }
    #[derive(serde::Deserialize)]
    struct Req {
        select_query: String,
    }
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return zoho_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": "select_query"}),
            )
        }
    };
    let q = match coql::parse(&req.select_query) {
        Ok(q) => q,
        Err(e) => return query_error(e),
    };
    let deals = state.deals.read().expect("not poisoned");
    let mut matches = match &q.filter {
        Some(f) => SimState::matching(&deals, f),
        None => deals.iter().filter(|d| !d.deleted).collect(),
    };
    if q.select == Select::CountId {
        let body = json!({"data": [{"COUNT(id)": matches.len()}], "info": {"count": 1, "more_records": false}});
        return json_response(StatusCode::OK, body.to_string());
    }
    let (by_time, asc) = match &q.order_by {
        Some((f, asc)) => (f == "Modified_Time", *asc),
        None => (false, true),
    };
    if by_time {
        matches.sort_by_key(|d| (d.modified, d.id));
    } else {
        matches.sort_unstable_by_key(|d| d.id);
    }
    if !asc {
        matches.reverse();
    }
    if q.offset >= matches.len() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let end = (q.offset + q.limit).min(matches.len());
    let Select::Fields(fields) = &q.select else { unreachable!("COUNT handled above") };
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let info = json!({"count": end - q.offset, "more_records": end < matches.len()});
    let view = data::View { fields: Some(&fields), system_keys: false, coql: true };
    json_response(StatusCode::OK, page_body_view(&state, &matches[q.offset..end], view, info))
}

/// `GET /crm/v8/Deals/deleted?type=all&page=N&per_page=M` with `If-Modified-Since`: deleted records, newest
/// first, as Zoho lists its recycle bin.
async fn deleted(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    pause(&state).await;
    if let Some(r) = refusal(&state, &headers, DEALS_SCOPE) {
        return r;
    }
    let conditional = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.timestamp());
    let since = conditional.unwrap_or(i64::MIN);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).filter(|p| *p >= 1).unwrap_or(1);
    let per_page: usize =
        q.get("per_page").and_then(|p| p.parse().ok()).filter(|p| (1..=200).contains(p)).unwrap_or(200);
    let deals = state.deals.read().expect("not poisoned");
    let mut gone: Vec<&SimDeal> = deals.iter().filter(|d| d.deleted_at.is_some_and(|t| t >= since)).collect();
    gone.sort_by_key(|d| std::cmp::Reverse((d.deleted_at, d.id)));
    let start = (page - 1) * per_page;
    if gone.is_empty() && conditional.is_some() && state.config.not_modified {
        state.counters.not_modified.fetch_add(1, Ordering::Relaxed);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    if start >= gone.len() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let end = (start + per_page).min(gone.len());
    let tz = state.config.tz;
    let data: Vec<serde_json::Value> = gone[start..end]
        .iter()
        .map(|d| {
            let t = chrono::TimeZone::timestamp_opt(&tz, d.deleted_at.unwrap_or(0), 0).single().expect("valid");
            json!({"deleted_by": {"name": "Patricia Boyle", "id": "4876876000000225013"}, "id": d.id.to_string(),
                   "display_name": d.deal_name(), "type": "recycle", "created_by": {"name": "Patricia Boyle", "id": "4876876000000225013"},
                   "deleted_time": t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)})
        })
        .collect();
    let body = json!({"data": data, "info": {"per_page": per_page, "count": end - start, "page": page, "more_records": end < gone.len()}});
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /crm/v8/settings/fields?module=…`: enough metadata for the official SDK and for `dealsync fields`.
async fn fields(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    pause(&state).await;
    if let Some(r) = refusal(&state, &headers, FIELDS_SCOPE) {
        return r;
    }
    let Some(module) = q.get("module") else {
        return zoho_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "required param is missing",
            json!({"param_name": "module"}),
        );
    };
    let list: &[(&str, &str, &str, bool, u32)] = match module.as_str() {
        "Deals" => DEAL_FIELDS,
        "Accounts" => &[("Account_Name", "Account Name", "text", false, 200)],
        "Contacts" => &[("Last_Name", "Last Name", "text", false, 80), ("Email", "Email", "email", false, 100)],
        "Campaigns" => &[("Campaign_Name", "Campaign Name", "text", false, 120)],
        _ => {
            return zoho_error(
                StatusCode::BAD_REQUEST,
                "INVALID_MODULE",
                "the module name given seems to be invalid",
                json!({"resource_path_index": 0}),
            )
        }
    };
    let fields: Vec<serde_json::Value> = list
        .iter()
        .enumerate()
        .map(|(i, (api, label, ty, custom, length))| {
            let mut f = json!({"api_name": api, "field_label": label, "display_label": label, "data_type": ty,
                "id": format!("48768760000000{i:05}"), "custom_field": custom, "searchable": true,
                "read_only": false, "system_mandatory": *api == "Deal_Name" || *api == "Stage"});
            // Some real metadata lacks json_type/length; leave them out for one custom field.
            if *api != "Partner_Tier" {
                f["json_type"] = json!(json_type(ty));
                f["length"] = json!(length);
            }
            f
        })
        .collect();
    json_response(StatusCode::OK, json!({ "fields": fields }).to_string())
}

fn json_type(data_type: &str) -> &'static str {
    match data_type {
        "integer" | "bigint" => "integer",
        "currency" | "double" | "decimal" | "percent" => "double",
        "boolean" => "boolean",
        "lookup" | "ownerlookup" => "jsonobject",
        "multiselectpicklist" | "multiselectlookup" | "tags" => "jsonarray",
        _ => "string",
    }
}

/// Every field the simulator's deals carry (Zoho's `$` system keys aside), as Zoho's metadata describes them:
/// API name, label, data type, custom, and length (the documented maximum for the type unless the field has its
/// own).
const DEAL_FIELDS: &[(&str, &str, &str, bool, u32)] = &[
    ("Owner", "Deal Owner", "ownerlookup", false, 120),
    ("Description", "Description", "textarea", false, 32000),
    ("Campaign_Source", "Campaign Source", "lookup", false, 120),
    ("Closing_Date", "Closing Date", "date", false, 20),
    ("Last_Activity_Time", "Last Activity Time", "datetime", false, 120),
    ("Modified_By", "Modified By", "ownerlookup", false, 120),
    ("Lead_Conversion_Time", "Lead Conversion Time", "integer", false, 9),
    ("Deal_Name", "Deal Name", "text", false, 120),
    ("Exchange_Rate", "Exchange Rate", "double", false, 16),
    ("Expected_Revenue", "Expected Revenue", "currency", false, 16),
    ("Currency", "Currency", "picklist", false, 120),
    ("Overall_Sales_Duration", "Overall Sales Duration", "integer", false, 9),
    ("Stage", "Stage", "picklist", false, 120),
    ("Account_Name", "Account Name", "lookup", false, 120),
    ("Created_Time", "Created Time", "datetime", false, 120),
    ("Modified_Time", "Modified Time", "datetime", false, 120),
    ("Created_By", "Created By", "ownerlookup", false, 120),
    ("Amount", "Amount", "currency", false, 16),
    ("Probability", "Probability (%)", "integer", false, 3),
    ("Next_Step", "Next Step", "text", false, 100),
    ("Contact_Name", "Contact Name", "lookup", false, 120),
    ("Sales_Cycle_Duration", "Sales Cycle Duration", "integer", false, 9),
    ("Type", "Type", "picklist", false, 120),
    ("Lead_Source", "Lead Source", "picklist", false, 120),
    ("Pipeline", "Pipeline", "picklist", false, 120),
    ("Reason_For_Loss__s", "Reason For Loss", "picklist", false, 120),
    ("Record_Status__s", "Record Status", "picklist", false, 120),
    ("Locked__s", "Locked", "boolean", false, 5),
    ("Layout", "Layout", "lookup", false, 120),
    ("Tag", "Tag", "multiselectlookup", false, 2000),
    ("Territory", "Territory", "multiselectlookup", false, 2000),
    ("Change_Log_Time__s", "Change Log Time", "datetime", false, 120),
    ("Contract_Value", "Contract Value", "currency", true, 16),
    ("Region", "Region", "picklist", true, 120),
    ("Seats", "Seats", "integer", true, 9),
    ("Partner_Tier", "Partner Tier", "picklist", true, 120),
    ("Signed_Contract", "Signed Contract", "boolean", true, 5),
    ("Discount_Percent", "Discount", "percent", true, 5),
    ("Competitor", "Competitor", "text", true, 255),
    ("Forecast_Category", "Forecast Category", "picklist", true, 120),
    ("Invoice_Number", "Invoice Number", "text", true, 255),
    ("Lead_Score", "Lead Score", "integer", true, 9),
    ("Renewal_Date", "Renewal Date", "date", true, 20),
];
