//! BigQuery answers the emulator cannot produce (per-row insertErrors, rate limits, backend errors, denied
//! access, exhausted quota), recorded from Google's documented error format and served by wiremock to the
//! real sink.

use std::io::Read;

use dealsync::config::{BigQueryAuth, BigQuerySettings};
use dealsync::exit::Exit;
use dealsync::mapping::{map_json, Mapped, RunStamp};
use dealsync::retry::RetryPolicy;
use dealsync::schema::DealRow;
use dealsync::sink::bigquery::BigQuerySink;
use dealsync::sink::Sink;
use dealsync::window::WindowField;
use wiremock::matchers::{body_string_contains, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const P: &str = "/bigquery/v2/projects/p";

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        min_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(50),
        deadline: std::time::Duration::from_secs(5),
    }
}

async fn sink(server: &MockServer) -> BigQuerySink {
    let settings = BigQuerySettings {
        project: "p".into(),
        dataset: "d".into(),
        table: "closed_won_deals".into(),
        location: None,
        auth: BigQueryAuth::Emulator { base_url: format!("{}/bigquery/v2", server.uri()).parse().unwrap() },
    };
    BigQuerySink::connect(
        settings,
        "20261128T000000Z_0000abcd",
        chrono::Utc::now(),
        fast(),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap()
}

fn google_error(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    let status = match code {
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    };
    ResponseTemplate::new(code).set_body_json(serde_json::json!({
        "error": {"code": code, "message": message,
                  "errors": [{"message": message, "domain": "global", "reason": reason}], "status": status}
    }))
}

fn ledger_answer() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "kind": "bigquery#queryResponse",
        "schema": {"fields": [{"name": "last_end", "type": "INTEGER", "mode": "NULLABLE"}]},
        "jobReference": {"projectId": "p", "jobId": "job_1", "location": "US"},
        "totalRows": "1", "rows": [{"f": [{"v": "1793527200000000"}]}], "jobComplete": true
    }))
}

#[tokio::test]
async fn rate_limits_and_backend_errors_are_retried() {
    for (code, reason) in
        [(403, "rateLimitExceeded"), (429, "rateLimitExceeded"), (503, "backendError"), (500, "internalError")]
    {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("{P}/queries")))
            .respond_with(google_error(code, reason, "Exceeded rate limits: too many api requests per user per method"))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{P}/queries")))
            .respond_with(ledger_answer())
            .mount(&server)
            .await;
        let mut s = sink(&server).await;
        let end = s.last_good_window_end(WindowField::ModifiedTime).await.unwrap();
        assert_eq!(end.unwrap().timestamp(), 1_793_527_200, "{code} {reason}");
        assert_eq!(server.received_requests().await.unwrap().len(), 3, "{code} {reason}: two failures, one success");
    }
}

