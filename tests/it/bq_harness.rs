//! A proxy in front of the BigQuery emulator that answers as Google documents the real service may, where the
//! emulator never does: jobs live in a single region (polled without their `location`: 404), are still running
//! at the first look, query results come 100 rows a page (`pageToken`), the first MERGE of a kind loses to a
//! "concurrent update", a job id in use answers 409, the dataset sets default table and partition expirations
//! (which apply to the tables created in it), and resumable uploads keep the job id they were given and may be
//! gzipped. Everything else passes through. The BigQuery tests run dealsync through it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use serde_json::{json, Value};

/// Where every job of the harness lives.
pub const LOCATION: &str = "asia-northeast1";
/// Rows a result page holds at most.
pub const PAGE: u64 = 100;
/// The dataset's default expirations (an hour; a day for partitions).
const TABLE_TTL_MS: i64 = 3_600_000;
const PARTITION_TTL_MS: &str = "86400000";

#[derive(Default)]
struct State {
    /// Job ids dealsync inserted (a second insert of one answers 409).
    inserted: HashSet<String>,
    /// dealsync's job id -> the emulator's (upload jobs, which the emulator names itself).
    emulator_id: HashMap<String, String>,
    /// Jobs looked at once already (the first look finds them running).
    looked: HashSet<String>,
    /// Result reads begun (the first answers `jobComplete: false`).
    read: HashSet<String>,
    /// Jobs that lost to a concurrent update, and the kinds of statement that lost once already.
    lost: HashSet<String>,
    lost_kinds: HashSet<&'static str>,
    /// Table id -> its expiration (ms since the epoch) and whether its partitions expire.
    expires: HashMap<String, (Option<i64>, bool)>,
    /// Upload sessions: dealsync's job id, the emulator's session URL, the bytes received.
    uploads: HashMap<String, (String, String, Vec<u8>)>,
    next_upload: u64,
    /// What the harness did, to assert on.
    served: Served,
}

/// Counts of the documented answers the harness gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub not_found_without_location: u64,
    pub running: u64,
    pub incomplete_results: u64,
    pub pages: u64,
    /// Result pages asked for with a `pageToken` (the second page on).
    pub next_pages: u64,
    pub concurrent_updates: u64,
    pub duplicates: u64,
    pub expirations_cleared: u64,
    pub gzip_uploads: u64,
    /// `tabledata.insertAll` requests seen (passed on).
    pub insert_all: u64,
    /// Uploads finished (load jobs created).
    pub loads: u64,
}

pub struct Harness {
    pub host: String,
    state: Arc<Mutex<State>>,
}

impl Harness {
    pub fn served(&self) -> Served {
        self.state.lock().unwrap().served
    }
}

