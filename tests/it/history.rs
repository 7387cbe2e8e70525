//! What a run leaves for the people and systems watching: `dealsync runs` (the ledger as history) and the run's
//! metrics (a node_exporter textfile and a real Prometheus Pushgateway).

use serde_json::Value;

use crate::helpers::*;

const OCTOBER: [&str; 5] = ["sync", "--from", "2026-10-01", "--to", "2026-10-15"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_lists_each_run_newest_first_with_the_last_good_one() {
    let sim = simulator(sim_config(1500)).await;
    let good = Dealsync::new(&OCTOBER).against(&sim).run().await;
    good.assert_code(0);
    let (good_summary, good_rows) = (good.summary(), good.count("rows_written"));
    // A second run that fails (a revoked refresh token) is recorded too, and is not the last good one.
    let failed =
        Dealsync::new(&OCTOBER).against(&sim).env("ZOHO_REFRESH_TOKEN", "1000.revoked").reuse(good.dir).run().await;
    failed.assert_code(78);
    let failed_summary = failed.summary();

    let json = Dealsync::new(&["runs", "--format", "json"]).reuse(failed.dir).run().await;
    json.assert_code(0);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{}", json.stdout);
    assert_eq!(runs[0]["run_id"], failed_summary["run_id"], "newest first");
    assert_eq!(runs[0]["exit_code"], 78);
    assert!(runs[0]["error"].as_str().unwrap().contains("ZOHO_REFRESH_TOKEN"), "{}", runs[0]);
    assert_eq!(runs[1]["run_id"], good_summary["run_id"]);
    assert_eq!(runs[1]["rows_written"].as_u64().unwrap(), good_rows);
    assert_eq!(runs[1]["kind"], "backfill");
    assert_eq!(runs[1]["window_start"], "2026-10-01T00:00:00Z");
    assert!(doc["last_good"].is_null(), "a backfill is not where the nightly window starts: {}", json.stdout);

    // A nightly run: the next nightly window starts from its end.
    let nightly = Dealsync::new(&["sync"]).against(&sim).reuse(json.dir).run().await;
    nightly.assert_code(0);
    let nightly_id = nightly.summary()["run_id"].as_str().unwrap().to_string();
    let table = Dealsync::new(&["runs", "--limit", "2"]).reuse(nightly.dir).run().await;
    table.assert_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("last good scheduled run (the next nightly window starts from its end): ")
            && lines[0].contains(&nightly_id),
        "{}",
        table.stdout
    );
    assert!(lines[1].starts_with("STARTED") && lines[1].contains("QUARANTINED"), "{}", table.stdout);
    assert_eq!(lines.len(), 4, "--limit 2 shows two runs: {}", table.stdout);
    assert!(lines[3].contains("config_error") && lines[3].contains(" 78 "), "{}", table.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_on_the_way_is_listed_as_running() {
    let sim =
        simulator(dealsync_sim::SimConfig { latency: std::time::Duration::from_millis(150), ..sim_config(6000) }).await;
    let mut running = Dealsync::new(&["sync", "--from", "2026-10-01", "--to", "2026-11-01"])
        .against(&sim)
        .env("ZOHO_MAX_CONCURRENCY", "1")
        .spawn();
    let db = running.dir().join("dealsync.db");
    // The file may exist before its tables do: a query that fails is "not yet".
    let listed = || {
        let conn = rusqlite::Connection::open(&db).ok()?;
        conn.query_row("SELECT count(*) FROM _dealsync_runs WHERE status = 'running'", [], |r| r.get::<_, i64>(0)).ok()
    };
    for _ in 0..200 {
        if db.exists() && listed() == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed(), Some(1), "the run's row says running before it is killed");
    assert!(running.running(), "still running when killed");
    running.signal("KILL");
    let killed = running.wait().await;
    let runs = Dealsync::new(&["runs", "--format", "json"]).reuse(killed.dir).run().await;
    runs.assert_code(0);
    let doc: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(doc["runs"][0]["status"], "running", "{}", runs.stdout);
    assert_eq!(doc["runs"][0]["exit_code"], 75);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_a_warehouse_that_does_not_exist_says_so_and_creates_nothing() {
    let out = Dealsync::new(&["runs", "--sink", "sqlite:nowhere.db"]).run().await;
    out.assert_code(78);
    assert!(out.stderr.contains("nowhere.db does not exist"), "{}", out.stderr);
    assert!(!out.dir.path().join("nowhere.db").exists());
    let ndjson = Dealsync::new(&["runs", "--sink", "ndjson:x.ndjson"]).run().await;
    ndjson.assert_code(2);
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(&format!("{name}{{"))).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_file_tells_the_last_run_and_keeps_the_last_success_through_a_failure() {
    let sim = simulator(sim_config(1500)).await;
    let mut args = OCTOBER.to_vec();
    args.extend(["--metrics-file", "dealsync.prom"]);
    let good = Dealsync::new(&args).against(&sim).run().await;
    good.assert_code(0);
    let path = good.dir.path().join("dealsync.prom");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(metric(&text, "dealsync_last_exit_code"), Some(0.0));
    assert_eq!(metric(&text, "dealsync_rows_written"), Some(good.count("rows_written") as f64));
    assert_eq!(metric(&text, "dealsync_reconciliation_missing"), Some(0.0));
    assert!(text.contains("dealsync_rows_written{sink=\"sqlite:./dealsync.db\",kind=\"backfill\"}"), "{text}");
    let success = metric(&text, "dealsync_last_success_timestamp_seconds").unwrap();
    assert!((success - chrono::Utc::now().timestamp() as f64).abs() < 120.0);

    let failed =
        Dealsync::new(&args).against(&sim).env("ZOHO_REFRESH_TOKEN", "1000.revoked").reuse(good.dir).run().await;
    failed.assert_code(78);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(metric(&text, "dealsync_last_exit_code"), Some(78.0));
    assert_eq!(metric(&text, "dealsync_last_success_timestamp_seconds"), Some(success), "carried over: {text}");
    assert!(metric(&text, "dealsync_last_run_timestamp_seconds").unwrap() >= success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushgateway_url_that_is_not_http_is_a_configuration_error_before_any_request() {
    let sim = simulator(sim_config(10)).await;
    let out = Dealsync::new(&OCTOBER).against(&sim).env("DEALSYNC_PUSHGATEWAY_URL", "ftp://gw:9091").run().await;
    out.assert_code(78);
    assert!(out.stderr.contains("DEALSYNC_PUSHGATEWAY_URL"), "{}", out.stderr);
    let out = Dealsync::new(&OCTOBER)
        .against(&sim)
        .env("DEALSYNC_PUSHGATEWAY_URL", "http://u:hunter2-pw@gw:9091")
        .run()
        .await;
    out.assert_code(78);
    assert!(out.stderr.contains("without credentials") && !out.stderr.contains("hunter2"), "{}", out.stderr);
    assert_eq!(sim.stats().token_requests, 0, "nothing was asked of Zoho");
}

/// The Pushgateway's current value of `name` in the group `job="dealsync", instance=…`.
async fn pushed(gateway: &str, instance: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{gateway}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&format!("instance=\"{instance}\"")) && l.contains("job=\"dealsync\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Prometheus Pushgateway (scripts/test starts one)"]
async fn a_run_pushes_its_metrics_to_a_real_pushgateway_and_a_failure_keeps_the_last_success() {
    let gateway =
        std::env::var("DEALSYNC_TEST_PUSHGATEWAY").expect("DEALSYNC_TEST_PUSHGATEWAY is set (run scripts/test)");
    let instance = format!("it-{}", std::process::id());
    let sim = simulator(sim_config(1500)).await;
    let run = |token: Option<&str>| {
        let mut d = Dealsync::new(&OCTOBER)
            .against(&sim)
            .env("DEALSYNC_PUSHGATEWAY_URL", &format!("http://{gateway}"))
            .env("DEALSYNC_INSTANCE", &instance);
        if let Some(t) = token {
            d = d.env("ZOHO_REFRESH_TOKEN", t);
        }
        d.run()
    };
    let good = run(None).await;
    good.assert_code(0);
    assert_eq!(good.event("metrics_pushed")["instance"], instance.as_str());
    assert_eq!(pushed(&gateway, &instance, "dealsync_last_exit_code").await, Some(0.0));
    assert_eq!(pushed(&gateway, &instance, "dealsync_rows_written").await, Some(good.count("rows_written") as f64));
    let success = pushed(&gateway, &instance, "dealsync_last_success_timestamp_seconds").await.unwrap();

    let failed = run(Some("1000.revoked")).await;
    failed.assert_code(78);
    assert_eq!(pushed(&gateway, &instance, "dealsync_last_exit_code").await, Some(78.0));
    assert_eq!(pushed(&gateway, &instance, "dealsync_last_success_timestamp_seconds").await, Some(success));
    let text = reqwest::get(format!("http://{gateway}/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("dealsync_last_exit_code{")
            && l.contains(&format!("instance=\"{instance}\""))
            && l.contains("kind=\"backfill\"")),
        "a backfill has its own group: {text}"
    );

    // A command line that cannot be parsed still says so: exit 2 in its group, default instance included.
    let bad = Dealsync::new(&["sync", "--no-such-flag"])
        .env("DEALSYNC_PUSHGATEWAY_URL", &format!("http://{gateway}"))
        .run()
        .await;
    bad.assert_code(2);
    assert_eq!(pushed(&gateway, "default", "dealsync_last_exit_code").await, Some(2.0));

    // Refused before logging starts, exit 78, and the Pushgateway hears it: a configuration file that cannot be
    // read, a log format it does not know.
    for (group, var, value) in
        [("config", "DEALSYNC_CONFIG", "/nonexistent/dealsync.toml"), ("log", "LOG_FORMAT", "xml")]
    {
        let group = format!("{instance}-{group}");
        let refused = Dealsync::new(&["sync"])
            .env("DEALSYNC_PUSHGATEWAY_URL", &format!("http://{gateway}"))
            .env("DEALSYNC_INSTANCE", &group)
            .env(var, value)
            .run()
            .await;
        refused.assert_code(78);
        assert_eq!(pushed(&gateway, &group, "dealsync_last_exit_code").await, Some(78.0), "{var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_before_it_starts_still_writes_its_metrics() {
    let out =
        Dealsync::new(&["sync", "--from", "2026-10-05", "--to", "2026-10-01", "--metrics-file", "m.prom"]).run().await;
    out.assert_code(2);
    let text = std::fs::read_to_string(out.dir.path().join("m.prom")).unwrap();
    assert!(text.contains("dealsync_last_exit_code{sink=\"\",kind=\"backfill\"} 2\n"), "{text}");
    assert!(!text.contains("dealsync_last_success_timestamp_seconds"), "{text}");
    assert!(!text.contains("dealsync_reconciliation_missing"), "nothing was reconciled: {text}");
}