#[tokio::test]
async fn denied_access_is_not_retried_and_names_the_roles_to_grant() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .respond_with(google_error(
            403,
            "accessDenied",
            "Access Denied: Project p: User does not have bigquery.jobs.create permission in project p.",
        ))
        .mount(&server)
        .await;
    let err = sink(&server).await.last_good_window_end(WindowField::ModifiedTime).await.unwrap_err();
    assert_eq!(err.exit, Exit::Config);
    assert!(err.message.contains("BigQuery Job User") && err.message.contains("BigQuery Data Editor"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_exhausted_quota_is_not_retried_and_exits_75() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .respond_with(google_error(
            403,
            "quotaExceeded",
            "Quota exceeded: Your project exceeded quota for free query bytes scanned.",
        ))
        .mount(&server)
        .await;
    let err = sink(&server).await.last_good_window_end(WindowField::ModifiedTime).await.unwrap_err();
    assert_eq!(err.exit, Exit::Unavailable);
    assert!(err.message.contains("10 minutes"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_backend_that_stays_down_gives_up_with_75_after_the_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .respond_with(google_error(
            503,
            "backendError",
            "Error encountered during execution. Retrying may solve the problem.",
        ))
        .mount(&server)
        .await;
    let err = sink(&server).await.last_good_window_end(WindowField::ModifiedTime).await.unwrap_err();
    assert_eq!(err.exit, Exit::Unavailable);
    assert!(err.message.contains("gave up after 4 attempts"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

fn rows() -> Vec<DealRow> {
    let stamp: RunStamp = "20261128T000000Z_0000abcd".parse().unwrap();
    ["1001", "1002", "1003"]
        .iter()
        .map(|id| {
            let json = format!(
                r#"{{"id":"{id}","Stage":"Closed Won","Amount":10.5,"Modified_Time":"2026-10-01T10:00:00+05:30"}}"#
            );
            match map_json(&json, &stamp) {
                Mapped::Row(r) => *r,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

fn gunzip_rows(r: &Request) -> Vec<serde_json::Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.body[..]).read_to_string(&mut text).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["rows"].as_array().unwrap().clone()
}

const STAGING: &str = "_dealsync_stg_20261128t000000z_0000abcd";
const MERGE_JOB: &str = "dealsync_merge_20261128t000000z_0000abcd";

/// Every table GET finds the table (the staging table "exists").
async fn mount_tables_exist(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": STAGING}, "schema": {"fields": []}
        })))
        .mount(server)
        .await;
}

/// An `insertAll` answer without errors.
fn inserted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse"}))
}

/// Every `insertAll`, into any table, succeeds.
async fn mount_inserts_succeed(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+/insertAll")))
        .respond_with(inserted())
        .mount(server)
        .await;
}

/// A query answer of one row of integers.
fn one_row(names: &[&str], values: &[u64]) -> ResponseTemplate {
    let fields: Vec<serde_json::Value> =
        names.iter().map(|n| serde_json::json!({"name": n, "type": "INTEGER"})).collect();
    let cells: Vec<serde_json::Value> = values.iter().map(|v| serde_json::json!({"v": v.to_string()})).collect();
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "schema": {"fields": fields}, "jobReference": {"projectId": "p", "jobId": "job_3"},
        "totalRows": "1", "rows": [{"f": cells}], "jobComplete": true
    }))
}

/// The proof that the staging table is whole: its rows and distinct deals.
async fn mount_staging_count(server: &MockServer, rows: u64, deals: u64) {
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .and(body_string_contains("COUNT(DISTINCT deal_id) AS deals"))
        .respond_with(one_row(&["n", "deals"], &[rows, deals]))
        .mount(server)
        .await;
}

/// The query counting what the MERGE will do: staged rows, distinct deals, inserted, updated. The staging
/// table is whole (it holds `staged` rows of `deals` deals).
async fn mount_merge_preview(server: &MockServer, [staged, deals, inserted, updated]: [u64; 4]) {
    mount_staging_count(server, staged, deals).await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .and(body_string_contains("AS inserted"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schema": {"fields": [{"name": "staged", "type": "INTEGER"}, {"name": "deals", "type": "INTEGER"},
                                  {"name": "inserted", "type": "INTEGER"}, {"name": "updated", "type": "INTEGER"}]},
            "jobReference": {"projectId": "p", "jobId": "job_2"},
            "totalRows": "1", "rows": [{"f": [{"v": staged.to_string()}, {"v": deals.to_string()}, {"v": inserted.to_string()}, {"v": updated.to_string()}]}],
            "jobComplete": true
        })))
        .mount(server)
        .await;
}

/// A MERGE job that is done at once, having changed `affected` rows; the staging table can be dropped.
async fn mount_merge_done(server: &MockServer, affected: u64) {
    let job = serde_json::json!({
        "jobReference": {"projectId": "p", "jobId": MERGE_JOB},
        "status": {"state": "DONE"}, "statistics": {"query": {"numDmlAffectedRows": affected.to_string()}}
    });
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(job.clone()))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(format!("{P}/jobs/.+")))
        .respond_with(ResponseTemplate::new(200).set_body_json(job))
        .mount(server)
        .await;
    mount_table_deletes(server).await;
}

/// A MERGE job accepted and still running; what its polls answer is up to the test.
async fn mount_merge_started(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "jobReference": {"projectId": "p", "jobId": MERGE_JOB}, "status": {"state": "RUNNING"}
        })))
        .mount(server)
        .await;
}