/// Starts the harness in front of the emulator at `emulator` (host:port).
pub async fn start(emulator: &str) -> Harness {
    let state = Arc::new(Mutex::new(State::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let (emulator, me, shared) = (emulator.to_string(), host.clone(), state.clone());
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (emulator, me, state, http) = (emulator.clone(), me.clone(), shared.clone(), http.clone());
        async move { handle(req, &emulator, &me, &state, &http).await }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Harness { host, state }
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn google_error(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        code,
        &json!({"error": {"code": code, "message": message,
        "errors": [{"reason": reason, "message": message, "domain": "global"}]}}),
    )
}

fn query_of(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sends a request on to the emulator; returns status, `location`/`range` headers and body.
async fn forward(
    http: &reqwest::Client,
    method: &str,
    url: String,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut req = http.request(method.parse().unwrap(), url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let kept = resp
        .headers()
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "location" | "range" | "content-type"))
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    (status, kept, resp.bytes().await.unwrap().to_vec())
}

fn passthrough(status: u16, headers: HashMap<String, String>, body: Vec<u8>) -> Response {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(Body::from(body)).unwrap()
}

/// Sets the location on a job resource or result page, and makes a job that just started look running.
fn regional(mut v: Value) -> Value {
    if v.get("jobReference").is_some() {
        v["jobReference"]["location"] = json!(LOCATION);
    }
    v
}

/// The kind of statement a query job runs, for one injected conflict each.
fn statement_kind(sql: &str) -> Option<&'static str> {
    let sql = sql.trim_start();
    if !sql.starts_with("MERGE") {
        return None;
    }
    Some(if sql.contains("UNNEST(") { "changes" } else { "merge" })
}

async fn handle(req: Request, emulator: &str, me: &str, state: &Mutex<State>, http: &reqwest::Client) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec();
    let path = parts.uri.path().to_string();
    let query = query_of(&parts.uri);
    let method = parts.method.as_str().to_string();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let url = format!("http://{emulator}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    // Resumable upload sessions of the harness's own.
    if path.starts_with("/harness-upload/") {
        return upload_chunk(segments[1], header("content-range"), body, state, http).await;
    }
    if path.ends_with("/jobs") && method == "POST" && param(&query, "uploadType") == Some("resumable") {
        let job: Value = serde_json::from_slice(&body).unwrap();
        let id = job["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        if !state.lock().unwrap().inserted.insert(id.clone()) {
            state.lock().unwrap().served.duplicates += 1;
            return google_error(409, "duplicate", &format!("Already Exists: Job p:{LOCATION}.{id}"));
        }
        let (status, headers, answer) =
            forward(http, "POST", url, &[("content-type", "application/json".into())], body).await;
        let Some(session) = headers.get("location").cloned() else { return passthrough(status, headers, answer) };
        let mut s = state.lock().unwrap();
        s.next_upload += 1;
        let n = s.next_upload.to_string();
        s.uploads.insert(n.clone(), (id, session, Vec::new()));
        return Response::builder()
            .status(200)
            .header("location", format!("http://{me}/harness-upload/{n}"))
            .body(Body::empty())
            .unwrap();
    }

    // bigquery/v2/projects/{p}/...
    let rest: Vec<&str> = segments.iter().skip(4).copied().collect();
    match (method.as_str(), rest.as_slice()) {
        ("POST", ["jobs"]) => {
            let job: Value = serde_json::from_slice(&body).unwrap();
            let id = job["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
            let sql = job["configuration"]["query"]["query"].as_str().unwrap_or_default().to_string();
            {
                let mut s = state.lock().unwrap();
                if !s.inserted.insert(id.clone()) {
                    s.served.duplicates += 1;
                    return google_error(409, "duplicate", &format!("Already Exists: Job p:{LOCATION}.{id}"));
                }
                if let Some(kind) = statement_kind(&sql) {
                    if s.lost_kinds.insert(kind) {
                        s.lost.insert(id.clone());
                        s.served.concurrent_updates += 1;
                        return json_response(
                            200,
                            &json!({"jobReference": {"jobId": id, "location": LOCATION},
                            "status": {"state": "RUNNING"}}),
                        );
                    }
                }
            }
            note_expiration_change(&sql, state);
            let (status, headers, answer) =
                forward(http, "POST", url, &[("content-type", "application/json".into())], body).await;
            if status != 200 {
                return passthrough(status, headers, answer);
            }
            let mut v = regional(serde_json::from_slice(&answer).unwrap());
            v["status"] = json!({"state": "RUNNING"});
            v.as_object_mut().unwrap().remove("statistics");
            json_response(200, &v)
        }
        ("GET", ["jobs", id]) | ("GET", ["queries", id]) => {
            if param(&query, "location") != Some(LOCATION) {
                state.lock().unwrap().served.not_found_without_location += 1;
                return google_error(404, "notFound", &format!("Not found: Job p:{id}"));
            }
            let is_job = rest[0] == "jobs";
            let (emulator_id, lost) = {
                let mut s = state.lock().unwrap();
                let first = if is_job { s.looked.insert(id.to_string()) } else { s.read.insert(id.to_string()) };
                if first && !s.lost.contains(*id) {
                    if is_job {
                        s.served.running += 1;
                        return json_response(
                            200,
                            &json!({"jobReference": {"jobId": id, "location": LOCATION},
                            "status": {"state": "RUNNING"}}),
                        );
                    }
                    s.served.incomplete_results += 1;
                    return json_response(
                        200,
                        &json!({"jobReference": {"jobId": id, "location": LOCATION},
                        "jobComplete": false}),
                    );
                }
                (s.emulator_id.get(*id).cloned().unwrap_or_else(|| id.to_string()), s.lost.contains(*id))
            };
            if lost {
                return json_response(
                    200,
                    &json!({"jobReference": {"jobId": id, "location": LOCATION},
                    "status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "location": "query",
                        "message": format!("Could not serialize access to table {id} due to concurrent update")}}}),
                );
            }
            let mut q: Vec<(String, String)> = query.into_iter().filter(|(k, _)| k != "maxResults").collect();
            if !is_job {
                q.push(("maxResults".into(), PAGE.to_string()));
                let mut s = state.lock().unwrap();
                s.served.pages += 1;
                if param(&q, "pageToken").is_some() {
                    s.served.next_pages += 1;
                }
            }
            let base = segments[..4].join("/");
            let qs = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
            let url = format!("http://{emulator}/{base}/{}/{emulator_id}?{qs}", rest[0]);
            let (status, headers, answer) = forward(http, "GET", url, &[], Vec::new()).await;
            if status != 200 {
                return passthrough(status, headers, answer);
            }
            let mut v = regional(serde_json::from_slice(&answer).unwrap());
            if v.get("jobReference").is_some() {
                v["jobReference"]["jobId"] = json!(id);
            }
            json_response(200, &v)
        }
        ("GET", ["datasets", _]) => {
            let (status, headers, answer) = forward(http, "GET", url, &[], Vec::new()).await;
            if status != 200 {
                return passthrough(status, headers, answer);
            }
            let mut v: Value = serde_json::from_slice(&answer).unwrap();
            v["location"] = json!(LOCATION);
            v["defaultTableExpirationMs"] = json!(TABLE_TTL_MS.to_string());
            v["defaultPartitionExpirationMs"] = json!(PARTITION_TTL_MS);
            json_response(200, &v)
        }
        ("POST", ["datasets", _, "tables"]) => {
            let table: Value = serde_json::from_slice(&body).unwrap();
            let id = table["tableReference"]["tableId"].as_str().unwrap_or_default().to_string();
            let at = table["expirationTime"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + TABLE_TTL_MS);
            let partitioned = table.get("timePartitioning").is_some();
            let (status, headers, answer) =
                forward(http, "POST", url, &[("content-type", "application/json".into())], body).await;
            if status == 200 {
                state.lock().unwrap().expires.insert(id, (Some(at), partitioned));
            }
            passthrough(status, headers, answer)
        }
        ("GET", ["datasets", _, "tables", id]) => {
            let (status, headers, answer) = forward(http, "GET", url, &[], Vec::new()).await;
            if status != 200 {
                return passthrough(status, headers, answer);
            }
            let mut v: Value = serde_json::from_slice(&answer).unwrap();
            if let Some((at, partitions)) = state.lock().unwrap().expires.get(*id).copied() {
                if let Some(at) = at {
                    v["expirationTime"] = json!(at.to_string());
                }
                if partitions {
                    v["timePartitioning"]["expirationMs"] = json!(PARTITION_TTL_MS);
                }
            }
            json_response(200, &v)
        }
        _ => {
            if path.ends_with("/insertAll") {
                state.lock().unwrap().served.insert_all += 1;
            }
            let ct = header("content-type").unwrap_or_else(|| "application/json".into());
            let (status, headers, answer) = forward(http, &method, url, &[("content-type", ct)], body).await;
            passthrough(status, headers, answer)
        }
    }
}

