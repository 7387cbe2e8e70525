//! BigQuery answers the emulator cannot produce (rate limits, backend errors, denied access, exhausted quota,
//! jobs in a single region, unfinished jobs, results in pages, a DML job that lost to a concurrent update),
//! served by wiremock in Google's documented shapes to the real sink.

use dealsync::config::{BigQueryAuth, BigQuerySettings};
use dealsync::exit::Exit;
use dealsync::retry::RetryPolicy;
use dealsync::sink::bigquery::BigQuerySink;
use dealsync::window::WindowField;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const P: &str = "/bigquery/v2/projects/p";
const RUN: &str = "20261128T000000Z_0000abcd";

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
    BigQuerySink::connect(settings, RUN, fast(), std::time::Duration::from_secs(10)).await.unwrap()
}

fn google_error(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    let status = match code {
        403 => "PERMISSION_DENIED",
        429 => "RESOURCE_EXHAUSTED",
        _ => "UNAVAILABLE",
    };
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message,
                  "errors": [{"message": message, "domain": "global", "reason": reason}], "status": status}
    }))
}

/// The dataset lives in `location` (a single region: jobs there must be polled with it).
async fn mount_dataset(server: &MockServer, location: &str) {
    Mock::given(method("GET"))
        .and(path(format!("{P}/datasets/d")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"location": location})))
        .mount(server)
        .await;
}

/// `jobs.insert` answers with the job running, in `location`, under the id it was given.
async fn mount_insert(server: &MockServer, location: &str) {
    let location = location.to_string();
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
        .respond_with(move |r: &Request| {
            let job: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            ResponseTemplate::new(200).set_body_json(json!({
                "jobReference": {"projectId": "p", "jobId": job["jobReference"]["jobId"], "location": location},
                "status": {"state": "RUNNING"}
            }))
        })
        .mount(server)
        .await;
}

/// A job id's polls, only with the location given: what Google answers for a regional job.
async fn mount_poll(server: &MockServer, job_id: &str, location: &str, answer: serde_json::Value) {
    Mock::given(method("GET"))
        .and(path(format!("{P}/jobs/{job_id}")))
        .and(query_param("location", location))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(server)
        .await;
}

/// Everything not mounted: what Google says of a job polled without its location.
async fn mount_not_found(server: &MockServer) {
    Mock::given(path_regex(".*"))
        .respond_with(google_error(404, "notFound", "Not found: Job p:job"))
        .with_priority(10)
        .mount(server)
        .await;
}

fn done(job_id: &str, stats: serde_json::Value) -> serde_json::Value {
    json!({"jobReference": {"jobId": job_id, "location": "asia-northeast1"}, "status": {"state": "DONE"}, "statistics": stats})
}