/// What a poll of `job_id` answers: the job reference with `fields` merged in.
async fn mount_job_poll(server: &MockServer, job_id: &str, fields: serde_json::Value) {
    let mut job = serde_json::json!({"jobReference": {"projectId": "p", "jobId": job_id}});
    job.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    Mock::given(method("GET"))
        .and(path(format!("{P}/jobs/{job_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(job))
        .mount(server)
        .await;
}

async fn mount_table_deletes(server: &MockServer) {
    Mock::given(method("DELETE"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+")))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

/// The job ids of every MERGE job started.
async fn merge_job_ids(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/jobs"))
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["jobReference"]["jobId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn invalid_rows_are_quarantined_with_bigquerys_reason_and_stopped_rows_are_resent() {
    let server = MockServer::start().await;
    let staging = STAGING;
    mount_tables_exist(&server).await;
    // Google's documented shape: the bad row is `invalid`, every other row of the request `stopped`.
    Mock::given(method("POST"))
        .and(path(format!("{P}/datasets/d/tables/{staging}/insertAll")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "kind": "bigquery#tableDataInsertAllResponse",
            "insertErrors": [
                {"index": 0, "errors": [{"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]},
                {"index": 1, "errors": [{"reason": "invalid", "location": "amount", "debugInfo": "", "message": "Invalid NUMERIC value: 10.5x"}]},
                {"index": 2, "errors": [{"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]}
            ]
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_inserts_succeed(&server).await;
    mount_merge_preview(&server, [2, 2, 2, 0]).await;
    mount_merge_done(&server, 2).await;

    let mut s = sink(&server).await;
    let written = s.write_rows(rows()).await.unwrap();
    assert_eq!(written.rejected, 0, "nothing is sent before the batch fills or the run commits");
    let stats = s.commit().await.unwrap();
    assert_eq!((stats.rejected, stats.inserted, stats.updated), (1, 2, 0));

    let requests = server.received_requests().await.unwrap();
    let inserts: Vec<_> = requests.iter().filter(|r| r.url.path().ends_with(&format!("{staging}/insertAll"))).collect();
    assert_eq!(inserts.len(), 2, "one resend");
    let resent: Vec<String> =
        gunzip_rows(inserts[1]).iter().map(|r| r["json"]["deal_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(resent, vec!["1001", "1003"], "only the stopped rows are resent");
    let quarantine =
        requests.iter().find(|r| r.url.path().ends_with("_dealsync_quarantine/insertAll")).expect("quarantined");
    let q = &gunzip_rows(quarantine)[0]["json"];
    assert_eq!(q["deal_id"], "1002");
    assert!(q["reason"].as_str().unwrap().contains("Invalid NUMERIC value: 10.5x (column amount)"), "{q}");
    assert_eq!(
        merge_job_ids(&server).await,
        vec!["dealsync_merge_20261128t000000z_0000abcd"],
        "the MERGE job id comes from the run id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_inserts_run_concurrently_up_to_the_bound() {
    let server = MockServer::start().await;
    let staging = STAGING;
    mount_tables_exist(&server).await;
    let delay = std::time::Duration::from_millis(800);
    Mock::given(method("POST"))
        .and(path(format!("{P}/datasets/d/tables/{staging}/insertAll")))
        .respond_with(inserted().set_delay(delay))
        .mount(&server)
        .await;
    mount_merge_preview(&server, [4000, 4000, 4000, 0]).await;
    mount_merge_done(&server, 4000).await;

    let stamp: RunStamp = "20261128T000000Z_0000abcd".parse().unwrap();
    let rows: Vec<DealRow> = (1..=4000)
        .map(|i| {
            let json = format!(
                r#"{{"id":"{}","Stage":"Closed Won","Amount":10.5,"Modified_Time":"2026-10-01T10:00:00+05:30"}}"#,
                5000 + i
            );
            match map_json(&json, &stamp) {
                Mapped::Row(r) => *r,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let mut s = sink(&server).await;
    let started = std::time::Instant::now();
    for page in rows.chunks(200) {
        s.write_rows(page.to_vec()).await.unwrap();
    }
    let stats = s.commit().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(stats.inserted, 4000);

    let requests = server.received_requests().await.unwrap();
    let inserts: Vec<_> = requests.iter().filter(|r| r.url.path().ends_with(&format!("{staging}/insertAll"))).collect();
    assert_eq!(inserts.len(), 8, "8 batches of 500");
    let mut ids: Vec<String> = inserts
        .iter()
        .flat_map(|r| gunzip_rows(r))
        .map(|r| r["json"]["deal_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4000, "every row staged once");
    // One at a time would take 8 x 800 ms; all at once 800 ms; at most 4 in flight, two waves.
    assert!(elapsed < delay * 5, "inserts overlap: {elapsed:?}");
    assert!(elapsed >= delay * 2, "at most {} in flight: {elapsed:?}", dealsync::sink::bigquery::INSERT_CONCURRENCY);
}

#[tokio::test]
async fn a_merge_that_loses_to_a_concurrent_writer_runs_again_under_the_next_job_id() {
    let server = MockServer::start().await;
    let base = MERGE_JOB;
    mount_tables_exist(&server).await;
    mount_inserts_succeed(&server).await;
    mount_merge_preview(&server, [3, 3, 3, 0]).await;
    mount_merge_started(&server).await;
    // Google's shape for a DML job that lost a conflict: done, with an errorResult, nothing changed.
    mount_job_poll(
        &server,
        base,
        serde_json::json!({
            "status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "location": "query",
                "message": "Could not serialize access to table p:d.closed_won_deals due to concurrent update"}}
        }),
    )
    .await;
    mount_job_poll(
        &server,
        &format!("{base}_2"),
        serde_json::json!({
            "status": {"state": "DONE"}, "statistics": {"query": {"numDmlAffectedRows": "3"}}
        }),
    )
    .await;
    mount_table_deletes(&server).await;

    let mut s = sink(&server).await;
    s.write_rows(rows()).await.unwrap();
    let stats = s.commit().await.unwrap();
    assert_eq!((stats.inserted, stats.updated), (3, 0));
    assert_eq!(merge_job_ids(&server).await, vec![base.to_string(), format!("{base}_2")]);
}

#[tokio::test]
async fn a_merge_that_fails_for_a_lasting_reason_is_not_run_again() {
    let server = MockServer::start().await;
    mount_tables_exist(&server).await;
    mount_inserts_succeed(&server).await;
    mount_merge_preview(&server, [3, 3, 3, 0]).await;
    mount_merge_started(&server).await;
    mount_job_poll(&server, MERGE_JOB, serde_json::json!({
        "status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": "Unrecognized name: region at [3:5]"}}
    })).await;
    let mut s = sink(&server).await;
    s.write_rows(rows()).await.unwrap();
    let err = s.commit().await.unwrap_err();
    assert!(err.message.contains("Unrecognized name: region"), "{err}");
    assert_eq!(merge_job_ids(&server).await.len(), 1);
}

/// BigQuery's answer for a table its streaming system does not know.
fn table_not_found(table: &str) -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(serde_json::json!({
        "error": {"code": 404, "message": format!("Not found: Table p:d.{table}"),
                  "errors": [{"message": format!("Not found: Table p:d.{table}"), "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}
    }))
}

#[tokio::test]
async fn a_staging_table_this_run_just_created_that_bigquery_does_not_know_yet_costs_a_retry_not_a_failed_night() {
    let server = MockServer::start().await;
    // The staging table does not exist; creating it succeeds.
    Mock::given(method("GET"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+")))
        .respond_with(table_not_found(STAGING))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/datasets/d/tables")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": STAGING}, "schema": {"fields": []}
        })))
        .mount(&server)
        .await;
    // Its first two inserts: notFound, as users report right after creating a table.
    Mock::given(method("POST"))
        .and(path(format!("{P}/datasets/d/tables/{STAGING}/insertAll")))
        .respond_with(table_not_found(STAGING))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    mount_inserts_succeed(&server).await;
    mount_merge_preview(&server, [3, 3, 3, 0]).await;
    mount_merge_done(&server, 3).await;
    let mut s = sink(&server).await;
    s.write_rows(rows()).await.unwrap();
    let stats = s.commit().await.unwrap();
    assert_eq!(stats.inserted, 3);
    let inserts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with(&format!("{STAGING}/insertAll")))
        .count();
    assert_eq!(inserts, 3, "two notFound answers, then the rows went in");
}

#[tokio::test]
async fn not_found_from_a_table_this_run_did_not_create_stays_a_configuration_error() {
    let server = MockServer::start().await;
    mount_tables_exist(&server).await;
    // The ledger exists (it was not created by this run) and an insert says it does not: the dataset is wrong.
    Mock::given(method("POST"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+/insertAll")))
        .respond_with(table_not_found("_dealsync_runs"))
        .mount(&server)
        .await;
    let mut s = sink(&server).await;
    let run = dealsync::sink::RunRecord {
        run_id: "r".into(),
        kind: "scheduled",
        window_field: "Modified_Time".into(),
        window_start: "a".into(),
        window_end: "b".into(),
        status: "success".into(),
        exit_code: 0,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        pages: 0,
        deals_fetched: 0,
        rows_inserted: 0,
        rows_updated: 0,
        rows_unchanged: 0,
        not_closed_won: 0,
        quarantined: 0,
        error: None,
    };
    let err = s.record_run(&run).await.unwrap_err();
    assert_eq!(err.exit, Exit::Config, "{err}");
    assert_eq!(
        server.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with("/insertAll")).count(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_staging_table_short_of_what_was_written_is_never_merged() {
    let server = MockServer::start().await;
    mount_tables_exist(&server).await;
    mount_inserts_succeed(&server).await;
    // BigQuery acknowledged three rows; queries see two of them, every time they look (a streaming buffer
    // that stays unavailable).
    mount_staging_count(&server, 2, 2).await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/queries")))
        .and(body_string_contains("SELECT DISTINCT deal_id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "schema": {"fields": [{"name": "deal_id", "type": "STRING"}]}, "jobReference": {"projectId": "p", "jobId": "job_4"},
            "totalRows": "2", "rows": [{"f": [{"v": "1001"}]}, {"f": [{"v": "1003"}]}], "jobComplete": true
        })))
        .mount(&server)
        .await;
    mount_merge_preview(&server, [3, 3, 3, 0]).await;
    mount_merge_done(&server, 3).await;
    let mut s = sink(&server).await;
    s.write_rows(rows()).await.unwrap();
    assert_eq!(
        s.shortfall().await.unwrap(),
        vec!["1002".to_string()],
        "the deal the staging table lacks, to write again"
    );
    let counts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("COUNT(DISTINCT deal_id) AS deals"))
        .count();
    assert_eq!(counts, 4, "looked again within the retry policy before naming it");
    let err = s.commit().await.unwrap_err();
    assert_eq!(err.exit, Exit::Unavailable);
    assert!(
        err.message.contains("still lacks 1 of the 3 deals") && err.message.contains("nothing was merged"),
        "{err}"
    );
    assert!(merge_job_ids(&server).await.is_empty(), "the MERGE never ran");
}

#[tokio::test]
async fn a_project_without_billing_is_told_that_streaming_needs_it() {
    let server = MockServer::start().await;
    mount_tables_exist(&server).await;
    Mock::given(method("POST"))
        .and(path_regex(format!("{P}/datasets/d/tables/.+/insertAll")))
        .respond_with(google_error(
            403,
            "accessDenied",
            "Access Denied: BigQuery BigQuery: Streaming insert is not allowed in the free tier",
        ))
        .mount(&server)
        .await;
    let mut s = sink(&server).await;
    s.write_rows(rows()).await.unwrap();
    let err = s.commit().await.unwrap_err();
    assert_eq!(err.exit, Exit::Config);
    assert!(err.message.contains("billing account") && err.message.contains("--sink sqlite"), "{err}");
    assert!(!err.message.contains("BigQuery Job User"), "not an IAM problem: {err}");
}