/// `ALTER TABLE … SET OPTIONS (expiration_timestamp = NULL[, partition_expiration_days = NULL])` clears what the
/// harness keeps (the emulator ignores the statement).
fn note_expiration_change(sql: &str, state: &Mutex<State>) {
    let Some(rest) = sql.strip_prefix("ALTER TABLE ") else { return };
    if !rest.contains("SET OPTIONS") {
        return;
    }
    let table = rest.split_whitespace().next().unwrap_or_default().trim_matches('`');
    let id = table.rsplit('.').next().unwrap_or_default().to_string();
    let mut s = state.lock().unwrap();
    if let Some(e) = s.expires.get_mut(&id) {
        if rest.contains("expiration_timestamp = NULL") {
            e.0 = None;
        }
        if rest.contains("partition_expiration_days = NULL") {
            e.1 = false;
        }
        s.served.expirations_cleared += 1;
    }
}

/// A chunk of a harness upload session: kept until the last, then the whole (gunzipped) body goes to the
/// emulator in one piece, and the job keeps dealsync's id.
async fn upload_chunk(
    session: &str,
    range: Option<String>,
    body: Vec<u8>,
    state: &Mutex<State>,
    http: &reqwest::Client,
) -> Response {
    let range = range.unwrap_or_default();
    let spec = range.trim_start_matches("bytes ");
    let (span, total) = spec.split_once('/').unwrap_or((spec, "*"));
    let held = |n: usize| {
        let b = Response::builder().status(308);
        let b = if n > 0 { b.header("range", format!("bytes=0-{}", n - 1)) } else { b };
        b.body(Body::empty()).unwrap()
    };
    let (id, emulator_session, bytes) = {
        let mut s = state.lock().unwrap();
        let Some((id, url, buf)) = s.uploads.get_mut(session) else {
            return google_error(404, "notFound", "upload session not found");
        };
        if span != "*" {
            let start: usize = span.split('-').next().unwrap().parse().unwrap();
            if start != buf.len() {
                return google_error(400, "invalid", "chunk does not start where the upload stands");
            }
            buf.extend_from_slice(&body);
        }
        match total.parse::<usize>() {
            Ok(t) if t == buf.len() => (id.clone(), url.clone(), std::mem::take(buf)),
            _ => return held(buf.len()),
        }
    };
    state.lock().unwrap().served.loads += 1;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        state.lock().unwrap().served.gzip_uploads += 1;
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain).unwrap();
        plain
    } else {
        bytes
    };
    let range = format!("bytes 0-{}/{}", bytes.len() - 1, bytes.len());
    let (status, headers, answer) = forward(http, "PUT", emulator_session, &[("content-range", range)], bytes).await;
    if status != 200 {
        return passthrough(status, headers, answer);
    }
    let mut v = regional(serde_json::from_slice(&answer).unwrap());
    let emulator_id = v["jobReference"]["jobId"].as_str().unwrap().to_string();
    state.lock().unwrap().emulator_id.insert(id.clone(), emulator_id);
    v["jobReference"]["jobId"] = json!(id);
    v["status"] = json!({"state": "RUNNING"});
    v.as_object_mut().unwrap().remove("statistics");
    json_response(200, &v)
}
