//! Configuration and credential problems: exit 78, one clear line naming the culprit, no secret in sight,
//! and (for bad variables) no network call at all.

use dealsync_sim::SimConfig;

use crate::helpers::*;

const SECRET: &str = "cs-9f8e7d6c5b4a-SECRET";
const REFRESH: &str = "1000.rt-0a1b2c3d4e5f-REFRESH";

fn sim_with_secrets() -> SimConfig {
    SimConfig { client_secret: SECRET.into(), refresh_token: REFRESH.into(), ..sim_config(200) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_variable_exits_78_naming_it_before_any_network_call() {
    let sim = simulator(sim_with_secrets()).await;
    let cases: &[(&str, Option<&str>)] = &[
        ("ZOHO_CLIENT_ID", None),
        ("ZOHO_CLIENT_SECRET", None),
        ("ZOHO_REFRESH_TOKEN", None),
        ("ZOHO_CLIENT_ID", Some("   ")),
        ("ZOHO_DC", Some("mars")),
        ("ZOHO_ACCOUNTS_URL", Some("http://accounts.example.org")),
        ("ZOHO_ACCOUNTS_URL", Some("not a url")),
        ("ZOHO_API_DOMAIN", Some("ftp://127.0.0.1/")),
        ("ZOHO_API_DOMAIN", Some("http://192.0.2.10")),
        ("ZOHO_MAX_CONCURRENCY", Some("0")),
        ("ZOHO_MAX_CONCURRENCY", Some("many")),
        ("LOG_FORMAT", Some("xml")),
    ];
    for (var, value) in cases {
        let run = Dealsync::new(&["sync"]).against(&sim);
        let run = match value {
            None => run.env_remove(var),
            Some(v) => run.env(var, v),
        };
        let out = run.run().await;
        out.assert_code(78);
        let first_error = out
            .stderr
            .lines()
            .find(|l| l.contains(var))
            .unwrap_or_else(|| panic!("{var}={value:?}: no line names the variable:\n{}", out.stderr));
        assert!(!first_error.contains(SECRET) && !first_error.contains(REFRESH));
        assert!(!out.stderr.contains(SECRET) && !out.stderr.contains(REFRESH), "{var}: a secret leaked");
    }
    assert_eq!(sim.stats().token_requests, 0, "no variable problem reached the network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_host_with_a_scheme_or_a_path_exits_78_naming_it_before_any_network_call() {
    let sim = simulator(sim_with_secrets()).await;
    let home = tempfile::tempdir().unwrap();
    for value in ["http://169.254.169.254", "metadata.google.internal/computeMetadata"] {
        let out = Dealsync::new(&["sync", "--sink", "bigquery"])
            .against(&sim)
            .env("BIGQUERY_PROJECT", "p")
            .env("HOME", home.path().to_str().unwrap())
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("CLOUDSDK_CONFIG")
            .env("GCE_METADATA_HOST", value)
            .run()
            .await;
        out.assert_code(78);
        assert!(out.stderr.contains("GCE_METADATA_HOST") && out.stderr.contains(value), "{value}: {}", out.stderr);
    }
    assert_eq!(sim.stats().token_requests, 0, "refused before any network call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_refresh_token_says_so_and_exits_78() {
    let sim = simulator(sim_with_secrets()).await;
    let out = Dealsync::new(&["sync"]).against(&sim).env("ZOHO_REFRESH_TOKEN", "1000.wrong-token-value").run().await;
    out.assert_code(78);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains("ZOHO_REFRESH_TOKEN") && err.contains("invalid_code"), "{err}");
    assert!(!out.stderr.contains("wrong-token-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_points_at_the_data_centre() {
    let sim = simulator(sim_with_secrets()).await;
    let out = Dealsync::new(&["sync"]).against(&sim).env("ZOHO_CLIENT_ID", "1000.OTHERDC").run().await;
    out.assert_code(78);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains("invalid_client") && err.contains("ZOHO_DC"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_named() {
    let sim = simulator(sim_with_secrets()).await;
    let out = Dealsync::new(&["sync"]).against(&sim).env("ZOHO_CLIENT_SECRET", "nope-nope-nope").run().await;
    out.assert_code(78);
    assert!(out.summary()["error"].as_str().unwrap().contains("ZOHO_CLIENT_SECRET"));
    assert!(!out.stderr.contains("nope-nope-nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_token_endpoint_says_to_wait_whatever_status_it_uses() {
    for status in [200, 400] {
        let sim = simulator(SimConfig { mint_limit: 0, throttle_status: status, ..sim_with_secrets() }).await;
        let out = Dealsync::new(&["sync"]).against(&sim).run().await;
        out.assert_code(78);
        let err = out.summary()["error"].as_str().unwrap().to_string();
        assert!(err.contains("Access Denied") && err.contains("wait"), "{status}: {err}");
        assert_eq!(sim.stats().token_requests, 1, "a throttled mint is not hammered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_search_scope_names_the_scope_to_grant() {
    let sim =
        simulator(SimConfig { missing_scopes: vec!["ZohoSearch.securesearch.READ".into()], ..sim_with_secrets() })
            .await;
    let out = Dealsync::new(&["sync"]).against(&sim).run().await;
    out.assert_code(78);
    let err = out.summary()["error"].as_str().unwrap().to_string();
    assert!(err.contains("OAUTH_SCOPE_MISMATCH") && err.contains("ZohoSearch.securesearch.READ"), "{err}");
    assert_eq!(sim.stats().search_requests, 1, "scope errors are not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_keep_secrets_out_of_the_ledger_and_help() {
    let sim = simulator(sim_with_secrets()).await;
    let out = Dealsync::new(&["sync"])
        .against(&sim)
        .env("ZOHO_CLIENT_SECRET", "wrong-secret-XYZ")
        .env("RUST_LOG", "trace")
        .run()
        .await;
    out.assert_code(78);
    assert!(!out.stderr.contains("wrong-secret-XYZ") && !out.stderr.contains(REFRESH));
    let help = Dealsync::new(&["sync", "--help"]).against(&sim).run().await;
    assert!(!help.stdout.contains(SECRET) && !help.stdout.contains(REFRESH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_trace_logging_never_prints_a_secret() {
    let sim = simulator(sim_with_secrets()).await;
    let out = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-10-03"])
        .against(&sim)
        .env("RUST_LOG", "trace")
        .run()
        .await;
    out.assert_code(0);
    assert!(out.stderr.contains(r#""severity":"DEBUG""#), "debug logging is on: {}", out.stderr);
    let db = std::fs::read(out.db()).unwrap();
    for secret in [SECRET, REFRESH, "simaccess"] {
        assert!(!out.stderr.contains(secret) && !out.stdout.contains(secret), "{secret} leaked");
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in the warehouse file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exercises_every_call_a_sync_makes_and_names_a_missing_scope() {
    let sim = simulator(sim_with_secrets()).await;
    let ok = Dealsync::new(&["check", "--sink", "sqlite:deals.db"]).against(&sim).run().await;
    ok.assert_code(0);
    for call in
        ["the Deals search API", "COQL", "the Deals fields metadata", "the deleted Deals", "reading Deals by id"]
    {
        assert!(ok.stdout.contains(&format!("ok    {call} answers")), "{call}:\n{}", ok.stdout);
    }
    for scope in ["ZohoCRM.coql.READ", "ZohoCRM.settings.fields.READ"] {
        let sim = simulator(SimConfig { missing_scopes: vec![scope.into()], ..sim_with_secrets() }).await;
        let out = Dealsync::new(&["check", "--sink", "sqlite:deals.db"]).against(&sim).run().await;
        out.assert_code(78);
        let fail = out.stdout.lines().find(|l| l.starts_with("FAIL")).unwrap_or_else(|| panic!("{}", out.stdout));
        assert!(fail.contains(&format!("needs the scope {scope}")), "{fail}");
        assert!(!out.stdout.contains("all checks passed"));
    }
}