fn page(rows: &[&str], token: Option<&str>) -> ResponseTemplate {
    let rows: Vec<_> = rows.iter().map(|v| json!({"f": [{"v": v}]})).collect();
    let mut body = json!({"jobComplete": true, "rows": rows});
    if let Some(t) = token {
        body["pageToken"] = json!(t);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

fn job_ids(requests: &[Request]) -> Vec<String> {
    requests
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
async fn rate_limits_and_backend_errors_are_retried() {
    for (code, reason) in
        [(403, "rateLimitExceeded"), (429, "rateLimitExceeded"), (503, "backendError"), (500, "internalError")]
    {
        let server = MockServer::start().await;
        mount_dataset(&server, "US").await;
        Mock::given(method("POST"))
            .and(path(format!("{P}/jobs")))
            .respond_with(google_error(code, reason, "Exceeded rate limits: too many api requests per user per method"))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        mount_insert(&server, "US").await;
        let id = format!("dealsync_{}_q0", RUN.to_ascii_lowercase());
        mount_poll(&server, &id, "US", done(&id, json!({}))).await;
        Mock::given(method("GET"))
            .and(path(format!("{P}/queries/{id}")))
            .respond_with(page(&["1793527200000000"], None))
            .mount(&server)
            .await;
        let mut s = sink(&server).await;
        let end = s.last_good_window_end(WindowField::ModifiedTime).await.unwrap();
        assert_eq!(end.unwrap().timestamp(), 1_793_527_200, "{code} {reason}");
        assert_eq!(
            job_ids(&server.received_requests().await.unwrap()).len(),
            3,
            "{code} {reason}: two failures, one success"
        );
    }
}

#[tokio::test]
async fn denied_access_is_not_retried_and_names_the_roles_to_grant() {
    let server = MockServer::start().await;
    mount_dataset(&server, "US").await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
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
    assert_eq!(job_ids(&server.received_requests().await.unwrap()).len(), 1);
}

#[tokio::test]
async fn an_exhausted_quota_is_not_retried_and_exits_75() {
    let server = MockServer::start().await;
    mount_dataset(&server, "US").await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
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
    assert_eq!(job_ids(&server.received_requests().await.unwrap()).len(), 1);
}

#[tokio::test]
async fn a_backend_that_stays_down_gives_up_with_75_after_the_attempts() {
    let server = MockServer::start().await;
    mount_dataset(&server, "US").await;
    Mock::given(method("POST"))
        .and(path(format!("{P}/jobs")))
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
    assert_eq!(job_ids(&server.received_requests().await.unwrap()).len(), 4);
}

#[tokio::test]
async fn a_job_in_a_single_region_is_polled_there_and_its_results_are_read_page_by_page() {
    let server = MockServer::start().await;
    mount_dataset(&server, "asia-northeast1").await;
    mount_insert(&server, "asia-northeast1").await;
    let id = format!("dealsync_{}_q0", RUN.to_ascii_lowercase());
    // Running at the first look, done at the second.
    Mock::given(method("GET"))
        .and(path(format!("{P}/jobs/{id}")))
        .and(query_param("location", "asia-northeast1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": {"state": "RUNNING"}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_poll(&server, &id, "asia-northeast1", done(&id, json!({"query": {"totalBytesBilled": "10485760"}}))).await;
    for (token, rows, next) in
        [(None, ["3", "1"], Some("t1")), (Some("t1"), ["2", "5"], Some("t2")), (Some("t2"), ["4", "6"], None)]
    {
        let mut m = Mock::given(method("GET"))
            .and(path(format!("{P}/queries/{id}")))
            .and(query_param("location", "asia-northeast1"));
        if let Some(t) = token {
            m = m.and(query_param("pageToken", t));
        }
        m.respond_with(page(&rows, next)).with_priority(if token.is_some() { 1 } else { 2 }).mount(&server).await;
    }
    mount_not_found(&server).await;
    let mut s = sink(&server).await;
    let w = dealsync::window::Window::new(
        WindowField::ModifiedTime,
        chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z").unwrap(),
        chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap(),
    )
    .unwrap();
    let ids = s.ids_in_window(&w).await.unwrap();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"], "every page is read");
    assert_eq!(s.bytes_billed(), Some(10_485_760), "bytes billed come from the finished job");
}

#[tokio::test]
async fn a_dml_job_that_loses_to_a_concurrent_update_runs_again_and_counts_only_when_done() {
    let server = MockServer::start().await;
    mount_dataset(&server, "europe-west3").await;
    mount_insert(&server, "europe-west3").await;
    let base = format!("dealsync_{}_deleted_0", RUN.to_ascii_lowercase());
    // Google's shape for a DML job that lost a conflict: done, with an errorResult, nothing changed.
    mount_poll(
        &server,
        &base,
        "europe-west3",
        json!({"status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "location": "query",
            "message": "Could not serialize access to table p:d.closed_won_deals due to concurrent update"}}}),
    )
    .await;
    let second = format!("{base}_2");
    Mock::given(method("GET"))
        .and(path(format!("{P}/jobs/{second}")))
        .and(query_param("location", "europe-west3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": {"state": "RUNNING"},
            "statistics": {"query": {"numDmlAffectedRows": "0"}}})))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_poll(&server, &second, "europe-west3", done(&second, json!({"query": {"numDmlAffectedRows": "2"}}))).await;
    mount_not_found(&server).await;
    let mut s = sink(&server).await;
    let at = chrono::Utc::now();
    let deleted = ["1001", "1002", "1001"]
        .iter()
        .map(|id| dealsync::zoho::changes::Deleted { deal_id: id.to_string(), deleted_time: at })
        .collect();
    assert_eq!(s.mark_deleted(deleted).await.unwrap(), 2, "counted from the finished job");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(job_ids(&requests), [base.clone(), second]);
    let job: serde_json::Value =
        serde_json::from_slice(&requests.iter().find(|r| r.method.as_str() == "POST").unwrap().body).unwrap();
    let sql = job["configuration"]["query"]["query"].as_str().unwrap();
    assert!(sql.contains("UNNEST(@p0)"), "one statement for the batch: {sql}");
    let rows = job["configuration"]["query"]["queryParameters"][0]["parameterValue"]["arrayValues"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row a deal");
}

#[tokio::test]
async fn a_dml_job_that_fails_for_a_lasting_reason_is_not_run_again() {
    let server = MockServer::start().await;
    mount_dataset(&server, "US").await;
    mount_insert(&server, "US").await;
    let base = format!("dealsync_{}_reopened_0", RUN.to_ascii_lowercase());
    mount_poll(
        &server,
        &base,
        "US",
        json!({"status": {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": "Syntax error"}}}),
    )
    .await;
    let mut s = sink(&server).await;
    let change = dealsync::zoho::changes::StageChange {
        deal_id: "1".into(),
        stage: "Closed Lost".into(),
        modified_time: chrono::Utc::now(),
    };
    let err = s.mark_not_won(vec![change]).await.unwrap_err();
    assert_eq!(err.exit, Exit::Internal);
    assert_eq!(job_ids(&server.received_requests().await.unwrap()), [base]);
}

/// A run at trace level with Google credentials of `kind` whose token comes from `token_server`: what it printed.
async fn traced_check(credentials: &std::path::Path, sim: &dealsync_sim::SimHandle) -> crate::helpers::Outcome {
    crate::helpers::Dealsync::new(&["check", "--sink", "bigquery"])
        .against(sim)
        .env("BIGQUERY_PROJECT", "p")
        .env("GOOGLE_APPLICATION_CREDENTIALS", credentials.to_str().unwrap())
        .env("RUST_LOG", "trace")
        .run()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_credentials_stay_out_of_the_output_at_trace_level() {
    let sim = crate::helpers::simulator(crate::helpers::sim_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = MockServer::start().await;
    let access = "ya29.google-access-token-never-shown";
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access, "expires_in": 3600, "token_type": "Bearer"
        })))
        .mount(&tokens)
        .await;

    // A service account key (a fresh RSA key) whose token endpoint is the mock.
    let pem = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap()
        .stdout;
    let pem = String::from_utf8(pem).unwrap();
    let key_line = pem.lines().nth(1).unwrap().to_string();
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        json!({"type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
               "client_email": "dealsync@p.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": format!("{}/token", tokens.uri())})
        .to_string(),
    )
    .unwrap();
    // An external account (Workload Identity Federation) whose subject token is a file, exchanged at the mock.
    let subject = dir.path().join("subject-token");
    let subject_token = "oidc-subject-token-never-shown";
    std::fs::write(&subject, subject_token).unwrap();
    let wif = dir.path().join("wif.json");
    std::fs::write(
        &wif,
        json!({"type": "external_account", "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/gh",
               "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": format!("{}/token", tokens.uri()),
               "credential_source": {"file": subject.to_str().unwrap()}})
        .to_string(),
    )
    .unwrap();

    for (credentials, secrets) in
        [(&sa, vec![access, key_line.as_str(), "eyJhbGciOi"]), (&wif, vec![access, subject_token])]
    {
        let before = tokens.received_requests().await.unwrap().len();
        let out = traced_check(credentials, &sim).await;
        assert!(tokens.received_requests().await.unwrap().len() > before, "a token was asked for: {}", out.stdout);
        assert!(out.stderr.contains(r#""severity":"DEBUG""#), "debug logging is on: {}", out.stderr);
        for secret in secrets {
            assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret), "{secret} leaked:\n{}", out.stderr);
        }
        assert!(out.stdout.contains("Google credentials:"), "check names the source: {}", out.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_google_credential_the_run_exits_78_saying_how_to_make_one() {
    let sim = crate::helpers::simulator(crate::helpers::sim_config(10)).await;
    let home = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = crate::helpers::Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-02"])
        .against(&sim)
        .env("BIGQUERY_PROJECT", "p")
        .env("HOME", home.path().to_str().unwrap())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("CLOUDSDK_CONFIG")
        .run()
        .await;
    out.assert_code(78);
    let error = out.summary()["error"].as_str().unwrap().to_string();
    assert!(error.contains("metadata server") && error.contains("gcloud auth application-default login"), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "no long wait for a metadata server that is not there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_metadata_server_stays_out_of_the_output_at_trace_level() {
    let sim = crate::helpers::simulator(crate::helpers::sim_config(10)).await;
    let metadata = MockServer::start().await;
    let access = "ya29.metadata-access-token-never-shown";
    Mock::given(method("GET"))
        .and(path("/computeMetadata/v1/instance/service-accounts/default/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access, "expires_in": 3600, "token_type": "Bearer"
        })))
        .mount(&metadata)
        .await;
    let home = tempfile::tempdir().unwrap();
    let out = crate::helpers::Dealsync::new(&["check", "--sink", "bigquery"])
        .against(&sim)
        .env("BIGQUERY_PROJECT", "p")
        .env("HOME", home.path().to_str().unwrap())
        .env("GCE_METADATA_HOST", metadata.address().to_string().as_str())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    assert!(!metadata.received_requests().await.unwrap().is_empty(), "the metadata server was asked: {}", out.stdout);
    assert!(out.stdout.contains("the metadata server"), "check names the source: {}", out.stdout);
    assert!(!out.stderr.contains(access) && !out.stdout.contains(access), "the token leaked:\n{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_user_file_stays_out_of_the_output_at_trace_level_from_either_place() {
    // The token endpoint of an `authorized_user` file is Google's own (the auth crate has no way to point it
    // elsewhere), which this machine cannot reach: the request is built and logged, then fails. What matters is
    // that the file's client secret and refresh token appear nowhere, whichever place the file was found in.
    let sim = crate::helpers::simulator(crate::helpers::sim_config(10)).await;
    let (secret, refresh) = ("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wn", "1//0g-user-refresh-token-never-shown");
    let file = json!({"type": "authorized_user", "client_id": "1.apps.googleusercontent.com",
                      "client_secret": secret, "refresh_token": refresh})
    .to_string();
    let dir = tempfile::tempdir().unwrap();
    let explicit = dir.path().join("adc.json");
    std::fs::write(&explicit, &file).unwrap();
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir(&gcloud).unwrap();
    std::fs::write(gcloud.join("application_default_credentials.json"), &file).unwrap();

    let from_variable = traced_check(&explicit, &sim).await;
    let from_gcloud = crate::helpers::Dealsync::new(&["check", "--sink", "bigquery"])
        .against(&sim)
        .env("BIGQUERY_PROJECT", "p")
        .env("CLOUDSDK_CONFIG", gcloud.to_str().unwrap())
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    for (out, source) in [(&from_variable, "GOOGLE_APPLICATION_CREDENTIALS"), (&from_gcloud, "gcloud")] {
        assert!(out.stderr.contains(r#""severity":"DEBUG""#), "debug logging is on: {}", out.stderr);
        assert!(out.stdout.contains(source), "check names the source ({source}): {}", out.stdout);
        assert_ne!(out.code, 0, "Google cannot be reached from here, so the check fails: {}", out.stdout);
        for leak in [secret, refresh] {
            assert!(!out.stderr.contains(leak) && !out.stdout.contains(leak), "{leak} leaked:\n{}", out.stderr);
        }
    }
}
